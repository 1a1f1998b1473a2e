"""The chunk scheduler: only what a source has, bounded per peer, rarest first, endgame,
failing sources lose their requests; and a simulated download always completes."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core.swarm import Swarm


def test_rarest_first_after_the_random_start():
    s = Swarm(6, random.Random(1), per_peer=1)
    s.source("a", None)
    s.source("b", {0, 1, 2, 3, 4})
    s.source("c", {0, 1, 2, 3})
    plan = dict((c, p) for p, c in s.plan(0.0))
    assert 5 in plan and plan[5] == "a", "chunk 5 (only a has it) goes first, to a"
    assert 4 in plan and plan[4] == "b", "then chunk 4 (a and b), to the free one"


def test_a_chunk_another_puller_is_fetching_is_asked_of_the_publisher_last():
    s = Swarm(3, random.Random(4), per_peer=1)
    s.source("publisher", None)
    s.source("peer", set())
    s.expect("peer", 0, now=0.0)
    s.expect("peer", 1, now=0.0)
    assert s.plan(0.0) == [("publisher", 2)], "the one chunk nobody is fetching yet"
    s.announce("peer", 0)
    assert ("peer", 0) in s.plan(0.1), "then from the peer that fetched it"
    s2 = Swarm(2, random.Random(4), per_peer=1, expect_ttl=5.0)
    s2.source("publisher", None)
    s2.expect("peer", 0, now=0.0)
    s2.expect("peer", 1, now=4.0)
    assert s2.plan(6.0) == [("publisher", 0)], "an announced fetch that never finished stops counting"


def test_each_host_starts_a_fresh_swarm_at_its_own_random_place():
    firsts = set()
    for seed in range(20):
        s = Swarm(50, random.Random(seed), per_peer=1)
        s.source("publisher", None)
        firsts.add(s.plan(0.0)[0][1])
    assert len(firsts) > 10


def test_endgame_duplicates_the_last_requests_and_cancels_losers():
    s = Swarm(2, random.Random(2), per_peer=4, endgame_copies=2)
    s.source("a", None)
    s.source("b", None)
    first = s.plan(0.0)
    assert sorted(c for _, c in first) == [0, 0, 1, 1], "both chunks asked of both peers"
    cancel = s.received("a", 0, 100, 0.01)
    assert cancel == ["b"]
    assert s.plan(0.0) == [] and not s.done


def test_endgame_waits_for_a_request_to_be_late_before_duplicating_it():
    s = Swarm(1, random.Random(2), per_peer=4, endgame_copies=2, endgame_after=2.0)
    s.source("a", None)
    s.source("b", None)
    (first,) = s.plan(0.0)
    assert s.plan(1.9) == [], "on time: not asked twice"
    (second,) = s.plan(2.0)
    assert second[1] == first[1] and second[0] != first[0], "late: asked of the other source too"


def test_a_failing_source_loses_its_requests_and_is_left_alone():
    s = Swarm(4, random.Random(3), per_peer=2, endgame_copies=1, penalty=10)
    s.source("bad", None)
    s.source("good", None)
    s.plan(0.0)
    lost = s.failed("bad", 1.0)
    assert lost and all("bad" not in s.in_flight.get(c, set()) for c in lost)
    again = s.plan(1.0)
    assert {p for p, _ in again} <= {"good"}
    lone = Swarm(1, random.Random(0), endgame_copies=1, penalty=10)
    lone.source("bad", None)
    assert lone.plan(0.0) == [("bad", 0)]
    assert lone.failed("bad", 1.0) == [0]
    assert lone.plan(5.0) == [], "not asked again during its penalty"
    assert lone.plan(11.5) == [("bad", 0)], "asked again once the penalty ran out"


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.one_of(st.none(), st.sets(st.integers(0, 39))), min_size=1, max_size=5),
    st.integers(1, 4),
    st.integers(0, 2**32),
)
def test_a_download_always_completes_within_what_sources_hold(n, holdings, per_peer, seed):
    rng = random.Random(seed)
    s = Swarm(n, random.Random(seed), per_peer=per_peer)
    for i, h in enumerate(holdings):
        s.source(f"p{i}", None if h is None else {c for c in h if c < n})
    reachable = set(range(n)) if any(h is None for h in holdings) else {c for h in holdings for c in h if c < n}
    now = 0.0
    for _ in range(60 * n + 60):
        for p, c in s.plan(now):
            assert s._has(p, c), "never asks a source for a chunk it lacks"
        per = {}
        for c, asked in s.in_flight.items():
            for p in asked:
                per[p] = per.get(p, 0) + 1
        assert all(v <= per_peer for v in per.values())
        if not s.in_flight:
            if s.have >= reachable:
                break
            now += s.penalty  # everyone who could help is serving a penalty: wait it out
            continue
        c = rng.choice(sorted(s.in_flight))
        p = rng.choice(sorted(s.in_flight[c]))
        if rng.random() < 0.1:
            s.failed(p, now)
        else:
            s.received(p, c, 1000, 0.01)
        now += 1.0
    assert s.have == reachable, (s.have, reachable)
