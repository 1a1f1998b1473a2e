"""`distributed_hosts.yaml`: the cluster's existing config format, loaded and validated.

Every error names the file, the key and what was expected. Unknown keys are accepted (the
file carries other tools' settings too). Environment variables of the seed
(`RINGRIFT_*`, with `RINGMESH_*` twins that win) override the file.
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .core.catalog import is_node_id
from .core.errors import RingmeshError

ROLES = ("training", "selfplay", "coordinator", "backup")
_HOSTPORT = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.\-]+):(?P<port>\d{1,5})$")


class ConfigError(RingmeshError):
    """The config file or an override is invalid; the message says where and why."""


@dataclass(frozen=True, slots=True)
class HostConfig:
    name: str
    address: str | None
    role: str = "selfplay"
    provider: str = "default"
    ephemeral: bool = False
    excluded: bool = False
    voter: bool = False


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
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def members(self) -> dict[str, HostConfig]:
        """The hosts ringmesh runs on: those with an address."""
        return {n: h for n, h in self.hosts.items() if h.address}


def _err(path: str, key: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{path}: {key}: expected {expected}, got {got!r}")


def _number(path: str, key: str, v: Any, *, lo: float, hi: float, integer: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise _err(path, key, f"a number in [{lo}, {hi}]", v)
    try:
        x = int(v) if integer else float(v)
    except ValueError:
        raise _err(path, key, f"a number in [{lo}, {hi}]", v) from None
    if not lo <= x <= hi:
        raise _err(path, key, f"a number in [{lo}, {hi}]", v)
    return x


def check_address(path: str, key: str, v: Any) -> str:
    if not isinstance(v, str) or not (m := _HOSTPORT.match(v)) or not 0 < int(m["port"]) < 65536:
        raise _err(path, key, "host:port", v)
    return v


# ringmesh's own protocol timings (seconds), under an optional `ringmesh:` section.
TIMINGS = {
    "probe_interval_seconds": (1.0, 0.05, 60),
    "probe_timeout_seconds": (0.4, 0.01, 30),
    "leader_heartbeat_seconds": (0.2, 0.01, 10),
    "leader_lease_seconds": (0.8, 0.05, 60),
    "election_timeout_seconds": (1.0, 0.1, 120),
    "breaker_base_seconds": (1.0, 0.01, 600),
    "breaker_cap_seconds": (60.0, 0.01, 3600),
}

_ENV = {  # setting -> (variable names, later wins; lo, hi, integer)
    "sync_interval": (("RINGRIFT_SYNC_INTERVAL", "RINGMESH_SYNC_INTERVAL"), 0.05, 86400, False),
    "gossip_interval": (("RINGRIFT_GOSSIP_INTERVAL", "RINGMESH_GOSSIP_INTERVAL"), 0.05, 3600, False),
    "max_concurrent_syncs": (("RINGRIFT_SYNC_MAX_CONCURRENT", "RINGMESH_SYNC_MAX_CONCURRENT"), 1, 256, True),
    "max_disk_usage_percent": (("RINGRIFT_SYNC_MAX_DISK_USAGE", "RINGMESH_SYNC_MAX_DISK_USAGE"), 1, 100, False),
}


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


def parse_config(doc: Any, path: str = "<config>", env: Mapping[str, str] | None = None) -> ClusterConfig:
    env = {} if env is None else env
    if not isinstance(doc, dict):
        raise _err(path, "(top level)", "a mapping", type(doc).__name__)
    routing = doc.get("sync_routing") or {}
    if not isinstance(routing, dict):
        raise _err(path, "sync_routing", "a mapping", routing)
    settings: dict[str, Any] = {
        "gossip_interval": _number(path, "sync_routing.gossip_interval_seconds", routing.get("gossip_interval_seconds", 30), lo=0.05, hi=3600),
        "sync_interval": _number(path, "sync_routing.auto_sync_interval_seconds", routing.get("auto_sync_interval_seconds", 60), lo=0.05, hi=86400),
        "max_concurrent_syncs": _number(path, "sync_routing.max_concurrent_syncs", routing.get("max_concurrent_syncs", 4), lo=1, hi=256, integer=True),
        "min_copies": _number(path, "sync_routing.min_copies", routing.get("min_copies", 2), lo=1, hi=100, integer=True),
        "max_disk_usage_percent": _number(path, "sync_routing.max_disk_usage_percent", routing.get("max_disk_usage_percent", 70), lo=1, hi=100),
    }
    own = doc.get("ringmesh") or {}
    if not isinstance(own, dict):
        raise _err(path, "ringmesh", "a mapping", own)
    settings["timings"] = {
        key: _number(path, f"ringmesh.{key}", own.get(key, default), lo=lo, hi=hi)
        for key, (default, lo, hi) in TIMINGS.items()
    }
    t = settings["timings"]
    if not t["leader_heartbeat_seconds"] < t["leader_lease_seconds"] < t["election_timeout_seconds"]:
        raise ConfigError(f"{path}: ringmesh: need leader_heartbeat_seconds < leader_lease_seconds < election_timeout_seconds")
    if not t["probe_timeout_seconds"] < t["probe_interval_seconds"]:
        raise ConfigError(f"{path}: ringmesh: need probe_timeout_seconds < probe_interval_seconds")
    for setting, (names, lo, hi, integer) in _ENV.items():
        for name in names:
            if name in env:
                settings[setting] = _number("environment", name, env[name], lo=lo, hi=hi, integer=integer)

    excluded = _names(path, "sync_routing.exclude_from_sync", routing.get("exclude_from_sync", []))
    ephemeral_globs = _names(path, "sync_routing.ephemeral_hosts", routing.get("ephemeral_hosts", []))
    hosts_doc = doc.get("hosts") or {}
    if not isinstance(hosts_doc, dict):
        raise _err(path, "hosts", "a mapping of host name to settings", hosts_doc)
    hosts = {}
    for name, h in hosts_doc.items():
        key = f"hosts.{name}"
        if not is_node_id(name):
            raise _err(path, key, "a host name of letters, digits, '.', '_' or '-'", name)
        h = h or {}
        if not isinstance(h, dict):
            raise _err(path, key, "a mapping", h)
        address = check_address(path, f"{key}.address", h["address"]) if h.get("address") is not None else None
        role = h.get("role", "selfplay")
        if role not in ROLES:
            raise _err(path, f"{key}.role", " | ".join(ROLES), role)
        ephemeral = h.get("ephemeral")
        if ephemeral is None:
            ephemeral = any(fnmatch.fnmatchcase(name, g) for g in ephemeral_globs)
        elif not isinstance(ephemeral, bool):
            raise _err(path, f"{key}.ephemeral", "true or false", ephemeral)
        is_excluded = name in excluded
        voter = h.get("voter")
        if voter is None:
            voter = not ephemeral and not is_excluded
        elif not isinstance(voter, bool):
            raise _err(path, f"{key}.voter", "true or false", voter)
        provider = h.get("provider", "default")
        if not isinstance(provider, str):
            raise _err(path, f"{key}.provider", "a string", provider)
        hosts[name] = HostConfig(name, address, role, provider, bool(ephemeral), is_excluded, bool(voter))
    return ClusterConfig(path=path, hosts=hosts, raw=doc, **settings)


def _names(path: str, key: str, v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _err(path, key, "a list of host names", v)
    return v
