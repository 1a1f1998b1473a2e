"""Writing received chunks: O_DIRECT where the file system takes it, else through the page cache
with writeback started at once (Linux `sync_file_range`). Durability is the caller's fsync."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path


def _libc_sync_file_range():
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # not Linux: the fsync in `FileStore.finish` does it all
        return None
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint), ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _libc_sync_file_range()
SYNC_FILE_RANGE_WRITE = 2  # start writeback of the range's dirty pages, do not wait for it


def start_writeback(fd: int, off: int, length: int) -> None:
    """Ask the kernel to start writing a range out now (Linux `sync_file_range`); no wait, no
    durability promise: only `FileStore.finish`'s fsync gives that, and it then has little left to write."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, off, length, SYNC_FILE_RANGE_WRITE)


DIRECT_ALIGN = 4096  # offsets, lengths and buffers of O_DIRECT writes: a multiple of any logical block


def open_direct(path: Path) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT)
    except (OSError, AttributeError):  # not Linux, or a file system without O_DIRECT
        return -1


def pwrite_all(fd: int, data, off: int) -> None:
    with memoryview(data) as view:  # released even when a write fails (the buffer may be closed next)
        written = os.pwrite(fd, view, off)
        while written < len(view):  # a short write (a signal, a full disk's last blocks): the rest
            with view[written:] as rest:
                written += os.pwrite(fd, rest, off + written)
