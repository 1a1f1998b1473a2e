"""Checkers fed by the world's persist hook: cheap, exact, incremental.

Comparing every node's version vector after every event would cost O(N^2) per event. The
checkers instead follow the `Persist` effects, which carry each changed origin's
`(incarnation, max_counter)` as it is after the change (the core persists every change of a
`max_counter`; only heartbeats are kept in memory). An origin's own value is the truth, since
only it writes its facts; a node whose every entry equals the truth holds the common vector.
When a checker says "done", the scenario confirms it with the core's own `fingerprint()`.
"""

from __future__ import annotations

from typing import Iterable

from ringmesh.core import Persist


class VectorConvergence:
    """Counts, incrementally, the (node, origin) entries that differ from the origin's truth."""

    def __init__(self, nodes: Iterable[str]) -> None:
        self.nodes = list(nodes)
        self.truth: dict[str, tuple[int, int]] = {}  # origin -> its own (incarnation, max_counter)
        self._matched: dict[str, set[str]] = {n: set() for n in self.nodes}
        self.missing = 0  # entries (node, origin in truth) that do not equal the truth
        self.converged_at: float | None = None

    def converged(self) -> bool:
        return self.missing == 0 and len(self.truth) == len(self.nodes)

    def lagging(self) -> list[str]:
        """Nodes whose vector is not (yet) the common one, sorted."""
        return sorted(n for n, m in self._matched.items() if len(m) != len(self.truth))

    def on_persist(self, node: str, eff: Persist, now: float) -> None:
        for ch in eff.changes:
            value = (ch.incarnation, ch.max_counter)
            if ch.origin == node:
                self._set_truth(node, value)
            else:
                self._observe(node, ch.origin, value)
        if self.converged():
            if self.converged_at is None:
                self.converged_at = now
        else:
            self.converged_at = None

    def _set_truth(self, origin: str, value: tuple[int, int]) -> None:
        old = self.truth.get(origin)
        if old == value:
            return
        if old is None:
            self.missing += len(self.nodes)
        else:
            for n in self.nodes:
                m = self._matched[n]
                if origin in m:
                    m.discard(origin)
                    self.missing += 1
        self.truth[origin] = value
        self._observe(origin, origin, value)

    def _observe(self, node: str, origin: str, value: tuple[int, int]) -> None:
        m = self._matched[node]
        if self.truth.get(origin) == value:
            if origin not in m:
                m.add(origin)
                self.missing -= 1
        elif origin in m:
            m.discard(origin)
            self.missing += 1


class Rumour:
    """Who holds one fact: the nodes whose state of `origin` reached `counter`.

    By the manifest's invariant a state at `max_counter` m holds every fact numbered <= m (or
    a newer value of the same key), so reaching the counter is holding the rumour.
    """

    def __init__(self, nodes: Iterable[str], *, origin: str, incarnation: int, counter: int, now: float) -> None:
        self.nodes = list(nodes)
        self.origin, self.incarnation, self.counter = origin, incarnation, counter
        self.started = now
        self.informed: dict[str, float] = {origin: now}

    def done(self) -> bool:
        return len(self.informed) == len(self.nodes)

    def on_persist(self, node: str, eff: Persist, now: float) -> None:
        if node in self.informed:
            return
        for ch in eff.changes:
            if ch.origin == self.origin and ch.incarnation == self.incarnation and ch.max_counter >= self.counter:
                self.informed[node] = now
                return

    def informed_per_round(self, interval: float) -> list[int]:
        """How many nodes held the rumour at the end of each gossip interval after the write."""
        times = sorted(t - self.started for t in self.informed.values())
        if not times:
            return []
        rounds = int(times[-1] // interval) + 1
        out, i = [], 0
        for r in range(1, rounds + 1):
            while i < len(times) and times[i] < r * interval:
                i += 1
            out.append(i)
        return out
