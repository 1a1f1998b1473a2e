"""Many seeds of one scenario, and the shrinking of a failing seed's fault plan.

`sweep` runs seeds in worker processes (`jobs`), each a whole `run_scenario`, and summarises:
how many passed, which failed and how (violation: checker and step; or not converged), and
the spread of the convergence times. Results are in seed order whatever the jobs' order.

`shrink` reduces the fault plan of a failing run (delta debugging, Zeller's ddmin): it
removes halves, then quarters, ... down to single events, keeping a smaller plan whenever
the run with it still fails *the same way* (the same checker, or not converging), and
replays the seed with the plan each time. What is left is printed and can be replayed:
`python -m sim run SCENARIO --seed S --plan FILE`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator

from .plan import FaultEvent, Plan, generate
from .runner import run_scenario
from .scenario import Scenario, load


def failure_of(report: dict[str, Any]) -> str | None:
    """How a run failed: `violation:<checker>`, `not-converged`, or None if it passed."""
    v = (report.get("safety") or {}).get("violation")
    if v is not None:
        return f"violation:{v['checker']}"
    live = report.get("liveness")
    if live is not None and not live["converged"]:
        return "not-converged"
    return None


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The part of a run's report a sweep keeps."""
    v = (report.get("safety") or {}).get("violation")
    live = report.get("liveness") or {}
    out: dict[str, Any] = {
        "seed": report["seed"],
        "ok": report["ok"],
        "failure": failure_of(report),
        "faults": report["plan"]["events"],
        "events": report["totals"]["events"],
        "liveness_s": live.get("seconds"),
        "trace": report["trace"],
    }
    if v is not None:
        out["violation"] = {k: v[k] for k in ("checker", "message", "step", "time", "host", "event") if k in v}
    if live and not live.get("converged", True):
        out["not_converged"] = sorted(live.get("not_converged", {}))
    return out


def scenario_of(path: str, seconds: float | None = None, hosts: int | None = None) -> Scenario:
    """The scenario at `path`, with the CLI's overrides (safety phase length, host count)."""
    sc = load(path)
    if hosts:
        sc = sc.with_hosts(hosts)
    if seconds is not None:
        sc = replace(sc, seconds=seconds)
    return sc


def _one(args: tuple[str, int, float | None, int | None, Callable[..., dict[str, Any]]]) -> dict[str, Any]:
    path, seed, seconds, hosts, run = args
    started = time.process_time()
    try:
        r = summary_of(run(scenario_of(path, seconds, hosts), seed))
    except Exception as e:  # the simulator's own bug: this seed fails, the sweep goes on
        r = {
            "seed": seed,
            "ok": False,
            "failure": f"error:{type(e).__name__}",
            "faults": 0,
            "events": 0,
            "liveness_s": None,
            "trace": None,
            "violation": {"checker": "simulator", "message": f"{type(e).__name__}: {e}", "step": None, "time": None},
        }
    r["cpu_s"] = round(time.process_time() - started, 2)
    return r


def sweep(
    path: str,
    seeds: list[int],
    *,
    jobs: int = 1,
    seconds: float | None = None,
    hosts: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
    run: Callable[..., dict[str, Any]] = run_scenario,
) -> dict[str, Any]:
    """Run every seed; the summary (deterministic but for the cpu and wall figures). A seed
    whose run fails in any way, a core's exception included, is that seed's failure.
    `run`: how to run one seed (a test's `run_scenario` with a broken rule; picklable for jobs > 1)."""
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    for r in _map(_one, [(path, s, seconds, hosts, run) for s in seeds], jobs):
        results.append(r)
        if progress is not None:
            progress(r)
    results.sort(key=lambda r: r["seed"])
    failed = [r for r in results if not r["ok"]]
    live = sorted(r["liveness_s"] for r in results if r["liveness_s"] is not None)
    return {
        "scenario": load(path).name,
        "seeds": f"{seeds[0]}..{seeds[-1]}" if seeds else "",
        "runs": len(results),
        "passed": len(results) - len(failed),
        "failed": len(failed),
        "failures": [
            {
                k: r[k]
                for k in (
                    "seed",
                    "failure",
                    *(("violation",) if "violation" in r else ()),
                    *(("not_converged",) if "not_converged" in r else ()),
                )
            }
            for r in failed
        ],
        "liveness_s": {
            "n": len(live),
            "p50": live[len(live) // 2] if live else None,
            "max": live[-1] if live else None,
        },
        "faults_per_run": round(sum(r["faults"] for r in results) / max(1, len(results)), 1),
        "events_per_run": round(sum(r["events"] for r in results) / max(1, len(results))),
        "cpu_s": round(sum(r["cpu_s"] for r in results), 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "results": results,
    }


def _map(fn, items: list, jobs: int) -> Iterator:
    if jobs <= 1 or len(items) <= 1:
        yield from map(fn, items)
        return
    ctx = multiprocessing.get_context("spawn")  # no state shared with the parent beyond the arguments
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        yield from pool.map(fn, items, chunksize=1)


# -- shrinking -------------------------------------------------------------------------------------


@dataclass
class Shrunk:
    seed: int
    failure: str
    original: Plan
    plan: Plan
    runs: int
    report: dict[str, Any]


def shrink(
    sc: Scenario,
    seed: int,
    *,
    plan: Plan | None = None,
    max_runs: int = 200,
    progress: Callable[[str], None] | None = None,
    run: Callable[..., dict[str, Any]] = run_scenario,
) -> Shrunk:
    """The smallest plan (by ddmin, within `max_runs` runs) that still fails as the seed's does.
    `run`: how to run the scenario (a test's `run_scenario` with a broken rule)."""
    original = list(plan) if plan is not None else generate(sc, seed)
    first = run(sc, seed, plan=original)
    failure = failure_of(first)
    if failure is None:
        raise ValueError(f"seed {seed} does not fail with its plan: nothing to shrink")
    runs, best, best_report = 1, original, first

    def fails(p: Plan) -> bool:
        nonlocal runs, best_report
        runs += 1
        r = run(sc, seed, plan=p)
        if failure_of(r) == failure:
            best_report = r
            return True
        return False

    if best and runs < max_runs and fails([]):
        best = []
    n = 2
    while len(best) >= 2 and runs < max_runs:
        parts = _split(best, n)
        for i in range(len(parts)):
            if runs >= max_runs:
                break
            rest = [e for j, part in enumerate(parts) if j != i for e in part]
            if fails(rest):
                best, n = rest, max(2, n - 1)
                if progress:
                    progress(f"{len(best)} events still fail ({runs} runs)")
                break
        else:
            if n >= len(best):
                break
            n = min(len(best), 2 * n)
    return Shrunk(seed, failure, original, best, runs, best_report)


def _split(plan: list[FaultEvent], n: int) -> list[list[FaultEvent]]:
    k, m = divmod(len(plan), n)
    out, i = [], 0
    for j in range(n):
        size = k + (1 if j < m else 0)
        out.append(plan[i : i + size])
        i += size
    return [p for p in out if p]


def parse_seeds(text: str) -> list[int]:
    """`1..200`, `5`, or `1,2,7..9`."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if ".." in part:
            a, b = part.split("..", 1)
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"empty seed range {part!r}")
            out += range(lo, hi + 1)
        elif part:
            out.append(int(part))
    if not out:
        raise ValueError("no seeds")
    return out


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))
