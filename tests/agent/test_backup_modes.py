"""take-template's backup of a secret-bearing file (docs/architecture.md, Rollouts: Conflicts;
Agent: files): the copy the agent keeps beside the new file holds the host's secrets too, so it
is private (0600) like the file; a copy of an ordinary file stays readable (0644)."""

import stat

from agent.files import FileWrite, put_files

SUFFIX = "backup-20261206T080000Z"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_backup_of_a_private_file_is_private_and_that_of_an_ordinary_one_is_not(tmp_path):
    folder = tmp_path / "abcdefghijklmnopqrst"
    first = [FileWrite("runtime.toml", b'password = "pushed"\n', "managed"), FileWrite("notes.txt", b"n\n", "managed")]
    put_files(folder, first, [], [], private=["runtime.toml"])
    (folder / "runtime.toml").write_bytes(b'password = "edited on the host"\n')

    again = [
        FileWrite("runtime.toml", b'password = "template"\n', "managed"),
        FileWrite("notes.txt", b"t\n", "managed"),
    ]
    backup = ["runtime.toml", "notes.txt"]
    put_files(folder, again, [], [], private=["runtime.toml"], backup=backup, backup_suffix=SUFFIX)

    copy = folder / f"runtime.toml.{SUFFIX}"
    assert copy.read_bytes() == b'password = "edited on the host"\n'
    assert mode(copy) == 0o600
    assert mode(folder / "runtime.toml") == 0o600
    assert mode(folder / f"notes.txt.{SUFFIX}") == 0o644
    assert mode(folder / "notes.txt") == 0o644
