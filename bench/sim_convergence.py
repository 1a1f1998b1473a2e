"""Convergence of one rumour vs N, beside log3 N + ln ln N: the table and bench/convergence.png.

    .venv/bin/python bench/sim_convergence.py [--seeds 5] [--no-peer] [--out bench]

For N = 100, 1,000 and 10,000, fanout 1 and 3: the rumour's spread in the epidemic model
(`sim/epidemic.py`: the peer's gossip rounds without manifests), seeds 1..S; and, where it
runs (N = 100 and 1,000), the full peer (`sim/gossip.py`, seed 1) for comparison. Writes
`convergence.json` (the numbers) and `convergence.png` (needs matplotlib: `pip install -e .[plot]`),
and prints the Markdown table for bench/RESULTS.md. CPU seconds are the process's own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from sim.epidemic import EpidemicParams, run_epidemic  # noqa: E402
from sim.gossip import GossipParams, run_gossip, theory_rounds  # noqa: E402

SIZES = (100, 1000, 10000)
FANOUTS = (1, 3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--no-peer", action="store_true", help="skip the full peer at N = 1000 (about a minute)")
    ap.add_argument("--out", default=os.path.dirname(__file__))
    args = ap.parse_args()
    data: dict[str, list] = {"model": [], "peer": []}
    for n in SIZES:
        for f in FANOUTS:
            runs = []
            for seed in range(1, args.seeds + 1):
                cpu = time.process_time()
                r = run_epidemic(EpidemicParams(nodes=n, seed=seed, fanout=f))
                r["cpu_s"] = round(time.process_time() - cpu, 2)
                runs.append(r)
            data["model"].append(
                {
                    "nodes": n,
                    "fanout": f,
                    "rounds": [r["rounds"] for r in runs],
                    "curve": runs[0]["informed_per_round"],
                    "cpu_s": [r["cpu_s"] for r in runs],
                    "theory": round(theory_rounds(n), 3),
                }
            )
            print(f"model N={n} fanout {f}: rounds {[r['rounds'] for r in runs]}", file=sys.stderr, flush=True)
    for n in (100, 1000):
        if n == 1000 and args.no_peer:
            continue
        for f in FANOUTS:
            cpu = time.process_time()
            r = run_gossip(GossipParams(nodes=n, seed=1, fanout=f))
            data["peer"].append(
                {
                    "nodes": n,
                    "fanout": f,
                    "rounds": r["rumour"]["rounds"],
                    "cold_start_rounds": r["cold_start"]["rounds"],
                    "curve": r["rumour"]["informed_per_round"],
                    "cpu_s": round(time.process_time() - cpu, 2),
                }
            )
            print(f"peer N={n} fanout {f}: rumour {r['rumour']['rounds']} rounds", file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "convergence.json"), "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    print(table(data))
    try:
        plot(data, os.path.join(args.out, "convergence.png"))
    except ImportError:
        print("matplotlib is not installed (pip install -e .[plot]): no plot", file=sys.stderr)
    return 0


def table(data: dict[str, list]) -> str:
    peer = {(p["nodes"], p["fanout"]): p for p in data["peer"]}
    lines = [
        "| N | fanout | theory log₃N + ln ln N | model: rounds, mean (min–max) over seeds "
        "| full peer: rounds (seed 1) | model CPU s / run |",
        "|---:|---:|---:|---|---:|---:|",
    ]
    for m in data["model"]:
        rs = m["rounds"]
        p = peer.get((m["nodes"], m["fanout"]))
        lines.append(
            f"| {m['nodes']:,} | {m['fanout']} | {m['theory']:.2f} | {statistics.mean(rs):.2f} "
            f"({min(rs):.2f}–{max(rs):.2f}) | {p['rounds'] if p else 'does not run (O(N²) state)'} | "
            f"{statistics.mean(m['cpu_s']):.2f} |"
        )
    return "\n".join(lines)


def plot(data: dict[str, list], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {100: "tab:blue", 1000: "tab:orange", 10000: "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, f in zip(axes, FANOUTS):
        for m in data["model"]:
            if m["fanout"] != f:
                continue
            n, curve = m["nodes"], m["curve"]
            ax.plot(
                range(0, len(curve) + 1),
                [1 / n] + [c / n for c in curve],
                "-o",
                ms=3,
                color=colours[n],
                label=f"N={n:,} model",
            )
            ax.axvline(m["theory"], color=colours[n], ls=":", lw=1)
        for p in data["peer"]:
            if p["fanout"] != f:
                continue
            n, curve = p["nodes"], p["curve"]
            ax.plot(
                range(0, len(curve) + 1),
                [1 / n] + [c / n for c in curve],
                "--s",
                ms=4,
                mfc="none",
                color=colours[n],
                label=f"N={n:,} full peer",
            )
        ax.set_title(f"fanout {f}: one rumour, fraction of hosts informed")
        ax.set_xlabel("gossip rounds (1 s) after the write; dotted: log₃N + ln ln N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel("fraction informed at the end of the round")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
