"""Rot: stored games of a node go bad silently (the plan's `rot` events); each node scrubs its
stream log every `scrub_period` seconds (and a read finds rot too, `World.scrub`), and the core
is told as the daemon tells it (`GamesCorrupt`): the bad copies stop counting and are pulled
again from a good one.

Which games rot is drawn at the event from `random.Random(f"{seed}/rot/{index}")`: one stream
of the host's (a host with no games: the event is skipped), `count` of its games held there
with a good copy. Counted for the report: games rotted, found, stored again (repaired) and
declared lost; whether a durable game was lost is the durable-games checker's (`check_all`:
a violation, with every copy of it found rotten).
"""

from __future__ import annotations

import functools
import random
from typing import Any

from .plan import FaultEvent
from .world import World

Stream = tuple[str, str]


class Rot:
    def __init__(self, world: World, seed: int, ids: list[str], period: float) -> None:
        self.w, self.seed, self.ids, self.period = world, seed, ids, period
        self.rotted: dict[tuple[str, Stream, int], float] = {}  # (host, stream, seq) -> when it rotted
        self.found: dict[tuple[str, Stream, int], float] = {}  # ... -> when the host found it
        self.counts = {"rotted": 0, "found": 0}  # events: one game may rot again once repaired
        self.repaired = 0
        self.unrepaired: set[tuple[str, Stream, int]] = set()  # found, not stored again yet
        self.scrubs = 0
        world.rot_hooks.append(self._on_found)
        world.store_hooks.append(self._on_store)

    def start(self) -> None:
        """Every node scrubs every `period` s, the first at a time of its own."""
        rng = random.Random(f"{self.seed}/scrub")
        for h in self.ids:
            self.w.at(rng.uniform(0, self.period), functools.partial(self._scrub, h))

    def _scrub(self, h: str) -> None:
        if self.w.is_up(h):
            self.scrubs += 1
            self.w.scrub(h)
        self.w.at(self.w.now + self.period, functools.partial(self._scrub, h))

    def apply(self, i: int, e: FaultEvent) -> bool:
        """Rot `e.count` games of one stream on `e.hosts[0]`'s disk (False: it held none)."""
        (h,) = e.hosts
        disk = self.w.disks[h]
        rng = random.Random(f"{self.seed}/rot/{i}")
        good = {st: sorted(q for q in log if disk.holds(st, q)) for st, log in sorted(disk.games.items())}
        streams = [st for st, qs in good.items() if qs]
        if not streams:
            return False
        st = rng.choice(streams)
        seqs = rng.sample(good[st], min(max(1, e.count), len(good[st])))
        disk.rot(st, seqs)
        for q in seqs:
            self.rotted[(h, st, q)] = self.w.now
            self.found.pop((h, st, q), None)
        self.counts["rotted"] += len(seqs)
        return True

    def _on_found(self, node: str, stream: Stream, seqs: tuple[int, ...], now: float) -> None:
        self.counts["found"] += len(seqs)
        for q in seqs:
            self.found[(node, stream, q)] = now
            self.unrepaired.add((node, stream, q))

    def _on_store(self, node: str, origin: str, key: str, seqs: tuple[int, ...], now: float) -> None:
        for q in seqs:
            if (node, (origin, key), q) in self.unrepaired and self.w.disks[node].holds((origin, key), q):
                self.unrepaired.discard((node, (origin, key), q))
                self.repaired += 1

    def report(self) -> dict[str, Any]:
        lost = sorted({(st, q) for d in self.w.disks.values() for st, qs in d.lost.items() for q in qs})
        delays = sorted(self.found[k] - t for k, t in self.rotted.items() if k in self.found)
        return {
            "scrub_period_s": self.period,
            "scrubs": self.scrubs,
            "games_rotted": self.counts["rotted"],
            "corrupt_games_found": self.counts["found"],
            "corrupt_games_repaired": self.repaired,
            "unfound_at_end": len([k for k in self.rotted if k not in self.found]),  # e.g. rotted just before the end
            "unrepaired_at_end": len(self.unrepaired),  # e.g. on a host that no longer holds the stream
            "games_lost": len(lost),
            "lost": [f"{st[0]}/{st[1]}/{q}" for st, q in lost[:10]],
            "found_after_s_max": round(delays[-1], 3) if delays else None,
        }
