"""The daemon's own reports for the local API: `status` and `ls` (rendered by statusview.py;
the cluster-wide data views are in reports.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ringmesh.core import catalog, keys, membership, streams
from ringmesh.core.messages import FileVersion

if TYPE_CHECKING:
    from ringmesh.node.view import NodeView

#: A core error this recent makes `doctor` fail: it recurs, or has just happened.
CORE_ERROR_WINDOW_S = 600.0


def status(view: NodeView) -> dict[str, Any]:
    """`ringmesh status --json`: the peer's view of the cluster, its transfers and counters."""
    now = time.time()
    core, manifest = view.core, view.manifest
    breakers = core.breakers.report(now)
    members = []
    for origin in sorted(set(manifest.origins) | set(core.known_peers())):
        origin_state = manifest.origins.get(origin)
        rec = catalog.node_record(manifest, origin) or {}
        lag = view.telemetry.lag(origin, manifest, now)  # changes it reported that we lack, for how long
        members.append(
            {
                "name": origin,
                "state": core.membership.view(origin),
                "address": rec.get("address") or view.resolve(origin),
                "role": rec.get("role"),
                "provider": rec.get("provider"),
                "ephemeral": rec.get("ephemeral"),
                "incarnation": origin_state.incarnation if origin_state else None,
                "max_counter": origin_state.max_counter if origin_state else None,
                "alive_incarnation": membership.alive_incarnation(manifest, origin),
                "breaker": breakers.get(origin, {"state": "closed"}),
                "last_heard_s": None if (age := view.telemetry.last_heard(origin, now)) is None else round(age, 3),
                "lag_changes": lag[0],
                "lag_s": round(lag[1], 3),
                "voter": origin in core.election.voters,
                "nat_blocked": origin in core.config.nat or bool(catalog.relays_of(manifest, origin)),
                "relays": catalog.relays_of(manifest, origin),
            }
        )
    leader, term = core.leader()
    election = core.election
    return {
        "node": core.me,
        "address": view.address,
        "incarnation": manifest.own.incarnation,
        "uptime_s": round(now - view.started_at, 3),
        "gossip_rounds": core.rounds,
        "paused": view.paused,
        "core_errors": {
            "total": view.counters.get("core_errors", 0),
            "last_10_min": sum(1 for at, _ in view.core_errors if now - at < CORE_ERROR_WINDOW_S),
            "recent": [{"at": round(at, 3), "what": what} for at, what in view.core_errors[-5:]],
        },
        "leader": leader,
        "term": term,
        "election": {
            "role": election.role,
            "term": election.term,
            "voted_for": election.voted_for,
            "is_leader": election.is_leader(now),
            "lease_left_s": round(max(0.0, election.lease_until - now), 3),
            "elections_started": election.elections_started,
        },
        "local_health": core.membership.health,
        "membership_stats": dict(core.membership.stats),
        "fingerprint": manifest.fingerprint(),
        "members": members,
        "links": view.links(),
        "disk": view.disk,
        "blocked_items": view.blocked_items(),
        "scrub": view.scrub(),
        "backups": core.backups(),
        "events": list(view.events),
        "broadcasts": core.broadcasts(),
        "broadcast_stats": dict(core.broadcast.stats),
        "freshness": streams.freshness(manifest, core.game_placement().targets, now),
        "games": {
            "dir": str(view.games.games_dir),
            "held": view.games.held_summary,
            "durable_through": dict(view.durable),
            "materialised_through": {
                k: streams.materialised_through(manifest, (core.replication.origin, k), core.game_placement().targets)
                for k in view.durable
            },
            "streams": {f"{o}/{k}": hw for (o, k), hw in view.games.log.streams().items()},
            "lost": list(view.games.lost),  # games no holder had a good copy of: origin, config_key, seq, game_id
            **view.games.counts,
        },
        "items": len(catalog.newest_versions(manifest)),
        "transfers": [
            {
                "item": str(v.item),
                "digest": v.digest,
                "size_bytes": v.size,
                "running_s": round(time.time() - started, 3),
                "priority": core.priority_of(v).label,
                **_progress(view, v),
            }
            for v, started in view.transfers()
        ],
        "counters": dict(sorted(view.counters.items())),
        "metrics": {"listen": view.metrics_address} if view.metrics_address else None,
        "bandwidth": {"egress": view.egress.report(), "ingress": view.ingress.report()},
    }


def _progress(view: NodeView, v: FileVersion) -> dict[str, Any]:
    progress = view.progress(v.digest)
    if progress is None:
        return {}
    partial = progress.partial
    return {"chunks_verified": len(partial.have), "chunks": partial.n_chunks, "resumed_bytes": partial.resumed_bytes}


def listing(view: NodeView) -> dict[str, Any]:
    """`ringmesh ls --json`: the newest version of every item, its holders and placement."""
    manifest = view.manifest
    held = catalog.holders(manifest)
    pulling = catalog.holders(manifest, keys.PULLING)
    placer = view.core.placer()
    items = []
    for item, v in sorted(catalog.newest_versions(manifest).items()):
        others = {
            digest: hosts for (held_item, digest), hosts in held.items() if held_item == item and digest != v.digest
        }
        placement = placer(v)
        items.append(
            {
                "targets": list(placement.targets),
                "left_out": dict(placement.left_out),
                "nfs_covered": dict(placement.covered),
                "blocked": placement.blocked,
                "shortfall": placement.shortfall,
                "type": item.type,
                "name": item.name,
                "digest": v.digest,
                "size_bytes": v.size,
                "chunk_size_bytes": v.chunk_size,
                "hlc": v.hlc,
                "origin": v.origin,
                "attrs": dict(v.attrs),
                "holders": held.get((item, v.digest), []),
                "pulling": pulling.get((item, v.digest), []),
                "older_versions": others,
            }
        )
    return {"node": view.name, "fingerprint": manifest.fingerprint(), "items": items}
