"""Checkers fed by the world's persist hook: cheap, exact, incremental.

Comparing every node's version vector after every event would cost O(N^2) per event. The
checkers instead follow the `Persist` effects, which carry each changed origin's
`(incarnation, max_counter)` as it is after the change (the core persists every change of a
`max_counter`; only heartbeats are kept in memory). An origin's own value is the truth, since
only it writes its facts; a node whose every entry equals the truth holds the common vector.
When a checker says "done", the scenario confirms it with the core's own `fingerprint()`.
"""

from __future__ import annotations

from typing import Callable, Iterable

from ringmesh.core import Peer, Persist, StartTransfer, catalog, keys
from ringmesh.core import broadcast as bc


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


class BroadcastFencing:
    """Term fencing of the leader's broadcast (DESIGN.md "Roles of the hosts"), checked as it
    happens: a directive is written only by the leader of its term while it holds its lease,
    and every pull a broadcast made CRITICAL rests on a directive of the highest term its host
    knows at that moment, or on an order of at least that term. Fed by the persist hook and
    the file pulls' start hook; `peers(name)` is the node's current process."""

    def __init__(self, peers: Callable[[str], Peer], local: Callable[[str], float] | None = None) -> None:
        self.peers = peers
        self.local = local  # a node's own clock now (with drift), when it differs from the world's
        self.directives: list[tuple[float, str, int]] = []  # (when, leader, term) of each directive written
        self.critical = 0  # CRITICAL pulls checked

    def on_persist(self, node: str, eff: Persist, now: float) -> None:
        for ch in eff.changes:
            if ch.origin != node or ch.reset:  # a reincarnation rewrites the facts of a past life as they were
                continue
            for f in ch.upserts:
                if not f.key.startswith(keys.DIRECTIVE) or f.tombstone:
                    continue
                e = self.peers(node).election
                term = (catalog.unpack(f.value) or {}).get("t")
                at = self.local(node) if self.local is not None else now  # the lease runs on its own clock
                assert e.is_leader(at) and e.term == term, (
                    f"{node} wrote directive {f.key} of term {term} at {now:.3f} as {e.role} of term {e.term}"
                )
                self.directives.append((now, node, term))

    def on_start(self, node: str, start: StartTransfer, now: float) -> None:
        if start.priority != "critical":
            return
        p, v = self.peers(node), start.version
        known = p.leader()[1]
        directive = any(
            d.item == v.item
            and d.digest == v.digest
            and d.term == known
            and catalog.leader_term(p.manifest, d.leader) == known
            for d in bc.directives(p.manifest)
        )
        order = p.broadcast.orders.get(v.item)
        assert directive or (order is not None and order[0] == v.digest and order[1] >= known), (
            f"{node} pulls {v.item} {v.digest[:8]} at CRITICAL at {now:.3f} with no directive of term {known} "
            f"(the highest it knows) and no order of that term or later ({order})"
        )
        self.critical += 1
