"""Checkers fed by the world's persist hook: cheap, exact, incremental.

Comparing every node's version vector after every event would cost O(N^2) per event. The
checkers instead follow the `Persist` effects, which carry each changed origin's
`(incarnation, max_counter)` as it is after the change (the core persists every change of a
`max_counter`). An origin's own value is the truth, since
only it writes its facts; a node whose every entry equals the truth holds the common vector.
When a checker says "done", the scenario confirms it with the core's own `fingerprint()`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

from ringmesh.core import Peer, Persist, StartTransfer, catalog, keys, streams
from ringmesh.core import broadcast as bc
from ringmesh.core import election as el
from ringmesh.core import membership as mb
from ringmesh.core.messages import DropGames, RunBackup

from .disk import Disk
from .invariants import Violation
from .invariants.games import DurableGames
from .network import Network


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


class RetainedGames:
    """Retention (DESIGN.md "Game streams"): an ephemeral origin drops its own games, and a
    game goes only once it is durable, on a persistent game host's disk, and `retention`
    seconds old (on the origin's clock: a little slack for drift). At the end of a run
    (`check_end`), every game of a live origin's current stream that was durable and old
    enough a few retention ticks ago is gone: retention does run. Fed by the drop hook; the
    durability and publication times are `DurableGames`'s."""

    name = "retained-games"

    def __init__(
        self,
        games: DurableGames,
        *,
        retention: float,
        disks: Callable[[str], Disk],
        game_hosts: Iterable[str],
        persistent: Callable[[str], bool],
        peers: Callable[[str], Peer],
        up: Callable[[str], bool],
    ) -> None:
        self.games, self.retention, self.disks, self.persistent = games, retention, disks, persistent
        self.every = max(0.2, min(5.0, retention / 2))  # the core's retention tick
        self.game_hosts, self.peers, self.up = sorted(game_hosts), peers, up
        self.dropped: dict[tuple[str, str], int] = {}  # stream -> dropped through
        self.drops = 0  # games dropped

    def on_drop(self, node: str, eff: DropGames, now: float) -> None:
        stream = (self.peers(node).replication.origin, eff.config_key)
        done, durable = self.dropped.get(stream, 0), self.games.durable.get(stream, 0)
        published = self.games.published.get(stream, {})
        for q in range(done + 1, eff.through + 1):
            game = f"{stream[0]}/{stream[1]}/{q}"
            if q > durable:
                raise Violation(self.name, f"{node} dropped game {game} at {now:.3f} s before it was durable")
            if not any(self.persistent(h) and self.disks(h).holds(stream, q) for h in self.game_hosts if h != node):
                raise Violation(
                    self.name, f"{node} dropped game {game} at {now:.3f} s: no persistent game host holds it"
                )
            t = published.get(q)
            if t is None or now - t < self.retention * (1 - 1e-3):
                age = "unknown" if t is None else f"{now - t:.3f} s"
                raise Violation(
                    self.name, f"{node} dropped game {game} at {now:.3f} s, {age} old (retention {self.retention} s)"
                )
        self.dropped[stream] = max(done, eff.through)
        self.drops += max(0, eff.through - done)

    def check_end(self, now: float) -> None:
        slack = 3 * self.every
        for stream, published in self.games.published.items():
            host = streams.host_of(stream[0])
            if self.persistent(host) or not self.up(host) or self.peers(host).replication.origin != stream[0]:
                continue  # a persistent host keeps its games; a past life's streams are not retained
            durable_at = self.games.durable_at.get(stream, {})
            for q, t in sorted(published.items()):
                d = durable_at.get(q)
                if d is not None and max(t + self.retention, d) + slack < now and q > self.dropped.get(stream, 0):
                    raise Violation(
                        self.name,
                        f"{host} still keeps game {stream[0]}/{stream[1]}/{q} at {now:.3f} s "
                        f"(published at {t:.3f} s, durable at {d:.3f} s, retention {self.retention} s)",
                    )


class BackupSchedules:
    """Scheduled backups: a run starts only on the leader of its term, holding its lease (on its
    own clock), and each target's slot runs once in the cluster. Fed by the backup hook."""

    name = "backups"

    def __init__(self, peers: Callable[[str], Peer], local: Callable[[str], float] | None = None) -> None:
        self.peers, self.local = peers, local
        self.runs: dict[tuple[int, float], tuple[str, int, float]] = {}  # (index, slot) -> (host, term, when)

    def on_run(self, node: str, eff: RunBackup, now: float) -> None:
        e = self.peers(node).election
        at = self.local(node) if self.local is not None else now
        if not (e.is_leader(at) and e.term == eff.term):
            raise Violation(
                self.name,
                f"{node} started backup {eff.index} of term {eff.term} at {now:.3f} s as {e.role} of term {e.term}",
            )
        prev = self.runs.get((eff.index, eff.due))
        if prev is not None:
            raise Violation(
                self.name,
                f"{node} started backup {eff.index} for the slot due at {eff.due:.3f} s at {now:.3f} s, "
                f"which {prev[0]} had run at {prev[2]:.3f} s (term {prev[1]})",
            )
        self.runs[(eff.index, eff.due)] = (node, eff.term, now)


class NatNeverLeads:
    """A host nobody can dial (`nat`) never leads: no event leaves it in the leader's role, and it
    never writes a `leader` fact of its own. Fed by the event and persist hooks."""

    name = "nat-never-leads"

    def __init__(self, nat: Iterable[str], peers: Callable[[str], Peer]) -> None:
        self.nat, self.peers = frozenset(nat), peers

    def on_event(self, node: str, now: float) -> None:
        if node in self.nat and self.peers(node).election.role == el.LEADER:
            e = self.peers(node).election
            raise Violation(self.name, f"{node} (nat_blocked) became leader of term {e.term} at {now:.3f} s")

    def on_persist(self, node: str, eff: Persist, now: float) -> None:
        if node not in self.nat:
            return
        for ch in eff.changes:
            if ch.origin != node or ch.reset:
                continue
            for f in ch.upserts:
                if f.key == keys.LEADER and not f.tombstone:
                    raise Violation(self.name, f"{node} (nat_blocked) wrote a leader fact at {now:.3f} s")


class NatFalseDeath:
    """No false death of a host nobody can dial. The rule: a live host H that declares NAT'd host
    N dead (a `dead` claim about N's current liveness incarnation) at time t is wrong if, over
    the whole window [t - window, t], N ran (not down, not stopped, one process) with at least
    one link to a relay up, H ran too, and the network was calm (no link blocked, no lossy
    spell; the links' base loss remains). `window` covers what the claim rests on: the longest
    suspicion timeout plus probe periods stretched by the worst local health (`window_for`).
    Fed by the persist hook, the world's status hooks, the relays' link hooks, and
    `network_changed` whenever the runner blocks, unblocks, or changes loss."""

    name = "nat-false-death"

    def __init__(
        self, nat: Iterable[str], hosts: Iterable[str], peers: Callable[[str], Peer], network: Network, window: float
    ) -> None:
        self.nat, self.peers, self.network, self.window = frozenset(nat), peers, network, window
        self.up_since: dict[str, float] = {h: 0.0 for h in hosts}  # absent: down or stopped
        self.linked_since: dict[str, float] = {}  # NAT'd host -> since when it runs with a link up
        self.links: dict[str, tuple[str, ...]] = {}
        self.quiet_since: float | None = 0.0  # None: a partition or a lossy spell now
        self.claims = 0  # dead claims about NAT'd hosts looked at

    @staticmethod
    def window_for(mc: mb.MembershipConfig, hosts: int) -> float:
        lo = mc.suspicion_mult * max(1.0, math.log10(max(hosts, 1))) * mc.probe_interval
        return mc.suspicion_max_mult * lo + (2 + mc.max_local_health) * mc.probe_interval

    def network_changed(self, now: float) -> None:
        disturbed = bool(self.network.blocked) or self.network.extra_loss > 0
        if disturbed:
            self.quiet_since = None
        elif self.quiet_since is None:
            self.quiet_since = now

    def on_status(self, node: str, what: str, now: float) -> None:
        if what in ("crash", "pause"):
            self.up_since.pop(node, None)
            self.linked_since.pop(node, None)
        else:
            self.up_since[node] = now
            if self.links.get(node):
                self.linked_since[node] = now

    def on_links(self, node: str, links: tuple[str, ...], now: float) -> None:
        self.links[node] = links
        if not links:
            self.linked_since.pop(node, None)
        elif node in self.up_since:
            self.linked_since.setdefault(node, now)

    def on_persist(self, node: str, eff: Persist, now: float) -> None:
        for ch in eff.changes:
            if ch.origin != node or ch.reset:
                continue
            for f in ch.upserts:
                if f.tombstone or not f.key.startswith(keys.CLAIM) or f.key[len(keys.CLAIM) :] not in self.nat:
                    continue
                x = f.key[len(keys.CLAIM) :]
                v = catalog.unpack(f.value) or {}
                if v.get("s") != "dead":
                    continue
                self.claims += 1
                if x not in self.up_since or not isinstance(v.get("i"), int):
                    continue
                if v["i"] < mb.alive_incarnation(self.peers(x).manifest, x):
                    continue  # about a past incarnation: no effect
                starts = (self.quiet_since, self.up_since.get(node), self.up_since.get(x), self.linked_since.get(x))
                if any(s is None for s in starts):
                    continue
                calm = max(s for s in starts if s is not None)
                if now - calm >= self.window:
                    raise Violation(
                        self.name,
                        f"{node} declared {x} (nat_blocked) dead at {now:.3f} s although {x} ran with links "
                        f"{list(self.links.get(x, ()))} up and the network was calm since {calm:.3f} s "
                        f"(window {self.window:.1f} s)",
                    )
