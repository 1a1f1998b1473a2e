"""Data at rest: what verifying it costs, each figure against a baseline measured in the same run.

(a) scrub throughput: a file held in the store, read back chunk by chunk and verified against its
    recipe (`FileStore.read_verified`, what the scrub and every serve do), with no budget; vs a
    plain read of the same bytes (no hashing) and vs xxh3-128 over bytes already in memory (the
    hash's own bound). Page cache warm, then cold (dropped with posix_fadvise before each pass).
    MB/s, and CPU seconds per GiB (user+system of this process).
(b) the serve-time check's cost on a pull: two real `ringmesh serve` peers on loopback, a sink
    pulls the file from a holder; the holder checks every chunk it sends (as shipped), vs the
    same holder started with the check removed (`ringmesh.testing.faults` "unchecked-serve").
    Runs alternate (checked, unchecked, ...); the pull time is the sink's own ("got ... in X s").

    .venv/bin/python bench/at_rest.py [--size 1GiB] [--pulls 3] [--only a|b] [--json]

Units: MB = 10^6 bytes, GiB = 2^30 bytes, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringmesh.core import recipe  # noqa: E402
from ringmesh.core.messages import ItemKey  # noqa: E402
from ringmesh.node.files.store import FileStore  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster, wait_for  # noqa: E402
from ringmesh.testing import faults  # noqa: E402

MB, GiB = 1_000_000, 1 << 30
ITEM = ItemKey("model", "canonical_hex8_2p.pth")
GOT = re.compile(r"got \S+ \w+ \((\d+) bytes[^)]*\) from (\S+) in ([\d.]+)s")


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def random_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 64 << 20)
            f.write(os.urandom(n))
            left -= n


def timed(fn) -> tuple[float, float]:
    c0, t0 = cpu(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, cpu() - c0


def bench_a(root: Path, size: int) -> dict:
    src = root / "src.bin"
    random_file(src, size)
    fs = FileStore(root / "data")
    h = fs.import_file(src, ITEM)
    src.unlink()
    path = fs.path_of(ITEM)
    n = recipe.chunk_count(h.size, h.chunk_size)

    def verified() -> None:
        for i in range(n):
            fs.read_verified(ITEM, h.digest, i, h.size, h.chunk_size)

    def plain() -> None:
        with open(path, "rb", buffering=0) as f:
            while f.read(h.chunk_size):
                pass

    block = os.urandom(h.chunk_size)

    def hash_only() -> None:
        for _ in range(n):
            xxhash.xxh3_128_digest(block)

    out: dict = {"size": size, "chunk_size": h.chunk_size}
    for cache in ("warm", "cold"):
        for name, fn in (("scrub", verified), ("plain read", plain)):
            if cache == "warm":
                fn()  # fill the cache
            else:
                drop_cache(path)
            wall, cpu_s = timed(fn)
            out[f"{name} {cache}"] = {"MB/s": size / wall / MB, "cpu_s_per_GiB": cpu_s / (size / GiB)}
    wall, cpu_s = timed(hash_only)
    out["xxh3-128 in memory"] = {"MB/s": size / wall / MB, "cpu_s_per_GiB": cpu_s / (size / GiB)}
    for cache in ("warm", "cold"):
        out[f"scrub/plain {cache}"] = out[f"scrub {cache}"]["MB/s"] / out[f"plain read {cache}"]["MB/s"]
    return out


def pull_once(root: Path, src: Path, checked: bool) -> float:
    c = LocalCluster(root, 2, gossip_interval=0.2, roles={"node1": "training", "node2": "training"})
    try:
        c.start("node1", launcher=("-m", "ringmesh") if checked else faults.launcher("unchecked-serve"))
        c.wait_ready("node1")
        with c.nodes["node1"].client() as cl:
            cl.put(src, "model")
        c.start("node2")
        dest = c.nodes["node2"].data_dir / "files" / "model" / src.name

        def got() -> float | None:
            m = GOT.search(c.nodes["node2"].log_tail(50)) if dest.exists() else None
            return float(m[3]) if m else None

        return wait_for(got, 600, interval=0.1, what="the pull")
    finally:
        c.stop_all()


def bench_b(root: Path, size: int, pulls: int) -> dict:
    src = root / ITEM.name
    random_file(src, size)
    times: dict[str, list[float]] = {"checked": [], "unchecked": []}
    for i in range(pulls):
        for kind in ("checked", "unchecked") if i % 2 == 0 else ("unchecked", "checked"):
            times[kind].append(pull_once(root / f"run{i}-{kind}", src, kind == "checked"))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "pull_s": times,
        "median_s": med,
        "MB/s": {k: size / v / MB for k, v in med.items()},
        "checked/unchecked time": med["checked"] / med["unchecked"],
    }


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?)i?B?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(float(m[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m[2].upper()])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=GiB)
    ap.add_argument("--pulls", type=int, default=3, help="pulls of each kind in (b)")
    ap.add_argument("--only", choices=["a", "b"], action="append")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    only = set(args.only or ["a", "b"])
    results = {}
    with tempfile.TemporaryDirectory(prefix="rm-at-rest-", dir=os.environ.get("BENCH_TMP")) as tmp:
        if "a" in only:
            (Path(tmp) / "a").mkdir()
            results["a"] = bench_a(Path(tmp) / "a", args.size)
        if "b" in only:
            (Path(tmp) / "b").mkdir()
            results["b"] = bench_b(Path(tmp) / "b", args.size, args.pulls)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    if "a" in results:
        a = results["a"]
        print(f"(a) scrub of {a['size'] / GiB:.2f} GiB in {a['chunk_size'] >> 20} MiB chunks")
        for k in ("scrub warm", "plain read warm", "scrub cold", "plain read cold", "xxh3-128 in memory"):
            print(f"    {k:20} {a[k]['MB/s']:8.0f} MB/s  {a[k]['cpu_s_per_GiB']:.3f} CPU s/GiB")
        print(f"    scrub / plain read: warm {a['scrub/plain warm']:.3f}, cold {a['scrub/plain cold']:.3f}")
    if "b" in results:
        b = results["b"]
        print(f"(b) a pull of {b['size'] / GiB:.2f} GiB on loopback, holder checking every chunk it serves or not")
        for k in ("checked", "unchecked"):
            runs = ", ".join(f"{t:.2f}" for t in b["pull_s"][k])
            print(f"    {k:10} median {b['median_s'][k]:.2f} s ({b['MB/s'][k]:.0f} MB/s); runs {runs}")
        print(f"    checked / unchecked time: {b['checked/unchecked time']:.3f} (target <= 1.05)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
