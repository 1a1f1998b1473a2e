"""A test harness for the manifest: hosts that are each an origin and a replica.

`World` only ever drives the manifests through the protocol (`put`, `delete`,
`purge_tombstones`, `delta_for` / `apply`, a restart with a wiped disk as a fresh `Manifest` of
a higher incarnation), so every state it builds is a *reachable* one. It keeps the ground
truth on the side -- every fact each origin ever wrote, per incarnation -- and checks the
replicas against it:

* `check_safety()` (after every step): a replica holds only facts its origin really wrote,
  numbered at or below its `max_counter`; it never goes back to an older incarnation of an
  origin; it never goes back to an older fact of a key (no resurrection of a deleted value);
  and `(incarnation, floor, max_counter)` of each origin never goes backwards; a value whose
  tombstone is at or below the floor is held only while a newer write is still to come; and
  the `OriginChange`s handed out so far rebuild the replica (what the shell persists).
* `settle(budget)`: all-pairs exchanges until nothing changes, then `check_converged()`:
  every replica has the content of every origin as that origin has it.

Nothing here is random: every choice comes from the caller (Hypothesis).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ringmesh.core.hlc import pack
from ringmesh.core.manifest import Delta, Fact, Manifest, OriginChange

HUGE = 1 << 40  # a budget that never truncates


def merge(a: Manifest, b: Manifest, budget: int = HUGE) -> Manifest:
    """A copy of `a` with `b`'s delta for it applied (the join of the laws)."""
    m = copy.deepcopy(a)
    m.apply(b.delta_for(m.digest(), budget))
    return m


def full_state(m: Manifest) -> dict:
    """Everything a replica holds, tombstones, floors and heartbeats included."""
    return {
        o: (st.incarnation, st.heartbeat, st.max_counter, st.floor, dict(st.facts))
        for o, st in sorted(m.origins.items())
    }


def progress_key(m: Manifest) -> dict[str, tuple[int, int, int, int]]:
    """Per origin, what must never go backwards: (incarnation, floor, max_counter, heartbeat)."""
    return {o: (st.incarnation, st.floor, st.max_counter, st.heartbeat) for o, st in m.origins.items()}


@dataclass
class World:
    names: list[str]
    now_ms: int = 10_000
    hosts: dict[str, Manifest] = field(init=False)
    inc: dict[str, int] = field(init=False)
    #: every fact written: (origin, incarnation) -> {counter: Fact}
    history: dict[tuple[str, int], dict[int, Fact]] = field(init=False)
    #: deltas in flight: (destination, delta)
    pool: list[tuple[str, Delta]] = field(init=False)
    #: (replica, origin, incarnation, key) -> highest counter the replica ever held for the key
    hw: dict[tuple[str, str, int, str], int] = field(init=False)
    #: host -> {origin: (incarnation, max_counter, floor, facts)} rebuilt from its OriginChanges
    stores: dict[str, dict[str, tuple[int, int, int, dict[str, Fact]]]] = field(init=False)
    #: (origin, incarnation) -> {key: [its writes, in counter order]}
    by_key: dict[tuple[str, int], dict[str, list[Fact]]] = field(init=False)
    #: (replica, origin) -> last observed (incarnation, floor, max_counter, heartbeat)
    seen: dict[tuple[str, str], tuple[int, int, int, int]] = field(init=False)

    def __post_init__(self) -> None:
        self.hosts = {n: Manifest(n, 1) for n in self.names}
        self.inc = {n: 1 for n in self.names}
        self.history = {}
        self.pool = []
        self.hw = {}
        self.by_key = {}
        self.stores = {n: {} for n in self.names}
        self.seen = {}

    # -- origins write ---------------------------------------------------------------------

    def _persist(self, host: str, changes: list[OriginChange]) -> None:
        """What a shell would write: replaying the changes must rebuild the replica."""
        store = self.stores[host]
        for ch in changes:
            old = store.get(ch.origin)
            facts = {} if ch.reset or old is None else dict(old[3])
            for f in ch.upserts:
                facts[f.key] = f
            for k in ch.removed:
                facts.pop(k, None)
            store[ch.origin] = (ch.incarnation, ch.max_counter, ch.floor, facts)

    def _record(self, ch: OriginChange | None) -> None:
        if ch is None:
            return
        hist = self.history.setdefault((ch.origin, ch.incarnation), {})
        by_key = self.by_key.setdefault((ch.origin, ch.incarnation), {})
        for f in ch.upserts:  # (after reincarnate: the live facts under new counters)
            assert f.counter not in hist, "an origin reused a counter"
            hist[f.counter] = f
            by_key.setdefault(f.key, []).append(f)

    def put(self, host: str, key: str, value: bytes) -> None:
        ch = self.hosts[host].put(key, value)
        self._record(ch)
        self._persist(host, [ch])

    def delete(self, host: str, key: str) -> None:
        ch = self.hosts[host].delete(key, pack(self.now_ms))
        self._record(ch)
        self._persist(host, [ch] if ch else [])

    def tick(self, ms: int) -> None:
        self.now_ms += ms

    def purge(self, host: str, grace_ms: int) -> None:
        self._persist(host, self.hosts[host].purge_tombstones(pack(self.now_ms), grace_ms))

    def restart_wiped(self, host: str) -> None:
        """The host comes back with an empty disk and a higher incarnation."""
        self.inc[host] += 1
        self.hosts[host] = Manifest(host, self.inc[host])
        self.stores[host] = {}
        for k in [k for k in self.hw if k[0] == host]:
            del self.hw[k]
        for k in [k for k in self.seen if k[0] == host]:
            del self.seen[k]

    def reincarnate(self, host: str) -> None:
        """The host keeps its disk but starts a higher incarnation (a refutation)."""
        self.inc[host] += 1
        ch = self.hosts[host].reincarnate(self.inc[host])
        self._record(ch)
        self._persist(host, [ch])

    # -- gossip ----------------------------------------------------------------------------

    def delta(self, src: str, dst: str, budget: int) -> Delta:
        d = self.hosts[src].delta_for(self.hosts[dst].digest(), budget)
        assert d.wire_size() <= budget, (d.wire_size(), budget)
        return d

    def send(self, src: str, dst: str, budget: int) -> None:
        """Compute a delta now; it is delivered (or not) later."""
        self.pool.append((dst, self.delta(src, dst, budget)))

    def apply(self, dst: str, d: Delta) -> None:
        self._persist(dst, self.hosts[dst].apply(d))

    def deliver(self, index: int, keep: bool = False) -> None:
        dst, d = self.pool[index] if keep else self.pool.pop(index)
        self._persist(dst, self.hosts[dst].apply(d))

    def drop(self, index: int) -> None:
        self.pool.pop(index)

    def exchange(self, src: str, dst: str, budget: int) -> None:
        self._persist(dst, self.hosts[dst].apply(self.delta(src, dst, budget)))

    def settle(self, budget: int = HUGE, max_passes: int = 2000) -> int:
        """All-pairs exchanges until a whole pass changes no digest; returns the passes."""
        for passes in range(1, max_passes + 1):
            before = {n: dict(m.digest()) for n, m in self.hosts.items()}
            for a in self.names:
                for b in self.names:
                    if a != b:
                        self.exchange(a, b, budget)
            self.check_safety()
            if before == {n: dict(m.digest()) for n, m in self.hosts.items()}:
                return passes
        raise AssertionError(f"no quiescence after {max_passes} passes at budget {budget}")

    # -- checks ----------------------------------------------------------------------------

    def check_safety(self) -> None:
        for r, m in self.hosts.items():
            assert m.me == r
            for o, st in m.origins.items():
                where = f"replica {r}, origin {o}"
                assert 1 <= st.incarnation <= self.inc[o], where
                hist = self.history.get((o, st.incarnation), {})
                top = max(hist, default=0)
                assert 0 <= st.floor, where
                assert st.max_counter <= top, f"{where}: max_counter {st.max_counter} > written {top}"
                for key, f in st.facts.items():
                    assert f.key == key, where
                    assert f.counter <= st.max_counter, f"{where}: {f} above max_counter {st.max_counter}"
                    assert hist.get(f.counter) == f, f"{where}: {f} was never written"
                    if f.tombstone:
                        assert f.counter > st.floor, f"{where}: tombstone {f} at or below floor {st.floor}"
                    else:
                        # A value deleted by a tombstone at or below our floor is one nothing can
                        # remove any more -- unless a write of the key above our max_counter is
                        # still to come (a truncated delta may leave a value a later write
                        # overwrote at the sender, and that write heals it).
                        writes = self.by_key[(o, st.incarnation)][key]
                        deleted = any(g.tombstone and f.counter < g.counter <= st.floor for g in writes)
                        assert not deleted or writes[-1].counter > st.max_counter, (
                            f"{where}: {f} is held though deleted at or below floor {st.floor}"
                        )
                    hk = (r, o, st.incarnation, key)
                    assert f.counter >= self.hw.get(hk, 0), (
                        f"{where}: key {key!r} went back from counter {self.hw[hk]} to {f}"
                    )
                    self.hw[hk] = f.counter
                now = (st.incarnation, st.floor, st.max_counter, st.heartbeat)
                prev = self.seen.get((r, o))
                if prev is not None:
                    assert now[0] >= prev[0], f"{where}: incarnation went back {prev} -> {now}"
                    assert now >= prev, f"{where}: (incarnation, floor, max, heartbeat) went back {prev} -> {now}"
                self.seen[(r, o)] = now
            # the OriginChanges handed out so far rebuild the replica (heartbeats aside)
            store = self.stores[r]
            for o, st in m.origins.items():
                want = (st.incarnation, st.max_counter, st.floor, st.facts)
                assert store.get(o, (st.incarnation, 0, 0, {})) == want, f"replica {r}: persisted {o} differs"
            assert set(store) <= set(m.origins)
            # our own origin is exactly what we wrote (minus purged tombstones)
            own = m.own
            assert own.incarnation == self.inc[r]
            expect = newest_per_key(self.history.get((r, own.incarnation), {}))
            got = {k: f for k, f in own.facts.items()}
            for k, f in expect.items():
                if f.tombstone and f.counter <= own.floor:
                    assert k not in got, f"{r}: purged tombstone {f} still held"
                else:
                    assert got.get(k) == f, f"{r}: own fact {k!r} is {got.get(k)}, wrote {f}"
            assert set(got) <= set(expect)

    def check_converged(self) -> None:
        for o in self.names:
            truth = self.hosts[o].content()[o]
            for r, m in self.hosts.items():
                assert o in m.origins, f"replica {r} never heard of origin {o}"
                assert m.content()[o] == truth, f"replica {r} disagrees with origin {o}"
            # beyond content(), replicas (the origin included) agree on tombstones and floors
            states = {r: full_state(m)[o] for r, m in self.hosts.items()}
            assert all(s == states[o] for s in states.values()), f"replicas of origin {o} differ: {states}"
        contents = [m.content() for m in self.hosts.values()]
        assert all(c == contents[0] for c in contents)


def newest_per_key(hist: dict[int, Fact]) -> dict[str, Fact]:
    out: dict[str, Fact] = {}
    for c in sorted(hist):
        out[hist[c].key] = hist[c]
    return out
