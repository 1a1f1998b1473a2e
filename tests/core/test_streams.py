"""Game streams, pure part: marks on gossip, durability on the origin, pull planning."""

from hypothesis import given
from hypothesis import strategies as st

from ringmesh.core import catalog, keys, streams
from ringmesh.core.manifest import Manifest
from ringmesh.core.streams import Durability, PullRequest, encode_hw, hw_key, marks, parse_hw_key, pull_plan

PERSISTENT = {"train-a", "train-b", "backup"}


def persistent(h):
    return h in PERSISTENT


def test_marks_ride_on_gossip_as_each_holders_own_fact():
    a, b = Manifest("vast-1", 1), Manifest("train-a", 1)
    a.put(hw_key(("vast-1", "hex8_2p")), encode_hw(12))
    b.put(hw_key(("vast-1", "hex8_2p")), encode_hw(9))
    b.put("g/../etc", encode_hw(5))  # a malformed key is ignored, not fatal
    b.put(hw_key(("vast-1", "sq8_2p")), catalog.pack({"hw": "lots"}))
    b.apply(a.delta_for(b.digest(), 1 << 20))
    assert marks(b) == {("vast-1", "hex8_2p"): {"vast-1": 12, "train-a": 9}}
    assert parse_hw_key("g/a/b/c") is None and parse_hw_key("g/vast-1/hex8_2p") == ("vast-1", "hex8_2p")


def test_durable_needs_min_copies_and_a_persistent_holder():
    d = Durability("vast-1", 2, persistent)
    assert d.stored("hex8_2p", 3) == []  # only the (ephemeral) origin holds them
    assert d.acked("hex8_2p", "vast-2", [1, 2, 3]) == [], "two ephemeral copies are not durable"
    assert d.pending("hex8_2p") == [1, 2, 3]
    assert d.acked("hex8_2p", "train-a", [1, 2]) == [1, 2]
    assert d.durable_through("hex8_2p") == 2 and not d.is_durable("hex8_2p", 3)
    assert d.observe("hex8_2p", {"backup": 3}) == [3]
    assert d.pending("hex8_2p") == []


def test_durability_waits_for_the_local_fsync():
    d = Durability("train-a", 2, persistent)
    assert d.acked("hex8_2p", "train-b", [1]) == [], "a game is not durable before the origin itself stored it"
    assert d.stored("hex8_2p", 1) == [1]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ack", "mark", "store"]),
            st.sampled_from(sorted(PERSISTENT | {"vast-2", "vast-3"})),
            st.integers(1, 20),
        ),
        max_size=60,
    ),
    st.integers(1, 3),
)
def test_never_durable_with_fewer_holders_than_asked(events, k):
    """Whatever order acks, marks and stores come in, and marks that fall (a holder's copies
    rotted: it holds 1..n and nothing above), a game reported durable really has min_copies
    holders, one persistent, and durability is a prefix that shrinks only when a mark fell."""
    d = Durability("vast-1", k, persistent)
    truth: dict[int, set[str]] = {}
    mark: dict[str, int] = {}
    last = 0
    for kind, host, n in events:
        fell = False
        if kind == "store":
            d.stored("s", n)
            for q in range(1, n + 1):
                truth.setdefault(q, set()).add("vast-1")
        elif kind == "ack":
            d.acked("s", host, [n])
            truth.setdefault(n, set()).add(host)
        else:
            d.observe("s", {host: n})
            if n < mark.get(host, 0):
                fell = True
                for q, hs in truth.items():
                    if q > n:
                        hs.discard(host)
            mark[host] = n
            for q in range(1, n + 1):
                truth.setdefault(q, set()).add(host)
        assert fell or d.durable_through("s") >= last
        last = d.durable_through("s")
        for q in range(1, last + 1):
            hs = truth.get(q, set())
            assert len(hs) >= k and hs & PERSISTENT and "vast-1" in hs


def test_pull_plan_splits_a_backlog_over_healthy_holders():
    stream = ("vast-1", "hex8_2p")
    m = {stream: {"vast-1": 1000, "train-b": 900, "backup": 400, "sick": 1000, "train-a": 10}}
    plan = pull_plan("train-a", m, {stream: 10}, should_hold=lambda s: True, healthy=lambda h: h != "sick", batch=200)
    assert plan[0] == PullRequest(stream, "backup", 11, 210)
    covered = [q for r in plan for q in range(r.first, r.last + 1)]
    assert covered == list(range(11, 11 + len(covered))), "consecutive, no gap, no overlap"
    assert {r.source for r in plan} == {"vast-1", "train-b", "backup"}
    assert all(r.last <= m[stream][r.source] for r in plan), "nobody is asked for what it lacks"
    assert pull_plan("train-a", m, {stream: 10}, should_hold=lambda s: False, healthy=lambda h: True) == []
    assert pull_plan("train-a", m, {stream: 1000}, should_hold=lambda s: True, healthy=lambda h: True) == []
    assert pull_plan("train-a", m, {}, should_hold=lambda s: True, healthy=lambda h: True, busy=[stream]) == []


def test_retention_drops_only_durable_games_older_than_the_retention():
    from ringmesh.core.streams import retention_floor

    times = {1: 0.0, 2: 10.0, 3: 50.0, 4: 90.0}
    assert retention_floor(4, times, now=100.0, retention=30.0) == 3
    assert retention_floor(2, times, now=100.0, retention=30.0) == 2, "never past what is durable"
    assert retention_floor(4, times, now=100.0, retention=200.0) == 0
    assert retention_floor(4, {1: 0.0, 3: 0.0, 4: 0.0}, now=100.0, retention=1.0) == 1, "an unknown time blocks"
    assert retention_floor(4, times, now=100.0, retention=30.0, held_from=2) == 1, "a game held back stays"
    assert retention_floor(4, times, now=100.0, retention=30.0, held_from=9) == 3


@given(st.integers(0, 30), st.dictionaries(st.integers(1, 30), st.floats(0, 100)), st.floats(0, 100), st.floats(0, 50))
def test_retention_floor_is_safe(durable, times, now, retention):
    from ringmesh.core.streams import retention_floor

    f = retention_floor(durable, times, now, retention)
    assert 0 <= f <= durable
    assert all(q in times and now - times[q] >= retention for q in range(1, f + 1))


def test_retention_goes_on_after_a_first_drop():
    # seqs 1..3 were dropped already and are gone from stored_at; 4..6 are durable and old
    stored_at = {4: 0.0, 5: 0.0, 6: 180.0}  # 6 is only 20 s old
    assert streams.retention_floor(6, stored_at, now=200.0, retention=60.0, dropped_through=3) == 5
    assert streams.retention_floor(6, stored_at, now=200.0, retention=60.0) == 0, "without it: stuck at seq 1"


def test_materialised_through_stops_below_the_first_game_a_host_holds_back():
    from ringmesh.core import catalog
    from ringmesh.core.manifest import Manifest
    from ringmesh.core.streams import encode_hw, hw_key, materialised_through

    m = Manifest("a", 1)
    stream = ("o.1", "hex8_2p")
    for host, hw in (("a", 10), ("b", 8)):
        other = m if host == "a" else Manifest(host, 1)
        other.put(hw_key(stream), encode_hw(hw))
        if host == "b":
            other.put(keys.HELD + "hex8_2p", catalog.pack({"s": {"o.1": [5, 7]}}))
            m.apply(other.delta_for(m.digest(), 1 << 20))
    assert materialised_through(m, stream, ["a"]) == 10
    assert materialised_through(m, stream, ["a", "b"]) == 4  # b holds #5 back
    assert materialised_through(m, stream, ["a", "c"]) == 0  # c has none


def test_an_origin_that_dropped_games_says_so_and_is_not_asked_for_them():
    """Retention on an ephemeral origin: `DropGames` once durable and old enough, never a game
    held back; its mark then carries `lo`, which old readers ignore and pull plans respect."""
    from ringmesh.core.messages import DropGames, GamesAck
    from ringmesh.core.replication import Replication

    m = Manifest("vast-1", 1)
    r = Replication("vast-1", m, origin="vast-1.1", min_copies=2, persistent=persistent, retention=30.0)
    r.stored("vast-1.1", "hex8_2p", (1, 2, 3), 3, ((1, b"a"), (2, b"b"), (3, b"c")), None, 0.0, [])
    r.stored("vast-1.1", "hex8_2p", (4,), 4, ((4, b"d"),), None, 50.0, [])
    r.on_ack("train-a", GamesAck(origin="vast-1.1", config_key="hex8_2p", seqs=(1, 2, 3, 4)))
    assert r.durability.durable_through("hex8_2p") == 4
    assert r.retain(20.0).effects == [], "not old enough"
    r.held("hex8_2p", (3,))
    out = r.retain(60.0)
    assert out.effects == [DropGames(config_key="hex8_2p", through=2)], "a game held back stays, and what follows"
    stream = ("vast-1.1", "hex8_2p")
    assert catalog.unpack(m.get("vast-1", hw_key(stream))) == {"hw": 4, "t": 50000, "lo": 2}
    assert marks(m)[stream] == {"vast-1": 4} and streams.floor_of(m, stream, "vast-1") == 2
    r.held("hex8_2p", ())
    assert r.retain(90.0).effects == [DropGames(config_key="hex8_2p", through=4)]
    r.stored("vast-1.1", "hex8_2p", (5,), 5, ((5, b"e"),), None, 95.0, [])
    assert catalog.unpack(m.get("vast-1", hw_key(stream)))["lo"] == 4, "a new mark keeps the floor"
    m2 = {stream: {"vast-1": 5, "train-b": 3}}
    floor = lambda s, h: {"vast-1": 4}.get(h, 0)  # noqa: E731
    plan = pull_plan("train-a", m2, {stream: 1}, should_hold=lambda s: True, healthy=lambda h: True, floor=floor)
    assert [(p.source, p.first, p.last) for p in plan] == [("train-b", 2, 3)]
    plan = pull_plan("train-a", m2, {stream: 4}, should_hold=lambda s: True, healthy=lambda h: True, floor=floor)
    assert [(p.source, p.first, p.last) for p in plan] == [("vast-1", 5, 5)]


@given(st.sets(st.integers(1, 5000), max_size=200))
def test_lost_seqs_round_trip_as_ranges(seqs):
    raw = streams.encode_lost(seqs)
    assert streams.decode_lost(raw) == seqs
    ranges = catalog.unpack(raw)["r"]
    assert all(a <= b and (i == 0 or ranges[i - 1][1] + 1 < a) for i, (a, b) in enumerate(ranges))


def test_a_hostile_lost_fact_is_bounded_and_malformed_ranges_ignored():
    raw = catalog.pack({"r": [[1, 1 << 60], [5, 2], ["x", 3], [0, 4], [7]]})
    assert len(streams.decode_lost(raw, limit=1000)) == 1000
    assert streams.decode_lost(catalog.pack({"r": [[5, 2], ["x", 3], [0, 4]]})) == set()
    assert streams.decode_lost(None) == set() and streams.decode_lost(b"\xc1") == set()


def test_durability_falls_with_a_mark_and_passes_over_lost_games():
    d = Durability("train-a", 2, persistent)
    d.stored("s", 6)
    assert d.observe("s", {"train-b": 6}) == [1, 2, 3, 4, 5, 6]
    assert d.observe("s", {"train-b": 3}) == [] and d.durable_through("s") == 3  # b's 4.. rotted
    assert d.pending("s") == [4, 5, 6]
    d.corrupt("s", [2])  # and our own copy of 2
    assert d.durable_through("s") == 1 and d.holders("s", 2) == {"train-b"}
    assert d.stored("s", 6, seqs=[2]) == [2, 3] and d.durable_through("s") == 3  # 2 pulled back
    assert d.lost("s", [4]) == [] and d.durable_through("s") == 4  # passed over, never reported durable
    assert not d.is_durable("s", 4) and d.pending("s") == [5, 6]
    assert d.observe("s", {"train-b": 6}) == [5, 6] and d.durable_through("s") == 6
    d2 = Durability("train-a", 2, persistent)
    d2.stored("s", 3)
    d2.observe("s", {"train-b": 1})
    assert d2.lost("s", [2]) == [] and d2.durable_through("s") == 2 and not d2.is_durable("s", 2)
    assert d2.pending("s") == [3]
