"""The broadcast flow simulator (`sim/flows.py`): determinism, physics, bounds, the allocation."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.flows import MB, BroadcastParams, FlowNet, _Broadcast, _fill, run_broadcast, violation
from sim.report import to_json
from sim.world import SimulationError

MiB = 1 << 20
SMALL = dict(size=40 * MiB, latency_ms=20.0)  # 10 chunks of 4 MiB


# -- determinism ------------------------------------------------------------------------------


def test_one_seed_gives_the_same_json_and_another_seed_another_schedule():
    p = BroadcastParams(nodes=30, seed=5, **SMALL)
    first, second = to_json(run_broadcast(p)), to_json(run_broadcast(p))
    assert first == second
    other = run_broadcast(BroadcastParams(nodes=30, seed=6, **SMALL))
    assert other["trace"] != json.loads(first)["trace"]
    assert other["completion_s"] != json.loads(first)["completion_s"]


# -- physics ----------------------------------------------------------------------------------


def _peak_load(trace, ends_of):
    """The most any link carried at any instant, from the trace alone: {link: bytes/s}."""
    steps = defaultdict(list)
    for t0, t1, s, d, _c, rate in trace:
        for link in ends_of(s, d):
            steps[link] += [(t0, rate), (t1, -rate)]
    peak = {}
    for link, ev in steps.items():
        load, top = 0.0, 0.0
        for _, dr in sorted(ev, key=lambda e: (e[0], e[1])):  # at one instant, ends before starts
            load += dr
            top = max(top, load)
        peak[link] = top
    return peak


def test_no_link_ever_carries_more_than_its_capacity_and_every_byte_arrives():
    b, up = 100 * MB, 60 * MB  # receivers' uplinks slower than their downlinks
    p = BroadcastParams(nodes=25, seed=2, receiver_uplink_bytes_per_s=up, uploads=3, peers=6, **SMALL)
    trace: list = []
    sim = _Broadcast(p, check=True, trace=trace)  # check: the allocation verified at every change
    report = sim.run()
    peak = _peak_load(trace, lambda s, d: [("up", s), ("down", d)])
    assert peak, "flows ran"
    for (kind, host), load in peak.items():
        cap = b if kind == "down" or host == 0 else up
        assert load <= cap * (1 + 1e-9), (kind, host, load, cap)
    # the downlinks were the bottleneck somewhere: the check is not vacuous
    assert max(load for (kind, _), load in peak.items() if kind == "down") > 0.99 * b

    got = defaultdict(float)  # (sender, receiver, chunk) -> bytes that crossed the links
    for t0, t1, s, d, c, rate in trace:
        got[(s, d, c)] += rate * (t1 - t0)
    size = 4 * MiB
    assert all(v <= size * (1 + 1e-9) for v in got.values()), "no flow carries more than its chunk"
    for r in range(1, p.nodes + 1):
        assert sim.swarms[r].have == set(range(10)), f"receiver {r} holds every chunk"
        for c in range(10):
            assert any(abs(got[(s, r, c)] - size) < 1e-3 for s in range(p.nodes + 1)), (r, c)
    assert report["bytes_moved"] == pytest.approx(sum(got.values()), rel=1e-9)


def test_the_model_check_fails_on_an_infeasible_or_unfair_allocation():
    cap = [10.0, 10.0, 10.0, 4.0]  # links 0, 1 uplinks; 2, 3 downlinks
    ends = {0: (0, 2), 1: (0, 3), 2: (1, 3)}
    fair = {f: r for f, (r, _) in _fill(ends, ends, cap).items()}
    assert fair == {0: 8.0, 1: 2.0, 2: 2.0}
    assert violation(ends, fair, cap) is None
    assert "capacity" in violation(ends, {**fair, 0: 8.5}, cap)
    assert "no bottleneck" in violation(ends, {**fair, 0: 7.0}, cap)
    assert "flow 2 at 1.0 has no bottleneck" in violation(ends, {0: 7.0, 1: 3.0, 2: 1.0}, cap)  # feasible, unfair


# -- bounds -----------------------------------------------------------------------------------


@pytest.mark.parametrize("publisher_peers", [None, 3])
def test_no_receiver_finishes_before_S_over_B(publisher_peers):
    r = run_broadcast(BroadcastParams(nodes=40, seed=1, publisher_peers=publisher_peers, **SMALL), check=True)
    assert r["completion_s"]["min"] >= r["bound_s"]
    assert r["last_completion_s"] >= r["completion_s"]["p99"] >= r["completion_s"]["p50"] >= r["completion_s"]["min"]
    assert r["bytes_moved"] >= 40 * 40 * MiB
    assert r["publisher_copies"] >= 1.0


def test_any_of_requests_beat_named_chunks_and_the_publisher_sends_fewer_copies():
    p = dict(nodes=40, seed=1, **SMALL)
    anyof, named = run_broadcast(BroadcastParams(**p), check=True), run_broadcast(BroadcastParams(asks=0, **p))
    assert anyof["last_completion_s"] < 0.5 * named["last_completion_s"]
    assert anyof["publisher_copies"] < 0.5 * named["publisher_copies"]
    assert anyof["bytes_moved_per_copy_needed"] < 1.1, "little is sent only to be cancelled"


def test_a_receiver_cut_off_from_every_source_ends_the_run_with_an_error():
    # one link each and one receiver that may ask the publisher: most components never get a byte
    with pytest.raises(SimulationError, match="receivers unfinished"):
        run_broadcast(BroadcastParams(nodes=30, seed=1, peers=1, publisher_peers=1, **SMALL))


def _last(**kw) -> float:
    """When the last receiver finished, unrounded."""
    sim = _Broadcast(BroadcastParams(seed=1, **kw), check=True, trace=None)
    sim.run()
    return max(sim.finish.values())


def test_one_receiver_takes_S_over_B_plus_the_round_trips():
    s_over_b, rtt = 40 * MiB / (100 * MB), 0.040
    assert _last(nodes=1, size=40 * MiB, latency_ms=0) == pytest.approx(s_over_b, rel=1e-12)
    # every chunk asked for at once: one round trip, then the link is full until the end
    assert _last(nodes=1, per_peer=10, uploads=10, **SMALL) == pytest.approx(s_over_b + rtt, rel=1e-12)
    # named chunks (today's pull), per_peer 2: both requests end together, so every second
    # chunk waits a round trip
    assert _last(nodes=1, per_peer=2, asks=0, **SMALL) == pytest.approx(s_over_b + 5 * rtt, rel=1e-12)
    # "any of" requests: the next one is sent as the source starts the last, so none waits
    assert _last(nodes=1, per_peer=2, **SMALL) == pytest.approx(s_over_b + rtt, rel=1e-12)
    assert _last(nodes=1, size=40 * MiB, latency_ms=1) == pytest.approx(s_over_b + 0.002, rel=0.03)


# -- the allocation, on random networks -------------------------------------------------------


def _assert_max_min_fair(ends, rate, cap):
    """Feasible, and every flow has a full link on which no flow is faster (its own check)."""
    load, top = defaultdict(float), defaultdict(float)
    for f, links in ends.items():
        assert rate[f] > 0
        for link in links:
            load[link] += rate[f]
            top[link] = max(top[link], rate[f])
    for link, x in load.items():
        assert x <= cap[link] * (1 + 1e-9), f"link {link} over capacity"
    for f, links in ends.items():
        assert any(load[k] >= cap[k] * (1 - 1e-9) and rate[f] >= top[k] * (1 - 1e-9) for k in links), f"flow {f}"


@settings(max_examples=150, deadline=None)
@given(
    hosts=st.integers(2, 7),
    caps=st.lists(st.integers(1, 1000), min_size=14, max_size=14),
    ops=st.lists(st.tuples(st.booleans(), st.integers(0, 6), st.integers(0, 6), st.integers(0, 40)), max_size=40),
)
def test_water_filling_is_feasible_max_min_fair_and_the_same_incrementally(hosts, caps, ops):
    cap = [float(c) for c in caps[: 2 * hosts]]  # link 2h: host h's uplink, 2h + 1: its downlink
    net, live, fid = FlowNet(cap), {}, 0
    for add, s, d, pick in ops:
        s, d = s % hosts, d % hosts
        if add and s != d:
            live[fid] = (2 * s, 2 * d + 1)
            changed = net.change(add=[(fid, live[fid])])
            assert fid in changed
            fid += 1
        elif live:
            gone = sorted(live)[pick % len(live)]
            del live[gone]
            net.change(remove=[gone])
        assert net.ends == live
        _assert_max_min_fair(live, net.rate, cap)
        scratch = {f: r for f, (r, _) in _fill(live, live, cap).items()}
        for f in live:  # the region solve equals solving the whole network again
            assert net.rate[f] == pytest.approx(scratch[f], rel=1e-9)


def test_water_filling_on_a_larger_random_network_widens_its_region_when_it_must():
    rng = random.Random(3)
    cap = [rng.choice([1.0, 2.0, 3.0, 5.0]) for _ in range(2 * 60)]
    net, live = FlowNet(cap), {}
    for f in range(600):
        if live and rng.random() < 0.4:
            gone = rng.choice(sorted(live))
            del live[gone]
            net.change(remove=[gone])
        else:
            s, d = rng.sample(range(60), 2)
            live[f] = (2 * s, 2 * d + 1)
            net.change(add=[(f, live[f])])
        assert violation(live, net.rate, cap, rel=1e-9) is None
    assert net.solves > 600, "some changes needed more than one region"


# -- the command line -------------------------------------------------------------------------


def _cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run(
        [sys.executable, "-m", "sim", "broadcast", *args], capture_output=True, text=True, timeout=60, env=env
    )


def test_cli_broadcast_json_is_byte_identical_across_processes():
    args = ["--nodes", "20", "--seed", "3", "--size", "40MB", "--link-mbps", "100", "--latency-ms", "20", "--json"]
    first, second = _cli(*args, hash_seed="1"), _cli(*args, hash_seed="2")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    r = json.loads(first.stdout)
    assert r["params"]["nodes"] == 20 and r["params"]["size"] == 40_000_000 and r["params"]["chunk"] == 4 * MiB
    assert r["last_completion_s"] >= r["bound_s"] == 0.4
    assert "wall" not in first.stdout and "wall time" in first.stderr


def test_cli_broadcast_text_units_and_bad_arguments():
    r = _cli("--nodes", "2", "--seed", "1", "--size", "1GiB", "--chunk", "64MiB", "--link-bytes-per-s", "1e9")
    assert r.returncode == 0, r.stderr
    assert "16 chunks of 64 MiB to 2 receivers" in r.stdout and "wall time" in r.stdout
    assert _cli("--nodes", "2", "--seed", "1", "--size", "40XB").returncode == 2
    assert _cli("--nodes", "0", "--seed", "1").returncode == 2
    assert _cli("--nodes", "2", "--seed", "1", "--link-mbps", "1", "--link-bytes-per-s", "1").returncode == 2
