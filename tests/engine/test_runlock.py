"""One owner per run folder: a second command stops at once; a dead holder's lock is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from matbackprop.engine.runlock import LOCK_NAME, RunLock, read_holder
from matbackprop.errors import RunFolderError

SRC = str(Path(__file__).resolve().parents[2] / "src")

HOLDER = """
import sys, time
from matbackprop.engine.runlock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    {then}
"""


def _holder(run_dir: Path, then: str = "time.sleep(60)") -> subprocess.Popen:
    """Another process that takes the lock and then runs ``then`` (default: sleeps)."""
    code = textwrap.dedent(HOLDER).format(then=then)
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("RANK", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_command_stops_at_once_naming_the_holder(tmp_path):
    proc = _holder(tmp_path / "run")
    try:
        with pytest.raises(RunFolderError) as info, RunLock(tmp_path / "run"):
            pass
        msg = str(info.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg
        assert "in use by another command" in msg and "run_name=" in msg
        assert "time.sleep" in msg  # the holder's command line
        holder = read_holder(tmp_path / "run")
        assert holder["pid"] == proc.pid and holder["started"].endswith("+00:00")
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    proc = _holder(run_dir, then="import os; os.kill(os.getpid(), 9)")
    assert proc.wait() == -signal.SIGKILL  # died holding the lock: its record is left behind
    assert read_holder(run_dir)["pid"] == proc.pid
    with RunLock(run_dir) as lock:
        assert lock.took_over["pid"] == proc.pid
        assert read_holder(run_dir)["pid"] == os.getpid()  # the record is now true
    assert f"taking over a stale lock left by pid {proc.pid}" in capsys.readouterr().err
    assert (run_dir / LOCK_NAME).read_text() == ""  # released: nobody recorded


def test_release_reentry_and_other_ranks(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    with RunLock(run_dir):
        info = json.loads((run_dir / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and info["host"] == socket.gethostname()
        assert "command" in info
        with RunLock(run_dir):  # the same process again (entry point + engine): fine
            pass
        assert read_holder(run_dir)["pid"] == os.getpid()  # still held after the inner exit
        proc = subprocess.run(  # ... and another process is still refused
            [
                sys.executable,
                "-c",
                f"from matbackprop.engine.runlock import RunLock\n"
                f"with RunLock({str(run_dir)!r}): pass",
            ],  # fmt: skip
            env={**os.environ, "PYTHONPATH": SRC},
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 1 and f"pid {os.getpid()}" in proc.stderr
    assert read_holder(run_dir) is None
    proc = _holder(run_dir)  # released: another process can take it
    try:
        monkeypatch.setenv("RANK", "1")  # torchrun rank 1 is part of rank 0's command
        with RunLock(run_dir):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_file_system_without_flock_warns_and_runs(tmp_path, monkeypatch, capsys):
    def no_locks(fd, op):
        raise OSError(37, "No locks available")

    monkeypatch.setattr("matbackprop.engine.runlock.fcntl.flock", no_locks)
    with RunLock(tmp_path / "run"):
        pass
    assert "cannot be locked ([Errno 37] No locks available)" in capsys.readouterr().err


def test_unwritable_folder_is_a_run_folder_error(tmp_path, monkeypatch):
    def denied(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("matbackprop.engine.runlock.os.open", denied)
    with pytest.raises(RunFolderError, match=r"cannot create the lock file .*\.lock.*writable"):
        with RunLock(tmp_path / "run"):
            pass
