"""Leader election between real processes: one leader, failover after SIGKILL, the old leader
follows when back, and a leader stopped past its lease does not act on it when resumed."""

from __future__ import annotations

import signal

import pytest

from ringmesh.ops.localcluster import LocalCluster, wait_for


def _acting(cluster, nodes):
    """The nodes that hold a leader's lease right now."""
    return [n for n in nodes if (cluster.nodes[n].query("status") or {}).get("election", {}).get("is_leader")]


def _agreed(cluster, nodes):
    """The leader and term every node in `nodes` reports, if they all agree."""
    docs = [cluster.nodes[n].query("status") for n in nodes]
    if any(d is None for d in docs):
        return None
    views = {(d["leader"], d["term"]) for d in docs}
    if len(views) != 1:
        return None
    leader, term = views.pop()
    return (leader, term) if leader in nodes else None


@pytest.fixture
def five(tmp_path):
    c = LocalCluster(tmp_path / "c5", 5, gossip_interval=0.2)
    try:
        c.start_all()
        yield c
    finally:
        for name in c.nodes:
            c.signal(name, signal.SIGCONT)
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values()), {n: c.nodes[n].log_tail() for n in c.nodes}


def test_one_leader_failover_and_the_old_leader_follows(five):
    everyone = list(five.nodes)
    leader, term = wait_for(lambda: _agreed(five, everyone), 30, what="one leader known to all")
    wait_for(lambda: _acting(five, everyone) == [leader], 10, what="the leader's lease")

    assert five.signal(leader, signal.SIGKILL) == -signal.SIGKILL
    rest = [n for n in everyone if n != leader]
    new, new_term = wait_for(lambda: _agreed(five, rest), 30, what="a new leader after SIGKILL")
    assert new != leader and new_term > term

    five.start(leader)
    five.wait_ready(leader)
    back = wait_for(lambda: _agreed(five, everyone), 30, what="the old leader to follow")
    assert back == (new, new_term)

    def follows():
        e = five.nodes[leader].query("status")["election"]
        return e["role"] == "follower" and not e["is_leader"] and e["term"] == new_term

    wait_for(follows, 10, what="the old leader to settle as a follower")


def test_a_leader_stopped_past_its_lease_does_not_act_when_resumed(five):
    everyone = list(five.nodes)
    leader, term = wait_for(lambda: _agreed(five, everyone), 30, what="one leader known to all")
    five.signal(leader, signal.SIGSTOP)
    rest = [n for n in everyone if n != leader]
    new, new_term = wait_for(lambda: _agreed(five, rest), 30, what="a new leader while the old one is stopped")
    assert new != leader and new_term > term

    five.signal(leader, signal.SIGCONT)
    st = five.nodes[leader].query("status")
    # The first thing it answers after waking: its lease ran out while it slept.
    assert not st["election"]["is_leader"], st["election"]
    assert wait_for(lambda: _agreed(five, everyone), 30, what="the stopped leader to follow") == (new, new_term)
    wait_for(lambda: _acting(five, everyone) == [new], 10, what="only the new leader to hold a lease")


def test_a_graceful_leave_is_announced_not_detected(five):
    everyone = list(five.nodes)
    wait_for(lambda: _agreed(five, everyone), 30, what="a settled cluster")
    assert five.signal("node5", signal.SIGTERM) == 0

    def seen_left():
        docs = [five.nodes[n].query("status") for n in everyone[:4]]
        return all(d and {m["name"]: m["state"] for m in d["members"]}.get("node5") == "left" for d in docs)

    wait_for(seen_left, 10, what="every host to see node5 as left")
    events = [e for n in everyone[:4] for e in five.nodes[n].query("status")["events"] if e["subject"] == "node5"]
    assert not [e for e in events if e["kind"] == "declared-dead"], "announced, not detected"
    five.start("node5")
    five.wait_ready("node5")

    def back():
        docs = [five.nodes[n].query("status") for n in everyone]
        return all(d and {m["name"]: m["state"] for m in d["members"]}.get("node5") == "alive" for d in docs)

    wait_for(back, 20, what="node5 alive again everywhere")
