"""The leader's broadcast, driven in memory: peers wired to each other, every timer fired by the
test at its time (election, gossip, probes, the broadcast timer), nothing sleeps."""

from __future__ import annotations

import random
from collections import deque

import pytest

from ringmesh.core import broadcast as bc
from ringmesh.core import catalog, keys
from ringmesh.core.bandwidth import Priority
from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.messages import (
    BroadcastOrder,
    DiskMeasured,
    Envelope,
    FilePublished,
    FileStored,
    FileVersion,
    ItemKey,
    LeaderHeartbeat,
    MessageReceived,
    Persist,
    Send,
    SetTimer,
    StartTransfer,
    TimerFired,
    TransferFailed,
)
from ringmesh.core.peer import Peer, PeerConfig
from ringmesh.core.router import EXCLUDED, NFS_COVERED, OVER_CAP, WRONG_ROLE

ITEM = ItemKey("model", "canonical_hex8_2p.pth")
D1 = "11111111111111111111111111111111"
D2 = "22222222222222222222222222222222"
CS = 4 << 20


class Net:
    """Peers wired in memory, with their timers. Sends are delivered at once (unless `drop`
    says no or the receiver is down); `run(until)` fires every timer that falls due, in order."""

    def __init__(self, peers: list[Peer], drop=lambda src, send: False) -> None:
        self.peers = {p.me: p for p in peers}
        self.now = 0.0
        self.timers: dict[str, dict[str, float]] = {p.me: {} for p in peers}
        self.log: dict[str, list] = {p.me: [] for p in peers}  # effects other than Send and SetTimer
        self.sent: list[tuple[float, str, Send]] = []
        self.started: list[tuple[int, str, StartTransfer]] = []  # (messages delivered before it, ...)
        self.down: set[str] = set()
        self.failing: set[str] = set()  # hosts whose every pull fails at once
        self.drop = drop
        for p in peers:
            self.feed(p.me, p.start(self.now))

    def feed(self, name: str, effects) -> None:
        # each effect with the number of messages delivered before the step that made it
        queue = deque((name, e, len(self.sent)) for e in effects)
        while queue:
            src, e, made = queue.popleft()
            if isinstance(e, Send):
                self.sent.append((self.now, src, e))
                assert len(self.sent) < 200_000, "message storm"
                if e.to in self.peers and e.to not in self.down and not self.drop(src, e):
                    made = len(self.sent)
                    queue.extend(
                        (e.to, x, made) for x in self.peers[e.to].handle(MessageReceived(envelope=e.envelope), self.now)
                    )
            elif isinstance(e, SetTimer):
                self.timers[src][e.name] = e.at
            else:
                self.log[src].append(e)
                if isinstance(e, StartTransfer):
                    self.started.append((made, src, e))
                if isinstance(e, StartTransfer) and src in self.failing:
                    failed = TransferFailed(item=e.version.item, digest=e.version.digest, reason="no source answers")
                    queue.extend((src, x, made) for x in self.peers[src].handle(failed, self.now))

    def event(self, name: str, ev) -> None:
        self.feed(name, self.peers[name].handle(ev, self.now))

    def run(self, until: float) -> None:
        while True:
            due = [
                (at, n, t) for n, ts in self.timers.items() if n not in self.down for t, at in ts.items() if at <= until
            ]
            if not due:
                break
            at, n, t = min(due)
            self.now = max(self.now, at)
            del self.timers[n][t]
            self.feed(n, self.peers[n].handle(TimerFired(name=t), self.now))
        self.now = until

    def crash(self, name: str) -> None:
        self.down.add(name)
        self.timers[name] = {}

    def restart(self, name: str) -> None:
        """A new process on the same disk (the manifest and the vote were persisted)."""
        old = self.peers[name]
        p = Peer(
            name,
            incarnation=old.manifest.own.incarnation,
            rng=random.Random(99),
            config=old.config,
            seeds=old.seeds,
            voters=old.election.voters,
            node_record=old.node_record,
            manifest=old.manifest,
            hlc=old.clock.now(self.now),
            vote=(old.election.term, old.election.voted_for),
        )
        self.peers[name] = p
        self.down.discard(name)
        self.feed(name, p.start(self.now))

    def orders(self, to: str | None = None) -> list[tuple[float, str, BroadcastOrder]]:
        return [
            (t, s.envelope.sender, s.envelope.body)
            for t, _src, s in self.sent
            if isinstance(s.envelope.body, BroadcastOrder) and to in (None, s.to)
        ]

    def starts(self, name: str) -> list[StartTransfer]:
        return [e for e in self.log[name] if isinstance(e, StartTransfer)]

    def starts_after_an_order(self, name: str) -> list[StartTransfer]:
        """The pulls `name` started once the leader's order had reached it (messages are
        delivered at once, in the order of `sent`: a pull that gossip started in the same
        instant but before the order was delivered does not count)."""
        first = min(
            (
                i
                for i, (_t, _src, s) in enumerate(self.sent)
                if isinstance(s.envelope.body, BroadcastOrder) and s.to == name
            ),
            default=len(self.sent),
        )
        return [e for i, n, e in self.started if n == name and i > first]

    def leader(self) -> str | None:
        live = [p for n, p in self.peers.items() if n not in self.down and p.election.is_leader(self.now)]
        return live[0].me if len(live) == 1 else None


ROLES = {"a": "training", "b": "selfplay", "c": "selfplay", "d": "selfplay"}


def cluster(names=("a", "b", "c"), voters=("a",), roles=None, drop=lambda src, send: False, **config) -> Net:
    roles = {**ROLES, **(roles or {})}
    cfg = PeerConfig(gossip_interval=0.5, retry_base=30.0, retry_cap=60.0, roles=roles, **config)
    peers = [
        Peer(
            n,
            incarnation=1,
            rng=random.Random(i),
            config=cfg,
            seeds=names,
            voters=voters,
            node_record={"role": roles.get(n, "selfplay")},
        )
        for i, n in enumerate(names)
    ]
    net = Net(peers, drop)
    net.run(5.0)
    assert net.leader() == voters[0] if len(voters) == 1 else net.leader(), "no leader elected"
    return net


def publish(net: Net, name: str, digest: str = D1, broadcast: bool = True, item: ItemKey = ITEM) -> None:
    attrs = {bc.ATTR: "1"} if broadcast else {}
    net.event(name, FilePublished(item=item, digest=digest, size=10 << 20, chunk_size=CS, attrs=attrs))


def directive_writes(net: Net, name: str) -> list[tuple[str, dict]]:
    """Every write of a directive fact by `name`: (key, value), tombstones as {}."""
    return [
        (f.key, catalog.unpack(f.value) or {})
        for e in net.log[name]
        if isinstance(e, Persist)
        for ch in e.changes
        if ch.origin == name
        for f in ch.upserts
        if f.key.startswith(keys.DIRECTIVE)
    ]


def version(net: Net, name: str, item: ItemKey = ITEM):
    return catalog.newest_versions(net.peers[name].manifest)[item]


# -- the leader ----------------------------------------------------------------------------------


def test_the_leader_issues_exactly_one_directive_per_term_and_version():
    net = cluster()
    term = net.peers["a"].election.term
    publish(net, "b")
    net.run(20.0)
    assert directive_writes(net, "a") == [(bc.directive_key(ITEM), {"d": D1, "t": term})]
    assert not directive_writes(net, "b") and not directive_writes(net, "c")  # only the leader writes them
    publish(net, "b", D2)  # a newer version replaces the directive
    net.run(40.0)
    assert directive_writes(net, "a")[1:] == [(bc.directive_key(ITEM), {"d": D2, "t": term})]
    # the leader comes back in a new term: it re-issues the broadcast under that term, once
    net.crash("a")
    net.run(41.0)
    net.restart("a")
    net.run(60.0)
    new_term = net.peers["a"].election.term
    assert net.leader() == "a" and new_term > term
    assert directive_writes(net, "a")[2:] == [(bc.directive_key(ITEM), {"d": D2, "t": new_term})]


def test_a_version_without_the_mark_gets_no_directive_and_withdraws_one():
    net = cluster()
    publish(net, "b", broadcast=False)
    net.run(10.0)
    assert directive_writes(net, "a") == [] and net.orders() == []
    publish(net, "b", D2)
    net.run(20.0)
    publish(net, "c", D1, broadcast=False)  # newer again, unmarked: the directive goes
    net.run(30.0)
    assert [v for _k, v in directive_writes(net, "a")] == [{"d": D2, "t": net.peers["a"].election.term}, {}]
    assert net.peers["b"].broadcasts() == []


def test_laggards_are_ordered_again_after_reorder_interval_and_not_before():
    net = cluster(reorder_interval=5.0)
    net.failing.add("c")  # c's pulls fail at once (and back off for 30 s or more)
    publish(net, "b")
    net.run(31.0)
    times = [t for t, sender, o in net.orders("c") if sender == "a"]
    assert len(times) >= 4, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(abs(g - 5.0) < 1e-9 for g in gaps), gaps
    # each order resets c's backoff: it tries again at once, not 30 s later
    starts = [s for s in net.starts("c")]
    assert len(starts) >= len(times) and all(s.priority == "critical" for s in starts[1:])
    assert net.orders("b") == [], "the publisher holds it: no order"
    term = net.peers["a"].election.term
    assert {(o.type, o.name, o.digest, o.term) for _t, _s, o in net.orders("c")} == {(ITEM.type, ITEM.name, D1, term)}


def test_a_host_that_holds_or_pulls_the_version_is_not_ordered_again():
    net = cluster(reorder_interval=1.0)
    publish(net, "b")
    net.run(10.0)
    # the leader's own pull is planned under its directive
    assert [s.priority for s in net.starts("a")] == ["critical"]
    # c heard of the version by gossip, perhaps before the directive: one pull, one order at most
    assert len(net.starts("c")) == 1 and len(net.orders("c")) <= 1
    before = len(net.orders("c"))
    net.run(20.0)  # c pulls (announced in p/): no more orders
    assert len(net.orders("c")) == before
    (entry,) = net.peers["a"].broadcasts()
    assert entry["hosts"] == {"a": "pulling", "b": "delivered", "c": "pulling"}
    assert (entry["state"], entry["delivered"], entry["eligible"]) == ("delivering", 1, 3)
    net.event("c", FileStored(item=ITEM, digest=D1))
    net.event("a", FileStored(item=ITEM, digest=D1))
    net.run(30.0)
    assert len(net.orders("c")) == before
    (entry,) = net.peers["a"].broadcasts()
    assert entry["hosts"] == {"a": "delivered", "b": "delivered", "c": "delivered"}
    assert (entry["state"], entry["delivered"]) == ("delivered", 3)


# -- fencing ---------------------------------------------------------------------------------------


def test_a_directive_below_the_highest_term_a_host_knows_is_ignored():
    net = cluster()
    publish(net, "c")
    net.run(10.0)
    b = net.peers["b"]
    v = version(net, "b")
    assert b.priority_of(v) is Priority.CRITICAL
    (entry,) = b.broadcasts()
    assert entry["valid"] and entry["leader"] == "a" and entry["term"] == net.peers["a"].election.term
    # b hears of a leader of a later term (a heartbeat from it): a's directive stops counting
    later = net.peers["a"].election.term + 5
    net.event("b", MessageReceived(envelope=Envelope(sender="x", hlc=0, body=LeaderHeartbeat(term=later, seq=1))))
    assert b.leader()[1] == later
    assert b.priority_of(v) is Priority.NORMAL
    (entry,) = b.broadcasts()
    assert not entry["valid"] and entry["state"].startswith("stale directive")


def test_a_stale_or_foreign_order_is_ignored_and_a_valid_one_starts_a_critical_pull_at_once():
    net = cluster(voters=("a",))
    publish(net, "c", broadcast=False)
    net.run(5.0 + 3.0)
    b = net.peers["b"]
    (first,) = net.starts("b")
    assert first.priority == "normal"
    net.event("b", TransferFailed(item=ITEM, digest=D1, reason="source gone"))  # now in backoff (30 s and more)
    net.run(net.now + 2.0)
    assert len(net.starts("b")) == 1
    term = b.leader()[1]

    def order(sender, t):
        body = BroadcastOrder(type=ITEM.type, name=ITEM.name, digest=D1, term=t)
        net.event("b", MessageReceived(envelope=Envelope(sender=sender, hlc=0, body=body)))

    order("a", term - 1)
    order("c", term)  # a leads this term, not c
    assert len(net.starts("b")) == 1
    assert (b.broadcast.stats["orders_stale"], b.broadcast.stats["orders_foreign"]) == (1, 1)
    assert b.priority_of(version(net, "b")) is Priority.NORMAL
    order("a", term)
    second = net.starts("b")[1]
    assert (second.version.digest, second.priority) == (D1, "critical")
    # an order of a term the host has not heard of yet counts too (it may be the news)
    assert net.peers["c"].broadcast.on_order(
        "z", BroadcastOrder(type="model", name="x", digest=D2, term=term + 1), term, None
    )


def test_an_order_does_not_make_an_ineligible_host_pull():
    net = cluster(names=("a", "b", "c", "d"), excluded=frozenset({"d"}))
    publish(net, "b", broadcast=False)
    net.run(10.0)
    body = BroadcastOrder(type=ITEM.type, name=ITEM.name, digest=D1, term=net.peers["d"].leader()[1])
    net.event("d", MessageReceived(envelope=Envelope(sender="a", hlc=0, body=body)))
    net.run(20.0)
    assert net.starts("d") == []
    assert net.peers["d"].broadcast.stats["orders_honoured"] == 1


def test_the_new_leader_reissues_under_its_term_and_the_old_one_withdraws_its_directive():
    net = cluster(names=("a", "b", "c", "d"), voters=("a", "b", "c"))
    old = net.leader()
    old_term = net.peers[old].election.term
    publish(net, "d")
    net.run(10.0)
    assert [v["t"] for _k, v in directive_writes(net, old)] == [old_term]
    net.crash(old)
    net.run(20.0)
    new = net.leader()
    assert new is not None and new != old
    new_term = net.peers[new].election.term
    assert new_term > old_term
    assert [v for _k, v in directive_writes(net, new)] == [{"d": D1, "t": new_term}]
    for n in net.peers:
        if n != old:
            (entry,) = net.peers[n].broadcasts()
            assert (entry["leader"], entry["term"], entry["valid"]) == (new, new_term, True)
    net.restart(old)
    net.run(30.0)
    assert directive_writes(net, old)[-1][1] == {}, "the old leader withdrew its stale directive"
    assert all(o.term == new_term for t, s, o in net.orders() if t > 20.0)


# -- who is left out, and why ------------------------------------------------------------------------


def test_ineligible_hosts_are_listed_with_their_reason():
    names = ("a", "b", "x", "full", "n1", "n2", "w")
    net = cluster(names=names, roles={"w": "coordinator"}, excluded=frozenset({"x"}), nfs_groups={"n1": "g", "n2": "g"})
    net.event("full", DiskMeasured(used_percent=95.0, free_bytes=1 << 40))
    net.run(net.now + 3.0)  # its disk figures reach every host by gossip
    publish(net, "b")
    net.run(15.0)
    for n in names:
        (entry,) = net.peers[n].broadcasts()
        assert entry["ineligible"] == {"x": EXCLUDED, "full": OVER_CAP, "n2": f"{NFS_COVERED} (n1)", "w": WRONG_ROLE}, n
        assert set(entry["hosts"]) == {"a", "b", "n1"}
        assert entry["hosts"]["b"] == "delivered"
    assert {s.to for _t, _src, s in net.sent if isinstance(s.envelope.body, BroadcastOrder)} <= {"n1"}
    for n in ("x", "full", "n2", "w"):
        assert net.starts(n) == [], n
    assert len(net.starts("n1")) == 1
    assert all(s.priority == "critical" for s in net.starts_after_an_order("n1"))


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_the_mark(value, expected):
    v = FileVersion(item=ITEM, digest=D1, size=1, chunk_size=CS, hlc=1, origin="a", attrs={bc.ATTR: value})
    assert bc.marked(v) is expected


def test_bad_reorder_interval_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        PeerConfig(reorder_interval=0)
