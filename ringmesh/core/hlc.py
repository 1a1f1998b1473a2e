"""Hybrid logical clock (Kulkarni et al.), packed into one unsigned 64-bit integer.

The upper 48 bits are wall-clock milliseconds, the lower 16 a logical counter. A timestamp is
never smaller than one this clock issued or observed before, so "newest version wins" is a
deterministic order on every host even when their wall clocks disagree a little.
The clock is given the wall time; it never reads one.
"""

from __future__ import annotations

LOGICAL_BITS = 16
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_HLC = (1 << 64) - 1


def pack(ms: int, logical: int = 0) -> int:
    return (ms << LOGICAL_BITS) | logical


def physical_ms(hlc: int) -> int:
    return hlc >> LOGICAL_BITS


class HybridClock:
    """Issues monotonic timestamps; `observe` folds in a peer's timestamp."""

    def __init__(self, last: int = 0, max_drift_ms: int = 300_000) -> None:
        self.last = last
        self.max_drift_ms = max_drift_ms

    def now(self, wall_s: float) -> int:
        self.last = max(self.last + 1, pack(int(wall_s * 1000)))
        return self.last

    def observe(self, remote: int, wall_s: float) -> int:
        """Advance past a timestamp seen on a message; returns the new local time.

        A remote time further ahead of our wall clock than `max_drift_ms` is not adopted: one
        host with a broken clock must not drag every other clock into the future.
        """
        if not 0 <= remote <= pack(int(wall_s * 1000) + self.max_drift_ms, LOGICAL_MASK):
            return self.now(wall_s)
        self.last = max(self.last + 1, remote + 1, pack(int(wall_s * 1000)))
        return self.last
