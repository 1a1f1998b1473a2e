"""No pull onto a host above its disk cap (`max_disk_usage_percent`).

The simulator measures each host's disk as the daemon does (at start and every
`disk_report_interval`) and tells the peer; `measured` records each measurement. A pull that
starts on a host whose latest measurement is above the cap is a violation: the host knew, or
should have known, that it must not take more data. Fed by the pulls' start hook.
"""

from __future__ import annotations

from ringmesh.core import StartTransfer

from . import Violation


class DiskCaps:
    name = "disk-cap"

    def __init__(self, cap_percent: float) -> None:
        self.cap = cap_percent
        self.last: dict[str, tuple[float, float]] = {}  # host -> (used percent, when measured)
        self.checked = 0

    def measured(self, host: str, used_percent: float, now: float) -> None:
        self.last[host] = (used_percent, now)

    def forget(self, host: str) -> None:
        """The host's disk was replaced: nothing is known of the new one until it is measured."""
        self.last.pop(host, None)

    def on_start(self, node: str, start: StartTransfer, now: float) -> None:
        self.checked += 1
        used, at = self.last.get(node, (0.0, now))
        if used > self.cap:
            v = start.version
            raise Violation(
                self.name,
                f"{node} starts pulling {v.item} ({v.size} bytes) at {now:.3f} s with its disk "
                f"{used:.1f}% full (measured at {at:.3f} s), above the cap of {self.cap:g}%",
            )
