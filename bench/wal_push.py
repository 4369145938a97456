"""WAL archiving throughput of agent/wal.py push, run as PostgreSQL runs it: one process per
segment, in order, each marking its segment done. Three cases, interleaved round-robin:

    s3-backlog   every segment is completed and waiting when the first call starts (a busy
                 server): each call stores the next ones ahead (wal.AHEAD in all)
    s3-one       each segment becomes ready just before its call (nothing to store ahead)
    folder       a file:// repository, with the backlog

into SeaweedFS (scripts/s3) and a folder, with 16 MiB segments of random bytes. Figures: MB/s
of each case, and the backlog's over one at a time.

    .venv/bin/python bench/wal_push.py --segments 32 --rounds 3 --ports 27500-27600
"""

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, S3Server, spread  # noqa: E402

sys.path.insert(0, str(ROOT / "platform"))

from agent.repository import Spec  # noqa: E402

SEGMENT_BYTES = 16 << 20
SYSTEM_ID = "7000000000000000001"
WAL_SCRIPT = ROOT / "platform" / "agent" / "wal.py"


def segments(count: int) -> list[str]:
    return [f"00000001{number >> 8:08X}{number & 0xFF:08X}" for number in range(1, count + 1)]


def archive(data: Path, spec_file: Path, names: list[str], backlog: bool) -> float:
    """Seconds to archive every segment as PostgreSQL's archiver would."""
    status = data / "pg_wal" / "archive_status"
    shutil.rmtree(spec_file.parent / "pushed", ignore_errors=True)
    for entry in status.iterdir():
        entry.unlink()
    if backlog:
        for name in names:
            (status / f"{name}.ready").touch()
    started = time.monotonic()
    for name in names:
        (status / f"{name}.ready").touch()
        subprocess.run(
            [sys.executable, WAL_SCRIPT, "push", spec_file, SYSTEM_ID, f"pg_wal/{name}", name], cwd=data, check=True
        )
        (status / f"{name}.ready").rename(status / f"{name}.done")
    return time.monotonic() - started


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--segments", type=int, default=32, help="16 MiB segments per round (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved cases (default %(default)s)")
    p.add_argument("--ports", default="27500-27600", help="SeaweedFS takes 8 consecutive ports from FIRST-LAST")
    args = p.parse_args()
    first = int(args.ports.split("-")[0])
    scratch = Path(tempfile.mkdtemp(prefix="bench-wal-"))
    s3 = S3Server(scratch / "s3", first)
    print(f"scratch {scratch}, SeaweedFS pid {s3.process.pid}", flush=True)
    try:
        data = scratch / "data"
        (data / "pg_wal" / "archive_status").mkdir(parents=True)
        names = segments(args.segments)
        for name in names:
            (data / "pg_wal" / name).write_bytes(os.urandom(SEGMENT_BYTES))
        specs = {}
        for case in ("s3-backlog", "s3-one", "folder"):
            spec_file = scratch / case / "repository.json"
            spec_file.parent.mkdir()
            if case == "folder":
                (scratch / "folder-repo").mkdir()
                Spec(url=f"file://{scratch / 'folder-repo'}").save(spec_file, "bench")
            else:
                repository = s3.repository("w" + secrets.token_hex(3))
                spec = Spec(
                    url=repository.url,
                    endpoint=repository.endpoint,
                    access_key_id=repository.access_key_id,
                    secret_access_key=repository.secret_access_key,
                )
                spec.save(spec_file, "bench")
            specs[case] = spec_file
        seconds: dict[str, list[float]] = {case: [] for case in specs}
        for round_number in range(args.rounds):
            for case, spec_file in specs.items():
                # A fresh stanza each round: nothing is taken as stored already.
                spec, _ = Spec.load(spec_file)
                spec.save(spec_file, f"bench{round_number}")
                took = archive(data, spec_file, names, backlog=case != "s3-one")
                seconds[case].append(took)
                print(f"round {round_number + 1} {case}: {took:.2f} s", flush=True)
        megabytes = args.segments * SEGMENT_BYTES / 1e6
        for case, values in seconds.items():
            print(f"{case:11} {megabytes / sorted(values)[len(values) // 2]:7.1f} MB/s  seconds {spread(values)}")
        ratio = sorted(seconds["s3-one"])[args.rounds // 2] / sorted(seconds["s3-backlog"])[args.rounds // 2]
        print(f"S3 with a backlog (stored ahead) over one at a time: {ratio:.2f}x")
    finally:
        s3.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
