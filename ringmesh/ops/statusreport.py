"""The daemon's own reports for the local API: `status` and `ls` (rendered by statusview.py;
the cluster-wide data views are in reports.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ringmesh.core import catalog, membership as mb, streams
from ringmesh.core.messages import FileVersion

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

#: A core error this recent makes `doctor` fail: it recurs, or has just happened.
CORE_ERROR_WINDOW_S = 600.0


def status(d: "Daemon") -> dict[str, Any]:
    """`ringmesh status --json`: the peer's view of the cluster, its transfers and counters."""
    now = time.time()
    p, m = d.peer, d.peer.manifest
    breakers = p.breakers.report(now)
    members = []
    for origin in sorted(set(m.origins) | set(p.known_peers())):
        st = m.origins.get(origin)
        rec = catalog.node_record(m, origin) or {}
        lag = d.telemetry.lag(origin, m, now)  # changes it reported that we lack, for how long
        members.append({
            "name": origin, "state": p.membership.view(origin), "address": rec.get("address") or d.resolve(origin),
            "role": rec.get("role"), "provider": rec.get("provider"), "ephemeral": rec.get("ephemeral"),
            "incarnation": st.incarnation if st else None, "heartbeat": st.heartbeat if st else None,
            "max_counter": st.max_counter if st else None,
            "alive_incarnation": mb.alive_incarnation(m, origin),
            "breaker": breakers.get(origin, {"state": "closed"}),
            "heartbeat_age_s": None if (age := d.telemetry.heartbeat_age(origin, now)) is None else round(age, 3),
            "lag_changes": lag[0], "lag_s": round(lag[1], 3),
            "voter": origin in p.election.voters,
        })
    leader, term = p.leader()
    e = p.election
    return {
        "node": p.me, "address": d.address, "incarnation": m.own.incarnation,
        "uptime_s": round(now - d.started_at, 3), "gossip_rounds": p.rounds, "paused": d.paused,
        "core_errors": {"total": d.counters.get("core_errors", 0),
                        "last_10_min": sum(1 for at, _ in d.core_errors if now - at < CORE_ERROR_WINDOW_S),
                        "recent": [{"at": round(at, 3), "what": what} for at, what in d.core_errors[-5:]]},
        "leader": leader, "term": term,
        "election": {"role": e.role, "term": e.term, "voted_for": e.voted_for, "is_leader": e.is_leader(now),
                     "lease_left_s": round(max(0.0, e.lease_until - now), 3), "elections_started": e.elections_started},
        "local_health": p.membership.health, "membership_stats": dict(p.membership.stats),
        "fingerprint": m.fingerprint(), "members": members, "disk": d.disk,
        "blocked_items": d.blocked_items(), "backups": p.backups(), "events": list(d.events),
        "broadcasts": p.broadcasts(), "broadcast_stats": dict(p.broadcast.stats),
        "freshness": streams.freshness(m, p.game_placement().targets, now),
        "games": {"dir": str(d.games.games_dir), "held": d.games.held_summary, "durable_through": dict(d.durable),
                  "materialised_through": {k: streams.materialised_through(m, (p.replication.origin, k), p.game_placement().targets)
                                           for k in d.durable}, "streams": {f"{o}/{k}": hw for (o, k), hw in d.games.log.streams().items()},
                  **d.games.counts},
        "items": len(catalog.newest_versions(m)),
        "transfers": [
            {"item": str(v.item), "digest": v.digest, "size_bytes": v.size, "running_s": round(time.time() - t0, 3),
             "priority": d.peer.priority_of(v).label,
             **_progress(d, v)}
            for _t, v, t0 in d.transfers.values()
        ],
        "counters": dict(sorted(d.counters.items())),
        "metrics": {"listen": d.metrics.address} if d.metrics else None,
        "bandwidth": {"egress": d.egress.report(), "ingress": d.ingress.report()},
    }

def _progress(d: "Daemon", v: FileVersion) -> dict[str, Any]:
    pr = d.pulling.get(v.digest)
    if pr is None:
        return {}
    p = pr.partial
    return {"chunks_verified": len(p.have), "chunks": p.n_chunks, "resumed_bytes": p.resumed_bytes}

def listing(d: "Daemon") -> dict[str, Any]:
    """`ringmesh ls --json`: the newest version of every item, its holders and placement."""
    m = d.peer.manifest
    held = catalog.holders(m)
    placement = d.peer.placer()
    items = []
    for item, v in sorted(catalog.newest_versions(m).items()):
        others = {d: hs for (it, d), hs in held.items() if it == item and d != v.digest}
        p = placement(v)
        items.append({
            "targets": list(p.targets), "left_out": dict(p.left_out), "nfs_covered": dict(p.covered),
            "blocked": p.blocked, "shortfall": p.shortfall,
            "type": item.type, "name": item.name, "digest": v.digest, "size_bytes": v.size,
            "chunk_size_bytes": v.chunk_size, "hlc": v.hlc, "origin": v.origin, "attrs": dict(v.attrs),
            "holders": held.get((item, v.digest), []), "older_versions": others,
        })
    return {"node": d.peer.me, "fingerprint": m.fingerprint(), "items": items}
