"""The scenario library's figures for bench/RESULTS.md, and the simulator's own speed.

    .venv/bin/python bench/sim_scenarios.py [--only steady,spot-storm] [--seed 1] [--out bench/sim_scenarios.json]
    .venv/bin/python bench/sim_scenarios.py --speed [--sizes 100,300,1000] [--seconds 20]

Each scenario runs once (`sim.runner.run_scenario`, seed 1); `steady-idle` is `steady` with no
workload and no faults (the idle cost of the protocol). Prints a Markdown table per topic and
writes every report (JSON). `--speed` measures the full peer on an idle cluster: CPU seconds per
simulated second after a 10 s warm-up, events per second, and the bytes each host sent
per simulated second (all messages, and the gossip exchange alone). CPU seconds are the process's own
(`time.process_time`), so other load on the machine does not count.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from dataclasses import replace

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sim.cluster import Cluster  # noqa: E402
from sim.runner import run_scenario  # noqa: E402
from sim.scenario import Workload, load  # noqa: E402

DEFAULT = (
    "steady-idle",
    "steady",
    "spot-storm",
    "split-brain",
    "leader-churn",
    "disk-full",
    "reference-42",
    "broadcast-1000",
)


def scenario(name: str):
    if name == "steady-idle":
        return replace(load("steady"), name="steady-idle", workload=Workload(), faults={})
    return load(name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated scenario names (default: the library and steady-idle)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "sim_scenarios.json"))
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--sizes", default="100,300,1000")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=10.0, help="--speed: simulated seconds before measuring")
    args = ap.parse_args()
    if args.speed:
        return speed([int(x) for x in args.sizes.split(",")], args.seconds, args.warmup)
    names = args.only.split(",") if args.only else list(DEFAULT)
    reports = {}
    if os.path.exists(args.out):
        with open(args.out) as fh:
            reports = json.load(fh)
    for name in names:
        sc = scenario(name)
        print(f"{name}: {len(sc.hosts)} hosts ...", file=sys.stderr, flush=True)
        cpu, wall = time.process_time(), time.perf_counter()
        r = run_scenario(sc, args.seed)
        r["cpu_s"], r["wall_s"] = round(time.process_time() - cpu, 1), round(time.perf_counter() - wall, 1)
        reports[name] = r
        print(f"  ok {r['ok']}, cpu {r['cpu_s']} s", file=sys.stderr, flush=True)
        with open(args.out, "w") as fh:
            json.dump(reports, fh, indent=1, sort_keys=True)
    print(tables(reports))
    return 0


def _p(d: dict, k: str = "p50") -> str:
    v = d.get(k)
    return "–" if v is None else f"{v:g}"


def tables(reports: dict) -> str:
    out = [
        "| scenario | hosts | faults | simulated s | safety | liveness after heal | events | CPU s |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for name, r in reports.items():
        v = r["safety"]["violation"]
        live = r["liveness"] or {}
        lv = f"{live['seconds']:g} s" if live.get("converged") else "NOT converged"
        out.append(
            f"| {name} | {r['hosts']} | {r['plan']['events']} | {r['totals']['simulated_seconds']:.0f} | "
            f"{'violation: ' + v['checker'] if v else 'no violation'} | {lv} | {r['totals']['events']:,} | "
            f"{r.get('cpu_s', '–')} |"
        )
    out += [
        "",
        "| scenario | messages, kB/s per host | of which Syn/SynAck/Ack | file data, MB/s per host | "
        "games to durable p50 / p99 s | games to every game host p50 / p99 s |",
        "|---|---:|---:|---:|---|---|",
    ]
    for name, r in reports.items():
        t, g = r["metrics"]["traffic"], r["metrics"]["games"]
        secs, n = t["seconds"], r["hosts"]
        gossip = sum(t["bytes_by_kind"].get(k, 0) for k in ("Syn", "SynAck", "Ack")) / n / secs
        out.append(
            f"| {name} | {t['gossip_and_games_bytes_per_host_per_s'] / 1000:.1f} | {gossip / 1000:.1f} | "
            f"{t['file_bytes_per_host_per_s'] / 1e6:.2f} | {_p(g['to_durable_s'])} / {_p(g['to_durable_s'], 'p99')} | "
            f"{_p(g['to_every_game_host_s'])} / {_p(g['to_every_game_host_s'], 'p99')} |"
        )
    out += [
        "",
        "| scenario | outages (crash, spot) | first dead claim p50 / max s | held by each observer p50 / p99 s | "
        "leader outages | new leader elected p50 / max s | terms |",
        "|---|---:|---|---|---:|---|---:|",
    ]
    for name, r in reports.items():
        d, f = r["metrics"]["detection"], r["metrics"]["failover"]
        out.append(
            f"| {name} | {d['outages']} | {_p(d['first_dead_claim_s'])} / {_p(d['first_dead_claim_s'], 'max')} | "
            f"{_p(d['dead_claim_held_per_observer_s'])} / {_p(d['dead_claim_held_per_observer_s'], 'p99')} | "
            f"{f['leader_outages']} | {_p(f['new_leader_elected_s'])} / {_p(f['new_leader_elected_s'], 'max')} | "
            f"{f['terms']} |"
        )
    out += [
        "",
        "| scenario | file version | size MB | broadcast | hosts stored | S/B s (publisher's egress) | "
        "half stored s | last stored s | last × S/B |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in reports.items():
        for fv in r["metrics"]["files"]["versions"][:3]:
            out.append(
                f"| {name} | {fv['item']} at {fv['at']:g} s | {fv['size_mb']:g} | {'yes' if fv['broadcast'] else 'no'} "
                f"| {fv['hosts_stored']} | {fv['S/B_s']:g} | {fv.get('p50_stored_s', '–')} | "
                f"{fv.get('last_stored_s', '–')} | {fv.get('ratio_to_S/B', '–')} |"
            )
    return "\n".join(out)


def speed(sizes: list[int], seconds: float, warmup: float = 10.0) -> int:
    """CPU per simulated second of an idle cluster of full peers (gossip, SWIM, election)."""
    print(
        f"| N | warm-up {warmup:g} s: CPU s | steady: CPU s per simulated s | events per simulated s | "
        "µs CPU per event | 10 simulated minutes, CPU (extrapolated) | "
        "bytes sent per host per s | of which Syn/SynAck/Ack |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        gc.disable()
        c = Cluster(n, seed=1, voters=5)
        cpu = time.process_time()
        c.start()
        c.world.run(until=warmup)
        warm = time.process_time() - cpu
        e0, t0, cpu = c.world.events, c.world.traffic.snapshot(), time.process_time()
        c.world.run(until=warmup + seconds)
        per = (time.process_time() - cpu) / seconds
        events = (c.world.events - e0) / seconds
        sent = c.world.traffic.since(t0)
        total = sum(sent.bytes.values()) / n / seconds
        gossip = sum(sent.bytes_by_kind.get(k, 0) for k in ("Syn", "SynAck", "Ack")) / n / seconds
        print(
            f"| {n:,} | {warm:.1f} | {per:.3f} | {events:,.0f} | {per / events * 1e6:.0f} | {per * 600:,.0f} s "
            f"| {total / 1000:.2f} kB/s | {gossip / 1000:.2f} kB/s |",
            flush=True,
        )
        del c
        gc.enable()
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
