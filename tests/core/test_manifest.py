"""Example-based tests of the manifest: the API, and each tricky path built explicitly.

The properties (join laws, convergence under any schedule, truncation, tombstones,
incarnations) are in test_manifest_laws.py; the regressions found there are pinned here.
"""

from __future__ import annotations

import copy

import pytest

from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.hlc import pack
from ringmesh.core.manifest import (
    FACT_OVERHEAD,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    MIN_BUDGET,
    ORIGIN_OVERHEAD,
    Delta,
    Fact,
    Manifest,
)

from ._world import HUGE, World, full_state, merge

#: room for one fact of origin "a" with a 1-byte key and a value of up to 3 bytes, not two
ONE_FACT = ORIGIN_OVERHEAD + 1 + FACT_OVERHEAD + 4


# -- the local API ----------------------------------------------------------------------------


def test_put_get_delete_and_counters():
    m = Manifest("a", 1)
    ch = m.put("k", b"v")
    assert (ch.origin, ch.incarnation, ch.max_counter, ch.reset) == ("a", 1, 1, False)
    assert ch.upserts == (Fact("k", b"v", 1),)
    assert m.get("a", "k") == b"v"
    assert m.put("k", b"w").max_counter == 2
    ch = m.delete("k", pack(5000))
    assert ch.upserts == (Fact("k", b"", 3, deleted_at=pack(5000)),)
    assert m.get("a", "k") is None
    assert m.delete("k", pack(6000)) is None  # already deleted
    assert m.delete("never", pack(6000)) is None
    m.put("z", b"")
    assert m.own.max_counter == 4
    assert list(m.live_facts()) == [("a", Fact("z", b"", 4))]
    # a delete at HLC 0 still leaves a tombstone
    m.put("t", b"x")
    assert m.delete("t", 0).upserts[0].tombstone


@pytest.mark.parametrize(
    "key, value",
    [
        ("", b"v"),
        ("k" * (MAX_KEY_BYTES + 1), b"v"),
        ("é" * (MAX_KEY_BYTES // 2 + 1), b""),
        ("k", b"x" * (MAX_VALUE_BYTES + 1)),
    ],
)
def test_put_rejects_bad_facts(key, value):
    m = Manifest("a", 1)
    with pytest.raises(LocalProtocolError):
        m.put(key, value)
    assert m.own.max_counter == 0


def test_put_accepts_the_largest_fact():
    m = Manifest("a", 1)
    m.put("k" * MAX_KEY_BYTES, b"x" * MAX_VALUE_BYTES)
    assert m.own.max_counter == 1


def test_live_facts_filters_by_prefix_in_a_fixed_order():
    w = World(["a", "b"])
    w.put("b", "v/model/x", b"1")
    w.put("a", "v/model/y", b"2")
    w.put("a", "h/model/y", b"3")
    w.exchange("b", "a", HUGE)
    assert [(o, f.key) for o, f in w.hosts["a"].live_facts("v/")] == [("a", "v/model/y"), ("b", "v/model/x")]


def test_version_vector_and_fingerprint():
    a, b = Manifest("a", 1), Manifest("b", 1)
    a.put("k", b"v")
    b.apply(a.delta_for(b.digest(), HUGE))
    assert b.version_vector() == {"a": (1, 1), "b": (1, 0)}
    a.apply(b.delta_for(a.digest(), HUGE))
    assert a.fingerprint() == b.fingerprint()
    a.put("k", b"w")
    assert a.fingerprint() != b.fingerprint()


def test_content_ignores_tombstones_floors_and_heartbeats():
    a = Manifest("a", 1)
    a.put("k", b"v")
    a.delete("k", pack(1000))
    b = copy.deepcopy(a)
    b.purge_tombstones(pack(10_000), 0)
    assert b.own.floor == 2 and "k" not in b.own.facts and "k" in a.own.facts
    assert a.content() == b.content()


# -- anti-entropy -------------------------------------------------------------------------------


def test_delta_is_in_counter_order_and_cut_at_a_fact_boundary():
    a, b = Manifest("a", 1), Manifest("b", 1)
    for i in range(5):
        a.put(f"k{i}", b"v")
    d = a.delta_for(b.digest(), ORIGIN_OVERHEAD + 1 + 2 * (FACT_OVERHEAD + 3) + 1)
    assert d.wire_size() <= ORIGIN_OVERHEAD + 1 + 2 * (FACT_OVERHEAD + 3) + 1
    (od,) = d.origins
    assert [f.counter for f in od.facts] == [1, 2] and od.max_counter == 2 and od.reset
    b.apply(d)
    assert b.origins["a"].max_counter == 2
    d = a.delta_for(b.digest(), HUGE)
    (od,) = d.origins
    assert (od.reset, od.from_counter, [f.counter for f in od.facts], od.max_counter) == (False, 2, [3, 4, 5], 5)
    b.apply(d)
    assert b.content()["a"] == a.content()["a"]
    assert a.delta_for(b.digest(), HUGE) == Delta()


def test_a_budget_too_small_for_any_fact_sends_nothing_of_that_origin():
    a, b = Manifest("a", 1), Manifest("b", 1)
    a.put("key", b"value")
    assert a.delta_for(b.digest(), ORIGIN_OVERHEAD + 1 + FACT_OVERHEAD) == Delta()
    assert a.delta_for(b.digest(), 0) == Delta()


def test_min_budget_lets_a_largest_fact_through():
    origin = "o" * 64
    a, b = Manifest(origin, 1), Manifest("b", 1)
    a.put("k" * MAX_KEY_BYTES, b"x" * MAX_VALUE_BYTES)
    a.put("k2", b"x" * MAX_VALUE_BYTES)
    d = a.delta_for(b.digest(), MIN_BUDGET)
    assert d.wire_size() <= MIN_BUDGET
    assert len(d.origins) == 1 and len(d.origins[0].facts) == 1
    b.apply(d)
    b.apply(a.delta_for(b.digest(), MIN_BUDGET))
    assert b.content()[origin] == a.content()[origin]


def test_min_budget_lets_a_largest_fact_through_while_floors_change():
    """MIN_BUDGET promises one fact per delta, even when other origins have nothing but a
    newer floor: those headers go last."""
    ms = {n: Manifest(n, 1) for n in "abcd"}
    ms["a"].put("k" * MAX_KEY_BYTES, b"x" * MAX_VALUE_BYTES)
    ms["c"].apply(ms["a"].delta_for(ms["c"].digest(), HUGE))
    for i in range(5):
        for n in "bc":
            ms[n].put(f"t{i}", b"")
            ms[n].delete(f"t{i}", pack(1000))
        ms["d"].apply(ms["b"].delta_for(ms["d"].digest(), HUGE))
        ms["d"].apply(ms["c"].delta_for(ms["d"].digest(), HUGE))
        for n in "bc":
            ms[n].purge_tombstones(pack(10_000), 0)
        ms["c"].apply(ms["b"].delta_for(ms["c"].digest(), HUGE))
        ms["d"].apply(ms["c"].delta_for(ms["d"].digest(), MIN_BUDGET))
    assert ms["d"].content()["a"] == ms["a"].content()["a"]


def test_small_origins_go_first_so_many_make_progress():
    w = World(["a", "b", "c"])
    for i in range(6):
        w.put("a", f"k{i}", b"v")
    w.put("b", "k", b"v")
    d = w.delta("a", "c", HUGE)
    assert [od.origin for od in d.origins] == ["a"]
    w.exchange("a", "b", HUGE)
    d = w.delta("b", "c", ORIGIN_OVERHEAD + 1 + FACT_OVERHEAD + 2 + ORIGIN_OVERHEAD + 1 + FACT_OVERHEAD + 3)
    assert [od.origin for od in d.origins] == ["b", "a"]
    assert [len(od.facts) for od in d.origins] == [1, 1]


def test_apply_ignores_facts_about_ourselves():
    a, b = Manifest("a", 1), Manifest("a", 1)
    b.put("k", b"v")
    assert a.apply(b.delta_for(a.digest(), HUGE)) == []
    assert a.own.max_counter == 0


def test_an_idle_origin_is_no_news():
    """Nothing changes an origin's digest entry but its own writes, purges and incarnations:
    replicas that agree send each other nothing, however long they wait."""
    a, b = Manifest("a", 1), Manifest("b", 1)
    a.put("k", b"v")
    b.apply(a.delta_for(b.digest(), HUGE))
    a.apply(b.delta_for(a.digest(), HUGE))
    before = (a.digest(), b.digest())
    assert a.delta_for(b.digest(), HUGE) == Delta() == b.delta_for(a.digest(), HUGE)
    assert (a.digest(), b.digest()) == before


# -- tombstones ---------------------------------------------------------------------------------


def test_purge_respects_the_grace_period():
    m = Manifest("a", 1)
    m.put("k", b"v")
    m.delete("k", pack(10_000))
    assert m.purge_tombstones(pack(11_000), 1000) == []  # exactly at the horizon: kept
    (ch,) = m.purge_tombstones(pack(11_001), 1000)
    assert (ch.removed, ch.floor, m.own.floor) == (("k",), 2, 2)
    assert "k" not in m.own.facts


def test_a_replica_far_behind_the_purge_gets_the_state_whole():
    w = World(["a", "b", "c"])
    w.put("a", "k", b"v")
    w.settle(HUGE)
    w.delete("a", "k")
    w.put("a", "j", b"w")
    w.exchange("a", "b", HUGE)  # c stays behind, holding k
    w.tick(10_000)
    w.purge("a", 1000)
    w.purge("b", 1000)
    assert w.hosts["c"].get("a", "k") == b"v"
    d = w.delta("b", "c", HUGE)
    assert [od.reset for od in d.origins if od.origin == "a"] == [True]
    w.apply("c", d)
    assert w.hosts["c"].get("a", "k") is None
    assert w.hosts["c"].content()["a"] == w.hosts["a"].content()["a"]
    w.check_safety()


def test_a_late_delta_does_not_resurrect_a_purged_key():
    """Regression: a delta computed before the delete, delivered after the receiver had
    learnt the delete and purged its tombstone, put the deleted value back for good."""
    w = World(["a", "b", "c"])
    w.put("a", "k", b"doomed")
    w.exchange("a", "c", HUGE)
    late = w.delta("c", "b", HUGE)  # carries k = doomed
    w.delete("a", "k")
    w.exchange("a", "b", HUGE)
    w.check_safety()  # b held the tombstone
    w.tick(10_000)
    w.purge("b", 1000)
    w.apply("b", late)
    w.check_safety()
    assert w.hosts["b"].get("a", "k") is None
    w.settle(HUGE)
    w.check_converged()


def test_a_truncated_reset_is_not_continued_from_below_its_floor():
    """Regression: a replica part-way through a truncated reset (floor above max_counter)
    took facts from a replica below that floor, among them a value whose tombstone had been
    purged; the continuation from the origin could never remove it again."""
    w = World(["a", "b", "c"])
    w.put("a", "x", b"1")
    w.put("a", "k", b"doomed")
    w.put("a", "y", b"3")
    w.exchange("a", "c", HUGE)  # c: x, k, y at max_counter 3
    w.delete("a", "k")
    w.put("a", "z", b"5")
    w.tick(10_000)
    w.purge("a", 1000)  # a: floor 4
    w.exchange("a", "b", ONE_FACT)  # b: the first fact of a reset
    st = w.hosts["b"].origins["a"]
    assert (st.max_counter, st.floor) == (1, 4)
    w.exchange("c", "b", HUGE)  # c is below the floor: refused
    assert w.hosts["b"].get("a", "k") is None
    w.exchange("a", "b", HUGE)
    assert w.hosts["b"].content()["a"] == w.hosts["a"].content()["a"]
    w.settle(ONE_FACT)
    w.check_converged()


# -- truncation ---------------------------------------------------------------------------------


def _gap_world() -> World:
    """b and c both at max_counter 3 of origin a, with different values of k."""
    w = World(["a", "b", "c", "d"])
    w.put("a", "k", b"old")  # 1
    w.exchange("a", "b", HUGE)  # b: k=old at 1
    w.put("a", "k", b"mid")  # 2
    w.put("a", "j", b"x")  # 3
    w.exchange("a", "d", HUGE)  # d: k=mid, j at 3
    w.put("a", "k", b"new")  # 4
    w.exchange("a", "b", ONE_FACT)  # a sends j@3 only: b is at 3, k still "old"
    w.exchange("d", "c", HUGE)  # c: k=mid, j at 3
    return w


@pytest.mark.xfail(strict=True, reason="known: a truncated delta can leave a stale value below max_counter")
def test_equal_version_vectors_mean_equal_facts():
    """What `version_vector()` promises, and the module docstring's invariant for every prefix.

    A delta cut after j@3 raises b to max_counter 3 while k's write 2 (superseded at the
    sender by write 4) never reaches it, so b and c agree on the vector but not on k. The
    sender has no record of write 2, so this cannot be fixed at the cut; it heals when write
    4 arrives (next test). Remove the xfail if the protocol ever closes the gap."""
    w = _gap_world()
    b, c = w.hosts["b"], w.hosts["c"]
    assert b.version_vector()["a"] == c.version_vector()["a"] == (1, 3)
    assert merge(b, c).content() == merge(c, b).content()  # the join law fails with them
    assert b.content()["a"] == c.content()["a"]


def test_a_truncation_gap_heals_when_the_overwrite_arrives():
    w = _gap_world()
    assert w.hosts["b"].get("a", "k") == b"old"
    w.check_safety()
    w.exchange("a", "b", ONE_FACT)
    w.exchange("a", "c", ONE_FACT)
    assert w.hosts["b"].get("a", "k") == w.hosts["c"].get("a", "k") == b"new"
    w.settle(ONE_FACT)
    w.check_converged()


# -- incarnations ---------------------------------------------------------------------------------


def test_a_wiped_origin_replaces_its_old_life():
    w = World(["a", "b", "c"])
    w.put("a", "old", b"1")
    w.put("a", "k", b"1")
    w.settle(HUGE)
    stale = w.delta("b", "c", HUGE)  # nothing new, but about incarnation 1
    w.send("a", "c", HUGE)
    w.restart_wiped("a")
    w.put("a", "k", b"2")
    w.exchange("a", "b", HUGE)
    assert w.hosts["b"].origins["a"].incarnation == 2
    assert w.hosts["b"].get("a", "old") is None and w.hosts["b"].get("a", "k") == b"2"
    w.exchange("b", "c", HUGE)
    w.apply("c", stale)
    w.deliver(0)  # the old life's delta, late
    assert w.hosts["c"].get("a", "old") is None
    w.check_safety()
    w.settle(HUGE)
    w.check_converged()


def test_reincarnate_rewrites_live_facts_under_the_new_incarnation():
    m = Manifest("a", 3)
    m.put("x", b"1")
    m.put("y", b"2")
    m.delete("x", pack(1000))
    ch = m.reincarnate(4)
    assert ch.reset and ch.incarnation == 4 and ch.upserts == (Fact("y", b"2", 1),)
    assert (m.own.incarnation, m.own.max_counter) == (4, 1)
    with pytest.raises(LocalProtocolError):
        m.reincarnate(4)
    b = Manifest("b", 1)
    b.apply(Manifest("a", 3).delta_for(b.digest(), HUGE))
    b.apply(m.delta_for(b.digest(), HUGE))
    assert b.content()["a"] == m.content()["a"]


def test_merge_helper_is_a_copy():
    a, b = Manifest("a", 1), Manifest("b", 1)
    b.put("k", b"v")
    before = full_state(a)
    m = merge(a, b)
    assert full_state(a) == before and m.get("b", "k") == b"v"
