"""Membership views from claims, refutation, suspicion timeouts, local health."""

import random

from ringmesh.core import catalog
from ringmesh.core.hlc import HybridClock
from ringmesh.core.manifest import Manifest
from ringmesh.core.membership import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Membership,
    MembershipConfig,
    Ping,
    PingAck,
    PingReq,
    view_of,
)
from ringmesh.core.messages import Emit, Outbox, Timer

CFG = MembershipConfig(probe_interval=1.0, probe_timeout=0.4, indirect_probes=3)


def _noted(out, kind):
    return [e.subject for e in out.effects if isinstance(e, Emit) and e.kind == kind]


def _member(me, m=None):
    return Membership(me, m or Manifest(me, 1), HybridClock(), random.Random(me), CFG)


def _sync(*manifests):
    for a in manifests:
        for b in manifests:
            if a is not b:
                b.apply(a.delta_for(b.digest(), 1 << 20))


def test_views_follow_claims_and_incarnations():
    ma, mx = Manifest("a", 1), Manifest("x", 1)
    a, x = _member("a", ma), _member("x", mx)
    a.start(0.0), x.start(0.0)
    _sync(ma, mx)
    assert view_of(ma, "x") == ALIVE
    ma.put("m/x", catalog.pack({"s": "suspect", "i": 1}))
    assert view_of(ma, "x") == SUSPECT
    ma.put("m/x", catalog.pack({"s": "dead", "i": 1}))
    assert view_of(ma, "x") == DEAD
    assert mx.apply(ma.delta_for(mx.digest(), 1 << 20))
    out = x.on_manifest_changed(1.0)
    assert out.changes and x.stats["refutations"] == 1, "x refutes the claim about itself"
    _sync(ma, mx)
    assert view_of(ma, "x") == ALIVE, "a higher alive incarnation overrides older claims"
    mx.put("left", catalog.pack({"i": 2}))
    _sync(ma, mx)
    assert view_of(ma, "x") == LEFT


def test_a_stale_claim_is_retracted_once_the_member_refuted():
    ma, mx = Manifest("a", 1), Manifest("x", 1)
    a, x = _member("a", ma), _member("x", mx)
    a.start(0.0), x.start(0.0)
    _sync(ma, mx)
    a._claim(Outbox(), "x", SUSPECT)
    mx.apply(ma.delta_for(mx.digest(), 1 << 20))
    x.on_manifest_changed(0.5)
    assert x.stats["refutations"] == 1
    ma.apply(mx.delta_for(ma.digest(), 1 << 20))
    a.on_manifest_changed(1.0)
    assert ma.get("a", "m/x") is None, "a's claim about x is withdrawn (tombstoned)"
    assert view_of(ma, "x") == ALIVE


def test_probe_cycle_direct_then_indirect_then_suspect():
    ma = Manifest("a", 1)
    a = _member("a", ma)
    a.start(0.0)
    out = a.on_timer(Timer.PROBE, 0.0, ["a", "b", "c", "d", "e"])
    ((target, ping),) = out.sends
    assert isinstance(ping, Ping)
    assert (Timer.PROBE_INDIRECT, 0.4) in out.timers and (Timer.PROBE, 1.0) in out.timers
    out = a.on_timer(Timer.PROBE_INDIRECT, 0.4, ["a", "b", "c", "d", "e"])
    reqs = [(to, m) for to, m in out.sends if isinstance(m, PingReq)]
    assert len(reqs) == 3 and all(m.target == target and to != target for to, m in reqs)
    out = a.on_timer(Timer.PROBE, 1.0 * 2, ["a", "b", "c", "d", "e"])  # health grew: timers stretch
    assert _noted(out, "suspected") == [target] and view_of(ma, target) == SUSPECT
    assert a.health == 1


def test_an_answered_probe_clears_and_relays_carry_acks_back():
    a, b = _member("a"), _member("b")
    a.start(0.0)
    out = a.on_timer(Timer.PROBE, 0.0, ["a", "b"])
    ((_, ping),) = out.sends
    assert b.on_message("a", ping, 0.1).sends == [("a", PingAck(seq=ping.seq))]
    a.on_message("b", PingAck(seq=ping.seq), 0.1)
    out = a.on_timer(Timer.PROBE, 1.0, ["a", "b"])
    assert _noted(out, "suspected") == []
    relay = b.on_message("a", PingReq(seq=77, target="c"), 0.0)
    ((to, p2),) = relay.sends
    assert to == "c" and isinstance(p2, Ping)
    back = b.on_message("c", PingAck(seq=p2.seq), 0.1)
    assert back.sends == [("a", PingAck(seq=77))]


def test_a_late_timer_accuses_nobody():
    ma = Manifest("a", 1)
    a = _member("a", ma)
    a.start(0.0)
    a.on_timer(Timer.PROBE, 0.0, ["a", "b"])
    out = a.on_timer(Timer.PROBE, 30.0, ["a", "b"])  # the process was stopped for 29 s
    assert _noted(out, "suspected") == [] and view_of(ma, "b") == ALIVE and a.health >= 1


def test_suspicion_timeout_shrinks_with_confirmations():
    a = _member("a")
    t = [a.suspicion_timeout(100, k) for k in range(5)]
    assert t[0] == 6 * t[3] and t[3] == t[4] == 2.0 * 2 * 1.0
    assert t[0] > t[1] > t[2] > t[3]


def test_suspect_becomes_dead_after_the_timeout():
    ma = Manifest("a", 1)
    a = _member("a", ma)
    a.start(0.0)
    a.on_timer(Timer.PROBE, 0.0, ["a", "b"])
    out = a.on_timer(Timer.PROBE, 2.0, ["a", "b"])
    assert _noted(out, "suspected") == ["b"]
    assert any(name == Timer.SUSPICION for name, _ in out.timers)
    deadline = 2.0 + a.suspicion_timeout(len(ma.origins), 0)
    assert _noted(a.on_timer(Timer.SUSPICION, deadline - 0.01, []), "declared-dead") == []
    assert _noted(a.on_timer(Timer.SUSPICION, deadline, []), "declared-dead") == ["b"]
    assert view_of(ma, "b") == DEAD


def _targets(a, start, known, probes):
    """The members `a` pings on `probes` successive probe timers (acking none of them)."""
    out = []
    for k in range(probes):
        sends = a.on_timer(Timer.PROBE, start + k, known).sends
        out += [to for to, m in sends if isinstance(m, Ping)]
    return out


def test_a_member_that_appears_mid_cycle_is_probed_in_this_cycle():
    known = ["a"] + [f"h{i:02}" for i in range(40)]
    for seed in range(20):
        a = Membership("a", Manifest("a", 1), HybridClock(), random.Random(seed), CFG)
        a.start(0.0)
        first = _targets(a, 0.0, known, 10)  # a quarter into a round of 40
        rest = _targets(a, 10.0, [*known, "new"], 31)  # the round's other 30, and "new"
        assert sorted(first + rest) == sorted(known[1:] + ["new"]), "one round: each member once"


def test_a_member_someone_else_suspects_is_probed_next():
    known = ["a", "b"] + [f"h{i:02}" for i in range(40)]
    ma, mb_ = Manifest("a", 1), Manifest("b", 1)
    a, b = _member("a", ma), _member("b", mb_)
    a.start(0.0), b.start(0.0)
    _sync(ma, mb_)
    first = _targets(a, 0.0, known, 2)
    x = next(h for h in known[2:] if h not in first and h not in a.order[-2:])
    b._claim(Outbox(), x, SUSPECT)
    ma.apply(mb_.delta_for(ma.digest(), 1 << 20))
    a.on_manifest_changed(2.0)
    assert _targets(a, 3.0, known, 1) == [x], "the suspected member is probed next, not in its turn"
    nxt = _targets(a, 4.0, known, 1)
    assert nxt != [x], "and only once: the round goes on"
