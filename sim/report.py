"""Reports: one sorted-key JSON document for machines, a few aligned lines for people.

The JSON holds only what the seed determines (no wall time), so one seed gives
byte-identical output.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


def to_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, sort_keys=True, indent=2)


def to_text(report: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    p = report["params"]
    lines = [
        f"gossip: {p['nodes']} nodes, seed {p['seed']}, fanout {p['fanout']}, loss {p['loss']}, "
        f"duplicate {p['duplicate']}, latency {p['latency_ms']}+{p['jitter_ms']} ms, "
        f"interval {p['gossip_interval_s']} s",
        _phase_line("cold start", report["cold_start"]),
    ]
    rumour = report.get("rumour")
    if rumour is not None:
        lines.append(_phase_line("rumour", rumour) + f"  (theory log3 N + ln ln N = {rumour['theory_rounds']:.2f})")
        lines.append(f"  writer {rumour['writer']}; informed at the end of each round: {rumour['informed_per_round']}")
    else:
        lines.append("rumour      not run (cold start did not converge)")
    t = report["totals"]
    net = t["network"]
    lines.append(
        f"totals      {t['messages']} messages {t['messages_by_kind']}, bytes {t['bytes_by_kind']}, {t['events']} events, "
        f"{t['simulated_seconds']:.3f} s simulated; lost {net['lost']}, duplicated {net['duplicated']}, "
        f"blocked {net['blocked']}"
    )
    lines.append(f"trace       {report['trace']}")
    lines.append("CONVERGED" if report["converged"] else "NOT CONVERGED")
    if wall_seconds is not None:
        lines.append(f"wall time   {wall_seconds:.2f} s")
    return "\n".join(lines)


def _phase_line(name: str, ph: Mapping[str, Any]) -> str:
    b = ph["bytes_per_node"]
    state = "converged" if ph["converged"] else "NOT converged"
    line = (
        f"{name:<11} {state} after {ph['rounds']:.2f} rounds ({ph['seconds']:.3f} s), "
        f"{ph['messages']} messages, bytes sent per node mean {_kb(b['mean'])} max {_kb(b['max'])}"
    )
    if "lagging" in ph:
        lag = ph["lagging"]
        line += f"\n  {lag['count']} nodes lagging, e.g. {', '.join(lag['first'])}"
    if "distinct_fingerprints" in ph:
        line += f"; {ph['distinct_fingerprints']} distinct manifest fingerprints"
    return line


def _kb(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def membership_text(r: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    p, d, f, s = r["params"], r["detection"], r["failover"], r["stability"]
    return "\n".join([
        f"membership: {p['nodes']} nodes ({p['voters']} voters), seed {p['seed']}, loss {p['loss']}",
        f"warm-up     {r['warmup_s']} s until the manifests agree and one leader is known to all",
        f"detection   crashed host seen dead: per observer p50 {d['per_observer_s']['p50']} s, "
        f"p99 {d['per_observer_s']['p99']} s; by every host p50 {d['all_observers_s']['p50']} s "
        f"(max {d['all_observers_s']['max']} s) over {d['all_observers_s']['n']} crashes; "
        f"rejoin p50 {d['rejoin_s']['p50']} s",
        f"failover    new leader known to all p50 {f['new_leader_known_to_all_s']['p50']} s, "
        f"max {f['new_leader_known_to_all_s']['max']} s over {f['new_leader_known_to_all_s']['n']} failovers",
        f"stability   {s['seconds']} s: {s['suspicions']} suspicions, {s['refutations']} refutations, "
        f"{s['false_deaths']} false deaths, {s['leader_changes']} leader changes",
        "OK" if r["ok"] else "FAILED",
    ] + ([f"wall time   {wall_seconds:.2f} s"] if wall_seconds is not None else []))


def broadcast_text(r: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    """The broadcast scenario (`sim/flows.py`) in a few lines."""
    p, t, mb = r["params"], r["completion_s"], 1e6
    pub = "all" if p["publisher_peers"] is None else p["publisher_peers"]
    lines = [
        f"broadcast: {p['size'] / mb:g} MB in {p['chunks']} chunks of {p['chunk'] / 2**20:g} MiB to "
        f"{p['nodes']} receivers, seed {p['seed']}; links {p['link_bytes_per_s'] / mb:g} MB/s, latency "
        f"{p['latency_ms']:g} ms, per_peer {p['per_peer']}, uploads {p['uploads']}, peer set {r['mean_peer_set']:g}, "
        f"publisher known to {pub}",
        f"last done   {r['last_completion_s']:.3f} s = {r['ratio_to_bound']:.3f} x S/B ({r['bound_s']:.3f} s) = "
        f"{r['ratio_to_log_bound']:.3f} x (S/B + log2 N chunk/B) ({r['bound_log_s']:.3f} s)",
        f"completion  mean {t['mean']:.3f} s, p50 {t['p50']:.3f} s, p99 {t['p99']:.3f} s, first {t['min']:.3f} s; "
        f"every chunk held by some receiver at {r['whole_file_in_swarm_s']:.3f} s",
        f"bytes       {r['bytes_moved'] / mb:,.1f} MB moved ({r['bytes_moved_per_copy_needed']:.4f} x N x S); "
        f"publisher sent {r['publisher_copies']:.2f} copies",
        "counts      " + ", ".join(f"{k} {v}" for k, v in r["counts"].items()),
        f"trace       {r['trace']}",
    ]
    if wall_seconds is not None:
        lines.append(f"wall time   {wall_seconds:.2f} s")
    return "\n".join(lines)
