"""Scheduled external backup: the leader alone runs real rsync on schedule and records it."""

from __future__ import annotations

import filecmp
import os
import shutil
import signal

import pytest

from ringmesh.ops.localcluster import LocalCluster, wait_for

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed (.ci/run installs it)")


def test_the_leader_alone_backs_up_on_schedule(tmp_path):
    target = tmp_path / "backups" / "ringrift"
    c = LocalCluster(
        tmp_path / "c",
        3,
        gossip_interval=0.2,
        roles={f"node{i}": "training" for i in (1, 2, 3)},
        routing={"allowed_external_storage": [{"host": "localhost", "path": str(target), "schedule": "@every 1s"}]},
    )
    try:
        c.start_all()
        f = tmp_path / "canonical_hex8_2p.pth"
        f.write_bytes(os.urandom(300_000))
        with c.nodes["node1"].client() as cl:
            cl.put(f, "model")

        def recorded():
            for name in c.nodes:
                st = c.nodes[name].query("status")
                run = (st or {}).get("backups", {}).get("backup/0")
                if run and run["ok"] and (target / "model" / f.name).exists():
                    return st, run
            return None

        st, run = wait_for(recorded, 30, what="a recorded backup")
        assert filecmp.cmp(f, target / "model" / f.name, shallow=False)
        assert run["leader"] == st["leader"] and run["term"] <= st["term"] and run["target"] == f"localhost:{target}"
        counts = {n: c.nodes[n].query("status")["counters"].get("backups_ok", 0) for n in c.nodes}
        assert counts[run["leader"]] >= 1
        assert all(v == 0 for n, v in counts.items() if n != run["leader"]), counts

        # A new leader takes the job over: kill this one and wait for a run in a higher term.
        c.signal(run["leader"], signal.SIGKILL)
        rest = [n for n in c.nodes if n != run["leader"]]

        def taken_over():
            for n in rest:
                r = (c.nodes[n].query("status") or {}).get("backups", {}).get("backup/0")
                if r and r["term"] > run["term"] and r["ok"]:
                    return r
            return None

        assert wait_for(taken_over, 30, what="the new leader's backup")["leader"] in rest
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())
