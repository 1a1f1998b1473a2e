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
        f"totals      {t['messages']} messages {t['messages_by_kind']}, bytes {t['bytes_by_kind']}, "
        f"{t['events']} events, "
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
    return "\n".join(
        [
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
        ]
        + ([f"wall time   {wall_seconds:.2f} s"] if wall_seconds is not None else [])
    )


def broadcast_text(r: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    """The broadcast scenario (`sim/flows.py`) in a few lines."""
    p, t, mb = r["params"], r["completion_s"], 1e6
    pub = "all" if p["publisher_peers"] is None else p["publisher_peers"]
    lines = [
        f"broadcast: {p['size'] / mb:g} MB in {p['chunks']} chunks of {p['chunk'] / 2**20:g} MiB to "
        f"{p['nodes']} receivers, seed {p['seed']}; links {p['link_bytes_per_s'] / mb:g} MB/s, latency "
        f"{p['latency_ms']:g} ms, per_peer {p['per_peer']}, uploads {p['uploads']} (+{p['extra_uploads']} while the "
        f"uplink is not full), peer set {r['mean_peer_set']:g}, publisher known to {pub}, requests "
        + (f"any of {p['ask_width']} chunks, {p['asks']} open per source" if p["asks"] else "one named chunk each"),
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


def epidemic_text(r: Mapping[str, Any], wall_seconds: float | None = None) -> str:
    p = r["params"]
    state = (
        f"every host informed after {r['rounds']:.2f} rounds"
        if r["converged"]
        else f"NOT converged: {r['informed']} of {p['nodes']} informed"
    )
    lines = [
        f"epidemic: {p['nodes']} hosts, seed {p['seed']}, fanout {p['fanout']}, loss {p['loss']}, latency "
        f"{p['latency_ms']}+{p['jitter_ms']} ms, interval {p['interval']} s "
        "(one rumour, the peer's rounds, no manifests)",
        f"rumour      {state} (theory log3 N + ln ln N = {r['theory_rounds']:.2f})",
        f"per round   {r['informed_per_round']}",
        f"counts      {r['events']} events, {r['messages']} messages",
    ]
    if wall_seconds is not None:
        lines.append(f"wall time   {wall_seconds:.2f} s")
    return "\n".join(lines)


def scenario_text(
    r: Mapping[str, Any], plan=None, name: str = "", wall: float | None = None, cpu: float | None = None
) -> str:
    """A scenario run (`sim/runner.py`): phases, the violation if any, the figures."""
    p, m = r["params"], r["metrics"]
    pl = r["plan"]
    kinds = ", ".join(f"{v} {k}" for k, v in pl["by_kind"].items()) or "none"
    lines = [
        f"scenario {r['scenario']}: {r['hosts']} hosts ({r['voters']} voters), seed {r['seed']}; safety phase "
        f"{p['seconds']:g} s, liveness bound {p['liveness_bound']:g} s; gossip {p['gossip_interval_s']:g} s",
        f"faults      {pl['events']} planned ({kinds}); {m['faults']['applied']} applied, "
        f"{m['faults']['skipped']} found their host in no state to take them",
    ]
    if plan is not None:
        lines += [f"  {e.describe()}" for e in plan]
    v = r["safety"]["violation"]
    if v is not None:
        lines += [
            f"VIOLATION   {v['checker']}: {v['message']}",
            f"  seed {v['seed']}, step {v['step']} (events processed), t = {v['time']:.6f} s",
            *(
                [f"  host {v['host']}, handling {v['event']}: {v['exception']}", *[f"    at {f}" for f in v["frames"]]]
                if "frames" in v
                else []
            ),
            f"  replay: python -m sim run {name or r['scenario']} --seed {v['seed']} --trace trace.txt"
            + ("  (with the same --plan)" if plan is not None else ""),
            f"  faults applied ({v['faults_applied_count']}), the last ones:",
            *[f"    {f}" for f in v["faults_applied"][-8:]],
            "  the last events:",
            *[f"    {line}" for line in v["trace"][-20:]],
        ]
    else:
        lines.append(f"safety      no violation in {p['seconds']:g} s")
    live = r["liveness"]
    if live is not None:
        if live["converged"]:
            lines.append(f"liveness    converged {live['seconds']:.2f} s ({live['rounds']:.1f} rounds) after heal")
        else:
            lines.append(f"liveness    NOT converged within {live['bound_s']:g} s:")
            for cond, why in live["not_converged"].items():
                detail = {k: v for k, v in why.items() if k != "ok"}
                lines.append(f"  {cond}: {json.dumps(detail, sort_keys=True)[:600]}")
    t, d, f, g = m["traffic"], m["detection"], m["failover"], m["games"]
    lines += [
        f"traffic     {t['gossip_and_games_bytes_per_host_per_s'] / 1000:.1f} kB/s per host of messages (gossip, "
        f"probes, votes, games), {t['file_bytes_per_host_per_s'] / 1e6:.2f} MB/s per host of file data",
        f"detection   {d['detected']} of {d['outages']} outages claimed dead; first claim p50 "
        f"{d['first_dead_claim_s'].get('p50')} s, "
        f"held per observer p50 {d['dead_claim_held_per_observer_s'].get('p50')} s",
        f"failover    {f['leader_outages']} leader outages; "
        f"new leader elected p50 {f['new_leader_elected_s'].get('p50')} s "
        f"(max {f['new_leader_elected_s'].get('max')} s); {f['terms']} terms",
        f"games       {g['published']} published, {g['durable']} durable; "
        f"to durable p50 {g['to_durable_s'].get('p50')} s "
        f"p99 {g['to_durable_s'].get('p99')} s; to every game host p50 {g['to_every_game_host_s'].get('p50')} s "
        f"p99 {g['to_every_game_host_s'].get('p99')} s",
    ]
    rl = m.get("relays")
    if rl is not None:  # only a scenario with hosts nobody can dial
        lines += [
            f"relays      {rl['nat_hosts']} hosts nobody can dial: {rl['relayed']} messages relayed, "
            f"{rl['over_own_link']} from a relay over its link, {rl['unreachable']} sends found no link",
            f"links       {rl['link_changes']} changes ({rl['links_broken']} broken, {rl['dials_failed']} dials "
            f"failed); {rl['dead_claims_about_nat_hosts']} dead claims about NAT'd hosts checked",
        ]
    for fv in m["files"]["versions"][:12]:
        last = (
            (
                f"{fv['hosts_stored']} hosts stored it, half by {fv['p50_stored_s']:.2f} s, the last after "
                f"{fv['last_stored_s']:.2f} s = {fv['ratio_to_S/B']:.1f} x S/B"
            )
            if "last_stored_s" in fv
            else "stored by no other host"
        )
        lines.append(
            f"file        {fv['item']} {fv['size_mb']:g} MB at t={fv['at']:g} s"
            f"{' (broadcast)' if fv['broadcast'] else ''}: {last}"
        )
    tot = r["totals"]
    lines.append(
        f"totals      {tot['events']} events, {tot['messages']} messages, {tot['simulated_seconds']:.1f} s "
        f"simulated; lost {tot['network']['lost']}, blocked {tot['network']['blocked']}"
    )
    lines.append(f"trace       {r['trace']}")
    lines.append("OK" if r["ok"] else "FAILED")
    if wall is not None:
        lines.append(f"wall time   {wall:.2f} s" + (f" (cpu {cpu:.2f} s)" if cpu is not None else ""))
    return "\n".join(lines)


def sweep_text(s: Mapping[str, Any]) -> str:
    lv = s["liveness_s"]
    lines = [
        f"sweep {s['scenario']} seeds {s['seeds']}: {s['passed']} of {s['runs']} passed, {s['failed']} failed",
        f"  liveness after heal: p50 {lv['p50']} s, max {lv['max']} s over {lv['n']} runs; "
        f"{s['faults_per_run']} faults and {s['events_per_run']} events per run",
        f"  cpu {s['cpu_s']} s, wall {s['wall_s']} s",
    ]
    for f in s["failures"]:
        v = f.get("violation")
        why = (
            f"{v['checker']}: {v['message']} (step {v['step']}, t={v['time']})"
            if v
            else f"not converged: {', '.join(f.get('not_converged', []))}"
        )
        lines.append(f"  seed {f['seed']}: {why}")
    sh = s.get("shrunk")
    if sh:
        lines.append(
            f"shrunk seed {sh['seed']} ({sh['failure']}): {sh['from_events']} -> {sh['to_events']} fault events "
            f"in {sh['runs']} runs; the plan:"
        )
        lines.append(json.dumps(sh["plan"], sort_keys=True))
        if sh.get("plan_file"):
            lines.append(
                f"  written to {sh['plan_file']}: python -m sim run {s['scenario']} --seed {sh['seed']} "
                f"--plan {sh['plan_file']}"
            )
    if "command" in s:
        lines.append(f"command: {s['command']}")
    return "\n".join(lines)
