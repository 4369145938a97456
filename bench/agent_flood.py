"""Flood a local agent: it must keep answering, with no more threads than its pool.

    .venv/bin/python bench/agent_flood.py [--idle 500] [--rate 200] [--seconds 10] [--threads 16]

Starts an agent (process driver, a throwaway root, a random token) on a free loopback
port, then for `--seconds`:
- holds `--idle` connections open that never finish a request: half send nothing, half
  send the start of a request and stall (as a slow or malicious client would);
- sends `--rate` GET /v1/info requests a second, each on a new connection, on a fixed
  schedule that does not wait for answers;
- reads the agent's thread count from /proc/<pid>/status every 50 ms.

One info call comes first, alone (the agent looked compose and the Postgres majors up
before it listened, and looks the majors up again every 30 s). Then it
prints the /v1/info latency (p50, p95, max: measured from each request's scheduled start,
so a load generator falling behind counts against the agent, not for it), the errors,
the highest thread count against the pool plus the agent's three loops (waitress's, the
database router's and the pooler's worker), and
how many idle connections the agent still held at the end. Exits 1 when a request
failed or took over `--target` seconds, or the threads exceeded the pool. The agent is
stopped by its pid and its root removed. Traffic goes to 127.0.0.1 only.
"""

import argparse
import asyncio
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))

from agent.config import DEFAULT_THREADS  # noqa: E402  (needs platform/ on the path)

# Besides the pool: waitress's event loop (the main thread, serving every connection), and the
# database router's loop and the pooler's worker (agent.endpoint), none of them per connection.
LOOP_THREADS = 3
START_DEADLINE_S = 20.0
SAMPLE_EVERY_S = 0.05


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=500, help="idle connections held open (default 500)")
    parser.add_argument("--rate", type=int, default=200, help="GET /v1/info requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts (default 10)")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="the agent's BERTH_AGENT_THREADS")
    parser.add_argument("--target", type=float, default=1.0, help="slowest acceptable answer, seconds (default 1)")
    args = parser.parse_args()
    if not (0 < args.idle <= 5000 and 0 < args.rate <= 2000 and 0 < args.seconds <= 120 and args.threads > 0):
        parser.error("keep to 1-5000 idle connections, 1-2000 requests a second, at most 120 s, threads > 0")
    return args


def allow_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            sys.exit(f"this flood needs {needed} open files and at most {hard} are allowed (ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def start_agent(root: Path, token: str, threads: int) -> tuple[subprocess.Popen, str, int]:
    env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("BERTH_AGENT")},
        "BERTH_AGENT_TOKEN": token,
        "BERTH_AGENT_ROOT": str(root),
        "BERTH_AGENT_LISTEN": "127.0.0.1:0",
        "BERTH_AGENT_DRIVER": "process",
        "BERTH_AGENT_THREADS": str(threads),
        "BERTH_ROUTER_LISTEN": "127.0.0.1:0",
        "BERTH_POOLER_LISTEN": "127.0.0.1:0",
    }
    process = subprocess.Popen([sys.executable, "platform/agent"], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    os.set_blocking(process.stdout.fileno(), False)
    deadline, output = time.monotonic() + START_DEADLINE_S, b""
    while time.monotonic() < deadline and process.poll() is None:
        output += process.stdout.read() or b""
        if b"listening on http://" in output:
            line = output.decode().split("listening on http://", 1)[1]
            host, port = line.split()[0].rsplit(":", 1)
            return process, host, int(port)
        time.sleep(0.05)
    process.kill()
    process.wait()
    sys.exit(f"the agent did not start: {output.decode()}")


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no Threads line")


class Flood:
    def __init__(self, host: str, port: int, token: str, pid: int):
        self.host, self.port, self.pid = host, port, pid
        self.request = (
            f"GET /v1/info HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.max_threads = threads_of(pid)
        self.first_info: float | None = None

    async def run(self, idle_count: int, rate: int, seconds: float) -> int:
        """The flood; returns how many idle connections the agent still held at its end."""
        # Timed on its own: the answers that follow are the flood's.
        await self.info(time.monotonic())
        self.first_info = self.latencies.pop() if self.latencies else None
        idle = [await self.open_idle(stall=index % 2 == 1) for index in range(idle_count)]
        sampler = asyncio.create_task(self.sample_threads())
        started = time.monotonic()
        requests = []
        for index in range(int(rate * seconds)):
            scheduled = started + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
            requests.append(asyncio.create_task(self.info(scheduled)))
        await asyncio.gather(*requests)
        sampler.cancel()
        still_open = sum([await self.still_open(reader) for reader, _ in idle])
        for _, writer in idle:
            writer.close()
        return still_open

    async def open_idle(self, stall: bool):
        reader, writer = await asyncio.open_connection(self.host, self.port)
        if stall:
            writer.write(b"GET /v1/info HTTP/1.1\r\nHost: x\r\n")
            await writer.drain()
        return reader, writer

    async def info(self, scheduled: float) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 30)
            writer.write(self.request)
            reply = await asyncio.wait_for(reader.read(), 30)
            writer.close()
        except (OSError, TimeoutError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.latencies.append(time.monotonic() - scheduled)
        if not reply.startswith(b"HTTP/1.1 200 "):
            self.errors.append(reply.split(b"\r\n", 1)[0].decode(errors="replace") or "empty reply")

    async def sample_threads(self) -> None:
        while True:
            self.max_threads = max(self.max_threads, threads_of(self.pid))
            await asyncio.sleep(SAMPLE_EVERY_S)

    @staticmethod
    async def still_open(reader: asyncio.StreamReader) -> bool:
        try:
            return await asyncio.wait_for(reader.read(1), 0.01) != b""
        except TimeoutError:
            return True  # nothing to read and not closed
        except OSError:
            return False


def main() -> int:
    args = arguments()
    allow_open_files(args.idle + args.rate * 2 + 256)
    root = Path(tempfile.mkdtemp(prefix="berth-flood-"))
    root.chmod(0o755)  # as root, the process driver needs the postgres user to reach it
    token = secrets.token_urlsafe(24)
    process = None
    try:
        process, host, port = start_agent(root, token, args.threads)
        flood = Flood(host, port, token, process.pid)
        still_open = asyncio.run(flood.run(args.idle, args.rate, args.seconds))
    finally:
        if process is not None:
            stop(process)
        shutil.rmtree(root, ignore_errors=True)
    return report(args, flood, still_open)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def report(args: argparse.Namespace, flood: Flood, still_open: int) -> int:
    latencies = sorted(flood.latencies)
    bound = args.threads + LOOP_THREADS
    print(f"{args.idle} idle connections, {args.rate} GET /v1/info a second for {args.seconds:g} s on loopback")
    if flood.first_info is not None:
        print(f"first info before the flood: {flood.first_info * 1000:.1f} ms")
    if latencies:
        p50, p95 = statistics.median(latencies), latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
        figures = f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        print(f"answered {len(latencies)} of {int(args.rate * args.seconds)}: {figures}")
    print(f"errors: {len(flood.errors)}" + (f" (first: {flood.errors[0]})" if flood.errors else ""))
    print(f"threads: at most {flood.max_threads} (pool {args.threads} + {LOOP_THREADS} loops = {bound})")
    print(f"idle connections the agent still held at the end: {still_open} of {args.idle}")
    ok = bool(latencies) and not flood.errors and latencies[-1] <= args.target and flood.max_threads <= bound
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
