"""The archive and restore command PostgreSQL runs for a runtime whose WAL is archived.

    python wal.py push <repository.json> <system id> <path> <name>    archive_command = ... %p %f
    python wal.py fetch <repository.json> <system id> <name> <path>   restore_command = ... %f %p

The system identifier is the cluster's (agent.repository.wal_key: each cluster's WAL apart);
the driver writes it into the command when it starts the cluster.

It runs as the server's user, possibly under another interpreter than the agent's (one that
user may run, with the agent's site-packages on its path), so it imports only the standard
library, agent.repository and agent.walstore (which import boto3, botocore's signer and
zstandard for S3 alone). Its stderr goes to the server's log, where the archiver status
reads the reason of a failure; it never prints the repository's credentials.

push is idempotent: a segment already stored with the same content (into a folder: the same
size) is taken as archived (a retry after the upload completed but before PostgreSQL heard
of it); other content is a failure, so two clusters archiving into one stanza are noticed,
never silently mixed.

push stores ahead: PostgreSQL runs it once per segment, and an interpreter with boto3 costs
about half a second to start, which capped archiving into S3 near 20 MB/s of WAL (21 MB/s
one segment at a time in bench/wal_push.py; the fill of bench/backups.py's 1 GB took 29-53 s
to archive, against 1.2 s into a folder). So one call also stores the next completed
segments waiting (`pg_wal/archive_status/*.ready`, at most AHEAD in all, in parallel), and
leaves for each a marker in `pushed/` beside the repository file, written only once it is
stored and naming the repository it went to. The later call for that segment finds its
marker, removes it and returns at once. A marker naming another repository (the runtime was
pointed elsewhere) is ignored, so nothing is skipped that the current repository lacks.

Into S3 a WAL file is stored zstd-compressed (agent.repository.archive_segment); fetch reads
it compressed or plain (stored before Berth compressed WAL), and fails on a damaged one.
"""

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as a script: the agent's package from its parent folder, never this folder's modules as top-level ones.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from agent.repository import (  # noqa: E402
    PUSHED,
    RepositoryUnavailable,
    Spec,
    archive_segment,
    download,
    wal_keys,
)
from agent.walstore import open_wal_store  # noqa: E402

AHEAD = 8
_SEGMENT_NAME = 24  # hex characters: timeline, log, segment


def push(spec_file: Path, system_id: str, path: Path, name: str) -> None:
    spec, stanza = Spec.load(spec_file)
    where = f"{spec.url} {stanza}"
    markers = spec_file.parent / PUSHED
    marker = markers / f"{system_id}-{name}"
    try:
        stored_ahead = marker.read_text() == where
    except FileNotFoundError:
        stored_ahead = False
    if stored_ahead:
        marker.unlink()
        return
    store = open_wal_store(spec, stanza)
    ahead = _waiting_after(path, name)[: AHEAD - 1]
    with ThreadPoolExecutor(AHEAD) as pool:
        later = [
            (segment, pool.submit(archive_segment, store, path.parent / segment, system_id, segment))
            for segment in ahead
        ]
        archive_segment(store, path, system_id, name)
        for segment, stored in later:
            if stored.exception() is None:  # a failure here is retried by that segment's own call
                markers.mkdir(mode=0o700, exist_ok=True)
                partial = markers / f".{system_id}-{segment}"
                partial.write_text(where)
                partial.replace(markers / f"{system_id}-{segment}")


def _waiting_after(path: Path, name: str) -> list[str]:
    """The completed segments after `name` that PostgreSQL has yet to archive, in WAL order."""
    try:
        ready = [entry.name.removesuffix(".ready") for entry in (path.parent / "archive_status").iterdir()]
    except OSError:
        return []
    segments = [
        segment
        for segment in ready
        if len(segment) == _SEGMENT_NAME and segment.isalnum() and segment[:8] == name[:8] and segment[8:] > name[8:]
    ]
    return sorted(segments, key=lambda segment: segment[8:])


def fetch(spec_file: Path, system_id: str, name: str, path: Path) -> int:
    spec, stanza = Spec.load(spec_file)
    store = open_wal_store(spec, stanza)
    for key in wal_keys(system_id, name):
        try:
            download(store, key, path)
        except FileNotFoundError:
            continue
        return 0
    return 1  # not archived: PostgreSQL asks for files that may not exist (the next timeline's history)


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 5 and argv[0] == "push":
            push(Path(argv[1]), argv[2], Path(argv[3]), argv[4])
            return 0
        if len(argv) == 5 and argv[0] == "fetch":
            return fetch(Path(argv[1]), argv[2], argv[3], Path(argv[4]))
    except (RepositoryUnavailable, OSError) as exc:
        print(f"berth-wal {argv[0]} {argv[-1] if argv[0] == 'push' else argv[3]}: {exc}", file=sys.stderr)
        return 1
    print("usage: wal.py push SPEC SYSTEM_ID PATH NAME | fetch SPEC SYSTEM_ID NAME PATH", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
