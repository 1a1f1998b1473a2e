"""The membership scenario: failure detection, leader failover, and a quiet hour.

Phase 1 (warm-up): every host starts; the phase ends when the manifests agree and every
host knows the same leader.
Phase 2 (detection): `crashes` times, one non-voter host drawn from the seed crashes; we
record when each live host first sees it `dead`, then restart it and wait until every host
sees it `alive` again.
Phase 3 (failover): `failovers` times, the leader crashes; we record when every live host
knows one new leader (`Peer.leader()`), then restart the old one, which must follow.
Phase 4 (stability): `stable_seconds` of a healthy cluster at the given loss: suspicions,
false deaths and leader changes are counted (the target for the last two is 0).

Every phase is bounded; a phase that hits its bound says so in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringmesh.core import PeerConfig
from ringmesh.core import membership as mb

from .cluster import Cluster
from .gossip import _gc_paused
from .network import LinkModel

CHECK_EVERY = 0.05  # virtual seconds between looks at the hosts' views


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipParams:
    nodes: int = 100
    voters: int = 5
    seed: int = 1
    loss: float = 0.0
    latency_ms: float = 20.0
    jitter_ms: float = 10.0
    crashes: int = 5
    failovers: int = 3
    stable_seconds: float = 3600.0
    gossip_interval: float = 1.0
    bound: float = 120.0  # seconds per measurement

    def link(self) -> LinkModel:
        return LinkModel.from_ms(self.latency_ms, self.jitter_ms, self.loss)

    def config(self) -> PeerConfig:
        return PeerConfig(gossip_interval=self.gossip_interval)


def _wait(c: Cluster, cond, bound: float) -> float | None:
    """Run until `cond()` holds (looked at every CHECK_EVERY); its time, or None at the bound."""
    start = c.now
    while not cond():
        if c.now - start > bound:
            return None
        c.world.run(until=c.now + CHECK_EVERY)
    return c.now - start


def agreed_leader(c: Cluster) -> str | None:
    leaders = {c.peer(n).leader()[0] for n in c.live()}
    if len(leaders) == 1:
        (leader,) = leaders
        if leader is not None and c.world.is_up(leader):
            return leader
    return None


def _percentile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)


def _summary(xs: list[float]) -> dict[str, object]:
    return {
        "n": len(xs),
        "p50": _percentile(xs, 0.5),
        "p99": _percentile(xs, 0.99),
        "max": round(max(xs), 3) if xs else None,
    }


def run_membership(p: MembershipParams) -> dict[str, object]:
    with _gc_paused():
        return _run(p)


def _run(p: MembershipParams) -> dict[str, object]:
    c = Cluster(p.nodes, seed=p.seed, link=p.link(), config=p.config(), voters=p.voters)
    report: dict[str, object] = {
        "scenario": "membership",
        "params": {
            "nodes": p.nodes,
            "voters": p.voters,
            "seed": p.seed,
            "loss": p.loss,
            "latency_ms": p.latency_ms,
            "jitter_ms": p.jitter_ms,
            "crashes": p.crashes,
            "failovers": p.failovers,
            "stable_seconds": p.stable_seconds,
            "gossip_interval_s": p.gossip_interval,
        },
    }
    c.start()
    t = _wait(c, lambda: c.vectors.converged() and agreed_leader(c) is not None, p.bound)
    report["warmup_s"] = None if t is None else round(t, 3)
    report["detection"] = detection = _detection(c, p)
    report["failover"] = failover = _failover(c, p)
    report["stability"] = stability = _stability(c, p)
    report["ok"] = bool(
        t is not None
        and detection["ok"]
        and failover["ok"]
        and stability["false_deaths"] == 0
        and stability["leader_changes"] == 0
    )
    report["events"] = c.world.events
    report["trace"] = c.world.trace_digest()
    return report


def _detection(c: Cluster, p: MembershipParams) -> dict[str, object]:
    per_host: list[float] = []  # (crash, observer) pairs: time until the observer sees it dead
    everyone: list[float] = []  # per crash: time until every live host sees it dead
    rejoin: list[float] = []
    ok = True
    for _ in range(p.crashes):
        victim = c.rng.choice([n for n in c.live() if n not in c.voters])
        c.crash(victim)
        start, seen = c.now, {}
        observers = c.live()

        def all_see_dead() -> bool:
            for o in observers:
                if o not in seen and c.peer(o).membership.view(victim) == mb.DEAD:
                    seen[o] = c.now - start
            return len(seen) == len(observers)

        t = _wait(c, all_see_dead, p.bound)
        per_host += list(seen.values())
        if t is None:
            ok = False
            break
        everyone.append(t)
        c.restart(victim)
        t = _wait(c, lambda: all(c.peer(o).membership.view(victim) == mb.ALIVE for o in c.live()), p.bound)
        if t is None:
            ok = False
            break
        rejoin.append(t)
    return {
        "ok": ok,
        "per_observer_s": _summary(per_host),
        "all_observers_s": _summary(everyone),
        "rejoin_s": _summary(rejoin),
    }


def _failover(c: Cluster, p: MembershipParams) -> dict[str, object]:
    times: list[float] = []
    ok = True
    for _ in range(p.failovers):
        old = agreed_leader(c)
        if old is None and _wait(c, lambda: agreed_leader(c) is not None, p.bound) is None:
            ok = False
            break
        old = agreed_leader(c)
        assert old is not None, "the wait above returned with a leader agreed"
        c.crash(old)
        t = _wait(c, lambda: agreed_leader(c) not in (None, old), p.bound)
        if t is None:
            ok = False
            break
        times.append(t)
        c.restart(old)
        new = agreed_leader(c)
        if _wait(c, lambda: c.peer(old).leader()[0] == new and agreed_leader(c) == new, p.bound) is None:
            ok = False  # the old leader must come back as a follower of the new one
            break
    return {"ok": ok, "new_leader_known_to_all_s": _summary(times)}


def _stability(c: Cluster, p: MembershipParams) -> dict[str, object]:
    before = {n: dict(c.peer(n).membership.stats) for n in c.ids}
    terms_before = max(c.peer(n).election.term for n in c.ids)
    c.world.run(until=c.now + p.stable_seconds)
    delta = {k: sum(c.peer(n).membership.stats[k] - before[n][k] for n in c.ids) for k in before[c.ids[0]]}
    dead_now = sum(1 for o in c.ids for x in c.ids if o != x and c.peer(o).membership.view(x) == mb.DEAD)
    return {
        "seconds": p.stable_seconds,
        "suspicions": delta["suspicions"],
        "refutations": delta["refutations"],
        "false_deaths": delta["deaths_declared"],
        "dead_views_at_end": dead_now,
        "leader_changes": max(c.peer(n).election.term for n in c.ids) - terms_before,
        "probes": delta["probes"],
        "probe_failures": delta["probe_failures"],
    }
