"""The driver's early answers to `pg_ctl -w`: a cluster counts as started only from a fresh
postmaster.pid of a live postmaster that accepts connections, and as stopped only once the
postmaster.pid that was there has gone (so a stale file, or none, never answers for pg_ctl)."""

import os
import subprocess
import time

from agent.drivers.process import started, stopped


def pid_file(data, pid: int, start: int, status: str) -> None:
    lines = [str(pid), str(data), str(start), "5432", "/tmp", "127.0.0.1", "  1234  5678", status]
    (data / "postmaster.pid").write_text("\n".join(lines) + "\n")


def test_a_fresh_ready_postmaster_has_started(tmp_path):
    check = started(tmp_path)
    assert not check()  # no file yet
    pid_file(tmp_path, os.getpid(), int(time.time()), "starting")
    assert not check()
    pid_file(tmp_path, os.getpid(), int(time.time()), "ready")
    assert check()
    pid_file(tmp_path, os.getpid(), int(time.time()), "standby")  # recovering, accepting reads
    assert check()


def test_a_stale_file_is_not_a_start(tmp_path):
    check = started(tmp_path)
    pid_file(tmp_path, os.getpid(), int(time.time()) - 600, "ready")  # a crash left it
    assert not check()
    dead = subprocess.Popen(["true"])
    dead.wait()
    pid_file(tmp_path, dead.pid, int(time.time()), "ready")
    assert not check()
    (tmp_path / "postmaster.pid").write_text("garbage\n")
    assert not check()


def test_stopped_only_once_the_running_postmasters_file_is_gone(tmp_path):
    pid_file(tmp_path, os.getpid(), int(time.time()), "ready")
    check = stopped(tmp_path)
    assert not check()
    (tmp_path / "postmaster.pid").unlink()
    assert check()


def test_with_nothing_running_stop_is_left_to_pg_ctl(tmp_path):
    check = stopped(tmp_path)
    assert not check()  # pg_ctl says itself that no server runs
