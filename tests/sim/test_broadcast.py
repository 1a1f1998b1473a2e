"""The leader's broadcast in the simulator: the same core, whole-file pulls, crashes and partitions.

Every run is checked as it goes (`BroadcastFencing`): a directive is written only by the leader
of its term holding its lease, and a pull a broadcast made CRITICAL rests on a directive of the
highest term its host knows, or on an order of at least that term."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core import ItemKey, PeerConfig, catalog
from ringmesh.core import broadcast as bc
from ringmesh.core.messages import BroadcastOrder, DiskMeasured
from ringmesh.core.router import EXCLUDED, NFS_COVERED, OVER_CAP, WRONG_ROLE
from sim.checkers import BroadcastFencing
from sim.cluster import Cluster
from sim.membership import agreed_leader
from sim.network import LinkModel

MODEL = ItemKey("model", "canonical_hex8_2p.pth")
DIGEST = "0123456789abcdef0123456789abcdef"


def broadcast_cluster(
    n: int, seed: int, *, file_rate: float, roles: dict[str, str] | None = None, **config
) -> tuple[Cluster, BroadcastFencing]:
    c = Cluster(
        n,
        seed=seed,
        link=LinkModel.from_ms(5, 2, 0.0),
        voters=3,
        files=True,
        file_rate=file_rate,
        roles=roles,
        config=PeerConfig(**{"gossip_interval": 0.5, "retry_base": 2.0, "retry_cap": 10.0, **config}),
    )
    fencing = BroadcastFencing(c.peer)
    c.world.persist_hooks.append(fencing.on_persist)
    c.world.pulls.hooks.append(fencing.on_start)
    c.start()
    return c, fencing


def run_until(c: Cluster, cond, bound: float, what: str) -> None:
    deadline = c.now + bound
    while not cond():
        assert c.now < deadline, f"{what}: not within {bound} virtual seconds"
        c.world.run(until=c.now + 0.1)


def holders(c: Cluster) -> set[str]:
    """Hosts that hold the model's version, by their own account."""
    return {n for n in c.live() if catalog.holdings(c.peer(n).manifest, n).get(MODEL) == DIGEST}


def critical_starts(c: Cluster, node: str) -> list[str]:
    return [e.priority for _t, n, e in c.world.pulls.started if n == node and e.version.digest == DIGEST]


def test_a_broadcast_reaches_every_eligible_host_and_status_says_who_is_left_out_and_why():
    c, fencing = broadcast_cluster(
        10,
        1,
        file_rate=50e6,
        excluded=frozenset({"n08"}),
        nfs_groups={"n05": "shared", "n06": "shared"},
        roles={"n07": "coordinator"},
    )
    c.command("n09", DiskMeasured(used_percent=95.0, free_bytes=1 << 40))
    run_until(c, lambda: agreed_leader(c) is not None, 30, "a leader")
    c.world.run(until=c.now + 3)  # n09's disk figures reach everybody
    c.publish_file("n04", MODEL, DIGEST, 200 << 20, broadcast=True)
    eligible = {"n00", "n01", "n02", "n03", "n04", "n05"}
    run_until(c, lambda: holders(c) >= eligible, 60, "delivery to every eligible host")
    c.world.run(until=c.now + 3)
    assert holders(c) == eligible, "no ineligible host pulled it"
    leader = agreed_leader(c)
    (entry,) = c.peer(leader).broadcasts()
    assert entry["state"] == "delivered" and entry["leader"] == leader and entry["valid"]
    assert entry["hosts"] == {h: "delivered" for h in sorted(eligible)}
    assert entry["ineligible"] == {"n06": f"{NFS_COVERED} (n05)", "n07": WRONG_ROLE, "n08": EXCLUDED, "n09": OVER_CAP}
    # the leader's orders carried its term; pulls started after a host had its order were CRITICAL
    term = c.peer(leader).election.term
    assert fencing.directives == [(fencing.directives[0][0], leader, term)]
    assert fencing.critical >= 1


def test_the_leader_crashes_mid_broadcast_and_the_next_one_finishes_it_under_its_term():
    orders: list[tuple[float, str, str, int]] = []
    c, fencing = broadcast_cluster(6, 7, file_rate=20e6, retry_base=30.0, retry_cap=60.0)  # 400 MB: 20 s a pull
    c.world.send_hooks.append(
        lambda src, dst, env: (
            orders.append((c.now, src, dst, env.body.term)) if isinstance(env.body, BroadcastOrder) else None
        )
    )
    c.command("n05", DiskMeasured(used_percent=95.0, free_bytes=1 << 40))  # full for now: left out
    run_until(c, lambda: agreed_leader(c) is not None, 30, "a leader")
    old = agreed_leader(c)
    old_term = c.peer(old).election.term
    c.world.run(until=c.now + 3)
    c.publish_file("n04", MODEL, DIGEST, 400 << 20, broadcast=True)
    run_until(c, lambda: any(t == old_term for _w, _l, t in fencing.directives), 10, "the first directive")
    c.world.run(until=c.now + 5)
    assert holders(c) == {"n04"}, "mid-broadcast: pulls under way"
    # the leader crashes, and the publisher (the only source) with it: every pull under way fails
    c.crash(old)
    c.crash("n04")
    run_until(c, lambda: agreed_leader(c) not in (None, old, "n04"), 30, "a new leader")
    new = agreed_leader(c)
    new_term = c.peer(new).election.term
    assert new_term > old_term
    run_until(c, lambda: any(lead == new and t == new_term for _w, lead, t in fencing.directives), 10, "the re-issue")
    reissued_at = c.now
    c.world.run(until=c.now + 3)  # the new directive reaches every host by gossip
    c.restart("n04")
    c.command("n05", DiskMeasured(used_percent=10.0, free_bytes=1 << 40))  # room again: eligible now
    live = set(c.live())
    run_until(c, lambda: holders(c) >= live, 120, "delivery to every live host")
    # the failed pulls left laggards in backoff (30 s and more): the new leader ordered them, in its term
    assert any(src == new and t == new_term for w, src, _d, t in orders if w >= reissued_at)
    assert all((src, t) == (new, new_term) for w, src, _d, t in orders if w >= reissued_at)
    # n05 became eligible once the new directive was in force everywhere: its only pull was CRITICAL
    assert critical_starts(c, "n05") == ["critical"]
    (entry,) = c.peer(new).broadcasts()
    assert (entry["leader"], entry["term"], entry["valid"]) == (new, new_term, True)
    # the old leader comes back: it follows, withdraws its stale directive and gets the file too
    c.restart(old)
    run_until(c, lambda: old in holders(c), 120, "the old leader to get the file")
    run_until(c, lambda: not bc.directives(c.peer(new).manifest, old), 30, "the stale directive withdrawn")
    assert [d.leader for d in bc.directives(c.peer(old).manifest)] == [new]
    run_until(c, lambda: c.peer(new).broadcasts()[0]["state"] == "delivered", 10, "the leader to see it delivered")
    assert c.peer(new).broadcasts()[0]["hosts"] == {n: "delivered" for n in c.ids}


FAULTS = st.lists(
    st.tuples(
        st.sampled_from(["crash", "restart", "partition", "heal", "leader"]),
        st.integers(0, 4),
        st.sampled_from([0.5, 2.0, 5.0]),
    ),
    max_size=10,
)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), faults=FAULTS)
def test_every_honoured_directive_carries_the_highest_term_its_host_knows(seed, faults):
    """Crashes (the leader's too), restarts and partitions during a broadcast: the fencing
    checker watches every step; after heal, every host gets the file."""
    c, fencing = broadcast_cluster(5, seed, file_rate=40e6, reorder_interval=2.0)
    c.world.run(until=5.0)
    c.publish_file("n04", MODEL, DIGEST, 100 << 20, broadcast=True)
    for kind, i, dt in faults:
        node = c.ids[i]
        if kind == "leader":
            node = agreed_leader(c) or node
        if kind in ("crash", "leader") and node in c.live() and node != "n04":
            c.crash(node)
        elif kind == "restart" and node in c.world.down:
            c.restart(node)
        elif kind == "partition":
            side = {node}
            c.network.blocked |= {(a, b) for a in side for b in c.ids if b not in side}
            c.network.blocked |= {(b, a) for a in side for b in c.ids if b not in side}
        elif kind == "heal":
            c.network.blocked.clear()
        c.world.run(until=c.now + dt)
    c.network.blocked.clear()
    for n in sorted(c.world.down):
        c.restart(n)
    run_until(c, lambda: holders(c) == set(c.ids), 240, "delivery after heal")
