"""What the local API reports about the cluster's data: per-config freshness, placements,
sync recommendations and replication targets. Read-only views over the running peer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ringmesh.core import catalog
from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.messages import ItemKey
from ringmesh.core.router import DataType, replication_targets

if TYPE_CHECKING:
    from ringmesh.node.view import NodeView

DEFAULT_RATE = 20_000_000  # bytes/s, the built-in default limit, when a host's is unknown
#: Priority labels, least urgent first: recommendations are sorted most urgent first.
_URGENCY = ["background", "low", "normal", "high", "critical"]


class Recommendation(TypedDict):
    """One entry of `recommendations()["recommendations"]`: a host that should pull an item."""

    host: str
    item: str
    digest: str
    sources: list[str]
    priority: str  # a Priority label
    config_key: str | None
    reason: str
    bytes: int
    estimated_seconds: float | None
    rate_bytes_per_s: int


@dataclass
class _ConfigFreshness:
    """What `cluster_data()` tallies per config key while it walks the items."""

    items: int = 0
    bytes: int = 0
    newest_hlc: int = 0
    hosts_behind: set[str] = field(default_factory=set)

    def report(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "bytes": self.bytes,
            "newest_hlc": self.newest_hlc,
            "hosts_behind": sorted(self.hosts_behind),
        }


def _rate(view: NodeView, host: str, direction: str) -> int:
    host_config = view.config.hosts.get(host)
    rate = getattr(host_config, f"{direction}_bytes_per_s", None) if host_config else None
    return int(rate) if isinstance(rate, (int, float)) and rate > 0 else DEFAULT_RATE


def recommendations(view: NodeView) -> dict[str, Any]:
    """Which host should pull what, from whom, why, and about how long it takes."""
    core = view.core
    hosts, place_of = core.host_infos(), core.placer()
    held = catalog.holders(core.manifest)
    recs: list[Recommendation] = []
    for item, v in sorted(catalog.newest_versions(core.manifest).items()):
        placement = place_of(v)
        holders = held.get((item, v.digest), [])
        for host in placement.targets:
            if host in holders:
                continue
            sources = [h for h in holders if core.healthy(h, view.now()) or h == core.me]
            rate = min([_rate(view, host, "ingress")] + [_rate(view, s, "egress") for s in sources[:1]])
            recs.append(
                {
                    "host": host,
                    "item": str(item),
                    "digest": v.digest,
                    "sources": sources,
                    "priority": core.priority_of(v).label,
                    "config_key": catalog.config_key_of(v),
                    "reason": f"{item.type} belongs on {next(h.role for h in hosts if h.name == host)} hosts; "
                    f"newest version {v.digest[:12]} not held",
                    "bytes": v.size,
                    "estimated_seconds": round(v.size / rate, 3) if sources else None,
                    "rate_bytes_per_s": rate,
                }
            )
    recs.sort(key=lambda rec: (-_URGENCY.index(rec["priority"]), rec["host"], rec["item"]))
    return {
        "node": core.me,
        "recommendations": recs,
        "blocked_items": view.blocked_items(),
        "priorities": {k: v.label for k, v in sorted(core.priorities.items())},
    }


def cluster_data(view: NodeView) -> dict[str, Any]:
    """Per item: holders, targets, shortfall; per config key: items and their freshness."""
    core = view.core
    hosts, place_of = core.host_infos(), core.placer()
    held = catalog.holders(core.manifest)
    items: list[dict[str, Any]] = []
    by_config: dict[str, _ConfigFreshness] = {}
    for item, v in sorted(catalog.newest_versions(core.manifest).items()):
        placement = place_of(v)
        holders = held.get((item, v.digest), [])
        behind = [h for h in placement.targets if h not in holders]
        items.append(
            {
                "item": str(item),
                "type": item.type,
                "digest": v.digest,
                "size_bytes": v.size,
                "hlc": v.hlc,
                "origin": v.origin,
                "holders": holders,
                "targets": list(placement.targets),
                "hosts_behind": behind,
                "copies": len(holders),
                "wanted_copies": placement.wanted_copies,
                "blocked": placement.blocked,
            }
        )
        key = catalog.config_key_of(v)
        if key:
            freshness = by_config.setdefault(key, _ConfigFreshness())
            freshness.items += 1
            freshness.bytes += v.size
            freshness.newest_hlc = max(freshness.newest_hlc, v.hlc)
            freshness.hosts_behind.update(behind)
    disks = {h.name: {"used_percent": h.disk_used_percent, "free_bytes": h.disk_free_bytes} for h in hosts}
    return {
        "node": core.me,
        "items": items,
        "configs": {key: freshness.report() for key, freshness in sorted(by_config.items())},
        "disks": disks,
        "members": {h.name: core.membership.view(h.name) for h in hosts},
    }


def targets_for(view: NodeView, args: dict[str, str]) -> dict[str, Any]:
    """`get_replication_targets(data_id, data_type, min_copies)`: ranked hosts with reasons."""
    try:
        data_type = DataType(args.get("type", "model"))
        min_copies = int(args.get("min_copies", view.config.min_copies))
    except ValueError as e:
        raise LocalProtocolError(f"bad replication_targets query: {e}") from None
    core = view.core
    data_id = args.get("item", "")
    size, holders = 0, []
    for item, v in catalog.newest_versions(core.manifest).items():
        if item == ItemKey(data_type.value, data_id) or str(item) == data_id:
            size, holders = v.size, catalog.holders(core.manifest).get((item, v.digest), [])
    ranked = replication_targets(
        data_type,
        core.host_infos(),
        item_size=size,
        min_copies=min_copies,
        cap_percent=view.config.max_disk_usage_percent,
        holders=holders,
    )
    return {
        "data_id": data_id,
        "data_type": data_type.value,
        "min_copies": min_copies,
        "targets": [{"host": target.host, "rank": target.rank, "reason": target.reason} for target in ranked],
    }
