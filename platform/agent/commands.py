"""Runs external commands under a deadline.

Invariant: no command outlives its deadline. Each one starts in its own session (so its
own process group); past the deadline the whole group gets SIGKILL and the caller gets
CommandTimeout with the tail of the output; a deadline cancelled on purpose (the command's
operation was cancelled) ends it the same way, within one poll, as Cancelled. Children that start their own session on
purpose (pg_ctl's postmaster) are daemons by design and are not the command.
"""

import os
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.errors import Cancelled, CommandFailed, CommandTimeout

OUTPUT_TAIL_BYTES = 8192
_POLL_S = 0.05
_SETTLED_POLL_S = 0.01
_EXITED, _EXPIRED, _SETTLED = "exited", "expired", "settled"
# Variables a child must never see: the agent's own secret.
_SCRUBBED_ENV = ("BERTH_AGENT_TOKEN", "BERTH_AGENT_TOKEN_FILE")


class Deadline:
    """A point in monotonic time that several commands of one request share.

    Cancelling it ends it at once, for every command of the request, running or still to come.
    """

    def __init__(self, seconds: float):
        self.seconds = seconds
        self._at = time.monotonic() + seconds
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def remaining(self) -> float:
        if self.cancelled:
            return 0.0
        return max(0.0, self._at - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0

    def stopped(self, command: str, *, started: bool, output_tail: str = "") -> CommandTimeout:
        """The error for a command this deadline cut short (killed when started, else never run)."""
        if self.cancelled:
            what = "was killed" if started else "was not run"
            return Cancelled(f"{command} {what}: its operation was cancelled", output_tail=output_tail)
        if started:
            return CommandTimeout(
                f"{command} outlived its {self.seconds:g}s deadline and was killed", output_tail=output_tail
            )
        return CommandTimeout(f"no time left to run {command}", output_tail=output_tail)


@dataclass(frozen=True)
class RunAs:
    """The unprivileged user a command runs as (the agent may be root; initdb refuses root)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output_tail: str


def child_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in _SCRUBBED_ENV}


def run(
    argv: list[str],
    deadline: Deadline,
    *,
    cwd: str | os.PathLike | None = None,
    run_as: RunAs | None = None,
    output_limit: int = OUTPUT_TAIL_BYTES,
    env: dict[str, str] | None = None,
    settled: Callable[[], bool] | None = None,
) -> CommandResult:
    """Run argv to completion or until the deadline; never raises for a non-zero exit.

    Only the last `output_limit` bytes of the output are kept. `env` adds to the child's
    environment (a client tool's PGPASSWORD: never on its command line, which others can read).
    `settled`, for a command that waits for something it checks slowly (pg_ctl -w looks every
    100 ms): asked every 10 ms while the command runs; once it is true the run succeeds with the
    output so far, and the command, left to notice by itself, is reaped (or killed at the
    deadline) by a thread.
    """
    if deadline.expired():
        raise deadline.stopped(argv[0], started=False)
    ids = {"user": run_as.uid, "group": run_as.gid, "extra_groups": []} if run_as else {}
    try:
        # Popen's user/group switch happens in the child without a preexec_fn, which is
        # not safe in the agent's threaded server.
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**child_env(), **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **ids,
        )
    except OSError as exc:
        raise CommandFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    tail = _Tail(output_limit)
    outcome = _EXPIRED  # also when collecting is interrupted: the command is killed
    try:
        outcome = _collect(proc, tail, deadline, settled)
    finally:
        if outcome == _SETTLED:
            threading.Thread(target=_reap, args=(proc, deadline), daemon=True).start()
        else:
            if outcome == _EXPIRED:
                _kill_group(proc)
            proc.stdout.close()
            proc.wait()
    if outcome == _EXPIRED:
        raise deadline.stopped(describe(argv), started=True, output_tail=tail.text())
    return CommandResult(0 if outcome == _SETTLED else proc.returncode, tail.text())


def run_checked(argv: list[str], deadline: Deadline, **kwargs) -> CommandResult:
    result = run(argv, deadline, **kwargs)
    if result.returncode != 0:
        raise CommandFailed(f"{describe(argv)} exited with status {result.returncode}", output_tail=result.output_tail)
    return result


def describe(argv: list[str]) -> str:
    """The command as a shell would show it, cut short; commands never carry secrets."""
    text = shlex.join(argv)
    return text if len(text) <= 200 else text[:197] + "..."


def _collect(proc: subprocess.Popen, tail: "_Tail", deadline: Deadline, settled: Callable[[], bool] | None) -> str:
    """Read output until the command exits (_EXITED), the deadline passes (_EXPIRED) or
    `settled` says what it waits for has happened (_SETTLED).

    Once the command has exited, output still readable is drained but EOF is not awaited:
    a daemon it left behind may hold the pipe open for as long as it lives.
    """
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        pipe_open = True
        while proc.poll() is None:
            if deadline.expired():
                return _EXPIRED
            if settled is not None and settled():
                # What the command wrote before what it waits for happened is in the pipe now.
                _drain(selector, fd, tail, deadline, pipe_open)
                return _SETTLED
            wait = min(_POLL_S if settled is None else _SETTLED_POLL_S, deadline.remaining())
            if pipe_open:
                pipe_open = _read_ready(selector, fd, tail, wait)
            else:
                # The output ended (the command exits, or left a daemon holding nothing):
                # woken by its exit, not a fixed sleep, so a short command costs no 50 ms.
                try:
                    proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    pass
        _drain(selector, fd, tail, deadline, pipe_open)
    return _EXITED


def _drain(selector: selectors.BaseSelector, fd: int, tail: "_Tail", deadline: Deadline, pipe_open: bool) -> None:
    """Read the output ready now, without waiting for more. Bounded by the deadline too: a
    daemon that keeps writing would otherwise keep output ready forever."""
    while pipe_open and not deadline.expired() and selector.select(0):
        pipe_open = _read_ready(selector, fd, tail, 0)


def _read_ready(selector: selectors.BaseSelector, fd: int, tail: "_Tail", wait: float) -> bool:
    """Read what is ready within `wait`; False once the pipe reached EOF."""
    if not selector.select(wait):
        return True
    chunk = os.read(fd, 65536)
    if not chunk:
        selector.unregister(fd)
        return False
    tail.add(chunk)
    return True


def _reap(proc: subprocess.Popen, deadline: Deadline) -> None:
    """A settled command's end awaited; killed if its deadline passes or is cancelled first."""
    try:
        while proc.poll() is None:
            if deadline.expired():
                _kill_group(proc)
                break
            time.sleep(_POLL_S)
    finally:
        proc.stdout.close()


def _kill_group(proc: subprocess.Popen) -> None:
    # The command leads its own session, so its process group id is its pid.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class _Tail:
    """Keeps only the last `limit` bytes of a command's output."""

    def __init__(self, limit: int):
        self._limit = limit
        self._data = bytearray()

    def add(self, chunk: bytes) -> None:
        self._data += chunk
        del self._data[: -self._limit]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")
