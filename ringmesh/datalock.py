"""One daemon per data dir: an exclusive `flock` on `<data dir>/lock`, with the holder's pid
written into the file for the message a second daemon prints.

The kernel drops the lock when its holder dies, however it dies (SIGKILL included), so a lock
"left behind" is never stale: the file may still name a dead pid, but the next daemon takes the
lock at once and writes its own pid. The pid in the file is only ever read to explain a refusal.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from .core.errors import RingmeshError

LOCK_NAME = "lock"


class DataDirBusy(RingmeshError):
    """Another daemon holds the data dir."""


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class DataDirLock:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        # no O_TRUNC: the file of a running holder keeps its pid for our message
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        for attempt in range(3):  # `holder()` (ringmesh doctor) may hold a shared lock for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 2:
                    time.sleep(0.05)
        else:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise DataDirBusy(
                f"{self.path.parent}: another ringmesh daemon is running on this data dir ({who} holds {self.path}); "
                f"stop it first, or give this one a --data-dir of its own") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # a clean stop leaves no pid behind
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(data_dir: str | Path) -> int | None:
    """The pid of the daemon holding `data_dir` now (0 if the file names none), or None if no
    daemon holds it. Takes and drops a shared lock to find out; never blocks."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
