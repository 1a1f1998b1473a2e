"""The gossip scenario: cold-start convergence, then the dissemination of one rumour.

Phase 1 (cold start): every node starts at t=0 knowing only the names of the others (its
seeds) and publishes its node record. The phase ends when every node's version vector is
the same, i.e. every node holds every node record.

Phase 2 (one rumour): one node, drawn from the scenario's random source, writes one new fact
on its own origin. The phase ends when every node holds it. Push-pull gossip theory (Karp et
al. 2000) predicts about log_3 N + ln ln N rounds for this; `theory_rounds` reports that
figure beside the measured one.

A "round" is one gossip interval of virtual time (each peer's timer is jittered by `GOSSIP_JITTER`, so
rounds are not synchronised as in the theory). Each phase is bounded by `max_rounds`; a phase
that hits its bound is reported as not converged, with the lagging nodes.
"""

from __future__ import annotations

import gc
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from ringmesh.core import PeerConfig

from .checkers import Rumour
from .cluster import Cluster
from .network import LinkModel
from .traffic import Traffic
from .world import SimulationError

RUMOUR_KEY = "sim/rumour"


@dataclass(frozen=True, slots=True, kw_only=True)
class GossipParams:
    nodes: int
    seed: int
    loss: float = 0.0
    duplicate: float = 0.0
    latency_ms: float = 20.0
    jitter_ms: float = 10.0
    fanout: int = 3
    gossip_interval: float = 1.0
    max_rounds: float = 100.0  # per phase

    def link(self) -> LinkModel:
        return LinkModel.from_ms(self.latency_ms, self.jitter_ms, self.loss, self.duplicate)

    def config(self) -> PeerConfig:
        return PeerConfig(gossip_interval=self.gossip_interval, fanout=self.fanout)


def theory_rounds(n: int) -> float:
    """log_3 N + ln ln N, the push-pull prediction for one rumour (0 below N = 3)."""
    if n < 3:
        return 0.0
    return math.log(n, 3) + math.log(math.log(n))


def run_gossip(p: GossipParams) -> dict[str, object]:
    """Run both phases and return the report as plain data (JSON-ready, deterministic)."""
    with _gc_paused():
        return _run(p)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic collector off during a run: a run at N=1000 holds ~10^6 manifest entries
    that the collector would rescan again and again (~30% of the wall time) to find no
    cycle to free. Reference counting still frees everything as usual."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _run(p: GossipParams) -> dict[str, object]:
    cluster = Cluster(p.nodes, seed=p.seed, link=p.link(), config=p.config())
    report: dict[str, object] = {"scenario": "gossip", "params": _params(p)}
    report["cold_start"] = cold = _cold_start(cluster, p)
    report["rumour"] = rumour = _rumour(cluster, p) if cold["converged"] else None
    report["converged"] = rumour is not None and rumour["converged"]
    world = cluster.world
    report["totals"] = {
        "simulated_seconds": round(world.now, 6),
        "events": world.events,
        "messages": world.traffic.total_messages(),
        "messages_by_kind": dict(sorted(world.traffic.by_kind.items())),
        "bytes_by_kind": dict(sorted(world.traffic.bytes_by_kind.items())),
        "network": {
            "lost": world.network.stats.lost,
            "duplicated": world.network.stats.duplicated,
            "blocked": world.network.stats.blocked,
        },
        "ignored_effects": dict(sorted(world.ignored.items())),
    }
    report["trace"] = world.trace_digest()
    return report


def _cold_start(cluster: Cluster, p: GossipParams) -> dict[str, object]:
    world, vectors = cluster.world, cluster.vectors
    cluster.start()
    ok = world.run(until=p.max_rounds * p.gossip_interval, stop=vectors.converged)
    out = _phase(ok, world.now, p.gossip_interval, world.traffic, p.nodes)
    if ok and not cluster.vectors_equal():
        raise SimulationError("the persist checker saw convergence but the fingerprints differ")
    if not ok:
        out["lagging"] = _lagging(vectors.lagging())
        out["distinct_fingerprints"] = len(set(cluster.fingerprints().values()))
    return out


def _rumour(cluster: Cluster, p: GossipParams) -> dict[str, object]:
    world, start = cluster.world, cluster.now
    before = world.traffic.snapshot()
    writer = cluster.rng.choice(cluster.ids)
    value = f"rumour from {writer} at {start!r}".encode()
    incarnation, counter = cluster.put(writer, RUMOUR_KEY, value)
    rumour = Rumour(cluster.ids, origin=writer, incarnation=incarnation, counter=counter, now=start)
    world.persist_hooks.append(rumour.on_persist)
    ok = world.run(until=start + p.max_rounds * p.gossip_interval, stop=rumour.done)
    out = _phase(ok, world.now - start, p.gossip_interval, world.traffic.since(before), p.nodes)
    if ok and len(cluster.holders(writer, RUMOUR_KEY, value)) != p.nodes:
        raise SimulationError("the rumour checker saw every node informed but a node lacks the fact")
    out["writer"] = writer
    out["theory_rounds"] = round(theory_rounds(p.nodes), 3)
    out["informed_per_round"] = rumour.informed_per_round(p.gossip_interval)
    if not ok:
        out["lagging"] = _lagging(sorted(set(cluster.ids) - set(rumour.informed)))
    return out


def _phase(ok: bool, seconds: float, interval: float, traffic: Traffic, n: int) -> dict[str, object]:
    sent = list(traffic.bytes.values())
    return {
        "converged": ok,
        "seconds": round(seconds, 6),
        "rounds": round(seconds / interval, 3),
        "messages": traffic.total_messages(),
        "bytes_per_node": {"mean": round(sum(sent) / n, 1), "max": max(sent)},
    }


def _params(p: GossipParams) -> dict[str, object]:
    return {
        "nodes": p.nodes,
        "seed": p.seed,
        "loss": p.loss,
        "duplicate": p.duplicate,
        "latency_ms": p.latency_ms,
        "jitter_ms": p.jitter_ms,
        "fanout": p.fanout,
        "gossip_interval_s": p.gossip_interval,
        "max_rounds": p.max_rounds,
    }


def _lagging(nodes: list[str], shown: int = 20) -> dict[str, object]:
    return {"count": len(nodes), "first": nodes[:shown]}
