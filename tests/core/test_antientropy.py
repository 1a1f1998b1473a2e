"""Laws of the fingerprint and of the exchanges that use it (ringmesh/core/antientropy.py).

The fingerprint (`Manifest.vector_hash`) is kept incrementally; it must not depend on the order
in which entries came or on the states an origin went through, and must see a difference in
any one entry. Two replicas that exchange (losing and duplicating messages) until their
fingerprints agree hold equal version vectors and, with whole deltas, equal content.
"""

from __future__ import annotations

from functools import reduce

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmesh.core import antientropy as ae
from ringmesh.core.manifest import ABSENT, Manifest, OriginDigest, OriginState, entry_hash
from ringmesh.core.messages import Ack, Syn, SynAck

from ._world import HUGE, World
from .test_manifest_laws import NAMES, WORKING_BUDGET, ops, run

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NUMBERS = st.integers(0, 5)
ENTRY = st.tuples(st.integers(1, 3), NUMBERS, NUMBERS)  # incarnation, max_counter, floor
ENTRIES = st.dictionaries(st.sampled_from(["a", "b", "c", "d", "e", "f"]), ENTRY, max_size=6)
RECENT = 2


def _state(e: tuple[int, int, int]) -> OriginState:
    return OriginState(e[0], max_counter=e[1], floor=e[2])


def _built(entries: dict, order: list[str], detours: dict) -> Manifest:
    """A replica whose origins were loaded in `order`, some first at another state (`detours`)."""
    m = Manifest("me", 1)
    for o in order:
        if o in detours:
            m.load(o, _state(detours[o]))
            m.vector_hash()  # the detour is hashed in before it is replaced
        m.load(o, _state(entries[o]))
    return m


@SETTINGS
@given(ENTRIES, st.randoms(use_true_random=False), st.dictionaries(st.sampled_from("abcdef"), ENTRY))
def test_any_order_of_the_same_entries_gives_the_same_fingerprint(entries, rnd, detours):
    order = sorted(entries)
    shuffled = list(order)
    rnd.shuffle(shuffled)
    a = _built(entries, order, {})
    b = _built(entries, shuffled, {o: d for o, d in detours.items() if o in entries})
    assert a.vector_hash() == b.vector_hash()
    scratch = reduce(lambda x, kv: x ^ entry_hash(kv[0], kv[1]), a.digest().items(), 0)
    assert a.vector_hash() == scratch


@SETTINGS
@given(ENTRIES, st.sampled_from("abcdef"), st.one_of(st.none(), ENTRY))
def test_a_difference_in_any_one_entry_is_seen(entries, origin, other):
    """Changing, adding or dropping one origin's entry changes the fingerprint."""
    changed = dict(entries)
    if other is None:
        changed.pop(origin, None)
    else:
        changed[origin] = other
    a, b = _built(entries, sorted(entries), {}), _built(changed, sorted(changed), {})
    if a.digest() == b.digest():
        assert a.vector_hash() == b.vector_hash()
    else:
        assert a.vector_hash() != b.vector_hash()
        # and the receiver's check sees that the listed entries explain the difference
        assert ae.explains(b, a.vector_hash(), {origin: a.entry(origin)})
        assert not ae.explains(b, a.vector_hash(), {})


def test_absent_hashes_to_nothing():
    m = Manifest("me", 1)
    assert m.hash_of("nobody") == 0 == entry_hash("nobody", ABSENT)
    assert entry_hash("x", OriginDigest(1, 0, 0, 0)) != 0


def _gossip(w: World, src: str, dst: str, budget: int, lose, dup) -> None:
    """One exchange from `src` (Syn) to `dst`, each message lost or duplicated as drawn."""
    queue: list[tuple[str, str, Syn | SynAck | Ack]] = [(src, dst, ae.syn(w.hosts[src], RECENT))]
    while queue:
        s, d, msg = queue.pop(0)
        if lose():
            continue
        for _ in range(2 if dup() else 1):
            m = w.hosts[d]
            if isinstance(msg, Syn):
                queue.append((d, s, ae.on_syn(m, msg, budget, RECENT)))
            elif isinstance(msg, SynAck):
                w.apply(d, msg.delta)
                queue += [(d, s, r) for r in ae.on_synack(m, msg, budget)]
            else:
                w.apply(d, msg.delta)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops(3), st.lists(st.booleans(), max_size=64), WORKING_BUDGET, st.data())
def test_replicas_that_exchange_until_fingerprints_agree_hold_equal_manifests(script, faults, budget, data):
    """States reached by any script (writes, purges, restarts, truncated and lost deltas), some
    replicas with nothing recent left to list; two of them gossip through antientropy (rounds
    passing, messages lost and duplicated as drawn, then none) until their fingerprints agree:
    their version vectors are then equal, and after whole deltas so is their content."""
    w = run(World(NAMES[:3]), script)
    a, b = data.draw(st.sampled_from([("a", "b"), ("b", "c"), ("c", "a")]))
    drawn = iter(faults)
    for name in data.draw(st.sets(st.sampled_from(NAMES[:3]))):  # these saw the script long ago
        for _ in range(RECENT + 1):
            w.hosts[name].tick(keep=RECENT)

    def fault() -> bool:
        return next(drawn, False)

    for i in range(200):
        if w.hosts[a].vector_hash() == w.hosts[b].vector_hash():
            break
        if i % 3 == 2:
            for m in w.hosts.values():
                m.tick(keep=RECENT)
        src, dst = (a, b) if i % 2 == 0 else (b, a)
        _gossip(w, src, dst, budget, fault, fault)
        w.check_safety()
    else:
        raise AssertionError("the fingerprints never agreed")
    x, y = w.hosts[a], w.hosts[b]
    assert _vector(x) == _vector(y)
    if budget == HUGE:
        _gossip(w, a, b, HUGE, lambda: False, lambda: False)  # agreeing replicas: nothing moves
        assert x.content() == y.content() or _truncated_before(script)


def _vector(m: Manifest) -> dict[str, tuple[int, int, int]]:
    return {o: (d.incarnation, d.max_counter, d.floor) for o, d in m.digest().items()}


def _truncated_before(script: list[tuple]) -> bool:
    """A truncated delta in the script can leave two replicas at one vector with a key apart
    (manifest.py, "A truncated delta weakens the invariant"): content is not compared then."""
    return any(op in ("exchange", "send") and args[2] != HUGE for op, *args in script)


def test_agreeing_replicas_exchange_one_entry_each_way():
    w = World(["a", "b"])
    for i in range(20):
        w.put("a", f"k{i}", b"v")
    w.settle(HUGE)
    for m in w.hosts.values():
        for _ in range(RECENT + 1):
            m.tick(keep=RECENT)
    x, y = w.hosts["a"], w.hosts["b"]
    s = ae.syn(x, RECENT)
    assert list(s.digest) == ["a"] and s.scope == ae.RECENT
    reply = ae.on_syn(y, s, HUGE, RECENT)
    assert not reply.mismatch and list(reply.digest) == ["b"] and reply.delta.origins == ()
    assert ae.on_synack(x, reply, HUGE) == []


def test_an_old_difference_outside_the_listed_entries_falls_back_to_the_whole_digest():
    w = World(["a", "b", "c"])
    w.settle(HUGE)
    w.put("c", "k", b"v")
    w.exchange("c", "a", HUGE)  # a holds c's fact, b does not; nobody lists it any more
    for m in w.hosts.values():
        for _ in range(RECENT + 1):
            m.tick(keep=RECENT)
    x, y = w.hosts["b"], w.hosts["a"]
    reply = ae.on_syn(y, ae.syn(x, RECENT), HUGE, RECENT)
    assert reply.mismatch
    w.apply("b", reply.delta)
    follow = ae.on_synack(x, reply, HUGE)
    full = follow[-1]
    assert isinstance(full, Syn) and full.scope == ae.FULL and set(full.digest) == set(x.origins)
    last = ae.on_syn(y, full, HUGE, RECENT)
    assert last.scope == ae.FULL
    w.apply("b", last.delta)
    assert x.get("c", "k") == b"v" and x.vector_hash() == y.vector_hash()
