"""Hosts nobody can dial (`nat_blocked`, issue 2.4) in the simulator: reachable only over the
links they keep to relays (`sim/relays.py`), never leaders, never falsely dead (the nat scenario)."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ringmesh.core import ItemKey, PeerConfig, catalog, reach
from ringmesh.core import membership as mb
from sim.cluster import PROVIDERS, Cluster, node_ids
from sim.relays import Relays
from sim.runner import Run, run_scenario
from sim.scenario import HERE, load, parse

from ._bugs import NatBlindPeer, deaf_relays

NAT = "n07"


def _cluster(n: int = 8, nat: tuple[str, ...] = (NAT,), *, seed: int = 1, enabled: bool = True, files: bool = False):
    ids = node_ids(n)
    providers = {h: PROVIDERS[i % len(PROVIDERS)] for i, h in enumerate(ids)}
    c = Cluster(n, seed=seed, config=PeerConfig(nat=frozenset(nat)), voters=3, ephemeral=set(), files=files)
    relays = c.world.relays = Relays(c.world, frozenset(nat), providers)
    relays.enabled = enabled
    c.start()
    relays.start()
    return c, relays, providers


# -- the scenario file -------------------------------------------------------------------------------


def test_nat_blocked_reaches_the_peer_config_from_groups_and_from_a_hosts_file(tmp_path):
    sc = load("nat")
    nat = {h.name for h in sc.hosts if h.nat}
    assert sc.peer.nat == frozenset(nat) and 0.25 <= len(nat) / len(sc.hosts) <= 0.45
    assert any(sc.host(h).voter for h in nat) and any(sc.host(h).ephemeral for h in nat)
    assert not load("spot-storm").peer.nat  # nothing NAT'd unless the file says so

    with open(os.path.join(HERE, "reference_hosts.yaml")) as f:
        doc = yaml.safe_load(f)
    name = "gh200-a"
    doc["hosts"][name]["nat_blocked"] = True
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(doc))
    sc2 = parse({"name": "x", "cluster": {"from_config": "hosts.yaml"}}, str(tmp_path / "x.yaml"))
    assert sc2.peer.nat == {name} and sc2.host(name).nat


# -- the links and the messages ----------------------------------------------------------------------


def test_a_nat_host_keeps_three_relays_on_three_providers_and_publishes_them():
    c, relays, providers = _cluster()
    c.world.run(until=20.0)
    links = relays.links[NAT]
    assert len(links) == 3 and len({providers[r] for r in links}) == 3 and NAT not in links
    assert links == reach.choose_relays(NAT, {h: p for h, p in providers.items() if h != NAT})
    assert c.peer(NAT).node_record["relays"] == links
    assert all(catalog.relays_of(c.peer(h).manifest, NAT) == links for h in c.ids)
    assert all(c.peer(h).membership.view(NAT) == mb.ALIVE for h in c.ids)
    assert relays.stats["relayed"] > 0 and relays.stats["over_own_link"] > 0 and relays.stats["unreachable"] == 0


def test_without_links_a_nat_host_is_unreachable_and_declared_dead_though_it_reaches_everyone():
    c, relays, _ = _cluster(enabled=False)
    received: dict[str, set[str]] = {}  # receiver -> senders of what it handled
    c.world.trace_sink = lambda line: (
        received.setdefault(line.split()[1], set()).add(line.split()[4]) if " from " in line else None
    )
    c.world.run(until=40.0)
    assert relays.links[NAT] == [] and relays.stats["relayed"] == 0 and relays.stats["unreachable"] > 0
    assert all(c.peer(h).membership.view(NAT) == mb.DEAD for h in c.ids if h != NAT)
    assert all(NAT in received[h] for h in c.ids if h != NAT)  # what it sends does arrive: it dials out
    assert NAT not in received  # and nothing reaches it


def test_a_crashed_relay_is_replaced_after_the_redial_delay_and_the_others_stay():
    c, relays, providers = _cluster()
    c.world.run(until=10.0)
    before = list(relays.links[NAT])
    gone = before[1]
    seen: list[tuple[tuple[str, ...], float]] = []
    relays.hooks.append(lambda h, links, now: seen.append((links, now)))
    c.crash(gone)
    t = c.world.now
    assert relays.links[NAT] == [before[0], before[2]] and seen[-1] == (tuple(relays.links[NAT]), t)
    c.world.run(until=t + relays.redial - 0.01)
    assert len(relays.links[NAT]) == 2  # not before the redial delay
    c.world.run(until=t + 8.0)
    after = relays.links[NAT]
    assert after[:2] == [before[0], before[2]] and len(after) == 3 and gone not in after
    assert c.peer(NAT).node_record["relays"] == after


def test_a_silently_cut_link_breaks_after_the_timeout_and_a_reachable_relay_takes_its_place():
    c, relays, _ = _cluster()
    c.world.run(until=10.0)
    first = relays.links[NAT][0]
    c.network.split([NAT], [first])
    t = c.world.now
    c.world.run(until=t + relays.link_timeout - 1.5)
    assert first in relays.links[NAT]  # silence, not yet a break
    c.world.run(until=t + relays.link_timeout + relays.redial + 3 * relays.tick_every)
    assert first not in relays.links[NAT] and len(relays.links[NAT]) == 3
    assert relays.stats["links_broken"] == 1 and c.peer(NAT).node_record["relays"] == relays.links[NAT]


def test_a_nat_host_that_restarts_starts_without_links_and_links_again():
    c, relays, _ = _cluster()
    c.world.run(until=10.0)
    c.crash(NAT)
    assert relays.links[NAT] == []
    c.world.run(until=15.0)
    assert relays.links[NAT] == []  # a dead process dials nothing
    c.restart(NAT)
    assert "relays" not in c.peer(NAT).node_record
    c.world.run(until=20.0)
    assert len(relays.links[NAT]) == 3 and c.peer(NAT).node_record["relays"] == relays.links[NAT]


def test_a_file_on_a_nat_host_flows_only_while_it_has_a_link():
    for enabled in (False, True):
        c, relays, _ = _cluster(files=True, enabled=enabled)
        c.world.run(until=5.0)
        c.publish_file(NAT, ItemKey("npz", "x.npz"), "ab" * 16, 10_000_000)
        c.world.run(until=40.0)
        holders = [
            h for h in c.ids if h != NAT and c.world.disks[h].files.get(ItemKey("npz", "x.npz"), ("",))[0] == "ab" * 16
        ]
        assert bool(holders) == enabled, (enabled, holders)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # ~5 s each; the sweeps run more
@given(
    faults=st.lists(
        st.tuples(st.sampled_from(["crash", "restart", "cut", "heal", "pause", "resume"]), st.integers(0, 7)),
        max_size=8,
    ),
    seed=st.integers(1, 50),
)
@example(faults=[("cut", 2), ("crash", 0), ("pause", 7), ("resume", 7)], seed=1)  # checked before held events ran
def test_links_are_always_distinct_live_candidates_and_the_core_is_told_each_set(faults, seed):
    """The law of the links: at every instant each NAT'd host's up links are at most k distinct
    hosts that are neither NAT'd nor itself, none of them a dead process (a reset is seen at once),
    and whenever it runs unstopped its node record names exactly them."""
    nat = ("n06", NAT)
    c, relays, _ = _cluster(nat=nat, seed=seed)
    w = c.world

    def check() -> None:
        for n in nat:
            links = relays.links[n]
            assert len(set(links)) == len(links) <= relays.k
            assert not set(links) & set(nat) and not set(links) & w.down
            if w.is_up(n):
                assert c.peer(n).node_record.get("relays", []) == links

    t = 3.0
    for what, i in faults:
        w.run(until=t)
        check()
        h = c.ids[i]
        if what == "crash" and h not in w.down:
            c.crash(h)
        elif what == "restart" and h in w.down:
            c.restart(h)
        elif what == "cut":
            c.network.isolate(h, c.ids)
        elif what == "heal":
            c.network.heal()
        elif what == "pause" and w.is_up(h):
            w.pause(h)
        elif what == "resume" and h in w.paused:
            w.resume(h)
        w.run(until=t)  # what fell due at this instant (a resumed host's held events) runs first
        check()
        t += 2.5
    w.run(until=t)
    check()


# -- the scenario and its checkers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nat_short():
    return replace(load("nat"), seconds=40.0)


def test_the_nat_scenario_passes_and_messages_go_through_relays(nat_short):
    for seed in (1, 2):
        r = run_scenario(nat_short, seed)
        assert r["ok"] and r["safety"]["violation"] is None and r["liveness"]["converged"], r["liveness"]
        rl = r["metrics"]["relays"]
        assert rl["nat_hosts"] == 8 and rl["relayed"] > 0 and rl["link_changes"] >= rl["nat_hosts"]
        assert r["metrics"]["games"]["durable"] > 0


def test_in_the_nat_scenario_without_links_the_nat_hosts_are_declared_dead(nat_short):
    run = Run(replace(nat_short, faults={}), 1)
    assert run.relays is not None
    run.relays.enabled = False
    r = run.run(liveness=False)
    rl = r["metrics"]["relays"]
    assert r["safety"]["violation"] is None  # no link, so no false death: they are cut off
    assert rl["relayed"] == 0 and rl["unreachable"] > 0 and rl["dead_claims_about_nat_hosts"] > 0


def test_relays_that_carry_nothing_are_caught_as_a_false_death(nat_short):
    run = Run(replace(nat_short, faults={}, seconds=70.0), 1)
    relays = run.relays
    assert relays is not None
    run.world.at(30.0, lambda: deaf_relays(relays))  # after a calm window with links up
    r = run.run(liveness=False)
    v = r["safety"]["violation"]
    assert v is not None and v["checker"] == "nat-false-death" and "(nat_blocked) dead" in v["message"], v


ALL_NAT_VOTERS = {
    "name": "nat-voters",
    "seconds": 30,
    "cluster": {
        "hosts": [
            {
                "count": 3,
                "name": "gh-{i}",
                "provider": "lambda",
                "role": "training",
                "nat_blocked": True,
                "voter": True,
            },
            {"count": 3, "name": "r-{i}", "provider": "runpod", "role": "selfplay"},
        ]
    },
}


def test_a_core_that_lets_nat_hosts_lead_is_caught():
    sc = parse(ALL_NAT_VOTERS)
    honest = run_scenario(sc, 1, liveness=False)
    assert honest["safety"]["violation"] is None and honest["metrics"]["failover"]["terms"] == 0
    r = run_scenario(sc, 1, peer_factory=NatBlindPeer, liveness=False)
    v = r["safety"]["violation"]
    assert v is not None and v["checker"] == "nat-never-leads" and "gh-0" in v["message"], v


def test_a_nat_host_cut_off_long_enough_to_suspect_every_relay_still_links_again():
    """Seeds 4, 15 and 69 of the sweep: a host that lost every link heard nothing more, so its
    view kept every relay suspect or dead, and dialling only hosts it saw alive it never linked
    again. With no link up, every candidate is one."""
    c, relays, _ = _cluster()
    c.world.run(until=10.0)
    c.network.isolate(NAT, c.ids)
    c.world.run(until=60.0)
    assert relays.links[NAT] == []
    assert all(c.peer(NAT).membership.view(h) != mb.ALIVE for h in c.ids if h != NAT)
    c.network.heal()
    linked: list[float] = []
    relays.hooks.append(lambda h, links, now: linked.append(now) if h == NAT and len(links) == 3 else None)
    c.world.run(until=63.0)
    assert linked, "no link within 3 s of the heal"
    c.world.run(until=66.0)  # links made while its view is stale may drop once; they come back and stay
    assert len(relays.links[NAT]) == 3
    c.world.run(until=90.0)
    assert all(c.peer(h).membership.view(NAT) == mb.ALIVE for h in c.ids)
