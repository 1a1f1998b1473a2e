"""The persist-fed checkers agree with the core's own answers after every single event."""

from __future__ import annotations

from sim.checkers import Rumour
from sim.cluster import Cluster
from sim.network import LinkModel


def test_vector_checker_matches_fingerprints_event_by_event():
    c = Cluster(8, seed=11, link=LinkModel(loss=0.2, duplicate=0.1))
    c.start()
    steps, agreed_converged = 0, 0
    while c.world.step() and c.now < 20.0:
        steps += 1
        assert c.vectors.converged() == c.vectors_equal(), f"after {steps} events at t={c.now}"
        agreed_converged += c.vectors.converged()
        if steps == 150:
            c.put("n03", "sim/extra", b"x")  # the truth moves: everyone but n03 lags again
            assert not c.vectors.converged() and not c.vectors_equal()
            assert set(c.vectors.lagging()) >= {n for n in c.ids if n != "n03"}
    assert agreed_converged > 0  # the run did converge, so both answers were tested


def test_rumour_checker_matches_the_facts_event_by_event():
    c = Cluster(8, seed=12, link=LinkModel(loss=0.1))
    c.start()
    assert c.world.run(until=30.0, stop=c.vectors.converged)
    inc, counter = c.put("n05", "sim/r", b"hello")
    rumour = Rumour(c.ids, origin="n05", incarnation=inc, counter=counter, now=c.now)
    c.world.persist_hooks.append(rumour.on_persist)
    while not rumour.done():
        assert c.world.step()
        assert sorted(rumour.informed) == c.holders("n05", "sim/r", b"hello")
    assert rumour.informed_per_round(1.0)[-1] == 8


def test_informed_per_round_counts_by_the_end_of_each_interval():
    r = Rumour(["a", "b", "c", "d"], origin="a", incarnation=1, counter=1, now=10.0)
    r.informed.update({"b": 10.5, "c": 11.0, "d": 12.9})
    assert r.informed_per_round(1.0) == [2, 3, 4]
