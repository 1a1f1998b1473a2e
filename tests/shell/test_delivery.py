"""`ringmesh put --wait` and `ringmesh get [--wait]` on real peers (loopback), as a person runs them."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

from ringmesh.ops.localcluster import LocalCluster, wait_for
from tests.shell.conftest import serving

MiB = 1 << 20


def cli(c: LocalCluster, node: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ringmesh", *args, "--data-dir", str(c.nodes[node].data_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_put_wait_returns_once_every_placed_host_holds_it(tmp_path):
    roles = {"node1": "training", "node2": "selfplay", "node3": "training"}
    with serving(LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=roles)) as c:
        f = tmp_path / "canonical_hex8_2p.pth"
        f.write_bytes(os.urandom(9 * MiB))
        r = cli(c, "node1", "put", str(f), "--type", "model", "--wait", "--timeout", "60", "--json")
        assert r.returncode == 0, r.stderr + r.stdout
        doc = json.loads(r.stdout)
        d = doc["delivery"]
        assert d["done"] and sorted(d["hosts"]) == ["node1", "node2", "node3"] and d["missing"] == {}
        for n in ("node2", "node3"):  # held when the command returned, not later
            assert filecmp.cmp(f, c.nodes[n].data_dir / "files" / "model" / f.name, shallow=False)


def test_put_wait_names_the_hosts_still_missing_and_why(tmp_path):
    roles = {"node1": "training", "node2": "training", "node3": "training"}
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=roles)
    try:
        for n in ("node1", "node2"):
            c.start(n)
        for n in ("node1", "node2"):
            c.wait_ready(n)
        f = tmp_path / "canonical_hex8_2p.pth"
        f.write_bytes(os.urandom(MiB))
        r = cli(c, "node1", "put", str(f), "--type", "model", "--wait", "--timeout", "3")
        assert r.returncode == 1, r.stderr + r.stdout
        assert "2/3 hosts" in r.stderr and "node3:" in r.stderr, r.stderr
        assert "node2:" not in r.stderr
    finally:
        c.stop_all()


def test_get_pulls_a_version_not_placed_here_and_wait_returns_when_it_is_held(tmp_path):
    roles = {"node1": "training", "node2": "selfplay"}
    with serving(LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=roles)) as c:
        f = tmp_path / "hex8_2p.npz"
        f.write_bytes(os.urandom(6 * MiB))
        with c.nodes["node1"].client() as cl:
            cl.put(f, "npz")

        def known():
            ls = c.nodes["node2"].query("ls") or {"items": []}
            return any(it["name"] == f.name for it in ls["items"])

        wait_for(known, 30, what="node2 to know of the npz")
        path = c.nodes["node2"].data_dir / "files" / "npz" / f.name
        assert not path.exists()  # npz files are for training hosts
        r = cli(c, "node2", "get", "npz/hex8_2p.npz", "--wait", "--timeout", "60")
        assert r.returncode == 0, r.stderr + r.stdout
        assert "held here" in r.stdout and str(path) in r.stdout
        assert filecmp.cmp(f, path, shallow=False)
        again = cli(c, "node2", "get", "npz/hex8_2p.npz")
        assert again.returncode == 0 and "held here" in again.stdout
        unknown = cli(c, "node2", "get", "npz/nothing.npz")
        assert unknown.returncode == 2 and "no item npz/nothing.npz" in unknown.stderr, unknown.stderr
        bad = cli(c, "node2", "get", "npz/../../etc/passwd")
        assert bad.returncode == 2, bad.stderr
