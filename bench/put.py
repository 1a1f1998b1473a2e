"""`ringmesh put` against the disk: one real daemon (loopback, no peers to feed), a file put
again and again under fresh names, each figure beside a baseline measured in the same run.

  put           the default: the bytes copied into the store, hashed on the way, fsynced
  put --link    hard-linked into the store and hashed (the store's own copy follows in the background)
  cp + fsync    the same bytes copied by `cp` and flushed: what "disk speed" is here
  read + hash   the source read once and hashed with xxh3-128: the floor of any put

Times are wall seconds from the call until `put` returns (the version published); runs alternate.

    .venv/bin/python bench/put.py [--size 1GiB] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringmesh.ops.localcluster import LocalCluster  # noqa: E402

GiB = 1 << 30


def parse_size(text: str) -> int:
    n, unit = text.upper().rstrip("IB"), 1
    for suffix, mult in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if n.endswith(suffix):
            n, unit = n[:-1], mult
    return int(float(n) * unit)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=GiB)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="rm-put-", dir=os.environ.get("BENCH_TMP", "/var/tmp")) as tmp:
        root = Path(tmp)
        src = root / "model.pth"
        with open(src, "wb") as f:
            for _ in range(args.size // (64 << 20)):
                f.write(os.urandom(64 << 20))
            f.write(os.urandom(args.size % (64 << 20)))
            os.fsync(f.fileno())
        c = LocalCluster(root / "c", 1, roles={"node1": "training"})
        times: dict[str, list[float]] = {"put": [], "put --link": [], "cp + fsync": [], "read + hash": []}
        try:
            c.start("node1")
            c.wait_ready("node1")
            with c.nodes["node1"].client() as cl:
                for i in range(args.runs):
                    times["put"].append(timed(lambda: cl.put(src, "model", f"copy{i}.pth")))
                    times["put --link"].append(timed(lambda: cl.put(src, "model", f"link{i}.pth", link=True)))

                    def cp() -> None:
                        dest = root / f"cp{i}"
                        subprocess.run(["cp", str(src), str(dest)], check=True)
                        fd = os.open(dest, os.O_RDONLY)
                        os.fsync(fd)
                        os.close(fd)

                    times["cp + fsync"].append(timed(cp))

                    def read_hash() -> None:
                        with open(src, "rb", buffering=0) as f:
                            while block := f.read(4 << 20):
                                xxhash.xxh3_128_digest(block)

                    times["read + hash"].append(timed(read_hash))
        finally:
            c.stop_all()
    med = {k: statistics.median(v) for k, v in times.items()}
    doc = {
        "size": args.size,
        "runs": times,
        "median_s": med,
        "put / cp": med["put"] / med["cp + fsync"],
        "put --link / read + hash": med["put --link"] / med["read + hash"],
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"put of {args.size / GiB:.2f} GiB, {args.runs} runs each (median, runs)")
    for k, v in times.items():
        print(f"  {k:12} {med[k]:6.2f} s  {args.size / med[k] / 1e6:6.0f} MB/s   " + ", ".join(f"{t:.2f}" for t in v))
    print(f"  put / cp+fsync {doc['put / cp']:.2f};  put --link / read+hash {doc['put --link / read + hash']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
