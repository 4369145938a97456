"""The archive and restore command PostgreSQL runs for a runtime whose WAL is archived.

    python wal.py push <repository.json> <system id> <path> <name>    archive_command = ... %p %f
    python wal.py fetch <repository.json> <system id> <name> <path>   restore_command = ... %f %p

The system identifier is the cluster's (agent.repository.wal_key: each cluster's WAL apart);
the driver writes it into the command when it starts the cluster.

It runs as the server's user, possibly under another interpreter than the agent's (one that
user may run, with the agent's site-packages on its path), so it imports only the standard
library and agent.repository. Its stderr goes to the server's log, where the archiver status
reads the reason of a failure; it never prints the repository's credentials.

push is idempotent: a segment already stored with the same size is taken as archived (a
retry after the upload completed but before PostgreSQL heard of it); a different size is a
failure, so two clusters archiving into one stanza are noticed, never silently mixed.
"""

import sys
from pathlib import Path

# Run as a script: the agent's package from its parent folder, never this folder's modules as top-level ones.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from agent.repository import RepositoryUnavailable, Spec, archive_segment, download, open_store, wal_key  # noqa: E402


def push(spec_file: Path, system_id: str, path: Path, name: str) -> None:
    spec, stanza = Spec.load(spec_file)
    archive_segment(open_store(spec, stanza), path, system_id, name)


def fetch(spec_file: Path, system_id: str, name: str, path: Path) -> int:
    spec, stanza = Spec.load(spec_file)
    try:
        download(open_store(spec, stanza), wal_key(system_id, name), path)
    except FileNotFoundError:
        return 1  # not archived: PostgreSQL asks for files that may not exist (the next timeline's history)
    return 0


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
