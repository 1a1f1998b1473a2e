"""`python -m sim gossip --nodes N --seed S [--loss P] [--latency-ms MS] [--fanout F] [--json]`
`python -m sim membership --nodes N --seed S [--loss P] [--crashes K] [--failovers K] [--stable-seconds T] [--json]`

Exit status: 0 when every phase converged, 1 when a phase hit its bound, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import sys
import time

from .gossip import GossipParams, run_gossip
from .membership import MembershipParams, run_membership
from .report import membership_text, to_json, to_text


def _probability(text: str) -> float:
    p = float(text)
    if not 0.0 <= p <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return p


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return n


def _positive(text: str) -> float:
    x = float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return x


def _non_negative(text: str) -> float:
    x = float(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return x


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sim", description="Deterministic simulations of ringmesh peers.")
    sub = ap.add_subparsers(dest="scenario", required=True)
    g = sub.add_parser("gossip", help="cold-start convergence, then one rumour's dissemination")
    g.add_argument("--nodes", type=_positive_int, required=True)
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--loss", type=_probability, default=0.0, help="probability a message is lost (default 0)")
    g.add_argument("--duplicate", type=_probability, default=0.0, help="probability a message arrives twice")
    g.add_argument("--latency-ms", type=_non_negative, default=20.0, help="base one-way latency (default 20)")
    g.add_argument("--jitter-ms", type=_non_negative, default=10.0, help="uniform extra latency (default 10)")
    g.add_argument("--fanout", type=_positive_int, default=3, help="peers contacted per round (default 3)")
    g.add_argument("--interval", type=_positive, default=1.0, help="gossip interval in seconds (default 1)")
    g.add_argument("--max-rounds", type=_positive, default=100.0, help="bound on each phase, in rounds (default 100)")
    g.add_argument("--json", action="store_true", help="print one JSON document (no wall time)")

    m = sub.add_parser("membership", help="failure detection, leader failover and a quiet period")
    m.add_argument("--nodes", type=_positive_int, default=100)
    m.add_argument("--voters", type=_positive_int, default=5)
    m.add_argument("--seed", type=int, required=True)
    m.add_argument("--loss", type=_probability, default=0.0)
    m.add_argument("--crashes", type=int, default=5, help="hosts crashed one after another (default 5)")
    m.add_argument("--failovers", type=int, default=3, help="leaders crashed one after another (default 3)")
    m.add_argument("--stable-seconds", type=_non_negative, default=3600.0, help="quiet period (default 3600)")
    m.add_argument("--json", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "membership":
        return _membership(args)
    params = GossipParams(
        nodes=args.nodes, seed=args.seed, loss=args.loss, duplicate=args.duplicate,
        latency_ms=args.latency_ms, jitter_ms=args.jitter_ms, fanout=args.fanout,
        gossip_interval=args.interval, max_rounds=args.max_rounds,
    )
    if not args.json:
        print(f"seed {args.seed}: simulating {args.nodes} nodes ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    report = run_gossip(params)
    wall = time.perf_counter() - started
    if args.json:
        print(to_json(report))
        print(f"wall time {wall:.2f} s", file=sys.stderr)
    else:
        print(to_text(report, wall))
    return 0 if report["converged"] else 1


def _membership(args) -> int:
    params = MembershipParams(nodes=args.nodes, voters=args.voters, seed=args.seed, loss=args.loss,
                              crashes=args.crashes, failovers=args.failovers, stable_seconds=args.stable_seconds)
    started = time.perf_counter()
    report = run_membership(params)
    wall = time.perf_counter() - started
    print(to_json(report) if args.json else membership_text(report))
    print(f"wall time {wall:.2f} s", file=sys.stderr)
    return 0 if report["ok"] else 1



if __name__ == "__main__":
    sys.exit(main())
