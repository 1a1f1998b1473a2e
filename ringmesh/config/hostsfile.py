"""The operators' own `distributed_hosts.yaml`: what its roles, flags, statuses and addresses
mean to ringmesh (`config.py` validates the file; this module holds the rules it applies).

Roles. Their file names what a host does (`gpu_selfplay`, `nn_training_primary`, ...);
ringmesh places data by four placement roles (`core/router.py`): training hosts take games,
models and NPZ archives; self-play hosts take models; backup hosts take games and game
databases; coordinators take checkpoints only; `none` takes nothing. `ROLE_TABLE` maps each
role in use to a placement role; `ringmesh: roles: {their_role: placement_role}` overrides or
adds rows. Then the host's flags: `training_enabled: true` makes a self-play host a training
host (it trains, so it needs the games); `skip_sync_receive: true` makes it take nothing; a
host named by an `allowed_external_storage` entry becomes a backup receiver. A role the table
does not know is a warning, and the host takes nothing until it is mapped.

Addresses. A host is reached at `address` if the file gives one (ringmesh's own key, host:port),
else at `tailscale_ip`, else `ssh_host` (a `user@host` form allowed), on the port
`ringmesh: port` > `p2p_public_port` (a container's mapped port) > 8770.

Membership. A host takes part when its `status` is active (absent or `ready`) and
`p2p_enabled` is not false; `p2p_voters` (top level), when present, is the voter list.
"""

from __future__ import annotations

from typing import Any, Mapping

PLACEMENT_ROLES = ("training", "selfplay", "coordinator", "backup", "none")
DEFAULT_P2P_PORT = 8770

#: their role -> (placement role, produces games: what their role says the host does)
ROLE_TABLE: dict[str, tuple[str, bool]] = {
    "training": ("training", False),
    "selfplay": ("selfplay", True),
    "coordinator": ("coordinator", False),
    "backup": ("backup", False),
    "gpu_training_primary": ("training", False),
    "nn_training_primary": ("training", False),
    "gpu_training": ("training", False),
    "gpu_training_selfplay": ("training", True),
    "gpu_selfplay": ("selfplay", True),
    "gpu_selfplay_primary": ("selfplay", True),
    "cpu_selfplay": ("selfplay", True),
    "backbone": ("backup", False),
    "proxy": ("none", False),
}
#: `status` values of hosts that take part; their code treats these others as inactive
ACTIVE_STATUSES = ("ready",)
INACTIVE_STATUSES = ("retired", "proxy_only", "terminated", "offline", "setup", "archived")

#: `storage_paths` keys -> where ringmesh puts that data type on the host
STORAGE_PATHS = {"models": "model", "training_data": "npz", "checkpoints": "checkpoint", "games": "gamedb"}
#: `allowed_external_storage[].subdirs` / `receive_*` keys -> file types
EXTERNAL_TYPES = {"games": "gamedb", "npz": "npz", "models": "model"}

_NO_SYNC_INTERVAL = "ringmesh pulls as soon as gossip shows new data; there is no sync interval"
#: Keys of their file that ringmesh reads but does not act on (yet), and why: `config check`
#: lists them once, so that nobody believes a setting that does nothing.
NOT_USED: dict[str, str] = {
    "auto_sync.interval_seconds": _NO_SYNC_INTERVAL,
    "sync_routing.auto_sync_interval_seconds": _NO_SYNC_INTERVAL,
    "auto_sync.enabled": "ringmesh always syncs",
    "auto_sync.skip_nfs_sync": "NFS groups are read from sync_routing.nfs_sharing_groups",
    "auto_sync.min_games_to_sync": "every game is replicated at once",
    "sync_routing.target_disk_usage_percent": "no cleanup to a target; only the cap is enforced",
    "sync_routing.min_free_disk_percent": "no pull lands without room for the item; the cap is max_disk_usage_percent",
    "sync_routing.underserved_configs": "every config is replicated the same way",
    "sync_routing.s3": "no S3 transport",
    "hosts.*.force_relay_mode": "nat_blocked alone decides: a host nobody can dial is always reached through relays",
    "p2p_voters (per-host voter flags)": "with p2p_voters present, per-host voter flags are ignored, as in their code",
}

#: Top-level sections of their file that belong to their other tools.
OTHER_SECTIONS = ("elo_sync", "protocols", "disk_management", "consolidation", "provider_timeouts", "board_configs")


def placement_role(
    name: str,
    h: Mapping[str, Any],
    table: Mapping[str, tuple[str, bool]],
    backup_hosts: set[str],
    warnings: list[str],
    path: str,
) -> tuple[str, bool, str]:
    """(placement role, produces games, where the decision came from) for host `name`."""
    role = h.get("role", "selfplay")
    key = f"hosts.{name}.role"
    if role not in table:
        warnings.append(
            f"{path}: {key}: role {role!r} is not in ringmesh's role table "
            f"(map it: ringmesh: roles: {{{role}: training|selfplay|coordinator|backup|none}}); "
            f"{name} receives nothing until it is mapped"
        )
        return "none", False, f"{key} ({role!r} unknown: receives nothing)"
    placement, produces = table[role]
    source = f"{key} ({role!r} -> {placement})"
    if h.get("selfplay_enabled") is True:
        produces = True
    if h.get("skip_sync_receive") is True:
        return "none", produces, f"hosts.{name}.skip_sync_receive"
    if name in backup_hosts and placement in ("coordinator", "selfplay", "none"):
        return "backup", produces, f"sync_routing.allowed_external_storage (host {name}) over {source}"
    if h.get("training_enabled") is True and placement == "selfplay":
        return "training", produces, f"hosts.{name}.training_enabled over {source}"
    return placement, produces, source


def inactive_reason(h: Mapping[str, Any]) -> str | None:
    """Why a host takes no part (None: it does)."""
    status = h.get("status")
    if status is not None and status not in ACTIVE_STATUSES:
        return f"status {status}"
    if h.get("p2p_enabled") is False:
        return "p2p_enabled: false"
    return None


def host_address(name: str, h: Mapping[str, Any], port: int | None) -> tuple[str | None, str]:
    """(host:port or None, where it came from), by the address rule above; `address` is
    checked by the caller."""
    if h.get("address") is not None:
        return str(h["address"]), f"hosts.{name}.address"
    for key in ("tailscale_ip", "ssh_host"):
        v = h.get(key)
        if isinstance(v, str) and v.strip():
            host = v.strip().rsplit("@", 1)[-1]
            if port is not None:
                p, psrc = port, "ringmesh.port"
            elif isinstance(h.get("p2p_public_port"), int) and not isinstance(h.get("p2p_public_port"), bool):
                p, psrc = h["p2p_public_port"], f"hosts.{name}.p2p_public_port"
            else:
                p, psrc = DEFAULT_P2P_PORT, f"default P2P port {DEFAULT_P2P_PORT}"
            return f"[{host}]:{p}" if ":" in host else f"{host}:{p}", f"hosts.{name}.{key}, port from {psrc}"
    return None, "no address, tailscale_ip or ssh_host"
