"""`distributed_hosts.yaml`: the cluster's existing config format, loaded and validated.

Every error names the file, the dotted key and what was expected. Unknown keys are accepted
(the file carries other tools' settings too) and reported in `ClusterConfig.warnings`; keys the
cluster's other tools use are known and ignored silently. Environment variables of the seed
(`RINGRIFT_*`, with `RINGMESH_*` twins that win) override the file's global settings.

Units: every rate is stored as an int number of **bytes per second** in a field whose name says
so. A bare number for a bandwidth (the seed's `bandwidth_limit_mbps`) means megabytes (10^6
bytes) per second; strings may carry explicit units (`"400Mbit/s"`, `"1.5GB/s"`, `"100MiB/s"`).
Each effective value records where it came from (`sources`).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ringmesh.config.hostsfile import (
    EXTERNAL_TYPES,
    NOT_USED,
    OTHER_SECTIONS,
    PLACEMENT_ROLES,
    ROLE_TABLE,
    STORAGE_PATHS,
    host_address,
    inactive_reason,
    placement_role,
)
from ringmesh.config.values import (  # noqa: F401  (ConfigError, parse_rate, format_rate, check_address: the config's API)
    _HOSTPORT,
    BUILTIN,
    BUILTIN_MB_PER_S,
    BUILTIN_SCRUB_RATE,
    MB,
    ConfigError,
    TlsPaths,
    _changed_files,
    _err,
    _expand_tls,
    _names,
    _number,
    _paths,
    _tls,
    check_address,
    format_rate,
    parse_rate,
)
from ringmesh.core import election as el
from ringmesh.core import membership as mb
from ringmesh.core.breaker import BreakerConfig
from ringmesh.core.catalog import is_node_id
from ringmesh.core.cron import Cron, CronError, Every, parse_cron
from ringmesh.core.peer import PeerConfig

ROLES = PLACEMENT_ROLES
PRIORITIES = ("critical", "high", "normal", "low", "background")
PROVIDER_MB_PER_S = {
    "lambda": 100,
    "runpod": 100,
    "tailscale": 100,
    "hetzner": 80,
    "vultr": 80,
    "nebius": 50,
    "vast": 50,
}  # provider "default" (or none) has no entry

# Keys read. Every other key is accepted quietly (their file carries other tools' settings
# and dozens of descriptive host keys) and counted in one summary line of the warnings.
_TOP = {"sync_routing", "hosts", "ringmesh", "auto_sync", "p2p_voters", *OTHER_SECTIONS}
_ROUTING = {
    "auto_sync_interval_seconds",
    "gossip_interval_seconds",
    "max_concurrent_syncs",
    "bandwidth_limit_mbps",
    "max_disk_usage_percent",
    "min_copies",
    "exclude_from_sync",
    "nfs_sharing_groups",
    "ephemeral_hosts",
    "allowed_external_storage",
    "excluded_hosts",
    "replication_target",
    "priority_hosts",
    "target_disk_usage_percent",
    "min_free_disk_percent",
    "underserved_configs",
    "s3",
}
_AUTO_SYNC = {
    "enabled",
    "interval_seconds",
    "gossip_interval_seconds",
    "skip_nfs_sync",
    "max_concurrent_syncs",
    "min_games_to_sync",
    "bandwidth_limit_mbps",
    "exclude_hosts",
    "host_bandwidth_overrides",
}
_HOST = {
    "address",
    "provider",
    "role",
    "sync_priority",
    "bandwidth_limit_mbps",
    "egress_limit",
    "ingress_limit",
    "voter",
    "ephemeral",
    "disk_cap_percent",
    "paths",
    "tls",
    "ssh_host",
    "tailscale_ip",
    "p2p_public_port",
    "status",
    "p2p_enabled",
    "selfplay_enabled",
    "training_enabled",
    "skip_sync_receive",
    "storage_paths",
    "is_ephemeral",
    "nat_blocked",
    "force_relay_mode",
    "use_external_storage",
    "external_storage_path",
}
_STORAGE = {"host", "path", "schedule", "receive_games", "receive_npz", "receive_models", "subdirs"}


@dataclass(frozen=True, slots=True)
class HostConfig:
    name: str
    address: str | None
    role: str = "selfplay"
    provider: str = "default"
    ephemeral: bool = False
    excluded: bool = False
    voter: bool = False
    egress_bytes_per_s: int = BUILTIN_MB_PER_S * MB  # effective send limit, bytes/s
    ingress_bytes_per_s: int = BUILTIN_MB_PER_S * MB  # effective receive limit, bytes/s
    sync_priority: str = "normal"
    nfs_group: tuple[str, ...] = ()  # the hosts sharing this host's NFS storage, incl. itself
    disk_cap_percent: float = 70.0  # effective disk-use cap, percent
    paths: Mapping[str, str] = field(default_factory=dict, hash=False)  # file type -> directory
    sources: Mapping[str, str] = field(default_factory=dict, hash=False)  # field -> where its value came from
    tls: TlsPaths | None = None  # this host's TLS files ({node} expanded); None: plaintext
    their_role: str | None = None  # the role as their file names it (`gpu_selfplay`, ...)
    inactive: str | None = None  # why the host takes no part (status, p2p_enabled); None: it does
    produces_games: bool = False  # its role or selfplay_enabled says it plays games
    nat_blocked: bool = False  # nobody can dial it: reached over the links it dials out (node/wire/relay.py)
    games_dir: str | None = None  # where consumer game databases go (storage_paths.games)


@dataclass(frozen=True, slots=True)
class ExternalStorage:
    host: str
    path: str
    schedule: str | None = None  # 5-field cron expression, or None: no schedule given
    cron: Cron | Every | None = field(default=None, compare=False, repr=False)
    dirs: Mapping[str, str] = field(default_factory=dict, hash=False)  # receive_* types -> path/subdir


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    path: str
    hosts: Mapping[str, HostConfig]
    gossip_interval: float = 30.0
    sync_interval: float = 60.0
    max_concurrent_syncs: int = 4
    min_copies: int = 2
    max_disk_usage_percent: float = 70.0
    timings: Mapping[str, float] = field(default_factory=dict)
    watch_games: tuple[str, ...] = ()  # globs of self-play databases the daemon takes games from
    watch_min_moves: int | str | None = None  # "cluster": the cluster's minimum-move filters
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)
    bandwidth_bytes_per_s: int = BUILTIN_MB_PER_S * MB  # global default limit (each direction), bytes/s
    exclude_from_sync: tuple[str, ...] = ()
    ephemeral_hosts: tuple[str, ...] = ()  # globs
    nfs_sharing_groups: tuple[tuple[str, ...], ...] = ()
    external_storage: tuple[ExternalStorage, ...] = ()
    not_used: tuple[tuple[str, str], ...] = ()  # (key in this file, why ringmesh does not act on it)
    unread: tuple[str, ...] = ()  # keys ringmesh does not read at all (other tools', descriptive)
    paths: Mapping[str, str] = field(default_factory=dict)  # `ringmesh.paths`: file type -> directory
    sources: Mapping[str, str] = field(default_factory=dict)  # global setting -> where its value came from
    warnings: tuple[str, ...] = ()
    tls: TlsPaths | None = None  # `ringmesh.tls` as written ('{node}' not expanded); None: plaintext
    metrics_listen: str | None = None  # `ringmesh.metrics_listen`: HOST:PORT for /metrics (port 0: any); None: off
    log_json: bool = False  # `ringmesh.log_json`: one JSON object per log line
    scrub_bytes_per_s: int = BUILTIN_SCRUB_RATE  # `ringmesh.scrub_rate`
    changed_files: Mapping[str, str] = field(default_factory=lambda: {"*": "keep"})  # file type -> keep | adopt

    def changed_files_mode(self, file_type: str) -> str:
        return self.changed_files.get(file_type, self.changed_files.get("*", "keep"))

    def members(self) -> dict[str, HostConfig]:
        """The hosts ringmesh runs on: active ones with an address."""
        return {n: h for n, h in self.hosts.items() if h.address and h.inactive is None}


# ringmesh's own protocol timings (seconds), under an optional `ringmesh:` section.
TIMINGS = {
    "probe_interval_seconds": (1.0, 0.05, 60),
    "probe_timeout_seconds": (0.4, 0.01, 30),
    "leader_heartbeat_seconds": (0.2, 0.01, 10),
    "leader_lease_seconds": (0.8, 0.05, 60),
    "election_timeout_seconds": (1.0, 0.1, 120),
    "breaker_base_seconds": (1.0, 0.01, 600),
    "breaker_cap_seconds": (60.0, 0.01, 3600),
    "drain_notice_seconds": (25.0, 0.0, 600),  # SIGTERM: time to make every game durable
    "watch_interval_seconds": (2.0, 0.05, 3600),  # how often watch_games databases are read
    "retention_seconds": (3600.0, 0.0, 30 * 86400),  # ephemeral hosts keep durable games this long
    "broadcast_reorder_seconds": (5.0, 0.1, 3600),  # a broadcasting leader orders laggards again this often
    # a host no peer's call reached for this long, while peers answered its own, links out (relay.py)
    "unreachable_after_seconds": (30.0, 1.0, 3600),
    # every held file, game segment and the manifest is re-verified this often (node/scrub.py)
    "scrub_interval_seconds": (86400.0, 1.0, 365 * 86400),
    # installed files are checked this often for changes behind ringmesh's back (size, mtime)
    "rescan_seconds": (60.0, 0.1, 86400),
}

# setting -> (file key under sync_routing, default, env names (later wins), lo, hi, integer)
_GLOBALS: dict[str, tuple[str, float, tuple[str, ...], float, float, bool]] = {
    "gossip_interval": (
        "gossip_interval_seconds",
        30,
        ("RINGRIFT_GOSSIP_INTERVAL", "RINGMESH_GOSSIP_INTERVAL"),
        0.05,
        3600,
        False,
    ),
    "sync_interval": (
        "auto_sync_interval_seconds",
        60,
        ("RINGRIFT_SYNC_INTERVAL", "RINGMESH_SYNC_INTERVAL"),
        0.05,
        86400,
        False,
    ),
    "max_concurrent_syncs": (
        "max_concurrent_syncs",
        4,
        ("RINGRIFT_SYNC_MAX_CONCURRENT", "RINGMESH_SYNC_MAX_CONCURRENT"),
        1,
        256,
        True,
    ),
    "min_copies": ("min_copies", 2, (), 1, 100, True),
    "max_disk_usage_percent": (
        "max_disk_usage_percent",
        70,
        ("RINGRIFT_SYNC_MAX_DISK_USAGE", "RINGMESH_SYNC_MAX_DISK_USAGE"),
        1,
        100,
        False,
    ),
}
BANDWIDTH_ENV = ("RINGRIFT_SYNC_BANDWIDTH_MBPS", "RINGMESH_SYNC_BANDWIDTH_MBPS")


def load_config(path: str | os.PathLike, env: Mapping[str, str] | None = None) -> ClusterConfig:
    path = str(path)
    env = os.environ if env is None else env
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(doc, path, env)


def _section(path: str, doc: dict, key: str) -> dict:
    v = doc.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _err(path, key, "a mapping", v)
    return v


def _unknown(
    path: str, prefix: str, d: dict, known: set, unread: set[str], warnings: list[str], where: str | None = None
) -> None:
    """Keys ringmesh does not read go to `unread` (dotted, hosts as `hosts.*`), for one summary
    line; a key that looks like a misspelt one it reads gets a warning of its own (once)."""
    for k in d:
        if k in known:
            continue
        pattern = f"{prefix + '.' if prefix else ''}{k}"
        if pattern not in unread and (near := difflib.get_close_matches(str(k), known, n=1, cutoff=0.85)):
            warnings.append(
                f"{path}: {(where or prefix) + '.' if (where or prefix) else ''}{k}: unknown key, ignored "
                f"(did you mean {near[0]}?)"
            )
        unread.add(pattern)


def parse_config(doc: Any, path: str = "<config>", env: Mapping[str, str] | None = None) -> ClusterConfig:
    env = {} if env is None else env
    if not isinstance(doc, dict):
        raise _err(path, "(top level)", "a mapping", type(doc).__name__)
    warnings: list[str] = []
    unread: set[str] = set()
    _unknown(path, "", doc, _TOP, unread, warnings)
    routing, own, auto = (
        _section(path, doc, "sync_routing"),
        _section(path, doc, "ringmesh"),
        _section(path, doc, "auto_sync"),
    )
    _unknown(path, "sync_routing", routing, _ROUTING, unread, warnings)
    _unknown(path, "auto_sync", auto, _AUTO_SYNC, unread, warnings)
    own_keys = set(TIMINGS) | {
        "paths",
        "watch_games",
        "watch_min_moves",
        "tls",
        "metrics_listen",
        "log_json",
        "roles",
        "port",
        "scrub_rate",
        "changed_files",
    }
    for k in own:
        if k not in own_keys:
            warnings.append(f"{path}: ringmesh.{k}: unknown key, ignored")
    roles = _role_table(path, own.get("roles"))
    port = int(_number(path, "ringmesh.port", own["port"], lo=1, hi=65535, integer=True)) if "port" in own else None
    metrics_listen = own.get("metrics_listen")
    if metrics_listen is not None and not (
        isinstance(metrics_listen, str) and (hp := _HOSTPORT.match(metrics_listen)) and int(hp["port"]) < 65536
    ):
        raise _err(
            path, "ringmesh.metrics_listen", "host:port for the metrics endpoint (port 0: any free one)", metrics_listen
        )
    if not isinstance(own.get("log_json", False), bool):
        raise _err(path, "ringmesh.log_json", "true or false", own.get("log_json"))
    watch_min = own.get("watch_min_moves")
    if (
        watch_min is not None
        and watch_min != "cluster"
        and (isinstance(watch_min, bool) or not isinstance(watch_min, int) or watch_min < 0)
    ):
        raise _err(path, "ringmesh.watch_min_moves", "'cluster' or a number of moves", watch_min)
    watch = own.get("watch_games", [])
    if isinstance(watch, str):
        watch = [watch]
    if not isinstance(watch, list) or not all(isinstance(w, str) and w for w in watch):
        raise _err(path, "ringmesh.watch_games", "a list of paths or globs of self-play databases", watch)
    settings: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for setting, (key, default, env_names, lo, hi, integer) in _GLOBALS.items():
        settings[setting], sources[setting] = default, BUILTIN
        alt = {"min_copies": ("sync_routing", routing, "replication_target")}.get(
            setting, ("auto_sync", auto, {"auto_sync_interval_seconds": "interval_seconds"}.get(key, key))
        )
        if alt[2] in alt[1]:
            settings[setting] = _number(path, f"{alt[0]}.{alt[2]}", alt[1][alt[2]], lo=lo, hi=hi, integer=integer)
            sources[setting] = f"{alt[0]}.{alt[2]}"
        if key in routing:
            settings[setting] = _number(path, f"sync_routing.{key}", routing[key], lo=lo, hi=hi, integer=integer)
            sources[setting] = f"sync_routing.{key}"
        for name in env_names:
            if name in env:
                settings[setting] = _number("environment", name, env[name], lo=lo, hi=hi, integer=integer)
                sources[setting] = f"environment {name}"
    settings["bandwidth_bytes_per_s"], sources["bandwidth_bytes_per_s"] = BUILTIN_MB_PER_S * MB, BUILTIN
    if "bandwidth_limit_mbps" in auto:
        settings["bandwidth_bytes_per_s"] = parse_rate(
            path, "auto_sync.bandwidth_limit_mbps", auto["bandwidth_limit_mbps"]
        )
        sources["bandwidth_bytes_per_s"] = "auto_sync.bandwidth_limit_mbps"
    if "bandwidth_limit_mbps" in routing:
        settings["bandwidth_bytes_per_s"] = parse_rate(
            path, "sync_routing.bandwidth_limit_mbps", routing["bandwidth_limit_mbps"]
        )
        sources["bandwidth_bytes_per_s"] = "sync_routing.bandwidth_limit_mbps"
    for name in BANDWIDTH_ENV:
        if name in env:
            settings["bandwidth_bytes_per_s"] = parse_rate("environment", name, env[name])
            sources["bandwidth_bytes_per_s"] = f"environment {name}"

    timings = {}
    for key, (default, lo, hi) in TIMINGS.items():
        timings[key] = _number(path, f"ringmesh.{key}", own.get(key, default), lo=lo, hi=hi)
        sources[f"timings.{key}"] = f"ringmesh.{key}" if key in own else BUILTIN
    if not timings["leader_heartbeat_seconds"] < timings["leader_lease_seconds"] < timings["election_timeout_seconds"]:
        raise ConfigError(
            f"{path}: ringmesh: need leader_heartbeat_seconds < leader_lease_seconds < election_timeout_seconds"
        )
    if not timings["probe_timeout_seconds"] < timings["probe_interval_seconds"]:
        raise ConfigError(f"{path}: ringmesh: need probe_timeout_seconds < probe_interval_seconds")
    paths = _paths(path, "ringmesh.paths", own.get("paths"), warnings)
    sources.update({f"paths.{t}": f"ringmesh.paths.{t}" for t in paths})
    tls = _tls(path, "ringmesh.tls", own.get("tls"), None, warnings)
    sources["tls"] = "ringmesh.tls" if "tls" in own else BUILTIN

    hosts_doc = doc.get("hosts") or {}
    if not isinstance(hosts_doc, dict):
        raise _err(path, "hosts", "a mapping of host name to settings", hosts_doc)

    def names(section: str, d: dict, key: str) -> list[str]:
        where = f"{section}.{key}" if section else key
        out = _names(path, where, d.get(key) or [])
        for i, name in enumerate(out):
            if name not in hosts_doc:
                warnings.append(f"{path}: {where}[{i}]: {name!r} is not a host under hosts")
        return out

    excluded = sorted(
        {
            *names("sync_routing", routing, "exclude_from_sync"),
            *names("sync_routing", routing, "excluded_hosts"),
            *names("auto_sync", auto, "exclude_hosts"),
        }
    )
    priority_hosts = names("sync_routing", routing, "priority_hosts")
    voters = names("", doc, "p2p_voters") if "p2p_voters" in doc else None
    ephemeral_globs = _names(path, "sync_routing.ephemeral_hosts", routing.get("ephemeral_hosts", []))
    overrides = _overrides(path, auto.get("host_bandwidth_overrides"))
    groups = _nfs_groups(path, routing.get("nfs_sharing_groups", []), hosts_doc, warnings)
    group_of = {n: g for g in groups for n in g}
    storage = _storage(path, routing.get("allowed_external_storage", []))
    backup_hosts = {e.host for e in storage if e.host in hosts_doc}
    ctx = _HostContext(
        settings,
        sources,
        paths,
        excluded,
        ephemeral_globs,
        group_of,
        warnings,
        tls,
        roles,
        port,
        voters,
        priority_hosts,
        overrides,
        {e.host: e for e in storage},
        backup_hosts,
        unread,
    )
    hosts = {name: _host(path, name, h, ctx) for name, h in hosts_doc.items()}
    for i, v in enumerate(voters or []):
        if v in hosts and hosts[v].inactive:
            warnings.append(f"{path}: p2p_voters[{i}]: {v!r} takes no part ({hosts[v].inactive}): it does not vote")
    if hosts and not any(h.voter and h.address and h.inactive is None for h in hosts.values()):
        warnings.append(
            f"{path}: no member host is a voter: no leader will be elected (no broadcasts, no scheduled backups)"
        )
    not_used = [(k, why) for k, why in NOT_USED.items() if _present(doc, k)]
    if unread:
        shown = sorted(unread)
        warnings.append(
            f"{path}: {len(shown)} key(s) ringmesh does not read (other tools' settings, descriptive host "
            f"keys), accepted: {', '.join(shown[:6])}{', ...' if len(shown) > 6 else ''}"
        )
    return ClusterConfig(
        path=path,
        hosts=hosts,
        timings=timings,
        raw=doc,
        exclude_from_sync=tuple(excluded),
        ephemeral_hosts=tuple(ephemeral_globs),
        nfs_sharing_groups=groups,
        external_storage=storage,
        paths=paths,
        sources=sources,
        warnings=tuple(warnings),
        watch_games=tuple(watch),
        watch_min_moves=watch_min,
        tls=tls,
        metrics_listen=metrics_listen,
        log_json=own.get("log_json", False),
        not_used=tuple(not_used),
        unread=tuple(sorted(unread)),
        scrub_bytes_per_s=parse_rate(path, "ringmesh.scrub_rate", own["scrub_rate"])
        if "scrub_rate" in own
        else BUILTIN_SCRUB_RATE,
        changed_files=_changed_files(path, "ringmesh.changed_files", own.get("changed_files")),
        **settings,
    )


@dataclass(frozen=True, slots=True)
class _HostContext:
    """What every host's settings are resolved against (the file's global sections)."""

    settings: dict
    sources: dict
    paths: dict
    excluded: list
    ephemeral_globs: list
    group_of: dict
    warnings: list
    tls: TlsPaths | None
    roles: dict
    port: int | None
    voters: list | None
    priority_hosts: list
    overrides: list
    storage: dict
    backup_hosts: set
    unread: set


def _present(doc: dict, key: str) -> bool:
    """Whether a NOT_USED key occurs in the file (`hosts.*.k`: on any host)."""
    if key.startswith("hosts.*."):
        k = key.split(".", 2)[2]
        return any(isinstance(h, dict) and k in h for h in (doc.get("hosts") or {}).values())
    first, _, rest = key.partition(".")
    sec = doc.get(first.split(" ")[0])
    return sec is not None and (not rest or (isinstance(sec, dict) and rest in sec))


def _role_table(path: str, v: Any) -> dict[str, tuple[str, bool]]:
    """The role table, with `ringmesh.roles` (their role -> placement role) over it."""
    table = dict(ROLE_TABLE)
    if v is None:
        return table
    if not isinstance(v, dict):
        raise _err(path, "ringmesh.roles", "a mapping of their role names to " + " | ".join(PLACEMENT_ROLES), v)
    for role, placement in v.items():
        if placement not in PLACEMENT_ROLES:
            raise _err(path, f"ringmesh.roles.{role}", " | ".join(PLACEMENT_ROLES), placement)
        table[str(role)] = (placement, placement == "selfplay" or table.get(str(role), ("", False))[1])
    return table


def _overrides(path: str, v: Any) -> list[tuple[str, int]]:
    """`auto_sync.host_bandwidth_overrides`: host-name globs -> rate, in file order."""
    if v is None:
        return []
    if not isinstance(v, dict):
        raise _err(path, "auto_sync.host_bandwidth_overrides", "a mapping of host-name globs to MB/s", v)
    return [(str(g), parse_rate(path, f"auto_sync.host_bandwidth_overrides.{g}", r)) for g, r in v.items()]


def _host(path: str, name: Any, h: Any, ctx: _HostContext) -> HostConfig:
    key = f"hosts.{name}"
    if not isinstance(name, str) or not is_node_id(name):
        raise _err(path, key, "a host name of letters, digits, '.', '_' or '-'", name)
    h = h or {}
    if not isinstance(h, dict):
        raise _err(path, key, "a mapping", h)
    _unknown(path, "hosts.*", h, _HOST, ctx.unread, ctx.warnings, where=key)
    warnings, settings, gsources = ctx.warnings, ctx.settings, ctx.sources
    src: dict[str, str] = {}
    inactive = inactive_reason(h)
    address, src["address"] = host_address(name, h, ctx.port)
    if "address" in h:
        address = check_address(path, f"{key}.address", address)
    elif address is not None and not _HOSTPORT.match(address):
        where = src["address"].split(",")[0]
        warnings.append(
            f"{path}: {where}: {address.rsplit(':', 1)[0]!r} is not a host name or IP address "
            f"(a placeholder?): {name} has no address and takes no part"
        )
        address, src["address"] = None, f"{where} is not an address"
    for flag in (
        "selfplay_enabled",
        "training_enabled",
        "skip_sync_receive",
        "p2p_enabled",
        "is_ephemeral",
        "nat_blocked",
    ):
        if flag in h and not isinstance(h[flag], bool):
            raise _err(path, f"{key}.{flag}", "true or false", h[flag])
    role, produces, src["role"] = placement_role(name, h, ctx.roles, ctx.backup_hosts, warnings, path)
    ephemeral = h.get("ephemeral", h.get("is_ephemeral"))
    if ephemeral is None:
        glob = next((g for g in ctx.ephemeral_globs if fnmatch.fnmatchcase(name, g)), None)
        ephemeral, src["ephemeral"] = glob is not None, f"sync_routing.ephemeral_hosts ({glob!r})" if glob else BUILTIN
    elif not isinstance(ephemeral, bool):
        raise _err(path, f"{key}.ephemeral", "true or false", ephemeral)
    else:
        src["ephemeral"] = f"{key}.{'ephemeral' if 'ephemeral' in h else 'is_ephemeral'}"
    is_excluded = name in ctx.excluded
    voter = h.get("voter")
    if ctx.voters is not None:
        voter, src["voter"] = name in ctx.voters and inactive is None, "p2p_voters"
    elif voter is None:
        voter, src["voter"] = not ephemeral and not is_excluded, "default: persistent, non-excluded hosts vote"
    elif not isinstance(voter, bool):
        raise _err(path, f"{key}.voter", "true or false", voter)
    else:
        src["voter"] = f"{key}.voter"
    provider = h.get("provider", _provider_of(name))
    if not isinstance(provider, str):
        raise _err(path, f"{key}.provider", "a string", provider)
    if provider != "default" and provider not in PROVIDER_MB_PER_S:
        warnings.append(
            f"{path}: {key}.provider: {provider!r} has no bandwidth default "
            f"(known: {', '.join(sorted(PROVIDER_MB_PER_S))}); the global default applies"
        )
    priority = h.get("sync_priority", "high" if name in ctx.priority_hosts else "normal")
    if priority not in PRIORITIES:
        raise _err(path, f"{key}.sync_priority", " | ".join(PRIORITIES), priority)
    src["sync_priority"] = (
        f"{key}.sync_priority"
        if "sync_priority" in h
        else "sync_routing.priority_hosts"
        if name in ctx.priority_hosts
        else BUILTIN
    )

    # bandwidth: host direction > host both > override glob > provider default > global (env > file > built-in)
    glob_rate = next(((g, r) for g, r in ctx.overrides if fnmatch.fnmatchcase(name, g)), None)
    if "bandwidth_limit_mbps" in h:
        both, both_src = (
            parse_rate(path, f"{key}.bandwidth_limit_mbps", h["bandwidth_limit_mbps"]),
            f"{key}.bandwidth_limit_mbps",
        )
    elif glob_rate is not None:
        both, both_src = glob_rate[1], f"auto_sync.host_bandwidth_overrides ({glob_rate[0]!r})"
    elif provider in PROVIDER_MB_PER_S:
        both, both_src = PROVIDER_MB_PER_S[provider] * MB, f"provider default ({provider})"
    else:
        both, both_src = settings["bandwidth_bytes_per_s"], gsources["bandwidth_bytes_per_s"]
    rates = {}
    for direction in ("egress", "ingress"):
        k = f"{direction}_limit"
        rates[direction] = parse_rate(path, f"{key}.{k}", h[k]) if k in h else both
        src[f"{direction}_bytes_per_s"] = f"{key}.{k}" if k in h else both_src

    if "disk_cap_percent" in h:
        disk_cap = _number(path, f"{key}.disk_cap_percent", h["disk_cap_percent"], lo=1, hi=100)
        src["disk_cap_percent"] = f"{key}.disk_cap_percent"
    else:
        disk_cap, src["disk_cap_percent"] = settings["max_disk_usage_percent"], gsources["max_disk_usage_percent"]
    host_paths, games_dir = _host_paths(path, name, h, ctx, src)
    if "tls" in h and ctx.tls is None:
        raise ConfigError(
            f"{path}: {key}.tls: set ringmesh.tls first (every peer of a cluster talks TLS, or none does); "
            f"a host may only move its files"
        )
    tls = _tls(path, f"{key}.tls", h["tls"], ctx.tls, warnings) if "tls" in h else ctx.tls
    if tls is not None:
        tls = _expand_tls(path, tls, name)
    return HostConfig(
        name,
        address,
        role,
        provider,
        bool(ephemeral),
        is_excluded,
        bool(voter),
        egress_bytes_per_s=rates["egress"],
        ingress_bytes_per_s=rates["ingress"],
        sync_priority=priority,
        nfs_group=ctx.group_of.get(name, ()),
        disk_cap_percent=disk_cap,
        paths=host_paths,
        sources=src,
        tls=tls,
        their_role=h.get("role"),
        inactive=inactive,
        produces_games=produces,
        nat_blocked=bool(h.get("nat_blocked", False)),
        games_dir=games_dir,
    )


def _provider_of(name: str) -> str:
    """A host's provider when the file does not say: the first part of its name if that is a
    provider with a bandwidth default (`vast-29118471` -> vast), else `default`."""
    head = name.split("-", 1)[0]
    return head if head in PROVIDER_MB_PER_S else "default"


def _host_paths(
    path: str, name: str, h: dict, ctx: _HostContext, src: dict[str, str]
) -> tuple[dict[str, str], str | None]:
    """Where each file type lands on the host: `hosts.X.paths` > an external storage entry's
    path/subdirs > `storage_paths` > `ringmesh.paths`; and the consumer game databases' directory."""
    key = f"hosts.{name}"
    out = dict(ctx.paths)
    src.update({f"paths.{t}": f"ringmesh.paths.{t}" for t in ctx.paths})
    sp = h.get("storage_paths")
    if sp is not None and not isinstance(sp, dict):
        raise _err(path, f"{key}.storage_paths", "a mapping of data kind to directory", sp)
    for kind, t in STORAGE_PATHS.items():
        if sp and kind in sp:
            if not isinstance(sp[kind], str) or not sp[kind].strip():
                raise _err(path, f"{key}.storage_paths.{kind}", "a directory path (a non-empty string)", sp[kind])
            out[t], src[f"paths.{t}"] = sp[kind], f"{key}.storage_paths.{kind}"
    ext = ctx.storage.get(name)
    if ext is not None:
        for t, d in ext.dirs.items():
            out[t], src[f"paths.{t}"] = d, f"sync_routing.allowed_external_storage (host {name})"
    own = _paths(path, f"{key}.paths", h.get("paths"), ctx.warnings)
    out.update(own)
    src.update({f"paths.{t}": f"{key}.paths.{t}" for t in own})
    games_dir = (sp or {}).get("games") or (ext.dirs.get("gamedb") if ext else None)
    if games_dir:
        src["games_dir"] = (
            f"{key}.storage_paths.games"
            if (sp or {}).get("games")
            else f"sync_routing.allowed_external_storage (host {name})"
        )
    return out, games_dir


def _nfs_groups(path: str, v: Any, hosts_doc: dict, warnings: list[str]) -> tuple[tuple[str, ...], ...]:
    key = "sync_routing.nfs_sharing_groups"
    if not isinstance(v, list):
        raise _err(path, key, "a list of lists of host names", v)
    seen: dict[str, int] = {}
    groups = []
    for i, g in enumerate(v):
        if not isinstance(g, list) or not g:
            raise _err(path, f"{key}[{i}]", "a non-empty list of host names", g)
        for j, name in enumerate(g):
            if not isinstance(name, str):
                raise _err(path, f"{key}[{i}][{j}]", "the name of a host", name)
            if name not in hosts_doc:
                warnings.append(f"{path}: {key}[{i}][{j}]: {name!r} is not a host under hosts")
            if name in seen:
                where = f"{key}[{seen[name]}]"
                raise ConfigError(
                    f"{path}: {key}[{i}][{j}]: host {name!r} is already in group {where}; "
                    f"a host may be in at most one NFS sharing group"
                )
            seen[name] = i
        groups.append(tuple(g))
    return tuple(groups)


def _storage(path: str, v: Any) -> tuple[ExternalStorage, ...]:
    key = "sync_routing.allowed_external_storage"
    if not isinstance(v, list):
        raise _err(path, key, "a list of {host, path, schedule} mappings", v)
    out = []
    for i, e in enumerate(v):
        k = f"{key}[{i}]"
        if not isinstance(e, dict):
            raise _err(path, k, "a mapping with host, path and an optional schedule", e)
        if not isinstance(e.get("host"), str) or not e["host"] or any(c.isspace() for c in e["host"]):
            raise _err(path, f"{k}.host", "a host name without spaces", e.get("host"))
        if not isinstance(e.get("path"), str) or not e["path"].strip():
            raise _err(path, f"{k}.path", "a non-empty path", e.get("path"))
        schedule, cron = e.get("schedule"), None
        if schedule is not None:
            try:
                cron = parse_cron(schedule)
            except CronError as err:
                raise _err(
                    path,
                    f"{k}.schedule",
                    "a 5-field cron expression 'minute hour day-of-month month day-of-week' "
                    f"or '@every N[s|m|h]' ({err})",
                    schedule,
                ) from None
        subdirs = e.get("subdirs") or {}
        if not isinstance(subdirs, dict):
            raise _err(path, f"{k}.subdirs", "a mapping of games | npz | models to sub-directories", subdirs)
        dirs = {}
        for kind, t in EXTERNAL_TYPES.items():
            receive = e.get(f"receive_{kind}", False)
            if not isinstance(receive, bool):
                raise _err(path, f"{k}.receive_{kind}", "true or false", receive)
            if receive:
                dirs[t] = str(Path(e["path"]) / str(subdirs.get(kind, "")))
        out.append(ExternalStorage(e["host"], e["path"], schedule, cron, dirs))
    return tuple(out)


def peer_config(c: ClusterConfig) -> PeerConfig:
    """What the config means for the protocol core of every host."""
    t = c.timings
    return PeerConfig(
        gossip_interval=c.gossip_interval,
        max_transfers=c.max_concurrent_syncs,
        min_copies=c.min_copies,
        max_disk_usage_percent=c.max_disk_usage_percent,
        reorder_interval=t["broadcast_reorder_seconds"],
        retention_seconds=t["retention_seconds"],
        backup_schedules=tuple(e.schedule for e in c.external_storage),
        excluded=frozenset(n for n, h in c.hosts.items() if h.excluded),
        nfs_groups={n: ",".join(h.nfs_group) for n, h in c.hosts.items() if h.nfs_group},
        roles={n: h.role for n, h in c.hosts.items()},
        ephemeral=frozenset(n for n, h in c.hosts.items() if h.ephemeral),
        nat=frozenset(n for n, h in c.hosts.items() if h.nat_blocked),
        also_takes={e.host: frozenset(e.dirs) for e in c.external_storage if e.host in c.hosts and e.dirs},
        membership=mb.MembershipConfig(
            probe_interval=t["probe_interval_seconds"], probe_timeout=t["probe_timeout_seconds"]
        ),
        election=el.ElectionConfig(
            heartbeat_interval=t["leader_heartbeat_seconds"],
            lease=t["leader_lease_seconds"],
            election_timeout=t["election_timeout_seconds"],
        ),
        breaker=BreakerConfig(base=t["breaker_base_seconds"], cap=t["breaker_cap_seconds"]),
    )
