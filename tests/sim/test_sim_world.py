"""The world: (time, sequence) order, timer replacement, actions, message delivery."""

from __future__ import annotations

import random

from ringmesh.core import Ack, Delta, Envelope, MessageReceived, Send, SendFailed, SetTimer, TimerFired
from sim.network import LinkModel, Network
from sim.world import World


class ScriptedPeer:
    """Records what it is handed; answers each event with the effects `script` returns."""

    def __init__(self, me, script=lambda ev, now: []):
        self.me, self.script, self.seen = me, script, []

    def start(self, now):
        return []

    def handle(self, event, now):
        self.seen.append((now, event))
        return self.script(event, now)


def _world(**link) -> World:
    return World(Network(random.Random("t"), LinkModel(**link)))


def _ack(sender: str) -> Envelope:
    return Envelope(sender=sender, hlc=1, body=Ack(delta=Delta()))


def test_a_later_set_timer_of_the_same_name_replaces_the_earlier_one():
    w = _world()
    p = ScriptedPeer("a")
    w.add(p)
    w.interpret("a", [SetTimer(name="gossip", at=5.0), SetTimer(name="other", at=6.0), SetTimer(name="gossip", at=2.0)])
    w.run(until=10.0)
    assert p.seen == [(2.0, TimerFired(name="gossip")), (6.0, TimerFired(name="other"))]


def test_events_at_the_same_time_run_in_the_order_they_were_scheduled():
    w = _world()
    order = []
    for i in range(5):
        w.at(1.0, lambda i=i: order.append(i))
    w.at(0.5, lambda: order.append("first"))
    w.run(until=1.0)
    assert order == ["first", 0, 1, 2, 3, 4]
    assert w.now == 1.0


def test_run_stops_when_asked_and_at_its_bound():
    w = _world()
    hits = []
    for t in (1.0, 2.0, 3.0, 4.0):
        w.at(t, lambda t=t: hits.append(t))
    assert w.run(until=10.0, stop=lambda: len(hits) == 2) is True
    assert (hits, w.now) == ([1.0, 2.0], 2.0)
    assert w.run(until=3.5) is False
    assert (hits, w.now) == ([1.0, 2.0, 3.0], 3.5)


def test_a_send_arrives_after_the_latency_and_is_counted():
    w = _world(latency=0.05, jitter=0.0)
    a = ScriptedPeer("a", lambda ev, now: [Send(to="b", envelope=_ack("a"))] if isinstance(ev, TimerFired) else [])
    b = ScriptedPeer("b")
    w.add(a), w.add(b)
    w.interpret("a", [SetTimer(name="gossip", at=1.0)])
    w.run(until=2.0)
    assert b.seen == [(1.05, MessageReceived(envelope=_ack("a")))]
    assert w.traffic.messages == {"a": 1, "b": 0}
    assert w.traffic.bytes["a"] > 0


def test_a_send_on_a_blocked_link_fails_back_to_the_sender_after_the_deadline():
    w = _world(deadline=0.5)
    a, b = ScriptedPeer("a"), ScriptedPeer("b")
    w.add(a), w.add(b)
    w.network.split(["a"], ["b"])
    w.interpret("a", [Send(to="b", envelope=_ack("a")), Send(to="nobody", envelope=_ack("a"))])
    w.run(until=1.0)
    assert b.seen == []
    assert a.seen == [
        (0.5, SendFailed(peer="b", reason="unreachable")),
        (0.5, SendFailed(peer="nobody", reason="unknown host")),
    ]


def test_the_trace_digest_follows_the_events():
    def run(t: float) -> str:
        w = _world()
        p = ScriptedPeer("a")
        w.add(p)
        w.interpret("a", [SetTimer(name="gossip", at=t)])
        w.run(until=10.0)
        return w.trace_digest()

    assert run(1.0) == run(1.0)
    assert run(1.0) != run(2.0)


def test_a_timer_on_a_drifting_clock_fires_once_that_clock_reads_its_time():
    w = _world()
    p = ScriptedPeer("a")
    w.add(p)
    w.set_clock("a", offset=0.3, rate=1.0001)
    times = [1.1, 2.7, 65.23926618323303, 70.0 + 1e-9]
    for i, at in enumerate(times):
        w.interpret("a", [SetTimer(name=f"t{i}", at=at)])
    w.run(until=100.0)
    fired = {ev.name: now for now, ev in p.seen}
    assert len(fired) == len(times)
    for i, at in enumerate(times):
        assert fired[f"t{i}"] >= at  # never early on its own clock (rounding included)
        assert fired[f"t{i}"] - at < 1e-9


def test_a_stopped_process_gets_its_local_events_when_resumed_and_a_dead_one_never():
    w = _world()
    a, b = ScriptedPeer("a"), ScriptedPeer("b")
    w.add(a), w.add(b)
    w.pause("a")
    assert w.deliver("a", TimerFired(name="done")) is True and a.seen == []
    w.at(2.0, lambda: w.resume("a"))
    w.crash("b")
    assert w.deliver("b", TimerFired(name="done")) is False
    w.run(until=3.0)
    assert a.seen == [(2.0, TimerFired(name="done"))] and b.seen == []
