"""Scenarios, fault plans, checkers, sweeps and shrinking (`python -m sim run` / `sweep`).

The checkers are shown to catch bugs: each test below runs the tiny scenario with one core
rule deliberately broken (`_bugs.py`) and expects the right checker to stop the run with the
seed and the step. Regression tests replay seeds that found real bugs during development."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from functools import partial

import pytest

from ringmesh.core import ItemKey, PeerConfig, catalog
from ringmesh.core.messages import DiskMeasured
from sim import plan as plans
from sim.cluster import Cluster
from sim.network import LinkModel
from sim.report import scenario_text
from sim.runner import run_scenario
from sim.scenario import ScenarioError, library, load, parse
from sim.sweep import failure_of, shrink, sweep

from ._bugs import CapBlindPeer, DoubleVotePeer, EarlyAckPeer, RaisingPeer, mbps_limiter

TINY = os.path.join(os.path.dirname(__file__), "tiny.yaml")


@pytest.fixture(scope="module")
def tiny():
    return load(TINY)


def _cli(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    return subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=120, env=env)


# -- scenarios and plans --------------------------------------------------------------------------


def test_the_library_loads_and_the_reference_cluster_comes_from_its_hosts_file():
    names = library()
    for needed in (
        "steady",
        "spot-storm",
        "split-brain",
        "leader-churn",
        "disk-full",
        "broadcast-1000",
        "reference-42",
    ):
        assert needed in names
    for name in names:
        sc = load(name)
        assert sc.hosts and sc.voters(), name
    ref = load("reference-42")
    assert len(ref.hosts) == 42 and "dev-laptop" not in ref.ids
    assert {h.provider for h in ref.hosts} >= {"vast", "lambda", "runpod", "nebius", "hetzner", "vultr"}
    assert all(not ref.host(v).ephemeral for v in ref.voters())
    assert ref.host("vast-3090-03").ephemeral and ref.host("gh200-a").nfs_group
    assert len(load("broadcast-1000").hosts) == 1000
    big = load("steady").with_hosts(100)
    assert len(big.hosts) == 100 == len(set(big.ids)) and big.voters() == load("steady").voters()


def test_a_bad_scenario_is_refused_with_the_field_named():
    with pytest.raises(ScenarioError, match="unknown field 'crashes'"):
        parse({"cluster": {"hosts": [{"count": 2}]}, "faults": {"crashes": {}}})
    with pytest.raises(ScenarioError, match="role"):
        parse({"cluster": {"hosts": [{"count": 2, "role": "gpu"}]}})
    with pytest.raises(ScenarioError, match="loss"):
        parse({"cluster": {"hosts": [{"count": 2}]}, "network": {"default": {"loss": 2}}})


def test_a_plan_is_data_one_seed_one_plan_and_it_round_trips(tiny):
    p1, p2 = plans.generate(tiny, 1), plans.generate(tiny, 2)
    assert p1 == plans.generate(tiny, 1) and p1 != p2
    assert plans.loads(plans.dumps(p1)) == p1
    assert {e.kind for e in p1} <= {"crash", "spot", "partition", "pause", "loss", "disk_fill", "corrupt"}
    assert all(0 <= e.at < tiny.seconds for e in p1)
    voters = set(tiny.voters())
    assert not any(e.kind == "spot" and set(e.hosts) & voters for s in range(1, 30) for e in plans.generate(tiny, s))


# -- determinism ------------------------------------------------------------------------------------


def test_one_seed_gives_byte_identical_json_and_traces_and_another_seed_another_trace(tmp_path):
    runs = []
    for seed, hash_seed in ((4, "1"), (4, "2"), (5, "1")):
        trace = tmp_path / f"trace-{seed}-{hash_seed}.txt"
        r = _cli("run", TINY, "--seed", str(seed), "--json", "--trace", str(trace), hash_seed=hash_seed)
        assert r.returncode in (0, 1), r.stderr
        runs.append((r.stdout, trace.read_bytes()))
    (json_a, trace_a), (json_b, trace_b), (json_c, trace_c) = runs
    assert json_a == json_b and trace_a == trace_b
    assert trace_a != trace_c and json.loads(json_a)["trace"] != json.loads(json_c)["trace"]
    report = json.loads(json_a)
    assert report["seed"] == 4 and report["ok"] and report["liveness"]["converged"]
    assert trace_a.count(b"\n") > 1000 and "wall" not in json_a


def test_a_plan_written_and_replayed_gives_the_same_run(tmp_path, tiny):
    path = tmp_path / "plan.json"
    first = _cli("run", TINY, "--seed", "2", "--json", "--write-plan", str(path))
    again = _cli("run", TINY, "--seed", "2", "--json", "--plan", str(path))
    assert first.stdout == again.stdout and first.returncode == again.returncode == 0
    fewer = plans.loads(path.read_text())[::2]
    path.write_text(plans.dumps(fewer))
    other = json.loads(_cli("run", TINY, "--seed", "2", "--json", "--plan", str(path)).stdout)
    assert other["plan"]["events"] == len(fewer) and other["trace"] != json.loads(first.stdout)["trace"]


# -- the checkers catch deliberately broken rules ---------------------------------------------------


@pytest.mark.parametrize(
    "bug, seed, checker, words",
    [
        (dict(peer_factory=DoubleVotePeer), 5, "one-leader-per-term", "granted its vote in term"),
        (dict(peer_factory=EarlyAckPeer), 1, "durable-games", "declared game"),
        (dict(limiter=mbps_limiter), 1, "link-limit", "exceed its limit of"),
        (dict(peer_factory=CapBlindPeer), 1, "disk-cap", "above the cap of 70%"),
    ],
)
def test_a_deliberately_broken_rule_is_caught_with_seed_and_step(tiny, bug, seed, checker, words):
    r = run_scenario(tiny, seed, **bug)
    v = r["safety"]["violation"]
    assert v is not None and v["checker"] == checker and words in v["message"], v
    assert v["seed"] == seed and v["step"] > 0 and v["trace"] and not r["ok"]
    text = scenario_text(r, name=TINY)
    assert f"VIOLATION   {checker}" in text and f"seed {seed}, step {v['step']}" in text


def test_without_the_bugs_the_same_seeds_pass(tiny):
    for seed in (1, 5):
        r = run_scenario(tiny, seed)
        assert r["ok"] and r["safety"]["violation"] is None and r["liveness"]["converged"], r["liveness"]
        assert r["metrics"]["checks"]["pulls_checked_against_disk_cap"] > 0
        assert r["metrics"]["games"]["durable"] > 0


def test_liveness_that_fails_says_what_did_not_converge_and_why(tiny):
    from ringmesh.core import Peer

    class NoPulls(Peer):
        def _plan_transfers(self, now):
            return []

    r = run_scenario(replace(tiny, liveness_bound=10), 2, peer_factory=NoPulls)
    assert r["safety"]["violation"] is None and not r["ok"]
    live = r["liveness"]
    assert not live["converged"] and "files" in live["not_converged"]
    assert "lacks model/" in live["not_converged"]["files"]["e.g."][0]
    assert failure_of(r) == "not-converged"


# -- sweeps and shrinking ----------------------------------------------------------------------------


def test_a_smoke_sweep_of_five_seeds_passes_in_seed_order():
    s = sweep(TINY, [1, 2, 4, 5, 6], jobs=2)
    assert s["runs"] == 5 and s["passed"] == 5 and not s["failures"], s["failures"]
    assert [r["seed"] for r in s["results"]] == [1, 2, 4, 5, 6]
    assert len({r["trace"] for r in s["results"]}) == 5


def test_shrinking_keeps_only_the_faults_the_failure_needs(tiny):
    run = partial(run_scenario, peer_factory=CapBlindPeer, liveness=False)
    original = plans.generate(tiny, 1)
    s = shrink(replace(tiny, seconds=30), 1, plan=[e for e in original if e.at < 30], run=run, max_runs=60)
    assert s.failure == "violation:disk-cap"
    assert 1 <= len(s.plan) < len(s.original) and s.runs <= 60
    assert any(e.kind == "disk_fill" for e in s.plan)
    assert failure_of(run(replace(tiny, seconds=30), 1, plan=s.plan)) == "violation:disk-cap"


def test_a_core_that_raises_is_a_violation_with_its_host_and_event_and_the_sweep_goes_on(tiny):
    """An exception in a host's core stops that run like a checker's violation (seed, step,
    time, host, event, exception, frames); a sweep records it as that seed's failure and runs
    the other seeds; shrinking treats it like any other failure."""
    run = partial(run_scenario, peer_factory=RaisingPeer)
    s = sweep(TINY, [4, 5, 6], run=run)
    assert s["runs"] == 3 and s["passed"] and s["failed"], "some seeds meet the bug, some do not"
    assert {f["failure"] for f in s["failures"]} == {"violation:core-exception"}
    seed = s["failures"][0]["seed"]
    v = s["failures"][0]["violation"]
    assert v["host"] in tiny.ids and v["event"] == "timer probe" and v["step"] > 0
    assert "raised ValueError" in v["message"] and "_bugs.py" in v["message"]
    r = run(tiny, seed)
    full = r["safety"]["violation"]
    assert full["seed"] == seed and full["exception"].startswith("ValueError") and full["trace"] and full["frames"]
    assert f"host {full['host']}, handling timer probe" in scenario_text(r, name=TINY)
    shrunk = shrink(tiny, seed, run=run, max_runs=2)
    assert shrunk.failure == "violation:core-exception" and len(shrunk.plan) <= len(shrunk.original)


# -- regressions: seeds that found bugs ----------------------------------------------------------------


def test_a_host_restarting_above_its_disk_cap_pulls_nothing_before_it_measures_again():
    """disk-full, seed 1, found this: a restart erased the disk figures from the host's node
    record, and it began pulling a broadcast model onto a disk 88% full at once."""
    c = Cluster(
        4,
        seed=3,
        link=LinkModel(),
        config=PeerConfig(gossip_interval=0.5),
        voters=3,
        files=True,
        roles={n: "training" for n in ("n00", "n01", "n02", "n03")},
    )
    c.start()
    c.command("n03", DiskMeasured(used_percent=95.0, free_bytes=1 << 40))
    c.world.run(until=5.0)
    c.crash("n03")
    c.publish_file("n00", ItemKey("model", "m.pth"), "0123456789abcdef0123456789abcdef", 50_000_000, broadcast=True)
    c.world.run(until=10.0)
    c.restart("n03")
    c.world.run(until=20.0)
    assert catalog.node_record(c.peer("n03").manifest, "n03")["disk_used_percent"] == 95.0
    assert not [e for _t, n, e in c.world.pulls.started if n == "n03"]
    c.command("n03", DiskMeasured(used_percent=40.0, free_bytes=1 << 40))
    c.world.run(until=30.0)
    assert [e for _t, n, e in c.world.pulls.started if n == "n03"]


def test_disk_full_seed_1_no_longer_pulls_onto_a_full_disk():
    r = run_scenario(replace(load("disk-full"), seconds=75), 1, liveness=False)
    assert r["safety"]["violation"] is None, r["safety"]["violation"]


def test_leader_churn_seed_1_judges_the_lease_on_the_leaders_own_clock():
    """leader-churn, seed 1: clocks 2 s apart; the fencing checker read the lease in world time."""
    r = run_scenario(replace(load("leader-churn"), seconds=115), 1, liveness=False)
    assert r["safety"]["violation"] is None, r["safety"]["violation"]
    assert r["metrics"]["checks"]["broadcast_directives"] >= 3


def test_spot_storm_seed_40_no_longer_livelocks_the_leaders_broadcast_timer():
    """spot-storm, seed 40: at its timer's instant the leader computed `now - last < 5.0` true by
    rounding and re-armed the broadcast timer for that same instant, forever (a livelock)."""
    r = run_scenario(replace(load("spot-storm"), seconds=68), 40, liveness=False)
    assert r["safety"]["violation"] is None, r["safety"]["violation"]


def test_a_paused_host_learns_how_its_pull_ended_when_it_resumes(tiny):
    """tiny, seed 3: a pull finished while its host was stopped; the simulator dropped the news
    and the host waited on it forever (liveness: "v-02 lacks model/... (pulling)")."""
    r = run_scenario(tiny, 3)
    assert r["ok"] and r["liveness"]["converged"], r["liveness"]


# -- the CLI -----------------------------------------------------------------------------------------


def test_cli_run_text_sweep_and_errors(tmp_path):
    r = _cli("run", TINY, "--seed", "1", "--show-plan", "--seconds", "20")
    assert r.returncode == 0, r.stderr
    assert "safety      no violation" in r.stdout and "liveness    converged" in r.stdout and "OK" in r.stdout
    assert "wall time" in r.stdout
    assert _cli("run", "no-such-scenario", "--seed", "1").returncode == 2
    assert _cli("run", "--list").stdout.split() == library()
    out = tmp_path / "s.json"
    s = _cli("sweep", TINY, "--seeds", "1..2", "--seconds", "20", "--json")
    assert s.returncode == 0, s.stderr
    doc = json.loads(s.stdout)
    assert doc["passed"] == 2 and doc["command"].startswith("python -m sim sweep")
    del out


def test_epidemic_model_reaches_everyone_and_tracks_the_full_peer_at_100():
    from sim.epidemic import EpidemicParams, run_epidemic
    from sim.gossip import GossipParams, run_gossip

    model = run_epidemic(EpidemicParams(nodes=100, seed=1, fanout=1))
    assert model["converged"] and model["informed_per_round"][-1] == 100
    peer = run_gossip(GossipParams(nodes=100, seed=1, fanout=1))["rumour"]
    assert abs(model["rounds"] - peer["rounds"]) < 2.0, (model["rounds"], peer["rounds"])
