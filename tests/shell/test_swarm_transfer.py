"""Multi-source pulls between real peers: a file comes from 3 holders at once, byte-identical,
and a holder that corrupts chunks is caught, penalised, and the others finish the file."""

from __future__ import annotations

import filecmp
import os

from ringmesh.localcluster import LocalCluster, wait_for


def test_pull_from_three_holders_with_one_corrupting(tmp_path):
    roles = {f"node{i}": "training" for i in range(1, 5)}
    c = LocalCluster(tmp_path / "c", 4, gossip_interval=0.2, roles=roles)
    try:
        for name in ("node1", "node2", "node3"):
            c.start(name, env={"RINGMESH_TEST_CORRUPT_CHUNKS": "1"} if name == "node2" else None)
        for name in ("node1", "node2", "node3"):
            c.wait_ready(name)
        f = tmp_path / "hex8_2p.npz"
        f.write_bytes(os.urandom(24 * 1024 * 1024 + 17))  # 7 chunks of 4 MiB, the last short
        with c.nodes["node1"].client() as cl:
            put = cl.put(f, "npz")

        def holders():
            doc = c.nodes["node1"].query("ls") or {"items": []}
            return next((it["holders"] for it in doc["items"] if it["digest"] == put["digest"]), [])

        wait_for(lambda: sorted(holders()) == ["node1", "node2", "node3"], 60, what="three holders")
        c.start("node4")
        c.wait_ready("node4")
        wait_for(lambda: "node4" in holders(), 60, what="node4 to pull the file")
        assert filecmp.cmp(f, c.nodes["node4"].data_dir / "files" / "npz" / f.name, shallow=False)
        log = c.nodes["node4"].log_tail(200)
        assert "from node2 failed" in log and "failed verification" in log, log
        got = [line for line in log.splitlines() if "got npz/hex8_2p.npz" in line]
        assert got and "node1" in got[-1] and "node3" in got[-1], got
        assert "node2" not in got[-1].split(" from ")[-1], "the corrupting holder delivered nothing that counted"
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())
