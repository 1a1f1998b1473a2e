"""Multi-source pulls between real peers: a file comes from 3 holders at once, byte-identical,
and a holder that corrupts chunks is caught, penalised, and the others finish the file."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess

import pytest

from ringmesh.node.files.throttle import EGRESS_ENV, INGRESS_ENV
from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.testing import faults


def test_pull_from_three_holders_with_one_corrupting(tmp_path):
    roles = {f"node{i}": "training" for i in range(1, 5)}
    c = LocalCluster(tmp_path / "c", 4, gossip_interval=0.2, roles=roles)
    try:
        for name in ("node1", "node2", "node3"):
            c.start(name, launcher=faults.launcher("lying-holder") if name == "node2" else ("-m", "ringmesh"))
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
        assert _status(c, "node4")["counters"]["sources_distrusted"] == 1  # asked once, then left alone
        assert "not asked for it again until it advertises its copy anew" in log
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


CHUNK = 4 * 1024 * 1024


def _status(c: LocalCluster, name: str) -> dict:
    return c.nodes[name].query("status") or {}


def _served(c: LocalCluster, name: str) -> int:
    return _status(c, name).get("counters", {}).get("bytes_served", 0)


def _holders(c: LocalCluster, asker: str, digest: str) -> list[str]:
    doc = c.nodes[asker].query("ls") or {"items": []}
    return next((it["holders"] for it in doc["items"] if it["digest"] == digest), [])


def test_a_receiver_killed_halfway_resumes_without_fetching_verified_chunks_again(tmp_path):
    roles = {"node1": "training", "node2": "training"}
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=roles)
    try:
        c.start("node1")
        c.wait_ready("node1")
        f = tmp_path / "hex8_2p.npz"
        f.write_bytes(os.urandom(24 * CHUNK + 5))  # 25 chunks, the last 5 bytes
        with c.nodes["node1"].client() as cl:
            put = cl.put(f, "npz")
        # a slow receiver (16 MB/s in), so that it can be caught in the middle
        c.start("node2", env={INGRESS_ENV: str(16_000_000)})
        c.wait_ready("node2")

        def verified() -> int:
            running = _status(c, "node2").get("transfers", [])
            return max((t.get("chunks_verified", 0) for t in running), default=0)

        seen = wait_for(lambda: (n := verified()) >= 12 and n, 60, what="node2 halfway")
        assert c.signal("node2", signal.SIGKILL) == -signal.SIGKILL
        c.start("node2")  # no limit this time
        c.wait_ready("node2")
        wait_for(lambda: "node2" in _holders(c, "node1", put["digest"]), 60, what="node2 to finish")
        assert filecmp.cmp(f, c.nodes["node2"].data_dir / "files" / "npz" / f.name, shallow=False)
        counters = _status(c, "node2")["counters"]
        size = f.stat().st_size
        # the second life found at least what the first had verified, and fetched only the rest
        assert counters["bytes_resumed"] > (seen - 1) * CHUNK  # (one of them may be the 5-byte last chunk)
        assert counters["bytes_received"] + counters["bytes_resumed"] == size
        # across both lives the holder sent the file once, plus at most the chunks that were in
        # flight at the kill (4 per source); without resuming it would be size + seen chunks
        assert _served(c, "node1") <= size + 4 * CHUNK < size + seen * CHUNK
        assert not list((c.nodes["node2"].data_dir / "tmp").glob("*.part")), "partial file removed once installed"
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def test_peers_in_the_middle_of_a_version_serve_each_other(tmp_path):
    roles = {f"node{i}": "training" for i in range(1, 4)}
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=roles)
    try:
        c.start("node1", env={EGRESS_ENV: str(20_000_000)})  # the publisher's uplink: 20 MB/s
        c.wait_ready("node1")
        f = tmp_path / "hex8_2p.npz"
        f.write_bytes(os.urandom(20 * CHUNK))
        with c.nodes["node1"].client() as cl:
            put = cl.put(f, "npz")
        for name in ("node2", "node3"):
            c.start(name)
        served_mid_pull = set()

        def both_hold() -> bool:
            for name in ("node2", "node3"):
                st = _status(c, name)
                if st.get("transfers") and st.get("counters", {}).get("bytes_served", 0) > 0:
                    served_mid_pull.add(name)
            return {"node2", "node3"} <= set(_holders(c, "node1", put["digest"]))

        wait_for(both_hold, 90, interval=0.1, what="node2 and node3 to hold the file")
        for name in ("node2", "node3"):
            assert filecmp.cmp(f, c.nodes[name].data_dir / "files" / "npz" / f.name, shallow=False)
        size = f.stat().st_size
        # the receivers swapped chunks while both were pulling, so the publisher sent well under
        # two copies (alone it would send exactly two)
        assert served_mid_pull, "no receiver served a chunk while it was still pulling"
        assert _served(c, "node2") + _served(c, "node3") > 0
        assert _served(c, "node1") < 1.6 * size
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def _mount_tmpfs(path, size: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")


def test_a_destination_that_fills_up_aborts_cleanly_and_the_pull_succeeds_once_there_is_room(tmp_path):
    models = tmp_path / "models"
    _mount_tmpfs(models, "8m")
    roles = {"node1": "training", "node2": "training"}
    c = LocalCluster(
        tmp_path / "c", 2, gossip_interval=0.2, roles=roles, hosts={"node2": {"paths": {"npz": str(models)}}}
    )
    try:
        (models / "hex8_2p.npz").write_bytes(b"the previous version")
        c.start_all()
        f = tmp_path / "hex8_2p.npz"
        f.write_bytes(os.urandom(3 * CHUNK))  # 12 MiB into an 8 MiB file system
        with c.nodes["node1"].client() as cl:
            put = cl.put(f, "npz")
        wait_for(
            lambda: _status(c, "node2").get("counters", {}).get("transfers_disk_full", 0) >= 1,
            60,
            what="node2 to hit the full disk",
        )
        # nothing half-written at the destination, the old version intact, the daemon up
        assert sorted(p.name for p in models.iterdir()) == ["hex8_2p.npz"]
        assert (models / "hex8_2p.npz").read_bytes() == b"the previous version"
        assert c.nodes["node2"].proc.poll() is None
        subprocess.run(["mount", "-o", "remount,size=64m", str(models)], check=True)
        wait_for(lambda: "node2" in _holders(c, "node1", put["digest"]), 120, what="node2 to retry and finish")
        assert filecmp.cmp(f, models / f.name, shallow=False)
        assert sorted(p.name for p in models.iterdir()) == ["hex8_2p.npz"]
        assert not list((c.nodes["node2"].data_dir / "tmp").glob("*.part"))
    finally:
        codes = c.stop_all()
        subprocess.run(["umount", str(models)])
        assert all(code in (0, None) for code in codes.values())
