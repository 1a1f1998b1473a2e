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
