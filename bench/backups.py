"""Backups: what a lost host costs (RPO), how fast a restore is, what archiving costs writes.

Real agents (the process driver, the checkout's PostgreSQL --major) and a real repository: a
file:// folder, or SeaweedFS's S3 (scripts/s3) with --repository s3. Figures:

- RPO: a client commits a row every 50 ms into a project archiving with
  BERTH_WAL_ARCHIVE_TIMEOUT (default 5 s) after a base backup; after --rpo-seconds its
  cluster is killed (immediate stop) and its runtime folder deleted; the project is restored
  to the latest archived point on a second agent (another root: another host). Rows
  acknowledged but missing, split by whether they were committed more than the archive
  timeout before the loss (goal: none of those).
- Restore throughput: a project of --size-mb, base-backed-up; its rows' payload is made of
  distinct md5s (hex text: it compresses about 2x, as table data does, where a repeated one
  compressed 30x and flattered an S3 repository's zstd), and the base backup's compression
  is printed (tar bytes against the bytes stored). Each round, interleaved, (a)
  `cp -a` of its data folder, (b) the same followed by `sync -f` of the copy (a copy on disk,
  as a restore's data is before it serves: `cp -a` alone may end in the page cache) and (c) an
  in-place restore to the latest point (from the start call to the restored cluster
  serving), from a base backup taken before the round (untimed), as Berth's backup pass takes
  one after each restore; with an S3 repository it takes the host's copy of that backup
  (agent.hostcopy: its files, moved into place), so (d) the same restore again without that
  copy, as on a host that did not take the backup, from the repository's object alone. Each case starts after a
  `sync -f` (untimed), so none pays for the writeback of the step before it, and each case
  reads its source from the page cache: each copy's data folder, and the host's copy of the
  backup or the folder repository, are read whole before (untimed; the host copy's pages
  were dropped from the cache as it was written, and recovery reads the pages it replays
  onto), and the S3 object was just stored. An untimed copy, removed at once,
  starts each round, so every case writes into memory the one before it freed. Ratio = cp
  time / restore time (goal >= 0.5), against each copy.
- Write overhead: pgbench TPS with archiving on and off on one project, both each round,
  the order flipped every round (turning archiving on or off restarts it; pgbench vacuums
  before each run); each run starts with nothing waiting to be archived and a checkpoint
  (common.archiving_tps). Ratio = on / off (goal >= 0.9); use an even --rounds.

Every runtime, agent, folder and S3 server it started is removed at the end; it touches no
database of the shared server (--database is accepted like every bench's, and unused).

    .venv/bin/python bench/backups.py --size-mb 1024 --rounds 3
"""

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PASSWORD,
    PORTS,
    ROOT,
    S3Server,
    archiving_tps,
    connect,
    fill,
    find_pgbench,
    free_port,
    measure_rpo,
    parser,
    port_range,
    spread,
    start_agent,
    switch_and_archive,
    wait_job,
)

from agent import hostcopy  # noqa: E402
from agent.api import FileSpec, Repository  # noqa: E402
from agent.client import AgentClient  # noqa: E402


def runtime_toml(major: int, port: int) -> FileSpec:
    text = f'driver = "process"\n\n[postgres]\nmajor = {major}\nport = {port}\npassword = "{PASSWORD}"\n'
    return FileSpec("runtime.toml", text.encode())


def provision(client: AgentClient, ref: str, major: int, repository: Repository, timeout_s: int) -> int:
    port = free_port()
    client.put_files(ref, [runtime_toml(major, port)])
    client.up(ref)
    client.backup_archiving(ref, repository, archive_timeout_s=timeout_s)
    return port


def rpo(first: AgentClient, second: AgentClient, root: Path, major: int, repository, timeout_s: int, seconds: float):
    ref = "benchrpo" + secrets.token_hex(3)
    port = provision(first, ref, major, repository, timeout_s)

    def lose() -> None:
        kill_cluster(root / ref / ".berth-pg" / "data")
        shutil.rmtree(root / ref)  # the host and its folder are gone

    def files(new_port: int) -> list[FileSpec]:
        return [runtime_toml(major, new_port)]

    return measure_rpo(first, second, ref, port, repository, timeout_s, seconds, lose=lose, files=files)


def kill_cluster(data: Path) -> None:
    user = {"user": "postgres"} if os.geteuid() == 0 else {}
    subprocess.run([_pg_ctl(data), "-D", data, "-m", "immediate", "stop"], capture_output=True, timeout=60, **user)


def _pg_ctl(data: Path) -> Path:
    major = (data / "PG_VERSION").read_text().strip()
    for candidate in (ROOT / "pgbin" / major / "bin" / "pg_ctl", Path(f"/usr/lib/postgresql/{major}/bin/pg_ctl")):
        if candidate.exists():
            return candidate.resolve()
    raise SystemExit(f"no pg_ctl of {major}")


def compression(client: AgentClient, ref: str, repository: Repository) -> str:
    """The newest base backup's tar bytes against the bytes its object takes in the repository."""
    from agent.backups import spec_of
    from agent.repository import open_store

    backup = client.backup_catalog(repository, ref).backups[-1]
    stored = sum(
        item.size
        for item in open_store(spec_of(repository), ref).scan(f"base/{backup.id}/")
        if not item.key.endswith("/backup.json")
    )
    return f"tar {backup.bytes / (1 << 20):.0f} MiB, stored {stored / (1 << 20):.0f} MiB: {backup.bytes / stored:.2f}x"


def base_backup(client: AgentClient, ref: str, port: int, repository: Repository) -> float:
    """A base backup, its last segment archived after it; returns the seconds it took."""
    client.backup_start(ref, repository, job_s=3600)
    seconds = wait_job(client, ref)
    switch_and_archive(client, ref, port)
    return seconds


def settle(folder: Path) -> None:
    """Whatever is dirty on `folder`'s filesystem written out (untimed, before a timed case)."""
    subprocess.run(["sync", "-f", str(folder)], check=True)


def copy_seconds(data: Path, target: Path, scratch: Path, durable: bool) -> float:
    """`cp -a` of `data` to `target`, then `sync -f` of the copy if `durable`; the copy is
    removed after. It starts with no dirty pages left by the step before (whichever case
    followed the most writing paid for its writeback) and with its source in the page cache,
    as the restore reads the object just stored (a restore's data is written to disk and
    dropped from the cache, tarcopy.write_soon, so the round's first copy read it from disk)."""
    settle(scratch)
    read_whole(data)
    started = time.monotonic()
    subprocess.run(["cp", "-a", str(data), str(target)], check=True)
    if durable:
        subprocess.run(["sync", "-f", str(target)], check=True)
    seconds = time.monotonic() - started
    shutil.rmtree(target)
    return seconds


def read_whole(folder: Path) -> None:
    """Every file under `folder` read once (untimed): in the page cache after."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as source:
                while source.read(8 << 20):
                    pass


def restore_seconds(
    client: AgentClient, ref: str, repository: Repository, scratch: Path, source: Path
) -> tuple[float, str]:
    """An in-place restore to the latest point, from the start call to the restored cluster
    serving; its seconds and the seconds of its phases. Its `source` folder on this host (the
    host copy's, or the repository's) is read whole first, as each copy's data folder is."""
    if source.is_dir():
        read_whole(source)
    settle(scratch)  # as each copy starts (copy_seconds)
    started = time.monotonic()
    client.restore_start(ref, repository, job_s=3600)
    phases = {}
    wait_job(client, ref, phases)
    seconds = time.monotonic() - started
    return seconds, ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in phases.items())


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())


def main() -> int:
    p = parser(__doc__, "backups")
    p.add_argument("--size-mb", type=int, default=1024, help="the restored project's data, MiB (default %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the interleaved cases (default %(default)s)")
    p.add_argument("--major", type=int, default=16, help="PostgreSQL major of the projects (default %(default)s)")
    p.add_argument("--repository", choices=("file", "s3"), default="file", help="repository kind (default file)")
    p.add_argument("--rpo-seconds", type=float, default=30, help="writing before the host is lost (default 30)")
    p.add_argument("--pgbench-seconds", type=int, default=20, help="each pgbench run (default %(default)s)")
    p.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -s (default %(default)s)")
    p.add_argument(
        "--ports",
        default="23000-31999",
        help="the TCP ports its clusters and S3 server may use, FIRST-LAST (default %(default)s)",
    )
    args = p.parse_args()
    PORTS[0] = port_range(args.ports, 9)
    timeout_s = int(os.environ.get("BERTH_WAL_ARCHIVE_TIMEOUT", "5"))
    pgbench = find_pgbench()

    scratch = Path(tempfile.mkdtemp(prefix="berth-bench-backups-", dir="/tmp"))
    scratch.chmod(0o755)  # the postgres user reaches its clusters and the repository through it when root
    roots = [scratch / "host1", scratch / "host2"]
    for root in roots:
        root.mkdir(mode=0o755)
    token = secrets.token_urlsafe(24)
    agents, s3 = [], None
    try:
        for root in roots:
            agents.append(start_agent(root, token)[0:2])
        first, second = (AgentClient(url, token, deadline=3600) for _, url in agents)
        if args.repository == "s3":
            s3 = S3Server(scratch / "s3", free_port(count=8))
            repository = s3.repository("r" + secrets.token_hex(3))
        else:
            (scratch / "repository").mkdir(mode=0o755)
            repository = Repository(url=f"file://{scratch / 'repository'}")

        total, lost, old = rpo(first, second, roots[0], args.major, repository, timeout_s, args.rpo_seconds)

        ref = "benchrest" + secrets.token_hex(3)
        port = provision(first, ref, args.major, repository, 60)
        fill(port, args.size_mb)
        # The fill's WAL archived first, so the base backup's time is its own (pg_basebackup
        # -X none waits for the archiver).
        started = time.monotonic()
        switch_and_archive(first, ref, port)
        print(f"archiving the fill's WAL: {time.monotonic() - started:.1f} s", flush=True)
        backup_s = base_backup(first, ref, port, repository)
        data = roots[0] / ref / ".berth-pg" / "data"
        size = folder_bytes(data)
        print(f"base backup of {size / (1 << 20):.0f} MiB: {backup_s:.1f} s", flush=True)
        compressed = compression(first, ref, repository)
        print(f"base backup compression: {compressed}", flush=True)
        copies, synced, restores, remote = [], [], [], []
        # What the in-place restore reads on this host: the host copy, or the folder repository.
        local = roots[0] / ref / ".berth-pg" / hostcopy.FOLDER if args.repository == "s3" else scratch / "repository"
        for round_number in range(args.rounds):
            if round_number:
                # A restore begins a new timeline, and Berth's backup pass takes a base backup
                # after it (operations.protection.record_restored): each round restores a
                # fresh one, not the first one and every earlier round's WAL since.
                base_backup(first, ref, port, repository)
            target = scratch / f"copy{round_number}"
            # Each case writes into memory the case before it freed: on this virtual machine a
            # copy into memory not touched before took 2.7-6.6 s, into memory just freed 0.6 s
            # (2 GiB), so the round's first case paid several times its own cost. An untimed
            # copy goes first.
            copy_seconds(data, target, scratch, durable=False)
            copies.append(copy_seconds(data, target, scratch, durable=False))
            synced.append(copy_seconds(data, target, scratch, durable=True))
            seconds, spent = restore_seconds(first, ref, repository, scratch, local)
            restores.append(seconds)
            line = f"round {round_number + 1}: cp -a {copies[-1]:.1f} s, cp -a + sync {synced[-1]:.1f} s, "
            line += f"restore {seconds:.1f} s ({spent})"
            if args.repository == "s3":
                # As on a host that did not take the backup (a lost host's project): the
                # repository's object, fetched and decompressed.
                shutil.rmtree(local, ignore_errors=True)  # taken by the restore before: gone already
                seconds, spent = restore_seconds(first, ref, repository, scratch, local)
                remote.append(seconds)
                line += f", from the repository alone {seconds:.1f} s ({spent})"
            print(line, flush=True)

        with connect(port) as conn:
            conn.execute("drop table items")
        tps = archiving_tps(first, ref, port, repository, args, pgbench, timeout_s)
        first.delete(ref, purge_data=True, deadline_s=300)
    finally:
        for process, _ in agents:
            process.terminate()
            process.wait(timeout=30)
        if s3 is not None:
            s3.stop()
        for version in scratch.glob("**/.berth-pg/**/PG_VERSION"):  # a bench cut short leaves clusters
            if (version.parent / "postmaster.pid").exists():
                kill_cluster(version.parent)
        shutil.rmtree(scratch, ignore_errors=True)

    mib = size / (1 << 20)
    cp_rate = [mib / seconds for seconds in copies]
    restore_rate = [mib / seconds for seconds in restores]
    # Medians of the interleaved rounds, so one round's page-cache or neighbour luck does not decide.
    ratio = statistics.median(copies) / statistics.median(restores) if restores else 0.0
    ratio_synced = statistics.median(synced) / statistics.median(restores) if restores else 0.0
    overhead = statistics.median(tps["on"]) / max(statistics.median(tps["off"]), 0.001) if tps["on"] else 0.0
    print(f"\nbackups, PostgreSQL {args.major}, {args.repository} repository, {args.rounds} round(s):")
    print(f"RPO: lost {lost} of {total} rows, {old} older than the {timeout_s} s archive timeout (goal 0)")
    print(f"cp -a MiB/s {spread(cp_rate)}; restore MiB/s {spread(restore_rate)} ({mib:.0f} MiB)")
    print(f"base backup compression: {compressed}")
    print(f"ratio restore/cp throughput: {ratio:.2f} (goal >= 0.5)")
    print(f"ratio restore/(cp + sync) throughput: {ratio_synced:.2f}")
    if remote:
        print(
            f"from the repository alone (no host copy): restore MiB/s {spread([mib / seconds for seconds in remote])}; "
            f"ratio to cp {statistics.median(copies) / statistics.median(remote):.2f}, "
            f"to cp + sync {statistics.median(synced) / statistics.median(remote):.2f}"
        )
    print(f"pgbench tps archiving off {spread(tps['off'])}; on {spread(tps['on'])}")
    print(f"ratio tps archiving on/off: {overhead:.2f} (goal >= 0.9)")
    return 0 if old == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
