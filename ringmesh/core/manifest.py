"""The manifest: per-origin facts reconciled by Scuttlebutt anti-entropy.

Theory of operation
-------------------
Every host is the *origin* of its own facts (key -> opaque bytes) and the only writer of
them. Each write or delete takes the next value of the origin's counter, so the facts of one
origin form a history numbered 1, 2, 3, ... A key keeps only its newest fact; a delete leaves a
*tombstone* stamped with the hybrid-clock time of the delete.

A replica's knowledge of an origin is an `OriginState`: the origin's incarnation, the highest
counter it has seen (`max_counter`), the *floor* (tombstones with a counter at or below it have
been purged), and the facts. (`heartbeat` is no longer raised: liveness is membership's, and an
entry that changed every round made every digest news. The field stays in the wire and store
formats, carried along unchanged.) At the origin's own top counter,
and after any whole (untruncated) delta, a state obeys:

    a state at `max_counter` m holds, for every key, the newest fact among the origin's
    writes numbered <= m -- except that a tombstone numbered <= floor may be missing, and
    then no older value of that key is held either.

The digest is the version vector `{origin: (incarnation, max_counter, floor)}` (and the heartbeat).
`delta_for(digest, budget)` sends, per origin, the facts numbered above the other side's
`max_counter` in counter order, and truncates an origin's run only at a fact boundary, so the
receiver may raise its `max_counter` to the last fact it got (Scuttlebutt reconciliation, van
Renesse et al. 2008; chitchat). A truncated delta weakens the invariant: the sender no longer
has a write that a later write of the same key overwrote, so a receiver cut after write j may
keep an older value of a key rewritten above j; two replicas can then share a version vector
and differ in that key until the rewrite arrives (tests/core/test_manifest.py shows the case).
Nothing is lost and nothing deleted comes back: convergence is only delayed by a round.

Incarnations: a host that lost its disk restarts with a higher incarnation and counters from
zero; a higher incarnation replaces the origin's state whole. Tombstones are purged after a
grace period; a replica whose `max_counter` is below the sender's floor may still hold a value
whose tombstone was purged, so it is sent the origin's state whole (`reset`) and replaces its
own. Applying deltas is a join: any order, duplication or loss-then-retry converges.

Nothing here reads a clock or does I/O; times are HLC values passed in.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, NamedTuple

from . import hlc as _hlc
from .errors import LocalProtocolError

#: Per-fact and per-origin overheads used for byte budgets (close to the protobuf encoding).
FACT_OVERHEAD = 24
ORIGIN_OVERHEAD = 48
MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 64 * 1024
#: Counters, incarnations, heartbeats, terms and seqs count up by one from 0 (incarnations from
#: a ms timestamp) and never come near this. The codec refuses larger ones from peers, so that
#: one more still fits the u64 wire fields and SQLite's signed integers; what a host must be
#: able to count past (its own incarnation, a claim against it) it never takes from a peer at
#: this limit or above.
MAX_NUMBER = 1 << 62
#: The smallest budget that always lets one fact through.
MAX_ORIGIN_BYTES = 128  # as catalog.is_node_id allows
MIN_BUDGET = ORIGIN_OVERHEAD + MAX_ORIGIN_BYTES + MAX_KEY_BYTES + MAX_VALUE_BYTES + FACT_OVERHEAD


@dataclass(frozen=True, slots=True)
class Fact:
    key: str
    value: bytes
    counter: int
    deleted_at: int = 0  # HLC of the delete; 0 for a live fact

    @property
    def tombstone(self) -> bool:
        return self.deleted_at != 0

    def wire_size(self) -> int:
        return len(self.key.encode()) + len(self.value) + FACT_OVERHEAD


class OriginDigest(NamedTuple):
    """One origin's digest entry. A named tuple, not a dataclass: digests are compared and
    hashed entry by entry millions of times in a cold start (tuple equality is C code)."""

    incarnation: int
    heartbeat: int
    max_counter: int
    floor: int


Digest = Mapping[str, OriginDigest]

#: A digest entry standing for "no state of this origin here" (in partial digests).
ABSENT = OriginDigest(0, 0, 0, 0)
_ENTRY_KEY = b"ringmesh/vv/1"


def entry_hash(origin: str, d: OriginDigest) -> int:
    """A keyed 64-bit hash of one digest entry (heartbeat aside); ABSENT hashes to 0."""
    if d == ABSENT:
        return 0
    return _entry_hash(origin, d[0], d[2], d[3])


@functools.lru_cache(maxsize=1 << 16)
def _entry_hash(origin: str, incarnation: int, max_counter: int, floor: int) -> int:
    """Cached: the same entry is hashed by every Syn that lists it and every host that checks
    one (a pure function of its arguments, so the cache changes no answer)."""
    h = hashlib.blake2b(f"{origin}\0{incarnation}\0{max_counter}\0{floor}".encode(), digest_size=8, key=_ENTRY_KEY)
    return int.from_bytes(h.digest(), "big")


@dataclass(frozen=True, slots=True)
class OriginDelta:
    origin: str
    incarnation: int
    heartbeat: int
    floor: int
    reset: bool  # the facts are the origin's whole state up to `max_counter`
    from_counter: int  # facts numbered above this follow (0 when reset)
    max_counter: int  # the receiver's max_counter once applied
    facts: tuple[Fact, ...]

    def wire_size(self) -> int:
        return len(self.origin.encode()) + ORIGIN_OVERHEAD + sum(f.wire_size() for f in self.facts)


@dataclass(frozen=True, slots=True)
class Delta:
    origins: tuple[OriginDelta, ...] = ()

    def wire_size(self) -> int:
        return sum(o.wire_size() for o in self.origins)


@dataclass(frozen=True, slots=True)
class OriginChange:
    """What one apply or write changed for one origin, for the shell to persist."""

    origin: str
    incarnation: int
    heartbeat: int
    max_counter: int
    floor: int
    reset: bool  # drop every stored fact of this origin first
    upserts: tuple[Fact, ...]
    removed: tuple[str, ...]  # keys purged


@dataclass(slots=True)
class OriginState:
    incarnation: int
    heartbeat: int = 0
    max_counter: int = 0
    floor: int = 0
    facts: dict[str, Fact] = field(default_factory=dict)

    def digest(self) -> OriginDigest:
        return OriginDigest(self.incarnation, self.heartbeat, self.max_counter, self.floor)

    def facts_after(self, counter: int) -> list[Fact]:
        return sorted((f for f in self.facts.values() if f.counter > counter), key=lambda f: f.counter)

    def purge_through(self, floor: int) -> list[str]:
        """Raise the floor and drop the tombstones at or below it; returns the dropped keys."""
        if floor <= self.floor:
            return []
        self.floor = floor
        dropped = [k for k, f in self.facts.items() if f.tombstone and f.counter <= floor]
        for k in dropped:
            del self.facts[k]
        return dropped


class Manifest:
    """One host's replica of every origin's facts, its own included."""

    def __init__(self, me: str, incarnation: int) -> None:
        self.me = me
        self.origins: dict[str, OriginState] = {me: OriginState(incarnation)}
        # The digest is rebuilt copy-on-write: a dict handed out is never changed afterwards
        # (messages in flight hold it). `_entries`, `_hash` and `_vh` (the XOR of every
        # entry's hash) are kept up to date for the origins that moved (`_dirty`).
        self._digest: dict[str, OriginDigest] | None = None
        self._entries: dict[str, OriginDigest] = {}
        self._hash: dict[str, int] = {}
        self._vh = 0
        self._dirty: set[str] = {me}
        #: gossip rounds (`tick`), and the round each origin was last touched in, oldest first
        self.round = 0
        self._changed: dict[str, int] = {me: 0}
        #: the entries this round's Syn listed (antientropy.syn)
        self.listed: Mapping[str, OriginDigest] = {}
        self._observers: list[Callable[[OriginChange], None]] = []

    def watch(self, observer: Callable[[OriginChange], None]) -> None:
        """Call `observer` with every change, at the moment it is made, whoever makes it.

        A part that keeps an index or a cache of facts (membership's claims and views) watches
        instead of relying on every caller to pass the changes on: a write that reached the
        manifest some other way (a restart's `load`, a simulator's fault) cannot leave it stale."""
        self._observers.append(observer)

    # -- reading -------------------------------------------------------------------------

    @property
    def own(self) -> OriginState:
        return self.origins[self.me]

    def get(self, origin: str, key: str) -> bytes | None:
        st = self.origins.get(origin)
        f = st.facts.get(key) if st else None
        return None if f is None or f.tombstone else f.value

    def live_facts(self, prefix: str = "") -> Iterable[tuple[str, Fact]]:
        """Every live fact whose key starts with `prefix`, as (origin, fact), in a fixed order."""
        for origin in sorted(self.origins):
            for key, f in sorted((k, f) for k, f in self.origins[origin].facts.items() if k.startswith(prefix)):
                if not f.tombstone:
                    yield origin, f

    def digest(self) -> dict[str, OriginDigest]:
        """The whole version vector (a snapshot: never changed once handed out)."""
        self._refresh()
        if self._digest is None:
            self._digest = dict(self._entries)
        return self._digest

    def entry(self, origin: str) -> OriginDigest:
        """Our digest entry for `origin` (ABSENT if we hold no state of it)."""
        self._refresh()
        return self._entries.get(origin, ABSENT)

    def vector_hash(self) -> int:
        """The XOR of `entry_hash` over every origin: equal for equal vectors, in any order."""
        self._refresh()
        return self._vh

    def hash_of(self, origin: str) -> int:
        """`entry_hash` of our entry for `origin` (0 if we hold no state of it)."""
        self._refresh()
        return self._hash.get(origin, 0)

    def recent(self, rounds: int) -> dict[str, OriginDigest]:
        """The entries of the origins touched in the last `rounds` rounds (`tick`)."""
        self._refresh()
        out, since = {}, self.round - rounds
        for o in reversed(self._changed):
            if self._changed[o] < since:
                break
            if (e := self._entries.get(o)) is not None:
                out[o] = e
        return out

    def tick(self, keep: int = 64) -> None:
        """One gossip round passed; touches older than `keep` rounds are forgotten."""
        self.round += 1
        while self._changed:
            o = next(iter(self._changed))
            if self._changed[o] >= self.round - keep:
                break
            del self._changed[o]

    def _refresh(self) -> None:
        if not self._dirty:
            return
        for o in self._dirty:
            st = self.origins.get(o)
            old = self._hash.pop(o, 0)
            if st is None:
                self._entries.pop(o, None)
                new = 0
            else:
                e = self._entries[o] = st.digest()
                new = self._hash[o] = entry_hash(o, e)
            self._vh ^= old ^ new
        self._dirty, self._digest = set(), None

    def _touch(self, origin: str) -> None:
        self._dirty.add(origin)
        self._changed.pop(origin, None)
        self._changed[origin] = self.round

    def version_vector(self) -> dict[str, tuple[int, int]]:
        """`{origin: (incarnation, max_counter)}`: equal vectors mean equal facts."""
        return {o: (st.incarnation, st.max_counter) for o, st in sorted(self.origins.items())}

    def fingerprint(self) -> str:
        """A short hash of the version vector, to compare replicas at a glance."""
        h = hashlib.blake2b(digest_size=8)
        for o, (inc, mx) in self.version_vector().items():
            h.update(f"{o}\0{inc}\0{mx}\n".encode())
        return h.hexdigest()

    def content(self) -> dict[str, tuple[int, int, dict[str, Fact]]]:
        """The replicated content, heartbeats and floors aside: what converged replicas share."""
        return {
            o: (st.incarnation, st.max_counter, {k: f for k, f in st.facts.items() if not f.tombstone})
            for o, st in self.origins.items()
        }

    # -- writing our own facts -----------------------------------------------------------

    def put(self, key: str, value: bytes) -> OriginChange:
        try:
            size = len(key.encode())
        except UnicodeEncodeError:
            raise LocalProtocolError(f"fact key {key!r} is not valid UTF-8 text") from None
        if not key or size > MAX_KEY_BYTES:
            raise LocalProtocolError(f"fact key must be 1..{MAX_KEY_BYTES} bytes: {key!r}")
        if len(value) > MAX_VALUE_BYTES:
            raise LocalProtocolError(f"fact {key!r} is {len(value)} bytes; the limit is {MAX_VALUE_BYTES}")
        return self._write(Fact(key, bytes(value), 0))

    def delete(self, key: str, now_hlc: int) -> OriginChange | None:
        cur = self.own.facts.get(key)
        if cur is None or cur.tombstone:
            return None
        return self._write(Fact(key, b"", 0, deleted_at=max(1, now_hlc)))

    def _write(self, fact: Fact) -> OriginChange:
        st = self.own
        st.max_counter += 1
        fact = replace(fact, counter=st.max_counter)
        st.facts[fact.key] = fact
        self._touch(self.me)
        return self._change(self.me, False, (fact,), ())

    def reincarnate(self, incarnation: int) -> OriginChange:
        """Start a new life: every live fact of ours is rewritten under a new incarnation."""
        old = self.own
        if incarnation <= old.incarnation:
            raise LocalProtocolError("a new incarnation must be higher than the old one")
        st = OriginState(incarnation, heartbeat=old.heartbeat)
        for f in sorted(old.facts.values(), key=lambda f: f.counter):
            if not f.tombstone:
                st.max_counter += 1
                st.facts[f.key] = replace(f, counter=st.max_counter)
        self.origins[self.me] = st
        self._touch(self.me)
        return self._change(self.me, True, tuple(st.facts.values()), ())

    def purge_tombstones(self, now_hlc: int, grace_ms: int) -> list[OriginChange]:
        """Drop tombstones older than the grace period, on every origin (a local decision)."""
        horizon = _hlc.physical_ms(now_hlc) - grace_ms
        changes = []
        for origin, st in self.origins.items():
            old = [f.counter for f in st.facts.values() if f.tombstone and _hlc.physical_ms(f.deleted_at) < horizon]
            if old:
                removed = st.purge_through(max(old))
                changes.append(self._change(origin, False, (), tuple(removed)))
                self._touch(origin)
        return changes

    # -- anti-entropy --------------------------------------------------------------------

    def delta_for(self, theirs: Digest, budget: int, only: Iterable[str] | None = None) -> Delta:
        """The facts the holder of digest `theirs` lacks, at most `budget` bytes of them;
        with `only`, of those origins alone (`theirs` a partial digest: an origin missing from
        it is then not looked at, one at ABSENT is one they hold nothing of).

        Origins needing the fewest facts go first, so that many origins make progress in a
        round, and origins with nothing but a newer floor go last, so that they
        never crowd out a fact; an origin's run is cut only at a fact boundary.
        """
        wanted: list[tuple[int, str, bool, int, list[Fact]]] = []
        for origin in self.origins if only is None else [o for o in only if o in self.origins]:
            st, t = self.origins[origin], theirs.get(origin)
            if t is None or t == ABSENT or t.incarnation < st.incarnation:
                reset, start = True, 0
            elif t.incarnation > st.incarnation:
                continue
            elif t.max_counter < st.floor and t.floor < st.floor:
                reset, start = True, 0
            elif st.max_counter > t.max_counter or st.floor > t.floor:
                reset, start = False, t.max_counter
            else:
                continue
            facts = st.facts_after(start) if st.max_counter > start else []
            wanted.append((len(facts), origin, reset, start, facts))
        wanted.sort(key=lambda w: (w[0] == 0, w[0], w[1]))  # header-only news (a floor) last
        out: list[OriginDelta] = []
        left = budget
        for _, origin, reset, start, facts in wanted:
            st = self.origins[origin]
            header = len(origin.encode()) + ORIGIN_OVERHEAD
            if header > left:
                break
            left -= header
            n = 0
            for f in facts:
                if f.wire_size() > left:
                    break
                left -= f.wire_size()
                n += 1
            if n < len(facts):
                if n == 0 and (reset or st.max_counter > start):
                    left += header  # nothing useful fits; let a smaller origin use the room
                    continue
                mx = facts[n - 1].counter
            else:
                mx = st.max_counter
            out.append(OriginDelta(origin, st.incarnation, st.heartbeat, st.floor, reset, start, mx, tuple(facts[:n])))
        return Delta(tuple(out))

    def apply(self, delta: Delta) -> list[OriginChange]:
        """Join a delta into the replica; returns what changed (nothing, if it taught us nothing).

        Deltas about our own origin are ignored here (`Peer` looks at digests to notice that
        it was alive under this name before with a higher incarnation), except that we adopt a
        floor a replica raised by purging our tombstones: otherwise every replica re-sends it to
        us in each delta until we purge as far ourselves.
        """
        changes = []
        for od in delta.origins:
            ch = self._adopt_own_floor(od) if od.origin == self.me else self._apply_origin(od)
            if ch is not None:
                changes.append(ch)
                self._touch(od.origin)
        return changes

    def _adopt_own_floor(self, od: OriginDelta) -> OriginChange | None:
        st = self.own
        if od.incarnation != st.incarnation or not st.floor < od.floor <= st.max_counter:
            return None
        return self._change(self.me, False, (), tuple(st.purge_through(od.floor)))

    def _apply_origin(self, od: OriginDelta) -> OriginChange | None:
        st = self.origins.get(od.origin)
        replace_whole = od.reset and (
            st is None
            or od.incarnation > st.incarnation
            or (od.incarnation == st.incarnation and st.max_counter < od.floor and st.floor < od.floor)
        )
        if replace_whole:
            new = OriginState(od.incarnation, od.heartbeat, od.max_counter, od.floor)
            new.facts = {f.key: f for f in od.facts if not (f.tombstone and f.counter <= od.floor)}
            self.origins[od.origin] = new
            return self._change(od.origin, True, tuple(new.facts.values()), ())
        if st is None or od.incarnation != st.incarnation or od.from_counter > st.max_counter:
            return None  # stale or out of order: a later round will send what is missing
        if st.max_counter < st.floor and od.floor < st.floor:
            # We are part-way through a (truncated) reset. A sender whose floor is below ours
            # may still hold values whose deleting tombstone, at or below our floor, was
            # purged: only a sender at or past our floor can continue the reset.
            return None
        old_floor, floor = st.floor, max(st.floor, od.floor)
        upserts, removed = [], []
        for f in od.facts:
            if f.counter <= st.max_counter:
                continue  # a late delta: we hold this fact, a newer one, or purged its deleter
            cur = st.facts.get(f.key)
            if cur is not None and cur.counter >= f.counter:
                continue
            if f.tombstone and f.counter <= floor:  # already purged: drop what it deletes
                if cur is not None:
                    del st.facts[f.key]
                    removed.append(f.key)
                continue
            st.facts[f.key] = f
            upserts.append(f)
        removed += st.purge_through(od.floor)
        changed = bool(upserts or removed) or od.max_counter > st.max_counter or floor > old_floor
        st.max_counter = max(st.max_counter, od.max_counter)
        if not changed:
            return None
        return self._change(od.origin, False, tuple(upserts), tuple(removed))

    def load(self, origin: str, state: OriginState) -> None:
        """Install a state read back from disk (the shell's restart path)."""
        self.origins[origin] = state
        self._touch(origin)
        self.snapshot(origin)

    def snapshot(self, origin: str) -> OriginChange:
        """The origin's whole state as one change (`reset`, every fact, tombstones included):
        what rewrites a store that may have missed some of its changes."""
        return self._change(
            origin, True, tuple(sorted(self.origins[origin].facts.values(), key=lambda f: f.counter)), ()
        )

    def _change(self, origin: str, reset: bool, upserts: tuple[Fact, ...], removed: tuple[str, ...]) -> OriginChange:
        st = self.origins[origin]
        ch = OriginChange(origin, st.incarnation, st.heartbeat, st.max_counter, st.floor, reset, upserts, removed)
        for observe in self._observers:
            observe(ch)
        return ch
