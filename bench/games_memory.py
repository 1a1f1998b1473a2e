"""Daemon memory with many games: a data dir holding N games in S streams (written straight
into the stream log), then a real `ringmesh serve` on it; its resident memory, its start-up
time, and the same daemon's memory on an empty data dir, in the same run.

    .venv/bin/python bench/games_memory.py [--games 1000000] [--streams 50] [--size 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringmesh.node.games.streamlog import StreamLog  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def serve_and_measure(c: LocalCluster) -> tuple[float, float]:
    t0 = time.perf_counter()
    c.start("node1")
    c.wait_ready("node1", timeout=600)
    started = time.perf_counter() - t0
    time.sleep(3)  # let it settle (gossip, disk measurement) before reading its memory
    mem = rss_mb(c.nodes["node1"].proc.pid)
    assert c.signal("node1", signal.SIGTERM, timeout=60) == 0
    return started, mem


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--size", type=int, default=200, help="bytes per game record")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ringmesh-bench-mem-"))
    try:
        c = LocalCluster(root / "c", 1, roles={"node1": "training"})
        _, empty_mem = serve_and_measure(c)
        per = args.games // args.streams
        t0 = time.perf_counter()
        with StreamLog(c.nodes["node1"].data_dir / "streams", compress_level=None) as log:
            payload = os.urandom(args.size)
            for s in range(args.streams):
                origin, key = f"spot-{s:03d}", ["hex8_2p", "square8_2p", "square19_2p", "hexagonal_4p"][s % 4]
                for first in range(1, per + 1, 10_000):
                    n = min(10_000, per - first + 1)
                    for q in range(first, first + n):
                        log.append_at(origin, key, q, payload)
                    log.flush()
        written = time.perf_counter() - t0
        started, mem = serve_and_measure(c)
        du = subprocess.run(["du", "-sm", str(c.nodes["node1"].data_dir / "streams")], capture_output=True, text=True)
        print(
            f"{per * args.streams} games of {args.size} B in {args.streams} streams written in {written:.1f} s "
            f"({du.stdout.split()[0]} MB on disk)"
        )
        print(f"daemon RSS, empty data dir:            {empty_mem:.1f} MB")
        print(
            f"daemon RSS, holding those games:       {mem:.1f} MB  (+{mem - empty_mem:.1f} MB, "
            f"{(mem - empty_mem) * 1024 * 1024 / (per * args.streams):.0f} B per game)"
        )
        print(f"daemon start-up with them (log index):  {started:.1f} s")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
