"""`python -m sim gossip --nodes N --seed S [--loss P] [--latency-ms MS] [--fanout F] [--json]`
`python -m sim membership --nodes N --seed S [--loss P] [--crashes K] [--failovers K] [--stable-seconds T] [--json]`
`python -m sim broadcast --nodes N --seed S [--size 400MB] [--chunk 4MiB] [--link-mbps 100] [--latency-ms 20] [--json]`
`python -m sim run SCENARIO --seed S [--json] [--trace FILE] [--plan FILE] [--show-plan] [--write-plan FILE]`
`python -m sim sweep SCENARIO --seeds 1..N [--jobs 2] [--shrink] [--json]`
`python -m sim epidemic --nodes N --seed S [--fanout 3] [--json]`

SCENARIO is a file or the name of one in `sim/scenarios/` (`python -m sim run --list`).

Exit status: 0 when every phase converged (every receiver got the file; no invariant was
violated), 1 when a phase hit its bound or a checker found a violation, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import TYPE_CHECKING

from ringmesh.core.swarm import PULL

from .flows import MB, BroadcastParams, run_broadcast
from .gossip import GossipParams, run_gossip
from .membership import MembershipParams, run_membership
from .report import broadcast_text, epidemic_text, membership_text, scenario_text, sweep_text, to_json, to_text
from .world import SimulationError

if TYPE_CHECKING:
    from .scenario import Scenario


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
    link.add_argument(
        "--link-mbps",
        type=_positive,
        default=None,
        help="every uplink and downlink, in MB/s (10^6 bytes/s, as bandwidth_limit_mbps; default 100)",
    )
    link.add_argument("--link-bytes-per-s", type=_positive, default=None)
    b.add_argument("--latency-ms", type=_non_negative, default=20.0, help="one-way latency (default 20)")
    b.add_argument(
        "--per-peer",
        type=_positive_int,
        default=PULL.per_peer,
        help=f"requests in flight per source (default {PULL.per_peer}, as the daemon pulls)",
    )
    b.add_argument("--uploads", type=_positive_int, default=PULL.uploads, help="flows a host serves at once")
    b.add_argument(
        "--extra-uploads", type=int, default=PULL.extra_uploads, help="more flows while its uplink is not full"
    )
    b.add_argument(
        "--asks",
        type=int,
        default=PULL.asks_per_peer,
        help='"any of these" requests open per source (0: one named chunk per request, as pulls ask today)',
    )
    b.add_argument("--peers", type=_positive_int, default=8, help="peer-set size per receiver (default 8)")
    b.add_argument(
        "--publisher-peers",
        type=_positive_int,
        default=None,
        help="receivers that may ask the publisher (default: all)",
    )
    b.add_argument("--json", action="store_true", help="print one JSON document (no wall time)")

    r = sub.add_parser("run", help="a scenario: workload and faults, checkers on every step, then heal and converge")
    r.add_argument("scenario", nargs="?", help="a scenario file, or the name of one in sim/scenarios/")
    r.add_argument("--seed", type=int)
    r.add_argument("--list", action="store_true", help="list the scenario library")
    r.add_argument(
        "--plan", metavar="FILE", help="replay this fault plan (JSON, as --write-plan or a shrink writes it)"
    )
    r.add_argument("--write-plan", metavar="FILE", help="write the run's fault plan to FILE")
    r.add_argument("--show-plan", action="store_true", help="print every fault event")
    r.add_argument("--trace", metavar="FILE", help="write every event of the run to FILE, one line each")
    r.add_argument("--hosts", type=_positive_int, help="scale the scenario's host groups to about this many hosts")
    r.add_argument("--seconds", type=_non_negative, help="length of the safety phase (default: the scenario's)")
    r.add_argument("--json", action="store_true", help="print one JSON document (no wall time)")

    w = sub.add_parser("sweep", help="many seeds of one scenario, summarised; --shrink a failing seed's plan")
    w.add_argument("scenario")
    w.add_argument("--seeds", required=True, help="e.g. 1..200, or 1,5,9..12")
    w.add_argument("--jobs", type=_positive_int, default=1, help="worker processes (default 1)")
    w.add_argument("--shrink", action="store_true", help="shrink the first failing seed's fault plan")
    w.add_argument("--max-shrink-runs", type=_positive_int, default=200)
    w.add_argument("--plan-out", metavar="FILE", help="where to write the shrunk plan (default: print it)")
    w.add_argument("--hosts", type=_positive_int, help="scale the scenario's host groups to about this many hosts")
    w.add_argument("--seconds", type=_non_negative, help="length of the safety phase (default: the scenario's)")
    w.add_argument("--json", action="store_true")

    e = sub.add_parser(
        "epidemic", help="one rumour's spread by the peer's gossip rounds, without manifests (10^4+ hosts)"
    )
    e.add_argument("--nodes", type=_positive_int, required=True)
    e.add_argument("--seed", type=int, required=True)
    e.add_argument("--fanout", type=_positive_int, default=3)
    e.add_argument("--loss", type=_probability, default=0.0)
    e.add_argument("--latency-ms", type=_non_negative, default=20.0)
    e.add_argument("--jitter-ms", type=_non_negative, default=10.0)
    e.add_argument("--json", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("run", "sweep"):
        return _run(ap, argv) if argv[0] == "run" else _sweep(ap, argv)
    args = ap.parse_args(argv)
    if args.scenario == "membership":
        return _membership(args)
    if args.scenario == "broadcast":
        return _broadcast(args)
    if args.scenario == "epidemic":
        return _epidemic(args)
    params = GossipParams(
        nodes=args.nodes,
        seed=args.seed,
        loss=args.loss,
        duplicate=args.duplicate,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        fanout=args.fanout,
        gossip_interval=args.interval,
        max_rounds=args.max_rounds,
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
    params = MembershipParams(
        nodes=args.nodes,
        voters=args.voters,
        seed=args.seed,
        loss=args.loss,
        crashes=args.crashes,
        failovers=args.failovers,
        stable_seconds=args.stable_seconds,
    )
    started = time.perf_counter()
    report = run_membership(params)
    wall = time.perf_counter() - started
    print(to_json(report) if args.json else membership_text(report))
    print(f"wall time {wall:.2f} s", file=sys.stderr)
    return 0 if report["ok"] else 1


def _broadcast(args) -> int:
    rate = args.link_bytes_per_s or (args.link_mbps or 100.0) * MB
    params = BroadcastParams(
        nodes=args.nodes,
        seed=args.seed,
        size=args.size,
        chunk=args.chunk,
        link_bytes_per_s=rate,
        latency_ms=args.latency_ms,
        per_peer=args.per_peer,
        uploads=args.uploads,
        extra_uploads=args.extra_uploads,
        asks=args.asks,
        peers=args.peers,
        publisher_peers=args.publisher_peers,
    )
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


def _load(ap: argparse.ArgumentParser, args) -> Scenario:
    from dataclasses import replace

    from .scenario import ScenarioError, load

    try:
        sc = load(args.scenario)
    except (ScenarioError, OSError) as e:
        ap.error(str(e))
    if getattr(args, "hosts", None):
        sc = sc.with_hosts(args.hosts)
    if getattr(args, "seconds", None) is not None:
        sc = replace(sc, seconds=args.seconds)
    return sc


def _run(ap: argparse.ArgumentParser, argv: list[str]) -> int:
    from . import plan as plans
    from .runner import run_scenario
    from .scenario import library

    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(library()))
        return 0
    if args.scenario is None or args.seed is None:
        ap.error("run: give a SCENARIO and --seed (or --list)")
    sc = _load(ap, args)
    plan = None
    if args.plan:
        try:
            with open(args.plan) as f:
                plan = plans.loads(f.read())
        except (OSError, ValueError, TypeError) as e:
            ap.error(f"--plan {args.plan}: {e}")
    if plan is None:
        plan = plans.generate(sc, args.seed)
    if args.write_plan:
        with open(args.write_plan, "w") as f:
            f.write(plans.dumps(plan) + "\n")
    sink = open(args.trace, "w") if args.trace else None
    started, cpu = time.perf_counter(), time.process_time()
    try:
        report = run_scenario(
            sc,
            args.seed,
            plan=plan,
            trace=(lambda line: print(line, file=sink)) if sink else None,
        )
    finally:
        if sink:
            sink.close()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if args.json:
        if args.show_plan:
            report["plan"]["list"] = [e.to_dict() for e in plan]
        print(to_json(report))
        print(f"wall time {wall:.2f} s, cpu {cpu:.2f} s", file=sys.stderr)
    else:
        print(scenario_text(report, plan if args.show_plan else None, args.scenario, wall, cpu))
    return 0 if report["ok"] else 1


def _sweep(ap: argparse.ArgumentParser, argv: list[str]) -> int:
    from . import plan as plans
    from .scenario import find
    from .sweep import failure_of, parse_seeds, shrink, sweep

    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError as e:
        ap.error(f"--seeds: {e}")
    sc = _load(ap, args)
    path = find(args.scenario)

    def progress(r) -> None:
        state = "ok" if r["ok"] else r["failure"]
        print(
            f"seed {r['seed']}: {state} ({r['faults']} faults, liveness {r['liveness_s']} s, {r['cpu_s']} s cpu)",
            file=sys.stderr,
            flush=True,
        )

    result = sweep(path, seeds, jobs=args.jobs, seconds=args.seconds, hosts=args.hosts, progress=progress)
    result["command"] = "python -m sim sweep " + " ".join(argv[1:])
    if args.shrink and result["failures"]:
        seed = result["failures"][0]["seed"]
        print(f"shrinking seed {seed} ...", file=sys.stderr, flush=True)
        s = shrink(
            sc,
            seed,
            max_runs=args.max_shrink_runs,
            progress=lambda m: print("  " + m, file=sys.stderr, flush=True),
        )
        v = (s.report.get("safety") or {}).get("violation")
        result["shrunk"] = {
            "seed": seed,
            "failure": s.failure,
            "from_events": len(s.original),
            "to_events": len(s.plan),
            "runs": s.runs,
            "plan": [e.to_dict() for e in s.plan],
            "violation": v,
            "still_fails": failure_of(s.report) == s.failure,
        }
        if args.plan_out:
            with open(args.plan_out, "w") as f:
                f.write(plans.dumps(s.plan) + "\n")
            result["shrunk"]["plan_file"] = args.plan_out
    print(to_json(result) if args.json else sweep_text(result))
    return 0 if not result["failures"] else 1


def _epidemic(args) -> int:
    from .epidemic import EpidemicParams, run_epidemic

    p = EpidemicParams(
        nodes=args.nodes,
        seed=args.seed,
        fanout=args.fanout,
        loss=args.loss,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
    )
    started = time.perf_counter()
    report = run_epidemic(p)
    wall = time.perf_counter() - started
    print(to_json(report) if args.json else epidemic_text(report, wall))
    if args.json:
        print(f"wall time {wall:.2f} s", file=sys.stderr)
    return 0 if report["converged"] else 1


if __name__ == "__main__":
    sys.exit(main())
