"""Retention and the backup schedule, as core timers the simulator checks (`retained-games`,
`backups`): the checkers catch a deliberately broken rule (`_bugs.py`) and pass the real core.
A regression test replays what retention found: an origin that dropped its games kept
advertising them, and a game host behind by more than `retention` asked it for them forever."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from ringmesh.core import Peer, PeerConfig
from ringmesh.core.backups import BackupSchedule
from ringmesh.core.cron import CronError
from sim.runner import Run
from sim.scenario import load

from ._bugs import EarlyDropPeer, EveryHostBacksUpPeer, FloorBlindPeer

TINY = os.path.join(os.path.dirname(__file__), "tiny.yaml")


@pytest.fixture(scope="module")
def timed():
    """The tiny scenario with a short retention and a backup every minute."""
    sc = load(TINY)
    return replace(sc, peer=replace(sc.peer, retention_seconds=0.5, backup_schedules=("* * * * *", None)))


@pytest.mark.parametrize(
    "factory, seed, checker, words",
    [
        (EarlyDropPeer, 1, "retained-games", "before it was durable"),
        (EveryHostBacksUpPeer, 1, "backups", "started backup 0 of term"),
    ],
)
def test_a_deliberately_broken_timer_rule_is_caught(timed, factory, seed, checker, words):
    r = Run(timed, seed, peer_factory=factory).run()
    v = r["safety"]["violation"]
    assert v is not None and v["checker"] == checker and words in v["message"], v
    assert v["seed"] == seed and v["step"] > 0 and not r["ok"]


@pytest.mark.parametrize("seed", [1, 3])
def test_the_real_core_drops_games_only_when_it_may_and_backs_up_once_per_slot(timed, seed):
    run = Run(timed, seed, peer_factory=Peer)
    r = run.run()
    assert r["ok"] and r["liveness"]["converged"], (r["safety"], r["liveness"])
    assert run.retained.drops > 0  # retention ran (and `check_end` found nothing kept too long)
    assert run.backups.runs and {index for index, _ in run.backups.runs} == {0}


def test_a_game_host_far_behind_does_not_ask_the_origin_for_games_it_dropped(timed):
    blind = Run(timed, 1, peer_factory=FloorBlindPeer).run()
    assert blind["safety"]["violation"] is None and not blind["liveness"]["converged"]
    assert "games" in blind["liveness"]["not_converged"]
    assert Run(timed, 1, peer_factory=Peer).run()["liveness"]["converged"]


def test_the_schedule_runs_on_the_leader_only_and_skips_a_slot_still_running():
    s = BackupSchedule(("@every 10s", None, "0 3 * * *"))
    s.start(1000.0)
    assert s.next_run[0] == 1010.0 and set(s.next_run) == {0, 2}
    runs, due = s.tick(1005.0, term=4)
    assert runs == [] and due == 1010.0
    runs, due = s.tick(1010.0, term=None)  # not the leader: the slot passes
    assert runs == [] and due == 1020.0
    runs, _ = s.tick(1020.0, term=4)
    assert [(r.index, r.term, r.due) for r in runs] == [(0, 4, 1020.0)]
    assert s.tick(1030.0, term=4)[0] == []  # the run of 1020 has not reported back
    s.finished(0)
    assert [r.due for r in s.tick(1040.0, term=5)[0]] == [1040.0]
    with pytest.raises(CronError, match="hour: 25"):
        PeerConfig(backup_schedules=("0 25 * * *",))
