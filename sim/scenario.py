"""Scenarios: a cluster, a workload and faults, written as YAML (`sim/scenarios/*.yaml`).

    name: spot-storm
    description: one line for the report
    seconds: 300                 # the safety phase: workload and faults
    liveness_bound: 180          # then faults stop and the network heals: converge within this
    cluster:
      hosts:                     # groups of hosts (or `from_config: distributed_hosts.yaml`)
        - {count: 4, name: "gh200-{i}", provider: lambda, role: training}
        - {count: 20, name: "vast-{i}", provider: vast, role: selfplay, ephemeral: true}
        - {count: 2, name: "lgh-{i}", provider: lambda, role: training, nat_blocked: true}
      max_voters: 5              # voters: hosts marked `voter`, else persistent ones (first 5 by name)
      disk: {capacity_gb: 2000, used_percent: [20, 50]}
      clock: {offset_ms: 500, drift_ppm: 100}
    peer: {gossip_interval: 1.0, min_copies: 2}    # PeerConfig fields
    network:
      default: {latency_ms: 20, jitter_ms: 10, loss: 0.0, duplicate: 0.0}
      pairs: [{between: [vast, lambda], latency_ms: 80, jitter_ms: 40, loss: 0.01}]
      fsync_ms: 2
    workload:
      games_per_second: 0.2      # per selfplay host
      game_kb: [50, 3000]
      models: {every: 60, size_mb: [15, 400], broadcast: true}
      npz: {every: 120, size_mb: [50, 500]}
    faults:
      crash: {per_host_hour: 2, down: [5, 60]}
      spot: {per_host_hour: 6, notice_fraction: 0.5, notice: 25, back_after: [10, 60]}
      partition: {per_hour: 4, duration: [10, 60], one_way_fraction: 0.3, flapping_fraction: 0.2, period: [2, 10]}
      pause: {per_host_hour: 1, duration: [1, 20]}
      loss: {per_hour: 2, loss: 0.3, duration: [5, 30]}
      disk_fill: {per_host_hour: 0.5, percent: [75, 98], duration: [30, 120]}
      corrupt: {per_hour: 2, duration: [30, 120]}
      rot: {per_hour: 30, games: [1, 3], scrub_period: 20}   # stored games go bad; nodes scrub

A range `[lo, hi]` is drawn uniformly (log-uniformly for sizes); a number is itself. Rates
are per hour of simulated time (per host where it says so). Bandwidth limits are the
config's: host setting > provider default (REFERENCE.md, MB/s) > 20 MB/s. Every field is
checked; an unknown one is an error naming it.
"""

from __future__ import annotations

import fnmatch
import math
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

import yaml

from ringmesh.core import PeerConfig
from ringmesh.core import election as el
from ringmesh.core import membership as mb

from .network import LinkModel

MB = 1_000_000
GB = 1_000_000_000
#: REFERENCE.md's provider defaults, MB/s (as `ringmesh.config` applies them).
PROVIDER_MB_PER_S = {
    "lambda": 100,
    "runpod": 100,
    "tailscale": 100,
    "hetzner": 80,
    "vultr": 80,
    "nebius": 50,
    "vast": 50,
}
DEFAULT_MB_PER_S = 20
ROLES = ("training", "selfplay", "coordinator", "backup")
FAULT_KINDS = ("crash", "spot", "partition", "pause", "loss", "disk_fill", "corrupt", "rot")
HERE = os.path.join(os.path.dirname(__file__), "scenarios")


class ScenarioError(ValueError):
    """The scenario file is invalid; the message says where and why."""


Range = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Host:
    name: str
    role: str = "selfplay"
    provider: str = "default"
    ephemeral: bool = False
    nat: bool = False  # nat_blocked: nobody can dial it (`sim/relays.py`)
    voter: bool = False
    excluded: bool = False
    egress: int = DEFAULT_MB_PER_S * MB  # bytes/s
    ingress: int = DEFAULT_MB_PER_S * MB
    nfs_group: str | None = None
    disk_capacity: int = 2000 * GB
    disk_used: Range = (20.0, 50.0)  # percent used by everything else, drawn per host


@dataclass(frozen=True, slots=True)
class Workload:
    games_per_second: float = 0.0  # per selfplay host
    game_kb: Range = (50.0, 3000.0)
    configs: tuple[str, ...] = tuple(
        f"{b}_{p}p" for b in ("square8", "square19", "hex8", "hexagonal") for p in (2, 3, 4)
    )
    model_every: float = 0.0  # seconds between promotions; 0: none
    model_mb: Range = (15.0, 400.0)
    model_broadcast: bool = True
    models: int = 3  # distinct model names
    npz_every: float = 0.0
    npz_mb: Range = (50.0, 500.0)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    hosts: tuple[Host, ...]
    description: str = ""
    seconds: float = 300.0
    liveness_bound: float = 180.0
    peer: PeerConfig = field(default_factory=PeerConfig)
    link: LinkModel = field(default_factory=LinkModel)
    pairs: Mapping[tuple[str, str], LinkModel] = field(default_factory=dict)
    fsync: float = 0.002
    clock_offset: float = 0.0  # seconds, each host's offset drawn from [-x, x]
    clock_drift: float = 0.0  # rate deviation (1e-4 = 100 ppm), drawn from [-x, x]
    workload: Workload = field(default_factory=Workload)
    faults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    disk_report_interval: float = 30.0
    check_every: float = 0.5  # liveness: seconds between looks at the convergence conditions
    path: str = ""

    @property
    def ids(self) -> list[str]:
        return sorted(h.name for h in self.hosts)

    def host(self, name: str) -> Host:
        return self._by_name()[name]

    def _by_name(self) -> dict[str, Host]:
        return {h.name: h for h in self.hosts}

    def voters(self) -> list[str]:
        return sorted(h.name for h in self.hosts if h.voter)

    def with_hosts(self, n: int) -> Scenario:
        """The same scenario with its host groups scaled to about `n` hosts in all."""
        return replace(self, hosts=_scale(self.hosts, n))


# -- loading ------------------------------------------------------------------------------------


def find(name_or_path: str) -> str:
    """A scenario file: a path, or the name of one in `sim/scenarios/` (with or without .yaml)."""
    if os.path.exists(name_or_path):
        return name_or_path
    for cand in (name_or_path, f"{name_or_path}.yaml"):
        p = os.path.join(HERE, cand)
        if os.path.exists(p):
            return p
    known = sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".yaml") and not f.endswith("_hosts.yaml"))
    raise ScenarioError(f"no scenario {name_or_path!r} (a file, or one of: {', '.join(known)})")


def library() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(HERE) if f.endswith(".yaml") and not f.endswith("_hosts.yaml"))


def load(name_or_path: str) -> Scenario:
    path = find(name_or_path)
    with open(path) as f:
        doc = yaml.safe_load(f)
    return parse(doc, path)


def parse(doc: Any, path: str = "<scenario>") -> Scenario:
    d = _map(doc, path)
    _known(
        d,
        path,
        {
            "name",
            "description",
            "seconds",
            "liveness_bound",
            "cluster",
            "peer",
            "network",
            "workload",
            "faults",
            "disk_report_interval",
            "check_every",
        },
    )
    cluster = _map(d.get("cluster"), f"{path}: cluster")
    _known(cluster, f"{path}: cluster", {"hosts", "from_config", "max_voters", "disk", "clock", "exclude"})
    peer_over = _map(d.get("peer", {}), f"{path}: peer")
    if "from_config" in cluster:
        cfg_path = os.path.join(os.path.dirname(path), str(cluster["from_config"]))
        hosts, base_peer = _from_config(cfg_path)
    else:
        hosts, base_peer = _groups(cluster.get("hosts"), f"{path}: cluster.hosts"), PeerConfig()
    disk = _map(cluster.get("disk", {}), f"{path}: cluster.disk")
    _known(disk, f"{path}: cluster.disk", {"capacity_gb", "used_percent"})
    hosts = [
        replace(
            h,
            disk_capacity=int(_num(disk.get("capacity_gb", 2000), f"{path}: cluster.disk.capacity_gb") * GB),
            disk_used=_range(disk.get("used_percent", [20, 50]), f"{path}: cluster.disk.used_percent"),
        )
        for h in hosts
    ]
    excluded = set(_names(cluster.get("exclude", []), f"{path}: cluster.exclude"))
    hosts = [replace(h, excluded=True, voter=False) if h.name in excluded else h for h in hosts]
    hosts = _pick_voters(hosts, cluster.get("max_voters"), f"{path}: cluster.max_voters")
    if len({h.name for h in hosts}) != len(hosts):
        raise ScenarioError(f"{path}: cluster: host names repeat")
    if not hosts:
        raise ScenarioError(f"{path}: cluster: no hosts")
    clock = _map(cluster.get("clock", {}), f"{path}: cluster.clock")
    _known(clock, f"{path}: cluster.clock", {"offset_ms", "drift_ppm"})
    peer = _peer(base_peer, peer_over, hosts, f"{path}: peer")
    link, pairs, fsync = _network(_map(d.get("network", {}), f"{path}: network"), f"{path}: network")
    faults = _faults(_map(d.get("faults", {}), f"{path}: faults"), f"{path}: faults")
    return Scenario(
        name=str(d.get("name") or os.path.splitext(os.path.basename(path))[0]),
        description=str(d.get("description", "")).strip(),
        hosts=tuple(sorted(hosts, key=lambda h: h.name)),
        seconds=_num(d.get("seconds", 300), f"{path}: seconds", lo=0),
        liveness_bound=_num(d.get("liveness_bound", 180), f"{path}: liveness_bound", lo=1),
        peer=peer,
        link=link,
        pairs=pairs,
        fsync=fsync,
        clock_offset=_num(clock.get("offset_ms", 0), f"{path}: cluster.clock.offset_ms", lo=0) / 1000,
        clock_drift=_num(clock.get("drift_ppm", 0), f"{path}: cluster.clock.drift_ppm", lo=0, hi=1e5) * 1e-6,
        workload=_workload(_map(d.get("workload", {}), f"{path}: workload"), f"{path}: workload"),
        faults=faults,
        disk_report_interval=_num(d.get("disk_report_interval", 30), f"{path}: disk_report_interval", lo=0.1),
        check_every=_num(d.get("check_every", 0.5), f"{path}: check_every", lo=0.01),
        path=path,
    )


def _groups(v: Any, where: str) -> list[Host]:
    if not isinstance(v, list) or not v:
        raise ScenarioError(f"{where}: expected a list of host groups")
    out = []
    for i, g in enumerate(v):
        g = _map(g, f"{where}[{i}]")
        _known(
            g,
            f"{where}[{i}]",
            {"count", "name", "provider", "role", "ephemeral", "nat_blocked", "voter", "bandwidth_mbps", "nfs_group"},
        )
        count = int(_num(g.get("count", 1), f"{where}[{i}].count", lo=1))
        pattern = str(g.get("name", f"h{i}-{{i}}"))
        role = str(g.get("role", "selfplay"))
        if role not in ROLES:
            raise ScenarioError(f"{where}[{i}].role: expected one of {', '.join(ROLES)}, got {role!r}")
        provider = str(g.get("provider", "default"))
        rate = (
            int(_num(g["bandwidth_mbps"], f"{where}[{i}].bandwidth_mbps", lo=0.001) * MB)
            if "bandwidth_mbps" in g
            else PROVIDER_MB_PER_S.get(provider, DEFAULT_MB_PER_S) * MB
        )
        width = max(2, len(str(count - 1)))
        for k in range(count):
            name = (
                pattern.replace("{i}", f"{k:0{width}d}")
                if "{i}" in pattern
                else (pattern if count == 1 else f"{pattern}-{k:0{width}d}")
            )
            out.append(
                Host(
                    name=name,
                    role=role,
                    provider=provider,
                    ephemeral=bool(g.get("ephemeral", False)),
                    nat=bool(g.get("nat_blocked", False)),
                    voter=bool(g.get("voter", False)),
                    egress=rate,
                    ingress=rate,
                    nfs_group=g.get("nfs_group"),
                )
            )
    return out


def _from_config(path: str) -> tuple[list[Host], PeerConfig]:
    """Hosts and peer settings as `ringmesh serve` would take them from a distributed_hosts.yaml."""
    from ringmesh.config import load_config, peer_config

    c = load_config(path, env={})
    hosts = [
        Host(
            name=n,
            role=h.role,
            provider=h.provider,
            ephemeral=h.ephemeral,
            nat=h.nat_blocked,
            voter=h.voter,
            excluded=h.excluded,
            egress=h.egress_bytes_per_s,
            ingress=h.ingress_bytes_per_s,
            nfs_group=",".join(h.nfs_group) if h.nfs_group else None,
        )
        for n, h in sorted(c.members().items())
    ]
    return hosts, peer_config(c)


def _pick_voters(hosts: list[Host], max_voters: Any, where: str) -> list[Host]:
    """Hosts marked `voter` vote; if none is, persistent non-excluded ones do (as the config);
    `max_voters` keeps the first of them by name."""
    marked = sorted(h.name for h in hosts if h.voter)
    chosen = marked or sorted(h.name for h in hosts if not h.ephemeral and not h.excluded)
    if max_voters is not None:
        chosen = chosen[: int(_num(max_voters, where, lo=1))]
    keep = set(chosen)
    return [replace(h, voter=h.name in keep) for h in hosts]


def _peer(base: PeerConfig, over: Mapping[str, Any], hosts: list[Host], where: str) -> PeerConfig:
    names = {f.name for f in fields(PeerConfig)} - {"excluded", "nfs_groups", "roles", "ephemeral", "nat"}
    _known(over, where, names)
    kw: dict[str, Any] = {}
    for k, v in over.items():
        if k == "membership":
            kw[k] = mb.MembershipConfig(**_map(v, f"{where}.membership"))
        elif k == "election":
            kw[k] = el.ElectionConfig(**_map(v, f"{where}.election"))
        elif k == "breaker":
            from ringmesh.core.breaker import BreakerConfig

            kw[k] = BreakerConfig(**_map(v, f"{where}.breaker"))
        else:
            kw[k] = type(getattr(base, k))(v)
    kw.setdefault("excluded", frozenset(h.name for h in hosts if h.excluded) | base.excluded)
    kw.setdefault("nfs_groups", {h.name: h.nfs_group for h in hosts if h.nfs_group} or dict(base.nfs_groups))
    kw.setdefault("roles", {h.name: h.role for h in hosts})
    kw.setdefault("ephemeral", frozenset(h.name for h in hosts if h.ephemeral))
    kw.setdefault("nat", frozenset(h.name for h in hosts if h.nat))  # as peer_config fills it from nat_blocked
    try:
        return replace(base, **kw)
    except Exception as e:  # the core's own checks (LocalProtocolError, TypeError)
        raise ScenarioError(f"{where}: {e}") from None


def _link(d: Mapping[str, Any], where: str, base: LinkModel = LinkModel()) -> LinkModel:
    _known(d, where, {"latency_ms", "jitter_ms", "loss", "duplicate", "deadline_s", "between"})
    try:
        return LinkModel(
            latency=_num(d.get("latency_ms", base.latency * 1000), f"{where}.latency_ms", lo=0) / 1000,
            jitter=_num(d.get("jitter_ms", base.jitter * 1000), f"{where}.jitter_ms", lo=0) / 1000,
            loss=_num(d.get("loss", base.loss), f"{where}.loss", lo=0, hi=1),
            duplicate=_num(d.get("duplicate", base.duplicate), f"{where}.duplicate", lo=0, hi=1),
            deadline=_num(d.get("deadline_s", base.deadline), f"{where}.deadline_s", lo=0),
        )
    except ValueError as e:
        raise ScenarioError(f"{where}: {e}") from None


def _network(d: Mapping[str, Any], where: str) -> tuple[LinkModel, dict[tuple[str, str], LinkModel], float]:
    _known(d, where, {"default", "pairs", "fsync_ms"})
    link = _link(_map(d.get("default", {}), f"{where}.default"), f"{where}.default")
    pairs: dict[tuple[str, str], LinkModel] = {}
    for i, p in enumerate(d.get("pairs", []) or []):
        p = _map(p, f"{where}.pairs[{i}]")
        between = _names(p.get("between"), f"{where}.pairs[{i}].between")
        if len(between) != 2:
            raise ScenarioError(f"{where}.pairs[{i}].between: expected two providers")
        m = _link(p, f"{where}.pairs[{i}]", link)
        a, b = between
        pairs[(a, b)] = pairs[(b, a)] = m
    return link, pairs, _num(d.get("fsync_ms", 2), f"{where}.fsync_ms", lo=0) / 1000


def _workload(d: Mapping[str, Any], where: str) -> Workload:
    _known(d, where, {"games_per_second", "game_kb", "configs", "models", "npz"})
    models = _map(d.get("models", {}), f"{where}.models")
    _known(models, f"{where}.models", {"every", "size_mb", "broadcast", "names"})
    npz = _map(d.get("npz", {}), f"{where}.npz")
    _known(npz, f"{where}.npz", {"every", "size_mb"})
    w = Workload()
    return Workload(
        games_per_second=_num(d.get("games_per_second", 0), f"{where}.games_per_second", lo=0),
        game_kb=_range(d.get("game_kb", list(w.game_kb)), f"{where}.game_kb"),
        configs=tuple(_names(d["configs"], f"{where}.configs")) if "configs" in d else w.configs,
        model_every=_num(models.get("every", 0), f"{where}.models.every", lo=0),
        model_mb=_range(models.get("size_mb", list(w.model_mb)), f"{where}.models.size_mb"),
        model_broadcast=bool(models.get("broadcast", True)),
        models=int(_num(models.get("names", 3), f"{where}.models.names", lo=1)),
        npz_every=_num(npz.get("every", 0), f"{where}.npz.every", lo=0),
        npz_mb=_range(npz.get("size_mb", list(w.npz_mb)), f"{where}.npz.size_mb"),
    )


FAULT_FIELDS: dict[str, set[str]] = {
    "crash": {"per_host_hour", "down", "hosts"},
    "spot": {"per_host_hour", "notice_fraction", "notice", "back_after", "hosts"},
    "partition": {"per_hour", "duration", "one_way_fraction", "flapping_fraction", "period", "sides", "at"},
    "pause": {"per_host_hour", "duration", "hosts"},
    "loss": {"per_hour", "loss", "duration"},
    "disk_fill": {"per_host_hour", "percent", "duration", "hosts"},
    "corrupt": {"per_hour", "duration", "hosts"},
    "rot": {"per_hour", "per_host_hour", "games", "hosts", "scrub_period"},
}


def _faults(d: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    _known(d, where, set(FAULT_KINDS))
    out: dict[str, dict[str, Any]] = {}
    for kind, spec in d.items():
        spec = dict(_map(spec, f"{where}.{kind}"))
        _known(spec, f"{where}.{kind}", FAULT_FIELDS[kind])
        for k, v in spec.items():
            if k in ("hosts", "sides"):
                continue
            if isinstance(v, list):
                spec[k] = _range(v, f"{where}.{kind}.{k}")
            else:
                spec[k] = _num(v, f"{where}.{kind}.{k}", lo=0)
        out[kind] = spec
    return out


# -- scaling ------------------------------------------------------------------------------------


def _scale(hosts: tuple[Host, ...], n: int) -> tuple[Host, ...]:
    """About `n` hosts: voters and excluded hosts as they are, every other group (same role,
    provider, spot or not) scaled in proportion; a group keeps its first hosts and grows by
    clones named `<provider>-<role>[-spot][-nat]-<k>` (outside any NFS group)."""
    fixed = [h for h in hosts if h.voter or h.excluded]
    groups: dict[tuple, list[Host]] = {}
    for h in hosts:
        if not (h.voter or h.excluded):
            groups.setdefault((h.provider, h.role, h.ephemeral, h.nat), []).append(h)
    rest = len(hosts) - len(fixed)
    factor = max(0, n - len(fixed)) / rest if rest else 0.0
    out = list(fixed)
    for (provider, role, eph, nat), hs in sorted(groups.items()):
        want = max(1, round(len(hs) * factor))
        out += hs[:want]
        width = max(4, len(str(want)))
        out += [
            replace(
                hs[0],
                name=f"{provider}-{role}{'-spot' if eph else ''}{'-nat' if nat else ''}-{k:0{width}d}",
                nfs_group=None,
            )
            for k in range(len(hs), want)
        ]
    return tuple(sorted(out, key=lambda h: h.name))


# -- small parsers -------------------------------------------------------------------------------


def _map(v: Any, where: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ScenarioError(f"{where}: expected a mapping, got {v!r}")
    return v


def _known(d: Mapping[str, Any], where: str, known: set[str]) -> None:
    unknown = sorted(set(d) - known)
    if unknown:
        raise ScenarioError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(known))})")


def _num(v: Any, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi or v != v:
        raise ScenarioError(f"{where}: expected a number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _range(v: Any, where: str) -> Range:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        x = _num(v, where, lo=0)
        return (x, x)
    if not isinstance(v, list) or len(v) != 2:
        raise ScenarioError(f"{where}: expected a number or [low, high], got {v!r}")
    lo, hi = (_num(x, where, lo=0) for x in v)
    if lo > hi:
        raise ScenarioError(f"{where}: low {lo} above high {hi}")
    return (lo, hi)


def _names(v: Any, where: str) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ScenarioError(f"{where}: expected a list of names, got {v!r}")
    return list(v)


def matching(hosts: list[str], patterns: list[str] | None) -> list[str]:
    """Hosts whose name matches one of the globs (all hosts if `patterns` is None)."""
    if patterns is None:
        return list(hosts)
    return [h for h in hosts if any(fnmatch.fnmatchcase(h, p) for p in patterns)]
