"""Where data goes: the one function that answers "which hosts should hold this item".

Rules, in order (DESIGN.md "Router"):
  1. by data type and role: games -> training and backup hosts; models -> selfplay and
     training hosts; NPZ archives -> training hosts; game databases -> training and backup
     hosts; checkpoints -> `min_copies` persistent hosts (training and backup first); a host
     may take more types than its role's (`also_takes`: a backup drive that receives models);
  2. minus hosts in `exclude_from_sync`, hosts not alive, hosts above the disk cap and hosts
     without room for the item;
  3. a group of hosts sharing one file system (NFS) counts as one copy: one member (the
     lowest-named eligible one) pulls, the others are covered by it.
Every host left out gets a reason, so that "nobody can take this" is said, not silently
stalled. The answer depends only on its inputs: every host computes the same placement.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping


class DataType(str, enum.Enum):
    GAME = "game"
    MODEL = "model"
    NPZ = "npz"
    CHECKPOINT = "checkpoint"
    GAMEDB = "gamedb"


ROLES_FOR = {
    DataType.GAME: ("training", "backup"),
    DataType.MODEL: ("selfplay", "training"),
    DataType.NPZ: ("training",),
    DataType.GAMEDB: ("training", "backup"),
    DataType.CHECKPOINT: ("training", "backup", "selfplay", "coordinator"),
}

# Reasons a host does not hold an item.
WRONG_ROLE = "role does not take this data type"
EXCLUDED = "excluded from sync"
NOT_ALIVE = "not alive"
OVER_CAP = "disk above the cap"
NO_ROOM = "no room for the item"
EPHEMERAL = "ephemeral host (checkpoints go to persistent hosts)"
NFS_COVERED = "covered by an NFS group member"
ENOUGH_COPIES = "enough copies elsewhere"


@dataclass(frozen=True, slots=True, kw_only=True)
class HostInfo:
    name: str
    role: str = "selfplay"
    ephemeral: bool = False
    excluded: bool = False
    alive: bool = True
    nfs_group: str | None = None
    disk_used_percent: float | None = None  # None: unknown (not held against the host)
    disk_free_bytes: int | None = None
    also_takes: frozenset[str] = frozenset()  # data types it takes beyond its role's (an external storage's receive_*)


@dataclass(frozen=True, slots=True)
class Placement:
    targets: tuple[str, ...]  # hosts that should pull and hold the item, in rank order
    covered: Mapping[str, str] = field(default_factory=dict)  # NFS member -> the member that pulls
    left_out: Mapping[str, str] = field(default_factory=dict)  # host -> reason
    wanted_copies: int = 0
    blocked: bool = False  # hosts of the right role exist, but every one of them is left out

    @property
    def shortfall(self) -> int:
        return max(0, self.wanted_copies - len(self.targets))


def _eligibility(h: HostInfo, item_size: int, cap_percent: float) -> str | None:
    if h.excluded:
        return EXCLUDED
    if not h.alive:
        return NOT_ALIVE
    if h.disk_used_percent is not None and h.disk_used_percent > cap_percent:
        return OVER_CAP
    if h.disk_free_bytes is not None and h.disk_free_bytes < item_size:
        return NO_ROOM
    return None


def _rank_key(h: HostInfo, dt: DataType) -> tuple:
    """Better homes first: for checkpoints training/backup hosts, then more free disk."""
    role_rank = ROLES_FOR[dt].index(h.role) if h.role in ROLES_FOR[dt] else len(ROLES_FOR[dt])
    free = -(h.disk_free_bytes or 0)
    return (role_rank, free, h.name)


def place(
    data_type: DataType | str,
    hosts: Iterable[HostInfo],
    *,
    item_size: int = 0,
    min_copies: int = 2,
    cap_percent: float = 70.0,
    holders: Iterable[str] = (),
) -> Placement:
    """Which hosts should hold an item of `data_type` and size `item_size` bytes.

    `holders` (hosts that already hold it) rank first among equals for checkpoints, so that a
    placement does not move copies around when nothing changed.
    """
    dt = DataType(data_type)
    by_name = {h.name: h for h in hosts}
    held = set(holders)
    left_out: dict[str, str] = {}
    candidates: list[HostInfo] = []
    for name in sorted(by_name):
        h = by_name[name]
        if h.role not in ROLES_FOR[dt] and dt.value not in h.also_takes:
            left_out[name] = WRONG_ROLE
        elif dt is DataType.CHECKPOINT and h.ephemeral:
            left_out[name] = EPHEMERAL
        elif (why := _eligibility(h, item_size, cap_percent)) is not None:
            left_out[name] = why
        else:
            candidates.append(h)
    right_role = [n for n in by_name if left_out.get(n) != WRONG_ROLE and left_out.get(n) != EPHEMERAL]

    # One member per NFS group pulls: an existing holder if there is one, else the lowest name.
    covered: dict[str, str] = {}
    pullers: list[HostInfo] = []
    groups: dict[str, list[HostInfo]] = {}
    for h in candidates:
        if h.nfs_group is None:
            pullers.append(h)
        else:
            groups.setdefault(h.nfs_group, []).append(h)
    for members in groups.values():
        first = min(members, key=lambda h: (h.name not in held, h.name))
        pullers.append(first)
        for m in members:
            if m is not first:
                covered[m.name] = first.name

    if dt is DataType.CHECKPOINT:
        ranked = sorted(pullers, key=lambda h: (h.name not in held,) + _rank_key(h, dt))
        targets = ranked[:min_copies]
        for h in ranked[min_copies:]:
            left_out[h.name] = ENOUGH_COPIES
        wanted = min_copies
    else:
        targets = sorted(pullers, key=lambda h: _rank_key(h, dt))
        wanted = max(min_copies, len(targets)) if targets else min_copies
    names = tuple(h.name for h in targets)
    return Placement(
        targets=names,
        covered=covered,
        left_out=left_out,
        wanted_copies=wanted,
        blocked=bool(right_role) and not names,
    )


@dataclass(frozen=True, slots=True)
class RankedTarget:
    host: str
    rank: int
    reason: str


def replication_targets(
    data_type: DataType | str,
    hosts: Iterable[HostInfo],
    *,
    item_size: int = 0,
    min_copies: int = 2,
    cap_percent: float = 70.0,
    holders: Iterable[str] = (),
) -> list[RankedTarget]:
    """Every host, ranked: targets first (with why they rank so), then the rest with the reason."""
    hosts = list(hosts)
    p = place(data_type, hosts, item_size=item_size, min_copies=min_copies, cap_percent=cap_percent, holders=holders)
    held = set(holders)
    out = [
        RankedTarget(h, i + 1, "already holds it" if h in held else f"eligible ({_why_rank(h, hosts, data_type)})")
        for i, h in enumerate(p.targets)
    ]
    rest = sorted(set(p.covered) | set(p.left_out))
    out += [RankedTarget(h, 0, f"{NFS_COVERED} ({p.covered[h]})" if h in p.covered else p.left_out[h]) for h in rest]
    return out


def _why_rank(name: str, hosts: list[HostInfo], dt: DataType | str) -> str:
    h = next(x for x in hosts if x.name == name)
    free = "unknown free disk" if h.disk_free_bytes is None else f"{h.disk_free_bytes / 1e9:.1f} GB free"
    return f"role {h.role}, {free}"
