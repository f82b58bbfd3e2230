"""One owner per run folder: an advisory lock held for a whole ``train`` / ``evaluate``.

    with RunLock(run_dir):          # RunFolderError at once if another command holds it
        fit(...)

The lock is ``flock(LOCK_EX | LOCK_NB)`` on ``<run_dir>/.lock``. The kernel releases it when
the holder exits, however it exits (crash, ``kill -9``), so a stale lock from a dead process
is taken over by the next command without any clean-up; the file itself stays (deleting a
lock file while someone may be opening it would let two commands hold "the" lock). While the
lock is held the file records the holder (pid, host, command, start time, JSON); on release it
is emptied, so what the file says is true: non-empty while held, or left by a process that
died holding it (reported when taken over).

Only global rank 0 of a ``torchrun`` job takes the lock (``RANK`` unset or 0): the other ranks
are part of the same command. Within one process the lock is re-entrant (an entry point and
the engine may both take it). Forked children (DataLoader workers, process pools) share the
holder's lock until they exit.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import shlex
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from matbackprop.errors import RunFolderError

LOCK_NAME = ".lock"

_held: dict[str, tuple[int, int]] = {}  # realpath -> (fd, depth): re-entrancy in this process
_held_guard = threading.Lock()


def _is_lock_rank() -> bool:
    """True unless this is a non-zero rank of a torchrun job (those share rank 0's lock)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _command_line() -> str:
    """This process's command line (``/proc/self/cmdline`` where there is one), shortened."""
    try:
        argv = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        argv = [Path(sys.executable).name, *sys.argv]
    text = shlex.join(argv)
    return text if len(text) <= 400 else text[:400] + " ..."


def holder_info() -> dict[str, Any]:
    """What this process writes into the lock file."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _command_line(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def read_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder recorded in ``<run_dir>/.lock`` (``None``: empty, absent or unreadable)."""
    try:
        info = json.loads((Path(run_dir) / LOCK_NAME).read_text() or "null")
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def describe_holder(info: dict[str, Any] | None) -> str:
    """One line about a recorded holder, for messages."""
    if not info:
        return "another process (it has not recorded itself yet)"
    pid, host = info.get("pid"), info.get("host", "?")
    text = f"pid {pid} on {host}, started {info.get('started', '?')}: {info.get('command', '?')}"
    if host == socket.gethostname() and not _pid_alive(pid):
        text += (
            f" (pid {pid} has exited; a child it forked, e.g. a DataLoader worker, still holds "
            "the lock: wait a moment or stop that child)"
        )
    return text


class RunLock:
    """Context manager: exclusive ownership of ``run_dir`` for the duration of a command.

    Args:
        run_dir: the run folder (created if missing).

    Raises:
        RunFolderError: on entry, if another command holds the folder (names the holder: pid,
            host, command, start time, and what to do).
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.took_over: dict[str, Any] | None = None  # stale holder info replaced on entry
        self._key: str | None = None

    def __enter__(self) -> RunLock:
        if not _is_lock_rank():
            return self
        key = os.path.realpath(self.path)
        with _held_guard:
            if key in _held:  # re-entered in the same process
                fd, depth = _held[key]
                _held[key] = (fd, depth + 1)
                self._key = key
                return self
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as err:
                raise RunFolderError(
                    f"cannot create the lock file {self.path}: {err}. The run folder must be "
                    "writable; choose another output_root=... or run_dir=..."
                ) from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunFolderError(
                    f"run folder {self.run_dir} is in use by another command: "
                    f"{describe_holder(read_holder(self.run_dir))}.\n"
                    "Wait for it to finish or stop it; to run both, give this one another "
                    "run_name=... (or run_dir=...)."
                ) from None
            except OSError as err:  # ENOLCK / EOPNOTSUPP: a file system without flock
                os.close(fd)
                print(
                    f"[runlock] warning: {self.run_dir} cannot be locked ({err}); nothing stops "
                    "a second command from using this run folder at the same time",
                    file=sys.stderr,
                )
                return self
            except BaseException:
                os.close(fd)
                raise
            try:
                self.took_over = read_holder(self.run_dir)  # non-empty: its holder died
                data = json.dumps(holder_info()).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)  # closing releases the flock
                raise
            _held[key] = (fd, 1)
            self._key = key
        if self.took_over:
            print(
                f"[runlock] {self.run_dir}: taking over a stale lock left by "
                f"pid {self.took_over.get('pid')} on {self.took_over.get('host', '?')} "
                f"(started {self.took_over.get('started', '?')}; it no longer holds it)",
                file=sys.stderr,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the folder back (empties the holder record first); idempotent."""
        if self._key is None:
            return
        with _held_guard:
            fd, depth = _held[self._key]
            if depth > 1:
                _held[self._key] = (fd, depth - 1)
            else:
                del _held[self._key]
                try:
                    os.ftruncate(fd, 0)  # nobody holds it now: the record says so
                finally:
                    os.close(fd)  # releases the flock
            self._key = None
