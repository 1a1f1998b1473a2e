"""glibc malloc settings for the long-running daemon, applied by `ringmesh serve` at start.

With glibc's defaults the daemon's RSS climbs in steps at each model promotion and stays up,
while its live memory does not grow: transfer chunks are 4 MiB buffers; the first ones are
mmapped, and freeing them raises glibc's *dynamic* mmap threshold (and with it the trim
threshold, to twice that), so later chunks are carved from the arenas of the threads that touch
them (event loop, executor threads, gRPC's), and each arena keeps up to the trim threshold of
freed memory. Measured on a loopback spot storm (8 daemons, a 16 MiB model promoted every
minute, 24 min): a training daemon at 147 MiB RSS had 14 MiB allocated and 126 MiB held free
by malloc (9 threads); its Python objects did not grow (tracemalloc, gc counts). Fixed thresholds
and two arenas bound what malloc keeps: at most TRIM_THRESHOLD bytes free at the top of each arena.

The thresholds sit above a chunk frame (4 MiB): with buffers that size mmapped (as with a 256 KiB
threshold) every frame sent or received was fresh memory, page-faulted in page by page (~500 k
faults per GiB per side), which on a VM cost more CPU than gRPC itself (bench/RESULTS.md). Kept in
the arenas, frames reuse the same pages; the price is up to 2 x 32 MiB held free after a transfer
(a loopback pull of 1 GiB: RSS 92-99 MiB after, against 55-61 with the 256 KiB threshold).

An operator's own setting wins: a MALLOC_* variable in the environment (which glibc reads
itself) leaves that parameter alone. Off glibc (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("ringmesh.ops.malloc")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 16 << 20  # above a frame (4 MiB; 8 MiB gRPC messages at most)
TRIM_THRESHOLD = 32 << 20  # a few frames' worth of free memory stays for the next ones
ARENA_MAX = 2
# (mallopt parameter, the environment variable glibc reads for it, our value)
SETTINGS = (
    (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
    (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),
    (M_ARENA_MAX, "MALLOC_ARENA_MAX", ARENA_MAX),
)


def tune(environ: os._Environ | dict[str, str] = os.environ) -> dict[str, int]:
    """Apply SETTINGS that the environment does not set; returns {variable: value} applied.
    Call it before the daemon starts threads (glibc fixes the arena limit when a second thread
    first allocates)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt is a stub
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = {}
    for param, var, value in SETTINGS:
        if var not in environ and mallopt(param, value) == 1:
            applied[var] = value
    if applied:
        log.debug("malloc: %s", ", ".join(f"{k.rstrip('_').lower()}={v}" for k, v in applied.items()))
    return applied


__all__ = ["tune", "SETTINGS", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ARENA_MAX"]
