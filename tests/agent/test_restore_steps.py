"""Which base backup a restore starts from, and which targets the agent refuses
(agent.backups._choose_backup): the agent's window is the repository's stored times, the
control plane's follows PostgreSQL's own archiver and may end a little later. And the last
step before the restored data is put in place: its sync (agent.backups._durable)."""

import os
import signal
import subprocess
import time

import pytest

from agent.api import BackupCatalog, BackupInfo
from agent.backups import _choose_backup, _discard, _durable
from agent.commands import Deadline
from agent.errors import CommandFailed, CommandTimeout, Invalid
from tests.stack import wait_for


def backup(finished: float, system_id: str = "7001") -> BackupInfo:
    return BackupInfo(
        id=f"b{finished:.0f}",
        started_unix=finished - 10,
        finished_unix=finished,
        bytes=1,
        major=16,
        timeline=1,
        start_wal="000000010000000000000002",
        stop_wal="000000010000000000000002",
        system_identifier=system_id,
    )


def catalog(now: float) -> BackupCatalog:
    """Two backups, an hour apart; the newest segment stored 30 s before now."""
    return BackupCatalog(
        stanza="window01",
        backups=[backup(now - 7200), backup(now - 3600)],
        earliest_unix=now - 7200,
        latest_unix=now - 30,
    )


def test_it_starts_from_the_newest_backup_finished_at_or_before_the_target():
    now = time.time()
    assert _choose_backup(catalog(now), now - 5000).id == f"b{now - 7200:.0f}"
    assert _choose_backup(catalog(now), now - 3600).id == f"b{now - 3600:.0f}"
    assert _choose_backup(catalog(now), None).id == f"b{now - 3600:.0f}"


def test_a_past_target_after_the_stored_end_restores_from_the_newest_backup():
    """PostgreSQL said the segment was archived after the store stamped it (S3 keeps whole
    seconds): the control plane's window ends later, and the agent does not refuse it."""
    now = time.time()
    assert _choose_backup(catalog(now), now - 29.5).id == f"b{now - 3600:.0f}"
    assert _choose_backup(catalog(now), now - 1).id == f"b{now - 3600:.0f}"


@pytest.mark.parametrize("offset", [-7201, 3600])
def test_it_refuses_a_target_before_the_first_backup_or_in_the_future(offset):
    now = time.time()
    with pytest.raises(Invalid, match="is outside the restorable window of window01: .* \\(unix "):
        _choose_backup(catalog(now), now + offset)


def test_an_empty_repository_has_nothing_to_restore():
    empty = BackupCatalog(stanza="window02", backups=[])
    with pytest.raises(Invalid, match="window02 has no base backup in the repository"):
        _choose_backup(empty, None)


def test_a_failed_sync_of_the_restored_data_is_a_failure():
    syncing = subprocess.Popen(["sh", "-c", "exit 5"])
    with pytest.raises(CommandFailed, match="sync -f of the restored data exited with status 5"):
        _durable(syncing, Deadline(30))


def test_a_sync_past_the_deadline_times_out_and_is_reaped_once_it_ends():
    """A kill cannot end syncfs early, so the restore does not wait on one: it fails at its
    deadline and a thread reaps the sync whenever it ends."""
    syncing = subprocess.Popen(["sleep", "30"])
    with pytest.raises(CommandTimeout, match="syncing the restored data outlived its"):
        _durable(syncing, Deadline(0.1))
    assert syncing.returncode is None
    os.kill(syncing.pid, signal.SIGKILL)
    assert wait_for(lambda: syncing.returncode is not None, timeout=10, interval=0.05, what="the reaper")


def test_a_scratch_folder_that_cannot_be_set_aside_is_left_and_logged_not_raised(tmp_path, caplog):
    """_discard runs once a restore's outcome is settled; a folder it cannot rename (here its
    state folder is gone) must not turn that outcome into an error: it stays for the next restore."""
    work = tmp_path / "restore"
    (work / "data").mkdir(parents=True)

    _discard(work, tmp_path / "gone")

    assert (work / "data").is_dir()
    assert "could not set" in caplog.text and "left for the next restore" in caplog.text


def test_a_scratch_folder_set_aside_is_removed_in_the_background(tmp_path):
    work = tmp_path / "restore"
    (work / "data").mkdir(parents=True)
    (work / "data" / "base").write_bytes(b"x" * 4096)

    _discard(work, tmp_path)

    assert not work.exists()
    wait_for(lambda: list(tmp_path.iterdir()) == [], timeout=10, interval=0.01, what="the removal")
