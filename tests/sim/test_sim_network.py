"""The network model: loss, duplication, latency bounds, partitions, one seed one schedule."""

from __future__ import annotations

import random

import pytest

from sim.network import LinkModel, Network


def _routes(model: LinkModel, n: int = 2000, seed: str = "s"):
    net = Network(random.Random(seed), model)
    return net, [net.route("a", "b") for _ in range(n)]


def test_loss_drops_about_the_given_fraction_silently():
    net, routes = _routes(LinkModel(loss=0.25))
    lost = sum(1 for r in routes if not r.delays and not r.failed)
    assert 400 < lost < 600
    assert net.stats.lost == lost and net.stats.delivered == len(routes) - lost


def test_duplication_delivers_two_copies():
    net, routes = _routes(LinkModel(duplicate=1.0))
    assert all(len(r.delays) == 2 for r in routes)
    assert net.stats.duplicated == len(routes)


def test_latency_is_base_plus_bounded_jitter():
    _, routes = _routes(LinkModel(latency=0.1, jitter=0.02))
    delays = [d for r in routes for d in r.delays]
    assert min(delays) >= 0.1 and max(delays) <= 0.12
    assert max(delays) - min(delays) > 0.015  # the jitter is actually drawn


def test_one_seed_gives_one_schedule_and_another_seed_another():
    model = LinkModel(loss=0.3, duplicate=0.2)
    assert _routes(model, seed="x")[1] == _routes(model, seed="x")[1]
    assert _routes(model, seed="x")[1] != _routes(model, seed="y")[1]


def test_symmetric_split_blocks_both_directions_and_heal_restores():
    net = Network(random.Random(1))
    net.split(["a", "b"], ["c"])
    assert net.route("a", "c").failed and net.route("c", "b").failed
    assert not net.route("a", "b").failed
    net.heal()
    assert not net.route("a", "c").failed and not net.route("c", "a").failed


def test_one_way_split_blocks_one_direction_only():
    net = Network(random.Random(1))
    net.split_one_way(["a"], ["b", "c"])
    assert net.route("a", "b").failed and net.route("a", "c").failed
    assert not net.route("b", "a").failed and not net.route("b", "c").failed


def test_isolate_cuts_one_node_from_all_others():
    net = Network(random.Random(1))
    net.isolate("b", ["a", "b", "c"])
    assert net.blocked == {("b", "a"), ("a", "b"), ("b", "c"), ("c", "b")}


@pytest.mark.parametrize("bad", [{"loss": 1.5}, {"duplicate": -0.1}, {"latency": -1.0}])
def test_link_model_rejects_nonsense(bad):
    with pytest.raises(ValueError):
        LinkModel(**bad)


def test_an_egress_limit_serialises_a_hosts_messages_and_is_never_exceeded():
    import random as _random

    from sim.network import LinkModel, Network

    net = Network(_random.Random(1), LinkModel(latency=0.01, jitter=0.0, egress_bytes_per_s=1000))
    arrivals = [net.route("a", "b", 500, now=0.0).delays[0] for _ in range(10)]
    assert arrivals == sorted(arrivals)
    for i, t in enumerate(arrivals):
        assert abs(t - (0.01 + 0.5 * (i + 1))) < 1e-9
    # another host's uplink is its own
    assert abs(net.route("c", "b", 500, now=0.0).delays[0] - 0.51) < 1e-9
    # bytes sent by `a` up to any arrival never exceed rate x elapsed
    assert all(500 * (i + 1) <= 1000 * (t - 0.01) + 1e-6 for i, t in enumerate(arrivals))


def test_gossip_converges_under_a_tight_uplink_limit():
    from ringmesh.core import PeerConfig
    from sim.cluster import Cluster
    from sim.network import LinkModel

    c = Cluster(20, seed=5, link=LinkModel(egress_bytes_per_s=20_000), config=PeerConfig(gossip_interval=1.0))
    c.start()
    assert c.world.run(until=120.0, stop=c.vectors.converged)
    sent = c.network.uplink_bytes
    assert max(sent.values()) <= 20_000 * c.now + 1
