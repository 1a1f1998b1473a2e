"""Law: membership's cached views, claim index and gone set, and the game streams' marks
index, always equal a fresh computation.

`Membership` caches each member's view and keeps an index of who claims what; both are kept
by the manifest's `watch` hook, so they must be right after *any* sequence of changes, however
they reached the manifest: own writes (claims, alive, left, garbage), deltas truncated or
whole, tombstone purges and the resets they force, incarnation changes, wiped restarts, and
restarts from the persisted store (with the membership built before or after the load, as the
daemon and the simulator do it). The sequence is Hypothesis's to choose.

A stale cache is how the core once crashed (issue 22: `view()` said SUSPECT while the claims
it was computed from were gone, and `_check_suspicions` took the max of nothing).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmesh.core import catalog, keys, streams
from ringmesh.core.hlc import HybridClock
from ringmesh.core.manifest import Fact, Manifest, OriginState
from ringmesh.core.membership import (
    DEAD,
    LEFT,
    Membership,
    claims_about,
    view_of,
)
from ringmesh.core.messages import Timer

from ._world import World

NAMES = ["a", "b", "c", "d"]
name = st.sampled_from(NAMES)

ops = st.one_of(
    st.tuples(st.just("claim"), name, name, st.sampled_from(["suspect", "dead", "bogus"]), st.integers(0, 3)),
    st.tuples(st.just("garbage"), name, name, st.sampled_from([b"\xc1", b"\x92\x01\x02", catalog.pack({"s": 1})])),
    st.tuples(st.just("alive"), name, st.integers(0, 4)),
    st.tuples(st.just("left"), name, st.integers(0, 4)),
    st.tuples(st.just("retract"), name, name),
    st.tuples(st.just("exchange"), name, name, st.sampled_from([120, 300, 1 << 40])),
    st.tuples(st.just("purge"), name),
    st.tuples(st.just("tick"), st.integers(1, 5000)),
    st.tuples(st.just("wipe"), name),
    st.tuples(st.just("reincarnate"), name),
    st.tuples(st.just("restart"), name, st.booleans()),
    st.tuples(st.just("react"), name),
    st.tuples(st.just("hw"), name, name, st.one_of(st.integers(0, 9), st.just(-1), st.just("x"))),
    st.tuples(st.just("hw-delete"), name, name),
)


def _membership(w: World, n: str) -> Membership:
    return Membership(n, w.hosts[n], HybridClock(0), random.Random(0))


def _restart(w: World, n: str, build_first: bool) -> Membership:
    """A process restart: the replica read back from what its changes persisted."""
    m = Manifest(n, w.inc[n])
    w.hosts[n] = m
    mem = _membership(w, n) if build_first else None  # the daemon built the peer, then loaded
    for origin, (inc, mx, floor, facts) in sorted(w.stores[n].items()):
        m.load(origin, OriginState(inc, 0, mx, floor, dict(facts)))
    return mem or _membership(w, n)


def _fresh_claimers(m: Manifest) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for origin, f in m.live_facts(keys.CLAIM):
        out.setdefault(f.key[len(keys.CLAIM) :], set()).add(origin)
    return out


def _fresh_marks(m: Manifest) -> dict:
    out: dict = {}
    for origin, f in m.live_facts(keys.HW):
        stream, hw = streams._hw_of(f.key, f)
        if stream is not None and hw is not None:
            out.setdefault(stream, {})[origin] = hw
    return out


def _check(w: World, mem: dict[str, Membership]) -> None:
    for n in NAMES:
        m = w.hosts[n]
        assert mem[n].m is m
        assert streams.marks(m) == _fresh_marks(m), n
        assert mem[n].gone() == {x for x in NAMES if x != n and view_of(m, x) in (DEAD, LEFT)}, n
        fresh = _fresh_claimers(m)
        assert {x: s for x, s in mem[n].claimers.items() if s} == fresh, n
        for x in NAMES:
            if x != n:
                assert mem[n].view(x) == view_of(m, x), (n, x)
                assert mem[n].claims(x) == claims_about(m, x), (n, x)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=40))
def test_cached_views_equal_a_fresh_computation(steps):
    w = World(NAMES)
    mem = {n: _membership(w, n) for n in NAMES}
    for step in steps:
        kind, *args = step
        if kind == "claim":
            h, x, state, inc = args
            if h != x:
                w.put(h, keys.CLAIM + x, catalog.pack({"s": state, "i": inc}))
        elif kind == "garbage":
            h, x, value = args
            w.put(h, keys.CLAIM + x, value)
        elif kind in ("alive", "left"):
            h, inc = args
            w.put(h, keys.ALIVE if kind == "alive" else keys.LEFT, catalog.pack({"i": inc}))
        elif kind == "retract":
            w.delete(args[0], keys.CLAIM + args[1])
        elif kind == "exchange":
            a, b, budget = args
            if a != b:
                w.exchange(a, b, budget)
        elif kind == "purge":
            w.purge(args[0], 1000)
        elif kind == "tick":
            w.tick(args[0])
        elif kind == "wipe":
            w.restart_wiped(args[0])
            mem[args[0]] = _membership(w, args[0])
        elif kind == "reincarnate":
            w.reincarnate(args[0])
        elif kind == "restart":
            mem[args[0]] = _restart(w, *args)
        elif kind == "hw":  # a holder's mark of a stream (or a value that says none)
            h, origin, hw = args
            w.put(h, streams.hw_key((origin, "sq8")), catalog.pack({"hw": hw}))
        elif kind == "hw-delete":
            w.delete(args[0], streams.hw_key((args[1], "sq8")))
        elif kind == "react":  # the membership acts on what changed (claims, retractions)
            out = mem[args[0]].on_timer(Timer.SUSPICION, 100.0, [x for x in NAMES if x != args[0]])
            for ch in out.changes:
                w._record(ch)
                w._persist(args[0], [ch])
        _check(w, mem)


def test_a_claim_overwritten_behind_the_peers_back_does_not_crash_the_suspicion_timer():
    """The crash of issue 22, as the simulator's corrupting host produced it: our own claim
    about x replaced by a value that does not decode, with no word to the membership."""
    m = Manifest("a", 1)
    mem = Membership("a", m, HybridClock(0), random.Random(0))
    mem.on_manifest_changed(0.0)
    m.put(keys.CLAIM + "x", catalog.pack({"s": "suspect", "i": 0}))
    out = mem.on_manifest_changed(0.0)
    assert mem.view("x") == "suspect" and "x" in mem.suspect_since and out.timers
    m.put(keys.CLAIM + "x", b"\x92\x01\x02")  # garbage, written past the membership
    mem.on_timer(Timer.SUSPICION, 1.0, ["x"])  # raised ValueError: max() arg is an empty sequence
    assert mem.view("x") == "alive" and "x" not in mem.suspect_since


def test_claims_of_a_restarted_host_count_when_loaded_after_the_membership_was_built():
    """The daemon built its peer on an empty manifest and loaded the store after: the claims
    on disk were invisible to membership until rewritten."""
    m = Manifest("a", 1)
    mem = Membership("a", m, HybridClock(0), random.Random(0))
    claim = Fact(keys.CLAIM + "x", catalog.pack({"s": "dead", "i": 0}), 1)
    m.load("b", OriginState(1, 0, 1, 0, {claim.key: claim}))
    assert mem.view("x") == "dead" and mem.claimers["x"] == {"b"}


def test_delete_then_purge_of_a_claim_is_seen():
    w = World(["a", "b"])
    mem = _membership(w, "a")
    w.put("b", keys.CLAIM + "x", catalog.pack({"s": "suspect", "i": 0}))
    w.exchange("b", "a", 1 << 40)
    assert mem.view("x") == "suspect"
    w.delete("b", keys.CLAIM + "x")
    w.tick(10_000)
    w.purge("b", 1000)
    w.exchange("b", "a", 1 << 40)
    assert mem.view("x") == "alive" == view_of(w.hosts["a"], "x")


def test_an_origin_sent_whole_replaces_its_marks():
    """A reset (a purge past what the receiver holds) replaces an origin whole: marks that
    were in the old state and are not in the new one leave the index."""
    w = World(["a", "b"])
    assert streams.marks(w.hosts["a"]) == {}
    w.put("b", streams.hw_key(("b", "sq8")), catalog.pack({"hw": 7}))
    w.exchange("b", "a", 1 << 40)
    assert streams.marks(w.hosts["a"]) == {("b", "sq8"): {"b": 7}}
    w.delete("b", streams.hw_key(("b", "sq8")))
    w.put("b", streams.hw_key(("b", "hex")), catalog.pack({"hw": 3}))
    w.tick(5000)
    w.purge("b", 1000)  # a never saw the tombstone, which is gone now: b's state comes whole
    w.exchange("b", "a", 1 << 40)
    assert streams.marks(w.hosts["a"]) == _fresh_marks(w.hosts["a"]) == {("b", "hex"): {"b": 3}}
