"""Bandwidth limiter benchmark: real `ringmesh serve` processes on loopback.

(a) rate:   node1, egress limited to RATE, serves one model to node2 (ingress unlimited).
            Achieved rate over a WINDOW-second stretch in the middle of the transfer, from
            node1's egress counters and node2's ingress counters (both in `ringmesh status`),
            and end to end from node2's log (size / transfer time, first burst included).
(b) shares: node1 (egress RATE) serves one model to five receivers at once; each receiver was
            told `priority <class>` for the model's config (schedule_priority_sync), so they
            pull at critical, high, normal, low and background. Byte shares over a
            SHARE_WINDOW-second stretch while all five pull, against the weight shares.
(c) the pure limiter alone, virtual time, same rate and frames: the shares it computes.

Run:  .venv/bin/python bench/bandwidth.py [--rate BYTES_PER_S] [--window S] [--share-window S] [--json]
Units: bytes/s (MB = 10^6 bytes), seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringmesh.core.bandwidth import US, WEIGHTS, Limiter, Priority  # noqa: E402
from ringmesh.node.files.throttle import EGRESS_ENV, INGRESS_ENV  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster, wait_for  # noqa: E402

MB, MiB = 1_000_000, 1 << 20
CLASSES = sorted(Priority, reverse=True)
NAME = "canonical_hex8_2p.pth"  # a model of config hex8_2p


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for off in range(0, size, 4 * MiB):
            f.write(os.urandom(min(4 * MiB, size - off)))
    return path


def sample(c: LocalCluster, name: str) -> tuple[float, dict]:
    t_before = time.monotonic()
    doc = c.nodes[name].query("status")
    return (t_before + time.monotonic()) / 2, doc


def granted(doc: dict, direction: str) -> dict[str, int]:
    return doc["bandwidth"][direction]["granted_bytes"]


def start(c: LocalCluster, envs: dict[str, dict[str, str]]) -> None:
    for name, env in envs.items():
        c.start(name, env=env)
    for name in envs:
        c.wait_ready(name)


def bench_rate(root: Path, rate: int, window: float) -> dict:
    size = int(rate * (window + 5))
    src = random_file(root / NAME, size)
    with LocalCluster(root / "a", 2, gossip_interval=0.25) as c:
        start(c, {"node1": {EGRESS_ENV: str(rate), INGRESS_ENV: "0"}, "node2": {EGRESS_ENV: "0", INGRESS_ENV: "0"}})
        with c.nodes["node1"].client() as cl:
            cl.put(src, "model")
        wait_for(
            lambda: sum(granted(c.nodes["node1"].query("status"), "egress").values()) > 0, 30, what="transfer start"
        )
        time.sleep(1.0)  # past the first burst
        t0, s0 = sample(c, "node1")
        u0, r0 = sample(c, "node2")
        time.sleep(window)
        t1, s1 = sample(c, "node1")
        u1, r1 = sample(c, "node2")
        unfinished = not r1["counters"].get("transfers_done")
        wait_for(
            lambda: (c.nodes["node2"].query("status") or {}).get("counters", {}).get("transfers_done"),
            60,
            what="node2 to finish",
        )
        m = re.search(r"got \S+ \S+ \((\d+) bytes\) from node1 in ([\d.]+)s", c.nodes["node2"].log_path.read_text())
    egress = (sum(granted(s1, "egress").values()) - sum(granted(s0, "egress").values())) / (t1 - t0)
    ingress = (sum(granted(r1, "ingress").values()) - sum(granted(r0, "ingress").values())) / (u1 - u0)
    e2e = int(m[1]) / float(m[2]) if m else None
    return {
        "rate_bytes_per_s": rate,
        "file_bytes": size,
        "window_s": round(t1 - t0, 3),
        "window_inside_transfer": unfinished,
        "egress_bytes_per_s": round(egress),
        "egress_ratio": round(egress / rate, 4),
        "ingress_bytes_per_s": round(ingress),
        "ingress_ratio": round(ingress / rate, 4),
        "end_to_end_s": float(m[2]) if m else None,
        "end_to_end_bytes_per_s": round(e2e) if e2e else None,
        "end_to_end_ratio": round(e2e / rate, 4) if e2e else None,
    }


def bench_shares(root: Path, rate: int, window: float) -> dict:
    size = int(rate * (window + 8) * 0.7)  # more than CRITICAL (16/31 of the rate) gets meanwhile
    src = root / NAME
    if not src.exists() or src.stat().st_size < size:
        random_file(src, size)
    receivers = {f"node{i + 2}": cls for i, cls in enumerate(CLASSES)}
    with LocalCluster(root / "b", 1 + len(receivers), gossip_interval=0.25) as c:
        envs = {"node1": {EGRESS_ENV: str(rate), INGRESS_ENV: "0"}}
        envs.update({n: {EGRESS_ENV: "0", INGRESS_ENV: "0"} for n in receivers})
        start(c, envs)
        for name, cls in receivers.items():
            with c.nodes[name].client() as cl:
                cl.control("priority", config_key="hex8_2p", priority=cls.label)
        with c.nodes["node1"].client() as cl:
            cl.put(src, "model")
        wait_for(
            lambda: all(granted(c.nodes["node1"].query("status"), "egress")[p.label] > 0 for p in CLASSES),
            30,
            what="every class to start",
        )
        time.sleep(1.0)
        before = {n: sample(c, n) for n in c.nodes}
        time.sleep(window)
        after = {n: sample(c, n) for n in c.nodes}
        unfinished = all(not after[n][1]["counters"].get("transfers_done") for n in receivers)
    t0, s0 = before["node1"]
    t1, s1 = after["node1"]
    served = {p.label: granted(s1, "egress")[p.label] - granted(s0, "egress")[p.label] for p in CLASSES}
    received = {
        cls.label: granted(after[n][1], "ingress")[cls.label] - granted(before[n][1], "ingress")[cls.label]
        for n, cls in receivers.items()
    }
    wsum = sum(WEIGHTS.values())
    rows = []
    for p in CLASSES:
        want = WEIGHTS[p] / wsum
        got_s, got_r = served[p.label] / sum(served.values()), received[p.label] / sum(received.values())
        rows.append(
            {
                "class": p.label,
                "weight": WEIGHTS[p],
                "weight_share": round(want, 4),
                "served_bytes": served[p.label],
                "served_share": round(got_s, 4),
                "served_vs_weight": round(got_s / want, 4),
                "received_bytes": received[p.label],
                "received_share": round(got_r, 4),
                "received_vs_weight": round(got_r / want, 4),
            }
        )
    total = sum(served.values()) / (t1 - t0)
    return {
        "rate_bytes_per_s": rate,
        "file_bytes": size,
        "window_s": round(t1 - t0, 3),
        "window_inside_transfers": unfinished,
        "egress_bytes_per_s": round(total),
        "egress_ratio": round(total / rate, 4),
        "classes": rows,
    }


def core_shares(rate: int, seconds: float) -> dict[str, float]:
    """The pure limiter, every class backlogged with 1 MiB frames, polled at its own wake times."""
    lim, t, got, cls_of = Limiter(rate, max(rate // 10, MiB)), 0.0, dict.fromkeys([p.label for p in CLASSES], 0), {}
    for p in CLASSES:
        for _ in range(2):
            cls_of[lim.submit(p, p, MiB, t)] = p
    while t < seconds:
        poll = lim.poll(t)
        for rid in poll.granted:
            p = cls_of.pop(rid)
            got[p.label] += MiB
            cls_of[lim.submit(p, p, MiB, t)] = p
        t = poll.wake_at if poll.wake_at is not None else t + 1 / US
    total = sum(got.values())
    return {k: round(v / total, 4) for k, v in got.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rate", type=int, default=20 * MB, help="egress limit of the serving peer, bytes/s (default 20 MB/s)"
    )
    ap.add_argument("--window", type=float, default=10.0, help="measured stretch of (a), s")
    ap.add_argument("--share-window", type=float, default=20.0, help="measured stretch of (b), s")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ringmesh-bw-") as tmp:
        a = bench_rate(Path(tmp), args.rate, args.window)
        b = bench_shares(Path(tmp), args.rate, args.share_window)
    c = core_shares(args.rate, args.share_window)
    doc = {"rate": a, "shares": b, "core_shares": c, "wall_s": round(time.monotonic() - started, 1)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    r = args.rate / MB
    print(
        f"(a) one transfer, egress limit {r:g} MB/s, file {a['file_bytes'] / MB:.0f} MB, window {a['window_s']:.2f} s "
        f"(inside the transfer: {a['window_inside_transfer']})"
    )
    print(f"    node1 egress  {a['egress_bytes_per_s'] / MB:7.3f} MB/s   ratio {a['egress_ratio']:.4f}")
    print(f"    node2 ingress {a['ingress_bytes_per_s'] / MB:7.3f} MB/s   ratio {a['ingress_ratio']:.4f}")
    if a["end_to_end_s"]:
        print(
            f"    end to end    {a['end_to_end_bytes_per_s'] / MB:7.3f} MB/s   ratio {a['end_to_end_ratio']:.4f}"
            f"   ({a['end_to_end_s']:.2f} s, first burst and recipe included)"
        )
    print(
        f"(b) five receivers, one class each, egress limit {r:g} MB/s, window {b['window_s']:.2f} s "
        f"(inside the transfers: {b['window_inside_transfers']})"
    )
    print(f"    node1 egress total {b['egress_bytes_per_s'] / MB:.3f} MB/s   ratio {b['egress_ratio']:.4f}")
    print(
        "    class       weight  weight share  served MB  served share  /weight"
        "  received share  /weight  core (virtual)"
    )
    for row in b["classes"]:
        print(
            f"    {row['class']:<11} {row['weight']:>6}  {row['weight_share']:>12.4f}  {row['served_bytes'] / MB:>9.2f}"
            f"  {row['served_share']:>12.4f}  {row['served_vs_weight']:>7.3f}  {row['received_share']:>14.4f}"
            f"  {row['received_vs_weight']:>7.3f}  {c[row['class']]:>14.4f}"
        )
    print(f"wall time {doc['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
