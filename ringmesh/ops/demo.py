"""`ringmesh demo`: real peers on loopback, a model published on one, watched until every
peer holds a verified copy and every manifest is the same."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ringmesh.node.files.store import hash_file
from ringmesh.ops.localcluster import LocalCluster

MiB = 1 << 20


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n


class _Screen:
    """Redraws a block of lines in place on a terminal; prints only changes elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.tty, self.drawn = enabled, sys.stdout.isatty(), 0
        self.last: list[str] | None = None

    def show(self, lines: list[str]) -> None:
        if not self.enabled or lines == self.last:
            return
        if self.tty and self.drawn:
            sys.stdout.write(f"\x1b[{self.drawn}F\x1b[J")
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        self.drawn, self.last = len(lines), lines


def run_demo(nodes: int = 5, file_size: int = 64 * MiB, as_json: bool = False, keep: bool = False) -> int:
    if nodes < 2:
        print("ringmesh demo: needs at least 2 nodes", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="ringmesh-demo-"))
    screen = _Screen(not as_json)
    say = (lambda *a: None) if as_json else print
    summary: dict = {"nodes": nodes, "file_size_bytes": file_size, "ok": False}
    cluster = LocalCluster(root, nodes)
    try:
        say(f"starting {nodes} peers on loopback (config {cluster.config_path})")
        t0 = time.monotonic()
        cluster.start_all()
        summary["startup_s"] = round(time.monotonic() - t0, 3)
        wait_deadline = time.monotonic() + 30
        while not cluster.converged():
            if time.monotonic() > wait_deadline:
                raise TimeoutError("the manifests did not converge within 30 s of start-up")
            time.sleep(0.05)
        summary["membership_converged_s"] = round(time.monotonic() - t0, 3)

        model = root / "canonical_hex8_2p.pth"
        _write_random(model, file_size)
        publisher = cluster.nodes["node1"]
        say(f"publishing {model.name} ({file_size / MiB:.1f} MiB) on node1")
        t_put = time.monotonic()
        with publisher.client() as c:
            put = c.put(model, "model")
        summary["publish_s"] = round(time.monotonic() - t_put, 3)
        digest = put["digest"]

        deadline = time.monotonic() + 60 + file_size / (5 * MiB)
        known_at = held_at = None
        while True:
            now = time.monotonic()
            statuses, listings = cluster.query_all("status"), cluster.query_all("ls")
            lines = [f"{'peer':8} {'manifest':18} {'members':>7}  {'model':10}"]
            know = hold = 0
            for name in cluster.nodes:
                st, ls = statuses.get(name), listings.get(name)
                item = next((i for i in (ls or {}).get("items", []) if i["name"] == model.name), None)
                has = bool(item and item["digest"] == digest and name in item["holders"])
                know += bool(item and item["digest"] == digest)
                hold += has
                state = "held" if has else ("pulling" if st and st["transfers"] else ("known" if item else "-"))
                lines.append(
                    f"{name:8} {st['fingerprint'] if st else '?':18} {len(st['members']) if st else 0:>7}  {state:10}"
                )
            lines.append(f"elapsed {now - t_put:6.2f} s   version known on {know}/{nodes}   copies {hold}/{nodes}")
            screen.show(lines)
            if know == nodes and known_at is None:
                known_at = now - t_put
            if hold == nodes and held_at is None:
                held_at = now - t_put
            if held_at is not None and cluster.converged():
                break
            if now > deadline:
                raise TimeoutError(f"not every peer holds the model after {now - t_put:.1f} s")
            time.sleep(0.1)
        assert known_at is not None  # every peer that holds the version knows it
        summary["version_known_everywhere_s"] = round(known_at, 3)
        summary["copies_everywhere_s"] = round(held_at, 3)
        summary["manifests_identical_s"] = round(time.monotonic() - t_put, 3)
        bad = [
            n
            for n, nd in cluster.nodes.items()
            if hash_file(nd.data_dir / "files" / "model" / model.name, put["chunk_size_bytes"]) != digest
        ]
        summary["verified_copies"] = nodes - len(bad)
        summary["throughput_MBps"] = round((nodes - 1) * file_size / 1e6 / held_at, 1) if held_at else None
        codes = cluster.stop_all()
        summary["exit_codes"] = codes
        summary["ok"] = not bad and all(c == 0 for c in codes.values())
    except (TimeoutError, RuntimeError) as e:
        summary["error"] = str(e)
        for name, nd in cluster.nodes.items():
            print(f"--- {name} log ---\n{nd.log_tail()}", file=sys.stderr)
    finally:
        cluster.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if as_json:
        print(json.dumps(summary, sort_keys=True))
    else:
        _print_summary(summary, root if keep else None)
    return 0 if summary["ok"] else 1


def _print_summary(s: dict, kept: Path | None) -> None:
    print()
    if "error" in s:
        print(f"demo FAILED: {s['error']}")
        return
    print(f"{s['nodes']} peers; model of {s['file_size_bytes'] / MiB:.1f} MiB published on node1")
    print(f"  membership converged      {s['membership_converged_s']:8.2f} s after start")
    print(f"  version known everywhere  {s['version_known_everywhere_s']:8.2f} s after publish")
    print(
        f"  verified copy everywhere  {s['copies_everywhere_s']:8.2f} s after publish "
        f"({s['throughput_MBps']} MB/s delivered in all)"
    )
    print(f"  manifests identical       {s['manifests_identical_s']:8.2f} s after publish")
    print(
        f"  copies verified (xxh3-128): {s['verified_copies']}/{s['nodes']}; "
        f"exit codes: {sorted(set(s['exit_codes'].values()))}"
    )
    print("demo OK" if s["ok"] else "demo FAILED")
    if kept:
        print(f"data kept in {kept}")
