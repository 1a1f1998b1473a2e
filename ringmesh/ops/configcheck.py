"""`ringmesh config check FILE`: validate a config and show the effective settings, with units
and the source of every value (file key, environment variable, provider default, built-in)."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Mapping

from ringmesh.config import BUILTIN, ClusterConfig, ConfigError, HostConfig, format_rate, load_config
from ringmesh.node.wire.tls import PLAINTEXT_WARNING, TlsError, load_node

# global setting -> (label, unit)
_GLOBAL_UNITS = {
    "gossip_interval": ("gossip interval", "s"),
    "max_concurrent_syncs": ("max concurrent syncs", "transfers"),
    "min_copies": ("min copies", "copies"),
    "max_disk_usage_percent": ("max disk usage", "%"),
    "bandwidth_bytes_per_s": ("default bandwidth limit (each direction)", "B/s"),
}


def source_kind(source: str) -> str:
    """'environment', 'default' (built-in or provider default) or 'file'."""
    if source.startswith("environment "):
        return "environment"
    if source == BUILTIN or source.startswith("provider default") or source.startswith("default:"):
        return "default"
    return "file"


def _setting(value: Any, unit: str, source: str, **extra: Any) -> dict:
    return {"value": value, "unit": unit, **extra, "source": source, "source_kind": source_kind(source)}


def _rate(bytes_per_s: int, source: str) -> dict:
    return {
        "bytes_per_s": bytes_per_s,
        "mb_per_s": bytes_per_s / 1_000_000,
        "unit": "MB/s (10^6 bytes/s)",
        "display": format_rate(bytes_per_s),
        "source": source,
        "source_kind": source_kind(source),
    }


def _host(h: HostConfig) -> dict:
    s = h.sources
    why_not = h.inactive or (None if h.address else "no address")
    return {
        "member": why_not is None,
        "why_not": why_not,
        "their_role": h.their_role,
        "role_source": s.get("role"),
        "address_source": s.get("address"),
        "produces_games": h.produces_games,
        "nat_blocked": h.nat_blocked,
        "games_dir": h.games_dir,
        "address": h.address,
        "role": h.role,
        "provider": h.provider,
        "ephemeral": h.ephemeral,
        "ephemeral_source": s.get("ephemeral"),
        "voter": h.voter,
        "voter_source": s.get("voter"),
        "excluded": h.excluded,
        "nfs_group": list(h.nfs_group) or None,
        "sync_priority": h.sync_priority,
        "sync_priority_source": s.get("sync_priority"),
        "egress": _rate(h.egress_bytes_per_s, s["egress_bytes_per_s"]),
        "ingress": _rate(h.ingress_bytes_per_s, s["ingress_bytes_per_s"]),
        "disk_cap_percent": _setting(h.disk_cap_percent, "%", s["disk_cap_percent"]),
        "paths": {t: {"path": p, "source": s.get(f"paths.{t}")} for t, p in h.paths.items()},
        "tls": {k: {"path": p, "source": h.tls.sources.get(k)} for k, p in h.tls.files().items()} if h.tls else None,
    }


def describe(c: ClusterConfig, node: str | None = None, now: datetime | None = None) -> dict:
    """The effective configuration as a JSON-ready dict (optionally of one host only)."""
    now = now or datetime.now(timezone.utc)
    if node is not None and node not in c.hosts:
        raise ConfigError(f"{c.path}: --node {node}: not a host under hosts (known: {', '.join(c.hosts) or 'none'})")
    glob = {}
    for key, (label, unit) in _GLOBAL_UNITS.items():
        value = getattr(c, key)
        if unit == "B/s":
            glob[key] = {"label": label, **_rate(value, c.sources[key])}
        else:
            glob[key] = {"label": label, **_setting(value, unit, c.sources[key])}
    for key, value in c.timings.items():
        glob[f"timings.{key}"] = {"label": f"ringmesh.{key}", **_setting(value, "s", c.sources[f"timings.{key}"])}
    for t, p in c.paths.items():
        glob[f"paths.{t}"] = {"label": f"{t} directory", **_setting(p, "", c.sources[f"paths.{t}"])}
    hosts = {n: _host(h) for n, h in c.hosts.items() if node is None or n == node}
    warnings = list(c.warnings)
    mode = "mutual TLS" if c.tls else "off: PLAINTEXT"
    glob["tls"] = {"label": "peer TLS", **_setting(mode, "", c.sources["tls"]), "display": mode}
    metrics = c.metrics_listen or "off"
    glob["metrics_listen"] = {
        "label": "Prometheus metrics (GET /metrics)",
        "display": metrics,
        **_setting(metrics, "", "ringmesh.metrics_listen" if c.metrics_listen else BUILTIN),
    }
    logs = "JSON lines" if c.log_json else "plain"
    glob["log_json"] = {
        "label": "log format",
        "display": logs,
        **_setting(logs, "", "ringmesh.log_json" if c.log_json else BUILTIN),
    }
    if c.tls is None:
        warnings.append(f"{c.path}: ringmesh.tls: {PLAINTEXT_WARNING}")
    if node is not None and (node_tls := c.hosts[node].tls) is not None:  # the files as this machine sees them
        try:
            creds = load_node(node_tls.files(), node, node_tls.sources)
        except TlsError as e:
            warnings.append(f"{c.path}: {e}")
        else:
            if creds.key_mode_warning:
                warnings.append(creds.key_mode_warning)
    if node is not None and (why := c.hosts[node].inactive or (None if c.hosts[node].address else "no address")):
        warnings.append(f"{c.path}: hosts.{node}: takes no part ({why}); this host cannot run a ringmesh peer")
    return {
        "file": c.path,
        "valid": True,
        "node": node,
        "global": glob,
        "environment_overrides": sorted(
            s.removeprefix("environment ") for s in c.sources.values() if source_kind(s) == "environment"
        ),
        "exclude_from_sync": list(c.exclude_from_sync),
        "ephemeral_hosts": list(c.ephemeral_hosts),
        "nfs_sharing_groups": [list(g) for g in c.nfs_sharing_groups],
        "external_storage": [
            {
                "host": e.host,
                "path": e.path,
                "schedule": e.schedule,
                "next_run_utc": e.cron.next_after(now.astimezone(timezone.utc)).isoformat() if e.cron else None,
            }
            for e in c.external_storage
        ],
        "hosts": hosts,
        "members": sum(1 for h in hosts.values() if h["member"]),
        "not_used": [{"key": k, "why": why} for k, why in c.not_used],
        "unread": list(c.unread),
        "warnings": warnings,
    }


def _src(d: Mapping) -> str:
    if d["source_kind"] == "environment":
        return f"[environment: {d['source'].removeprefix('environment ')}]"
    return f"[{d['source']}]" if d["source_kind"] == "default" else f"[file: {d['source']}]"


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def render(doc: dict) -> str:
    out = [
        f"{doc['file']}: valid — {len(doc['hosts'])} host(s) shown, {len(doc['warnings'])} warning(s)",
        "",
        "global settings",
    ]
    for g in doc["global"].values():
        value = g["display"] if "display" in g else f"{_num(g['value'])} {g['unit']}".rstrip()
        out.append(f"  {g['label']:42} {value:>16}  {_src(g)}")
    if doc["environment_overrides"]:
        out.append(f"  environment overrides in effect: {', '.join(doc['environment_overrides'])}")
    out.append(f"  exclude_from_sync: {', '.join(doc['exclude_from_sync']) or '-'}")
    out.append(f"  ephemeral_hosts: {', '.join(doc['ephemeral_hosts']) or '-'}")
    for i, g in enumerate(doc["nfs_sharing_groups"]):
        out.append(f"  nfs sharing group {i}: {', '.join(g)}")
    for e in doc["external_storage"]:
        when = f"schedule '{e['schedule']}', next run {e['next_run_utc']}" if e["schedule"] else "no schedule"
        out.append(f"  external storage {e['host']}:{e['path']} ({when})")
    yn = {True: "yes", False: "no"}
    if doc["node"] is None:
        out += ["", _table(doc["hosts"])]
    for name, h in doc["hosts"].items() if doc["node"] is not None else ():
        out += [
            "",
            f"host {name}",
            f"  address {h['address'] or '(none: not a ringmesh peer)'}  role {h['role']}  "
            f"provider {h['provider'] if h['provider'] != 'default' else '(none)'}  "
            f"priority {h['sync_priority']}",
            f"  ephemeral {yn[h['ephemeral']]}  voter {yn[h['voter']]}  excluded {yn[h['excluded']]}  "
            f"nfs group {', '.join(h['nfs_group']) if h['nfs_group'] else '-'}",
        ]
        for d in ("egress", "ingress"):
            r = h[d]
            out.append(f"  {d + ' limit':14} {r['display']:>16} ({r['bytes_per_s']} B/s)  {_src(r)}")
        out.append(
            f"  {'disk cap':14} {_num(h['disk_cap_percent']['value']) + ' %':>16}  {_src(h['disk_cap_percent'])}"
        )
        for t, p in h["paths"].items():
            out.append(f"  {t + ' dir':14} {p['path']}  [file: {p['source']}]")
        for k, p in (h.get("tls") or {}).items():
            out.append(f"  {'tls ' + k:14} {p['path']}  [file: {p['source']}]")
    if doc["not_used"]:
        out += ["", "in this file but not used by ringmesh"] + [f"  {u['key']}: {u['why']}" for u in doc["not_used"]]
    if doc["unread"]:
        out += [
            "",
            f"not read by ringmesh ({len(doc['unread'])} keys: other tools' settings, descriptive host keys)",
            "  " + ", ".join(doc["unread"]),
        ]
    out += ["", f"warnings ({len(doc['warnings'])})"] + [f"  {w}" for w in doc["warnings"]]
    return "\n".join(out)


def _table(hosts: dict) -> str:
    """One line per host: member or why not, role -> placement role, address, voter, rate, paths."""
    rows = [("host", "member", "role -> placement", "address", "voter", "limit (each way)", "paths")]
    for name, h in hosts.items():
        role = f"{h['their_role'] or '-'} -> {h['role']}"
        rate = f"{h['egress']['display']} [{h['egress']['source']}]"
        paths = ", ".join(f"{t}={p['path']}" for t, p in h["paths"].items()) or "-"
        rows.append(
            (
                name,
                "yes" if h["member"] else f"no: {h['why_not']}",
                role,
                h["address"] or "-",
                "yes" if h["voter"] else "no",
                rate,
                paths,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    n = sum(1 for h in hosts.values() if h["member"])
    lines = [f"hosts ({n} of {len(hosts)} take part)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)


def run_check(file: str, node: str | None = None, as_json: bool = False, env: Mapping[str, str] | None = None) -> int:
    """Exit status 0 when the file is valid, 2 (with the error on stderr) when not."""
    try:
        doc = describe(load_config(file, env=os.environ if env is None else env), node)
    except ConfigError as e:
        if as_json:
            print(json.dumps({"file": file, "valid": False, "error": str(e)}, indent=2))
        print(f"ringmesh: {e}", file=sys.stderr)
        return 2
    print(json.dumps(doc, indent=2) if as_json else render(doc))
    return 0
