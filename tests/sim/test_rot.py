"""Rot in the simulator (`sim/rot.py`, the `rot` fault): stored games go bad silently, the
nodes' scrubs find them, the core pulls them again; a durable game whose every copy rotted
before one was repaired is a loss the durable-games checker reports."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim import plan as plans
from sim.runner import Run, run_scenario
from sim.scenario import load


@pytest.fixture(scope="module")
def rot():
    return replace(load("rot"), seconds=120.0, liveness_bound=120.0)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_rotten_copies_are_found_by_a_scrub_and_repaired(rot, seed):
    r = run_scenario(rot, seed)
    assert r["ok"], r["safety"]["violation"] or r["liveness"]
    m = r["metrics"]["rot"]
    assert m["games_rotted"] > 0, "the scenario rots something"
    assert m["corrupt_games_found"] == m["games_rotted"], "every bad copy is found"
    assert m["corrupt_games_repaired"] == m["corrupt_games_found"] and m["games_lost"] == 0
    assert m["found_after_s_max"] <= rot.faults["rot"]["scrub_period"] + 1e-6, "by the next scrub"


def test_the_plan_carries_rot_events_and_they_round_trip(rot):
    p = plans.generate(rot, 4)
    rots = [e for e in p if e.kind == "rot"]
    assert rots and all(len(e.hosts) == 1 and 1 <= e.count <= 3 for e in rots)
    assert plans.loads(plans.dumps(p)) == p
    assert "rot of" in rots[0].describe()


def test_a_durable_game_rotten_on_every_copy_at_once_is_reported_lost(rot):
    run = Run(replace(rot, seconds=60.0), 5, plan=[])
    w, hit = run.world, []

    def rot_everywhere() -> None:
        durable = {s: t for s, t in run.games.durable.items() if t >= 1}
        stream = sorted(durable)[0]
        for h, d in sorted(w.disks.items()):
            if d.holds(stream, 1):
                d.rot(stream, [1])
                hit.append(h)

    w.at(30.0, rot_everywhere)
    r = run.run()
    assert len(hit) >= 2, "a durable game has copies on several disks"
    v = r["safety"]["violation"]
    assert not r["ok"] and v["checker"] == "durable-games"
    assert "/1 is on no disk" in v["message"] and "lists it lost" in v["message"], v["message"]
    assert r["metrics"]["rot"]["games_lost"] == 1, "and the cluster itself declared it lost"
