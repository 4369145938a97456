"""WAL archiving settings of a process-driver runtime, kept in its `.berth-pg/backup/`:

    repository.json   the repository and stanza the archive command writes to (mode 600, the
                      server's user's: it holds the credentials)
    archive.json      {"archive_timeout_s": N}

The driver adds `archive_conf()` to berth.conf on every start, so a runtime archives from its
first start after archiving was turned on until it is turned off; the files live outside the
data folder, so a restore keeps them.

The archive command is `agent/wal.py` run by a Python the server's user may run: the agent's
own when it can (an agent running as that user, or one installed where others may read),
else the system's python3 of the same minor version with the agent's site-packages on its
path. Which one is looked up once, by running it as that user.
"""

import functools
import importlib.util
import json
import shlex
import shutil
import sys
from pathlib import Path

from agent.commands import Deadline, RunAs, run
from agent.errors import CommandFailed
from agent.repository import system_identifier

BACKUP_DIR = "backup"
REPOSITORY_FILE = "repository.json"
ARCHIVE_FILE = "archive.json"
WAL_SCRIPT = Path(__file__).resolve().parent / "wal.py"
_LOOKUP_DEADLINE_S = 15.0


class NoWalPython(Exception):
    """No Python the server's user may run can run the archive command."""


def backup_dir(state: Path) -> Path:
    return state / BACKUP_DIR


def archiving_on(state: Path) -> bool:
    return (backup_dir(state) / REPOSITORY_FILE).is_file()


def archive_timeout(state: Path) -> int | None:
    try:
        return json.loads((backup_dir(state) / ARCHIVE_FILE).read_text())["archive_timeout_s"]
    except FileNotFoundError:
        return None


def conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def wal_command(action: str, spec_file: Path, system_id: str, run_as: RunAs | None) -> str:
    """A shell command running wal.py `action` with spec_file for the cluster `system_id`;
    PostgreSQL appends %p %f or %f %p."""
    return f"{wal_runner(run_as)} {action} {shlex.quote(str(spec_file))} {shlex.quote(system_id)}"


def archive_conf(state: Path, data: Path, run_as: RunAs | None) -> str:
    """berth.conf's archiving lines for the cluster in `data`: on with the runtime's
    repository, into its own cluster's WAL folder (read from its pg_control at each start: a
    major upgrade's new cluster archives apart from the old), else off."""
    if not archiving_on(state):
        return "archive_mode = off\n"
    command = wal_command("push", backup_dir(state) / REPOSITORY_FILE, system_identifier(data), run_as) + " %p %f"
    return (
        "archive_mode = on\n"
        f"archive_command = {conf_quote(command)}\n"
        f"archive_timeout = {archive_timeout(state) or 60}\n"
    )


@functools.cache
def wal_runner(run_as: RunAs | None) -> str:
    """`[PYTHONPATH=...] python wal.py` as a shell prefix the server's user can run."""
    boto3 = importlib.util.find_spec("boto3")
    site = str(Path(boto3.origin).parent.parent) if boto3 and boto3.origin else None
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [(sys.executable, None)]
    for name in (minor, "python3"):
        system = shutil.which(name, path="/usr/local/bin:/usr/bin:/bin")
        if system and site:
            candidates.append((system, site))
    tried = []
    for python, path in candidates:
        env = {"PYTHONPATH": path} if path else {}
        try:
            # wal.py's imports for S3: zstandard (WAL is stored compressed), boto3 (a repository without keys).
            check = [python, "-c", "import boto3, zstandard"]
            result = run(check, Deadline(_LOOKUP_DEADLINE_S), run_as=run_as, env=env, cwd="/")
        except CommandFailed:  # that user may not run it at all
            result = None
        if result is not None and result.returncode == 0:
            prefix = f"PYTHONPATH={shlex.quote(path)} " if path else ""
            return f"{prefix}{shlex.quote(python)} {shlex.quote(str(WAL_SCRIPT))}"
        tried.append(python)
    raise NoWalPython(
        f"none of {', '.join(tried)} can run the archive command as the server's user "
        "(it needs boto3, zstandard and read access to the agent's files)"
    )
