"""A pull from a host nobody can dial (through a relay) against one from a public host, same run.

Real `ringmesh serve` peers on loopback, mutual TLS (relayed calls signed and checked):
  relay    backup, public: the NAT'd host's link goes to it
  nat      selfplay, `nat_blocked: true`, listening elsewhere than the file says (a direct dial fails)
  public   selfplay, public
  sink     training, also `nat_blocked` (so it is no relay itself): the only host that takes NPZ
           archives, so it pulls each from its one holder
An archive put on `nat` reaches `sink` only through a relay (`relay` or `public`: a reverse fetch,
two hops); one put on `public` comes directly (the sink dials out). Each figure is put -> the sink
holds it (recipe, chunks, verification, install), and the CPU seconds all four daemons spent
meanwhile. No link is shaped: this is the relay's cost in CPU and hops, not a link bound.

    .venv/bin/python bench/relay.py [--size 256MiB] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.swarm import parse_size  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster, free_ports, wait_for  # noqa: E402

NAMES = {"node1": "relay", "node2": "nat", "node3": "public", "node4": "sink"}
ROLES = {"node1": "backup", "node2": "selfplay", "node3": "selfplay", "node4": "training"}


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def pull(c: LocalCluster, source: str, path: Path) -> tuple[float, float]:
    pids = [nd.proc.pid for nd in c.nodes.values() if nd.proc]
    cpu0, t0 = cpu_seconds(pids), time.perf_counter()
    with c.nodes[source].client() as cl:
        digest = cl.put(path, "npz")["digest"]

    def held():
        ls = c.nodes["node4"].query("ls") or {"items": []}
        return any(i["digest"] == digest and "node4" in i["holders"] for i in ls["items"])

    wait_for(held, 600, interval=0.02, what="the sink holding it")
    return time.perf_counter() - t0, cpu_seconds(pids) - cpu0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="256MiB")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="rm-relay-") as tmp:
        root = Path(tmp)
        nat = ("node2", "node4")
        c = LocalCluster(root / "c", 4, roles=ROLES, tls=True, hosts={n: {"nat_blocked": True} for n in nat})
        elsewhere = dict(zip(nat, free_ports(2)))
        with c:
            for n in c.nodes:
                c.start(n, args=("--listen", f"127.0.0.1:{elsewhere[n]}") if n in elsewhere else ())
            for n in c.nodes:
                c.wait_ready(n, 30)
            wait_for(
                lambda: ((c.nodes["node2"].query("status") or {}).get("links") or {}).get("up"),
                30,
                what="the NAT'd host linked",
            )
            links = c.nodes["node2"].query("status")["links"]["up"]
            print(f"{size / 2**20:.0f} MiB per pull, TLS; the NAT'd host's links: {', '.join(links)}")
            results: dict[str, list[tuple[float, float]]] = {"nat": [], "public": []}
            for r in range(args.rounds):
                for who, node in (("nat", "node2"), ("public", "node3")):
                    path = root / f"{who}-{r}.npz"
                    with open(path, "wb") as f:
                        for _ in range(size // (1 << 20)):
                            f.write(os.urandom(1 << 20))
                        f.write(os.urandom(size % (1 << 20)))
                    results[who].append(pull(c, node, path))
                    path.unlink()
            for who, runs in results.items():
                for secs, cpu in runs:
                    print(
                        f"  from the {who:6} host: {secs:6.2f} s  {size / secs / 1e6:7.1f} MB/s  "
                        f"{cpu / (size / 2**30):5.1f} CPU s/GiB (all daemons)"
                    )
            best = {who: min(s for s, _ in runs) for who, runs in results.items()}
            cpu = {who: min(c_ for _, c_ in runs) for who, runs in results.items()}
            print(
                f"relayed / direct: throughput {best['public'] / best['nat']:.2f}, CPU {cpu['nat'] / cpu['public']:.2f}"
            )
            for n in ("node1", "node3"):
                counters = c.nodes[n].query("status")["counters"]
                carried = counters.get("relayed_bytes", 0) / 2**20
                print(f"{n} ({NAMES[n]}) relayed {carried:.0f} MiB in {counters.get('relayed_calls', 0)} calls")


if __name__ == "__main__":
    main()
