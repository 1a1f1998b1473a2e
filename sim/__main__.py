"""`python -m sim gossip --nodes N --seed S [--loss P] [--latency-ms MS] [--fanout F] [--json]`
`python -m sim membership --nodes N --seed S [--loss P] [--crashes K] [--failovers K] [--stable-seconds T] [--json]`
`python -m sim broadcast --nodes N --seed S [--size 400MB] [--chunk 4MiB] [--link-mbps 100] [--latency-ms 20] [--json]`

Exit status: 0 when every phase converged (every receiver got the file), 1 when a phase hit
its bound, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from .flows import MB, BroadcastParams, run_broadcast
from .gossip import GossipParams, run_gossip
from .membership import MembershipParams, run_membership
from .report import broadcast_text, membership_text, to_json, to_text
from .world import SimulationError


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


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def _size(text: str) -> int:
    """Bytes: a number with an optional unit, decimal (KB, MB, GB) or binary (KiB, MiB, GiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]i?)?b?\s*", text.lower())
    if m is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 400MB, 4MiB, 1GiB, 1000000)")
    n = int(float(m[1]) * _UNITS[m[2] or ""])
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1 byte")
    return n


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

    b = sub.add_parser("broadcast", help="one file to N receivers: flows over bandwidth-limited links")
    b.add_argument("--nodes", type=_positive_int, required=True, help="receivers (the publisher is one more)")
    b.add_argument("--seed", type=int, required=True)
    b.add_argument("--size", type=_size, default=400 * MB, help="file size, e.g. 400MB, 1GiB (default 400MB)")
    b.add_argument("--chunk", type=_size, default=None, help="chunk size (default: as ringmesh, 4 MiB)")
    link = b.add_mutually_exclusive_group()
    link.add_argument("--link-mbps", type=_positive, default=None,
                      help="every uplink and downlink, in MB/s (10^6 bytes/s, as bandwidth_limit_mbps; default 100)")
    link.add_argument("--link-bytes-per-s", type=_positive, default=None)
    b.add_argument("--latency-ms", type=_non_negative, default=20.0, help="one-way latency (default 20)")
    b.add_argument("--per-peer", type=_positive_int, default=2, help="requests in flight per source (default 2)")
    b.add_argument("--uploads", type=_positive_int, default=4, help="flows a host serves at once (default 4)")
    b.add_argument("--peers", type=_positive_int, default=8, help="peer-set size per receiver (default 8)")
    b.add_argument("--publisher-peers", type=_positive_int, default=None,
                   help="receivers that may ask the publisher (default: all)")
    b.add_argument("--json", action="store_true", help="print one JSON document (no wall time)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scenario == "membership":
        return _membership(args)
    if args.scenario == "broadcast":
        return _broadcast(args)
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


def _broadcast(args) -> int:
    rate = args.link_bytes_per_s or (args.link_mbps or 100.0) * MB
    params = BroadcastParams(nodes=args.nodes, seed=args.seed, size=args.size, chunk=args.chunk, link_bytes_per_s=rate,
                             latency_ms=args.latency_ms, per_peer=args.per_peer, uploads=args.uploads,
                             peers=args.peers, publisher_peers=args.publisher_peers)
    started = time.perf_counter()
    try:
        report = run_broadcast(params)
    except SimulationError as e:
        print(f"broadcast did not finish: {e}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - started
    print(to_json(report) if args.json else broadcast_text(report, wall))
    if args.json:
        print(f"wall time {wall:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
