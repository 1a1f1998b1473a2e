from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core.hlc import LOGICAL_BITS, LOGICAL_MASK, MAX_HLC, HybridClock, pack, physical_ms

DRIFT_MS = 300_000
WALL = st.integers(0, 4_000_000_000_000).map(lambda ms: ms / 1000)  # seconds, ms resolution


def test_pack_and_physical_ms():
    assert pack(1234) == 1234 << LOGICAL_BITS
    assert physical_ms(pack(1234, 7)) == 1234
    assert pack(1234, 7) & ((1 << LOGICAL_BITS) - 1) == 7
    assert pack(1, 0) > pack(0, (1 << LOGICAL_BITS) - 1)
    assert pack((1 << 48) - 1, (1 << LOGICAL_BITS) - 1) == MAX_HLC


def test_now_follows_the_wall_clock_and_never_goes_back():
    c = HybridClock()
    t1 = c.now(10.0)
    assert t1 == pack(10_000)
    t2 = c.now(10.0)
    assert t2 == t1 + 1  # same millisecond: the logical part counts
    t3 = c.now(5.0)  # the wall clock stepped back
    assert t3 == t2 + 1
    assert c.now(11.0) == pack(11_000)


def test_a_remote_time_within_the_drift_is_adopted():
    c = HybridClock()
    remote = pack(10_000 + DRIFT_MS)
    assert c.observe(remote, 10.0) == remote + 1
    assert c.now(10.0) == remote + 2
    # the last millisecond of the drift counts whole, whatever its logical part
    c = HybridClock()
    remote = pack(10_000 + DRIFT_MS, 40)
    assert c.observe(remote, 10.0) == remote + 1


def test_a_remote_time_beyond_the_drift_is_not_adopted():
    c = HybridClock()
    for remote in (pack(10_000 + DRIFT_MS + 1), pack(10_000 + DRIFT_MS + 1000), MAX_HLC, -1):
        t = c.observe(remote, 10.0)
        assert physical_ms(t) == 10_000, remote
    assert c.last < pack(10_001)


def test_a_custom_drift():
    """Regression: with the bound at logical 0, a remote in our own millisecond with a logical
    part (max_drift_ms=0), or in the drift's last millisecond, was not adopted, and the next
    local timestamp could be older than the remote event it follows."""
    c = HybridClock(max_drift_ms=0)
    assert physical_ms(c.observe(pack(10_001), 10.0)) == 10_000
    assert c.observe(pack(10_000, 5), 10.0) == pack(10_000, 6)


def test_a_restored_clock_continues_above_its_last_value():
    c = HybridClock(last=pack(50_000, 3))
    assert c.now(10.0) == pack(50_000, 4)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, pack(2_000_000_000_000)),
    st.lists(
        st.one_of(
            st.tuples(st.just("now"), WALL, st.just(0)),
            st.tuples(st.just("observe"), WALL, st.integers(-5, MAX_HLC)),
            st.tuples(
                st.just("observe_near"),
                WALL,
                st.tuples(
                    st.one_of(
                        st.sampled_from([0, DRIFT_MS - 1, DRIFT_MS, DRIFT_MS + 1]),
                        st.integers(-DRIFT_MS * 2, DRIFT_MS * 2),
                    ),
                    st.integers(0, LOGICAL_MASK),
                ),
            ),
        ),
        max_size=50,
    ),
)
def test_clock_is_strictly_monotonic_and_bounded_by_the_drift(start, steps):
    c = HybridClock(last=start)
    prev = start
    for op, wall, x in steps:
        wall_ms = int(wall * 1000)
        if op == "now":
            t = c.now(wall)
        elif op == "observe":
            t = c.observe(x, wall)
        else:  # a remote close to our wall clock, ahead or behind
            remote = max(0, pack(wall_ms + x[0], x[1]))
            t = c.observe(remote, wall)
            x = remote
        assert t > prev, "the clock went back or stood still"
        assert t == c.last
        assert t >= pack(wall_ms), "the clock is behind the wall clock"
        # never further ahead than what we had or the wall clock plus the drift (+1 for the tick)
        assert t <= max(prev + 1, pack(wall_ms + DRIFT_MS, LOGICAL_MASK) + 1), (op, wall, x, prev, t)
        if op != "now" and 0 <= x and physical_ms(x) <= wall_ms + DRIFT_MS:
            assert t > x, "a remote time within the drift was not adopted"
        prev = t
