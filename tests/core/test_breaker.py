"""Per-peer breakers: open after 3 consecutive failures, back off exponentially, one trial."""

import random

from hypothesis import given
from hypothesis import strategies as st

from ringmesh.core.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, Breakers


def test_opens_after_three_failures_and_recovers_through_one_trial():
    b = Breakers(random.Random(1), BreakerConfig(threshold=3, base=1.0, cap=8.0))
    for _ in range(2):
        b.failure("p", 0.0)
    assert b.state("p", 0.0) == CLOSED and b.allow("p", 0.0)
    b.failure("p", 0.0)
    assert b.state("p", 0.1) == OPEN and not b.allow("p", 0.1) and not b.healthy("p", 0.1)
    assert b.state("p", 1.0) == HALF_OPEN
    assert b.allow("p", 1.0), "the one trial call"
    assert not b.allow("p", 1.0), "only one trial at a time"
    b.success("p")
    assert b.state("p", 1.0) == CLOSED and b.healthy("p", 1.0)


def test_failed_trials_back_off_exponentially_up_to_the_cap():
    b = Breakers(random.Random(2), BreakerConfig(threshold=3, base=1.0, cap=8.0))
    now = 0.0
    for _ in range(3):
        b.failure("p", now)
    waits = []
    for _ in range(7):
        opened_at = now
        while b.state("p", now) == OPEN:
            now += 0.01
        waits.append(now - opened_at)
        assert b.allow("p", now)
        b.failure("p", now)
    for i, w in enumerate(waits):
        bound = min(8.0, 2.0**i)
        assert 0.5 * bound - 0.02 <= w <= bound + 0.02, (i, w)


def test_late_failures_of_calls_already_in_flight_do_not_extend_an_open_breaker():
    b = Breakers(random.Random(3), BreakerConfig(threshold=3, base=1.0, cap=60.0))
    for _ in range(3):
        b.failure("p", 0.0)
    until = b.peers["p"].open_until
    for _ in range(10):
        b.failure("p", 0.2)
    assert b.peers["p"].open_until == until


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 5)), max_size=60))
def test_a_success_always_closes(events):
    b = Breakers(random.Random(0))
    now = 0.0
    for ok, dt in events:
        now += dt
        b.success("p") if ok else b.failure("p", now)
        if ok:
            assert b.state("p", now) == CLOSED
        assert b.peers["p"].failures < 3 or b.state("p", now) in (OPEN, HALF_OPEN)
