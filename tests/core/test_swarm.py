"""The chunk scheduler: only what a source has, bounded per peer, rarest first, endgame,
failing sources lose their requests; and a simulated download always completes. "Any of these"
requests: the source sends its least-served chunk, serves the requester holding fewest first,
and every chunk reaches every receiver."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core.swarm import Ask, Seeding, Swarm


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


# -- "any of these" requests and the source's side (least served first) -----------------------


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 30),
    st.lists(st.tuples(st.lists(st.integers(0, 29), min_size=1, max_size=10), st.integers(0, 30)), max_size=80),
)
def test_a_seed_never_serves_a_chunk_again_while_a_wanted_one_was_never_served(n, requests):
    seed, served = Seeding(n), [0] * n
    for chunks, held in requests:
        named = tuple(dict.fromkeys(c % n for c in chunks))
        have = set(range(0, n, 2)) if held % 3 == 0 else None  # sometimes a source holding half
        c = seed.choose(named, have)
        able = [x for x in named if have is None or x in have]
        if not able:
            assert c is None, "nothing it holds was named: it waits"
            continue
        assert c in able
        assert served[c] == min(served[x] for x in able), "the least-served chunk the requester named"
        assert c == next(x for x in able if served[x] == served[c]), "ties: the requester's order"
        served[c] += 1
    assert seed.served == served


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=12))
def test_a_busy_source_serves_the_requester_holding_fewest_first(waiting):
    asks = [Ask(f"r{i}", (0,) if holds else (1,), held, id=i) for i, (held, holds) in enumerate(waiting)]
    i = Seeding.next(asks, {0})
    able = [a for a in asks if a.chunks == (0,)]
    if not able:
        assert i is None, "no request names a chunk it holds yet"
        return
    assert i is not None and asks[i] in able
    assert asks[i].held == min(a.held for a in able)
    assert i == min(j for j, a in enumerate(asks) if a in able and a.held == asks[i].held), "ties: first come"


def test_a_seed_sends_every_chunk_once_before_any_twice():
    n = 40
    seed = Seeding(n)
    firsts = []
    for r in range(100):  # each receiver names every chunk, in its own random order
        order = list(range(n))
        random.Random(r).shuffle(order)
        firsts.append(seed.choose(tuple(order)))
    assert sorted(firsts[:n]) == list(range(n)), "the first n copies are n different chunks"
    assert max(seed.served) - min(seed.served) <= 1


def test_upload_slots_beyond_the_count_only_while_the_uplink_is_not_full():
    s = Seeding(1, uploads=4, extra_uploads=2)
    assert s.may_start(3, uplink_full=True)
    assert not s.may_start(4, uplink_full=True)
    assert s.may_start(5, uplink_full=False) and not s.may_start(6, uplink_full=False)


def test_an_open_request_naming_a_chunk_got_elsewhere_is_renewed_without_it():
    s = Swarm(6, random.Random(1), per_peer=4)
    s.source("pub", None)
    s.source("peer", {0, 1, 2})
    asks = {a.peer: a for a in s.plan_asks(0.0, width=6)}
    assert set(asks) == {"pub", "peer"} and all(a.id >= 0 for a in asks.values())
    assert set(asks["peer"].chunks) <= {0, 1, 2}, "only what the peer holds"
    assert not set(asks["pub"].chunks[:3]) & set(asks["peer"].chunks[:3]), "chunks no other request names, first"
    c = asks["peer"].chunks[0]
    assert s.started(asks["peer"].id, c, 0.1)
    assert c in s.in_flight and s.stale() == (c in asks["pub"].chunks)
    again = s.plan_asks(0.2, width=6)
    renewed = [a for a in again if a.renew]
    assert [a.id for a in renewed] == ([asks["pub"].id] if c in asks["pub"].chunks else [])
    assert all(c not in a.chunks for a in s.asks.values())
    assert not s.started(asks["pub"].id, c, 0.3), "the source sent it anyway: not wanted, cancel it"


def test_a_request_may_name_chunks_a_peer_is_still_fetching():
    s = Swarm(4, random.Random(2))
    s.source("peer", set())
    assert s.plan_asks(0.0) == [], "it holds nothing and fetches nothing"
    s.expect("peer", 3, now=0.0)
    (a,) = s.plan_asks(0.1)
    assert a.peer == "peer" and a.chunks == (3,)


def test_a_corrupting_source_loses_its_open_requests_and_is_not_asked_during_its_penalty():
    s = Swarm(8, random.Random(3), penalty=10)
    s.source("bad", None)
    s.source("good", None)
    first = {a.peer: a for a in s.plan_asks(0.0)}
    assert s.started(first["bad"].id, first["bad"].chunks[0], 0.1)
    assert s.failed("bad", 1.0) == [first["bad"].chunks[0]]
    assert all(a.peer != "bad" for a in s.asks.values())
    assert all(a.peer != "bad" for a in s.plan_asks(5.0)), "not asked during its penalty"
    assert any(a.peer == "bad" for a in s.plan_asks(11.0)), "asked again once it ran out"


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 30), st.integers(1, 6), st.integers(1, 8), st.integers(0, 2**32))
def test_every_chunk_reaches_every_receiver_through_any_of_requests(n, receivers, width, seed):
    """A seed and receivers that serve each other what they verified, in random order, with
    failures: everyone ends with every chunk; nobody is asked for a chunk it neither holds nor
    fetches; nobody gets a chunk twice; the per-source and overall limits hold."""
    rng = random.Random(seed)
    names = [f"r{i}" for i in range(receivers)]
    swarms = {r: Swarm(n, random.Random(seed + i), per_peer=2, penalty=3.0) for i, r in enumerate(names)}
    seeding = {p: Seeding(n) for p in ["pub", *names]}
    for r, sw in swarms.items():
        sw.source("pub", None)
        for q in names:
            if q != r:
                sw.source(q, set())
    waiting: dict[str, list[tuple[str, Ask]]] = {p: [] for p in seeding}  # source -> (receiver, ask)
    running: list[tuple[str, str, int]] = []  # (source, receiver, chunk)
    got: dict[str, list[int]] = {r: [] for r in names}
    now = 0.0
    for _ in range(400 * n + 400):
        if all(sw.done for sw in swarms.values()):
            break
        now += 0.1
        for r, sw in swarms.items():
            if sw.done:
                continue
            for a in sw.plan_asks(now, width=width):
                src = waiting[a.peer]
                if a.renew:
                    src[:] = [(q, b) for q, b in src if not (q == r and b.id == a.id)]
                    if a.chunks:
                        src.append((r, a))
                    continue
                held = swarms[a.peer].have | set(swarms[a.peer].in_flight) if a.peer in swarms else None
                assert held is None or set(a.chunks) <= held | set(swarms[r].expected.get(a.peer, {}))
                if a.id < 0:
                    running.append((a.peer, r, a.chunks[0]))
                else:
                    src.append((r, a))
            assert len(sw.asks) <= sw.ask_limit
            per = [a.peer for a in sw.asks.values()]
            assert len(per) == len(set(per)), "one open request per source"
        for p, src in waiting.items():  # each source starts one request it can serve
            have = None if p == "pub" else swarms[p].have
            i = Seeding.next([a for _, a in src], have)
            if i is not None:
                r, a = src.pop(i)
                c = seeding[p].choose(a.chunks, have)
                assert c is not None
                if swarms[r].started(a.id, c, now):
                    running.append((p, r, c))
        rng.shuffle(running)
        for p, r, c in running[: rng.randint(0, len(running))]:
            running.remove((p, r, c))
            sw = swarms[r]
            if c in sw.have:
                continue
            if p != "pub" and rng.random() < 0.05:  # a bad chunk: the source is penalised
                sw.failed(p, now)
                continue
            if sw.received(p, c, 1, 0.01) is not None:
                got[r].append(c)
                for q in names:
                    if q != r:
                        swarms[q].announce(r, c)
    for r, sw in swarms.items():
        assert sw.have == set(range(n)), (r, sorted(sw.have))
        assert sorted(got[r]) == list(range(n)), "each chunk arrived once"
