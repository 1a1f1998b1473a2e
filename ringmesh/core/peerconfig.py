"""What a peer is configured with: timings, placement rules and the parts' own configs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from . import election as el
from . import membership as mb
from .breaker import BreakerConfig
from .cron import parse_cron
from .errors import LocalProtocolError
from .manifest import MIN_BUDGET


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    gossip_interval: float = 1.0
    fanout: int = 3
    delta_budget: int = 512 * 1024
    recent_rounds: int = 16  # a Syn lists the digest entries touched in this many rounds (antientropy.py)
    tombstone_grace: float = 3600.0
    purge_every: int = 60  # gossip rounds between tombstone purges
    max_transfers: int = 4
    retry_base: float = 1.0
    retry_cap: float = 60.0
    min_copies: int = 2
    reorder_interval: float = 5.0  # a broadcasting leader orders a host that still lacks it again after this
    max_disk_usage_percent: float = 70.0
    excluded: frozenset[str] = frozenset()  # exclude_from_sync
    nfs_groups: Mapping[str, str] = field(default_factory=dict)  # host -> group name
    # what the config says of each host, until its own node record arrives by gossip
    roles: Mapping[str, str] = field(default_factory=dict)
    ephemeral: frozenset[str] = frozenset()
    nat: frozenset[str] = frozenset()  # nat_blocked: nobody can dial them; they never lead nor relay
    also_takes: Mapping[str, frozenset[str]] = field(default_factory=dict)  # host -> types beyond its role's
    retention_seconds: float = 3600.0  # an ephemeral host keeps its own durable games this long
    backup_schedules: tuple[str | None, ...] = ()  # cron text of each external storage target (None: none)
    pull_priority: str = "normal"  # this host's pulls' class where nothing else sets one (its sync_priority)
    membership: mb.MembershipConfig = field(default_factory=mb.MembershipConfig)
    election: el.ElectionConfig = field(default_factory=el.ElectionConfig)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        if self.gossip_interval <= 0:
            raise LocalProtocolError("gossip_interval must be positive")
        if self.fanout < 1:
            raise LocalProtocolError("fanout must be at least 1")
        if not 1 <= self.recent_rounds <= 64:
            raise LocalProtocolError("recent_rounds must be 1..64")
        if self.delta_budget < MIN_BUDGET:
            raise LocalProtocolError(f"delta_budget must be at least {MIN_BUDGET} bytes")
        if self.max_transfers < 1:
            raise LocalProtocolError("max_transfers must be at least 1")
        if self.retention_seconds < 0:
            raise LocalProtocolError("retention_seconds must not be negative")
        for schedule in self.backup_schedules:
            if schedule is not None:
                parse_cron(schedule)  # CronError names the field
        if self.reorder_interval <= 0:
            raise LocalProtocolError("reorder_interval must be positive")
