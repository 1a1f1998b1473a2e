"""A one-line progress bar on stderr, drawn only when stderr is a terminal (never in pipes,
logs or tests that capture output), redrawn at most ten times a second.

    with Progress("hashing model.pth", total=size, unit="bytes") as bar:
        bar.update(done)
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ringmesh.ops.statusview import bar as draw_bar
from ringmesh.ops.statusview import duration, size


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        unit: str = "bytes",
        stream: TextIO | None = None,
        enabled: bool | None = None,
        every: float = 0.1,
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label, self.total, self.unit, self.every = label, total, unit, every
        self.t0 = time.monotonic()
        self._last = float("-inf")
        self._width = 0
        self.done = 0
        self.note = ""

    def _amount(self, n: int) -> str:
        return size(n) if self.unit == "bytes" else f"{n:,} {self.unit}"

    def line(self, note: str = "") -> str:
        elapsed = max(1e-9, time.monotonic() - self.t0)
        parts = [self.label]
        if self.total:
            parts.append(draw_bar(self.done, self.total))
            parts.append(f"{self._amount(self.done)} of {self._amount(self.total)}")
        else:
            parts.append(self._amount(self.done))
        if self.unit == "bytes" and self.done:
            parts.append(f"{size(self.done / elapsed)}/s")
        if self.total and 0 < self.done < self.total:
            parts.append(f"{duration((self.total - self.done) * elapsed / self.done)} left")
        if note:
            parts.append(note)
        return "  ".join(parts)

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        self.done, self.note = done, note
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.every):
            return
        self._last = now
        text = self.line(note)
        self.stream.write("\r" + text + "\x1b[K")  # erase what a longer line left behind
        self.stream.flush()
        self._width = len(text)

    def close(self, note: str | None = None) -> None:
        """Draw the last state (with `note`, else the last note) and end the line."""
        if self.enabled and self._width:
            self.update(self.done, self.note if note is None else note, force=True)
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
