"""The agent's runtimes: one folder per ref under the root, driven by the configured driver.

Invariants:
- A ref matches the same strict pattern as a project's; nothing else names a folder.
- Commands that change a runtime (files, up, down, restart, delete) hold its lock, so one
  runs at a time and a second caller gets `busy` at once. Status and digests only read,
  and stay answerable while a long `up` runs.
- Every command runs under a deadline: the agent's default, or shorter when asked. A
  command may name its operation; cancelling that operation ends it (see agent.locks).
- Delete keeps the data unless asked: the folder is moved aside under `.deleted/`.
- A runtime folder that is a symlink is refused by every call, before anything is read,
  run or moved: following it would let status, down or delete act on another folder.
"""

import logging
import math
import re
import shutil
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent.commands import Deadline
from agent.drivers import Driver, settings_for, upgrades_for
from agent.errors import ApiError, Invalid, NotFound
from agent.files import FileWrite, contents, digests, put_files
from agent.locks import RuntimeLocks

log = logging.getLogger(__name__)
REF_PATTERN = re.compile(r"^[a-z][a-z0-9]{5,39}$")
RUNTIME_FILE = "runtime.toml"
DELETED_FOLDER = ".deleted"
# Refs stop_running() stopped, for start_noted() to start again (scripts/dev, around its run).
STOPPED_NOTE = ".stopped-by-dev"
STATUS_DEADLINE_S = 15.0
BAN_SCAN_DEADLINE_S = 10.0
# Longest a cancel waits for the cancelled command to end (killing it takes one poll).
CANCEL_WAIT_MAX_S = 10.0


def check_ref(ref: str) -> str:
    if not REF_PATTERN.fullmatch(ref):
        raise Invalid(f"runtime ref {ref!r} does not match {REF_PATTERN.pattern}")
    return ref


@dataclass(frozen=True)
class Runtime:
    ref: str
    folder: Path

    def exists(self) -> bool:
        return self.folder.is_dir()

    def manifest(self) -> dict:
        """runtime.toml, which the control plane writes as a managed file."""
        try:
            return tomllib.loads((self.folder / RUNTIME_FILE).read_text())
        except FileNotFoundError:
            raise NotFound(f"runtime {self.ref} has no {RUNTIME_FILE}; push its files first") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise Invalid(f"runtime {self.ref}: {RUNTIME_FILE} is not valid TOML: {exc}") from None

    def has_manifest(self) -> bool:
        return (self.folder / RUNTIME_FILE).is_file()


class Runtimes:
    def __init__(self, root: Path, driver: Driver, default_deadline_s: float):
        self.root = root
        self.driver = driver
        self.default_deadline_s = default_deadline_s
        self._locks = RuntimeLocks()

    def get(self, ref: str) -> Runtime:
        folder = self.root / check_ref(ref)
        if folder.is_symlink():
            raise Invalid(f"runtime folder {ref} is a symlink; the agent acts only on real folders under its root")
        return Runtime(ref, folder)

    def deadline(self, requested_s: object = None, longest_s: float | None = None) -> Deadline:
        """The default deadline, or the request's when it is shorter; never longer than the
        default, or than `longest_s` for commands whose work grows with the data (an upgrade's
        copy), which the caller bounds by its own deadline."""
        if requested_s is None:
            return Deadline(self.default_deadline_s)
        if isinstance(requested_s, bool) or not isinstance(requested_s, int | float) or not 0 < requested_s < math.inf:
            raise Invalid("deadline_s must be a positive number of seconds")
        return Deadline(min(float(requested_s), longest_s or self.default_deadline_s))

    def put_files(
        self,
        ref: str,
        writes: list[FileWrite],
        user_globs: list[str],
        remove: list[str],
        private: list[str],
        backup: list[str] = (),
        backup_suffix: str | None = None,
    ) -> dict:
        runtime = self.get(ref)
        with self._locks.hold(ref, self.deadline()):
            group = self.driver.folder_group()
            digests = put_files(
                runtime.folder,
                writes,
                user_globs,
                remove,
                private=private,
                folder_group=group,
                backup=backup,
                backup_suffix=backup_suffix,
            )
            return {"digests": digests}

    def digests(self, ref: str, paths: list[str]) -> dict:
        return {"digests": digests(self.get(ref).folder, paths)}

    def contents(self, ref: str, paths: list[str]) -> dict:
        return {"files_b64": contents(self.get(ref).folder, paths)}

    def up(self, ref: str, deadline: Deadline, operation: str | None = None) -> dict:
        runtime = self._existing(ref)
        self._check_driver(runtime)
        with self._locks.hold(ref, deadline, operation):
            return {"state": "running", "output_tail": self.driver.up(runtime, deadline)}

    def down(self, ref: str, deadline: Deadline, operation: str | None = None) -> dict:
        runtime = self._existing(ref)
        with self._locks.hold(ref, deadline, operation):
            return {"state": "stopped", "output_tail": self.driver.down(runtime, deadline)}

    def restart(self, ref: str, deadline: Deadline, operation: str | None = None) -> dict:
        runtime = self._existing(ref)
        self._check_driver(runtime)
        with self._locks.hold(ref, deadline, operation):
            # Stop and start share the one deadline, so a restart is no longer than an up.
            tail = self.driver.down(runtime, deadline) + self.driver.up(runtime, deadline)
            return {"state": "running", "output_tail": tail}

    def status(self, ref: str) -> dict:
        runtime = self.get(ref)
        if not runtime.exists():
            return {"state": "absent", "detail": "no runtime folder"}
        state, detail = self.driver.status(runtime, Deadline(min(STATUS_DEADLINE_S, self.default_deadline_s)))
        return {"state": state, "detail": detail}

    def delete(self, ref: str, purge_data: bool, deadline: Deadline, operation: str | None = None) -> dict:
        runtime = self.get(ref)
        with self._locks.hold(ref, deadline, operation):
            if runtime.exists():
                self.driver.remove(runtime, purge_data, deadline)
                self._discard_folder(runtime, purge_data)
        return {"state": "absent"}

    def stop_running(self) -> tuple[list[str], list[str]]:
        """Stop every runtime under the root that runs, noting which for start_noted().

        Returns (stopped, problems). For development only: in production runtimes outlive the agent.
        """
        stopped, problems = [], []
        for folder in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not folder.is_dir() or not REF_PATTERN.fullmatch(folder.name):
                continue
            try:
                if self.status(folder.name)["state"] == "running":
                    self.down(folder.name, self.deadline())
                    stopped.append(folder.name)
            except ApiError as error:
                problems.append(f"{folder.name}: {error}")
        note = self.root / STOPPED_NOTE
        known = note.read_text().split() if note.exists() else []
        if stopped or known:
            note.write_text("".join(f"{ref}\n" for ref in sorted({*known, *stopped})))
        return stopped, problems

    def start_noted(self) -> tuple[list[str], list[str]]:
        """Start again the runtimes stop_running() stopped; returns (started, problems)."""
        note = self.root / STOPPED_NOTE
        if not note.exists():
            return [], []
        started, problems = [], []
        for ref in note.read_text().split():
            try:
                self.up(ref, self.deadline())
                started.append(ref)
            except ApiError as error:
                problems.append(f"{ref}: {error}")
        note.unlink()
        return started, problems

    def upgrade_check(self, ref: str, target: int) -> dict:
        runtime = self._existing(ref)
        return self._upgrades(runtime).check(runtime, target)

    def upgrade_state(self, ref: str) -> dict:
        runtime = self._existing(ref)
        return self._upgrades(runtime).state(runtime)

    def upgrade(self, ref: str, step: str, deadline: Deadline, operation: str | None = None, **arguments) -> dict:
        """prepare (target, method), switch, abort, rollback or discard, under the runtime's lock."""
        runtime = self._existing(ref)
        upgrades = self._upgrades(runtime)
        with self._locks.hold(ref, deadline, operation):
            return getattr(upgrades, step)(runtime, deadline=deadline, **arguments)

    def apply_settings(self, ref: str, request, deadline: Deadline) -> dict:
        """The runtime's database settings, applied to its running server under its lock."""
        runtime = self._existing(ref)
        self._check_driver(runtime)
        applier = settings_for(self.driver)
        if applier is None:
            raise Invalid(f"the {self.driver.name} driver does not apply database settings")
        with self._locks.hold(ref, deadline):
            return applier.apply(runtime, request, deadline)

    def bans(self, ref: str, unban: list[str], deadline: Deadline) -> dict:
        """The runtime's network bans after reading its log (and lifting `unban`), under its lock."""
        runtime = self._existing(ref)
        self._check_driver(runtime)
        applier = settings_for(self.driver)
        if applier is None:
            raise Invalid(f"the {self.driver.name} driver does not ban addresses")
        with self._locks.hold(ref, deadline):
            return applier.bans(runtime, unban, deadline)

    def scan_bans(self) -> None:
        """Read every runtime's log for failed passwords and ban what reached the threshold; a
        runtime busy with a command is read next time. Never raises."""
        if settings_for(self.driver) is None or not self.root.is_dir():
            return
        for folder in sorted(self.root.iterdir()):
            if not (folder.is_dir() and REF_PATTERN.fullmatch(folder.name) and (folder / "runtime.toml").exists()):
                continue
            try:
                self.bans(folder.name, [], Deadline(BAN_SCAN_DEADLINE_S))
            except ApiError as error:
                log.debug("bans of %s not read this time: %s", folder.name, error)

    def _upgrades(self, runtime: Runtime):
        self._check_driver(runtime)
        upgrades = upgrades_for(self.driver)
        if upgrades is None:
            raise Invalid(f"the {self.driver.name} driver does not upgrade Postgres majors in place")
        return upgrades

    def cancel(self, ref: str, operation: str, wait_s: float) -> dict:
        """Kill the command `operation` runs on `ref` (its process group), and refuse its later ones."""
        self.get(ref)
        return self._locks.cancel(ref, operation, min(wait_s, CANCEL_WAIT_MAX_S))

    def hold(self, ref: str, deadline: Deadline, operation: str | None = None):
        """The runtime's lock, for work that runs beyond one request (agent.backups' jobs)."""
        return self._locks.hold(ref, deadline, operation)

    def existing(self, ref: str) -> Runtime:
        return self._existing(ref)

    def _existing(self, ref: str) -> Runtime:
        runtime = self.get(ref)
        if not runtime.exists():
            raise NotFound(f"runtime {ref} does not exist on this host")
        return runtime

    def _check_driver(self, runtime: Runtime) -> None:
        wanted = runtime.manifest().get("driver")
        if wanted != self.driver.name:
            raise Invalid(f"runtime {runtime.ref} wants driver {wanted!r}; this agent runs {self.driver.name!r}")

    def _discard_folder(self, runtime: Runtime, purge_data: bool) -> None:
        if purge_data:
            shutil.rmtree(runtime.folder)
            return
        kept = self.root / DELETED_FOLDER
        kept.mkdir(mode=0o700, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        runtime.folder.rename(kept / f"{runtime.ref}-{stamp}")
