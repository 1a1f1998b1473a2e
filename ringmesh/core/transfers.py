"""Which file versions this host should fetch next, from whom, and when to try again.

The planner keeps the transfers under way and the backoff of failed ones. Sources are the
hosts that announced holding the exact version and that the caller deems healthy (alive, breaker
closed); they are offered in a random order so load spreads across holders.
"""

from __future__ import annotations

import random
from typing import Callable

from . import catalog
from .bandwidth import Priority
from .manifest import Manifest
from .messages import CancelTransfer, Effect, FileVersion, ItemKey, StartTransfer


class TransferPlanner:
    def __init__(self, me: str, rng: random.Random, *, max_transfers: int, retry_base: float, retry_cap: float) -> None:
        self.me, self.rng = me, rng
        self.max_transfers, self.retry_base, self.retry_cap = max_transfers, retry_base, retry_cap
        self.running: dict[tuple[ItemKey, str], FileVersion] = {}
        self.backoff: dict[tuple[ItemKey, str], tuple[int, float]] = {}  # failures, retry at
        self._dirty = True  # file facts changed since the last plan, or it left work undone

    def wanted(self, m: Manifest, should_hold: Callable[[FileVersion], bool] = lambda v: True) -> list[FileVersion]:
        """Newest versions this host should hold (the router says) and does not."""
        mine = catalog.holdings(m, self.me)
        return [
            v for item, v in sorted(catalog.newest_versions(m).items()) if mine.get(item) != v.digest and should_hold(v)
        ]

    def finished(self, item: ItemKey, digest: str) -> FileVersion | None:
        self.backoff.pop((item, digest), None)
        self._dirty = True
        return self.running.pop((item, digest), None)

    def failed(self, item: ItemKey, digest: str, now: float) -> None:
        self.running.pop((item, digest), None)
        failures = self.backoff.get((item, digest), (0, now))[0] + 1
        delay = min(self.retry_cap, self.retry_base * 2 ** (failures - 1))
        self.backoff[(item, digest)] = (failures, now + delay * self.rng.uniform(0.5, 1.0))
        self._dirty = True

    def retry_now(self, item: ItemKey, digest: str) -> None:
        """Forget the backoff of a version (a broadcast wants it now) and plan again."""
        self.backoff.pop((item, digest), None)
        self._dirty = True

    def touch(self) -> None:
        """File facts (versions, holdings) changed: plan again."""
        self._dirty = True

    def plan(
        self,
        m: Manifest,
        now: float,
        healthy: Callable[[str], bool],
        should_hold: Callable[[FileVersion], bool] = lambda v: True,
        priority: Callable[[FileVersion], Priority] = lambda v: Priority.NORMAL,
    ) -> list[Effect]:
        """Start what is wanted, most urgent first, within `max_transfers`."""
        if not self._dirty:
            return []  # nothing changed since the last plan, and it left nothing undone
        self._dirty = False
        out: list[Effect] = []
        newest = catalog.newest_versions(m)
        for item, digest in sorted(self.running):
            if newest.get(item) is None or newest[item].digest != digest:
                del self.running[(item, digest)]
                out.append(CancelTransfer(item=item, digest=digest))
        held = catalog.holders(m)
        for v in sorted(self.wanted(m, should_hold), key=lambda v: -priority(v)):
            key = (v.item, v.digest)
            if key in self.running:
                continue
            sources = [h for h in held.get(key, []) if h != self.me and healthy(h)]
            if len(self.running) >= self.max_transfers or self.backoff.get(key, (0, 0.0))[1] > now or not sources:
                self._dirty = True  # look again at the next tick
                continue
            self.rng.shuffle(sources)
            self.running[key] = v
            out.append(StartTransfer(version=v, sources=tuple(sources), priority=priority(v).label))
        return out
