"""Real `ringmesh serve` processes on loopback: files reach every peer byte-identical, a
SIGKILLed peer catches up from its persisted state, a wiped peer comes back as a new life."""

from __future__ import annotations

import filecmp
import os
import shutil
import signal
import subprocess
import sys

from ringmesh.ops.localcluster import wait_for

MiB = 1 << 20


def _random_file(path, size):
    path.write_bytes(os.urandom(size))
    return path


def _holders(cluster, name, item_name):
    doc = cluster.nodes[name].query("ls") or {"items": []}
    return next((it for it in doc["items"] if it["name"] == item_name), None)


def _everyone_holds(cluster, item_name, digest):
    def check():
        for name in cluster.running():
            it = _holders(cluster, name, item_name)
            if not it or it["digest"] != digest or sorted(it["holders"]) != sorted(cluster.running()):
                return False
        return True

    return check


def test_file_reaches_every_peer_and_a_killed_peer_catches_up(cluster, tmp_path):
    first = _random_file(tmp_path / "canonical_hex8_2p.pth", 9 * MiB + 123)  # 3 chunks, the last short
    with cluster.nodes["node1"].client() as c:
        put = c.put(first, "model")
    wait_for(_everyone_holds(cluster, first.name, put["digest"]), 30, what="every peer to hold the model")
    for name, nd in cluster.nodes.items():
        assert filecmp.cmp(first, nd.data_dir / "files" / "model" / first.name, shallow=False), name

    before = cluster.nodes["node3"].query("status")
    assert cluster.signal("node3", signal.SIGKILL) == -signal.SIGKILL

    second = _random_file(tmp_path / "hex8_2p.npz", 2 * MiB)
    with cluster.nodes["node2"].client() as c:
        put2 = c.put(second, "npz")
    cluster.start("node3")
    cluster.wait_ready("node3")
    wait_for(_everyone_holds(cluster, second.name, put2["digest"]), 30, what="node3 to catch up")
    wait_for(cluster.converged, 30, what="identical manifests")

    after = cluster.nodes["node3"].query("status")
    assert after["incarnation"] == before["incarnation"], "a restart with its disk is the same life"
    # It resumed from its persisted manifest: only the new file was fetched again.
    assert after["counters"].get("bytes_received", 0) == second.stat().st_size
    assert filecmp.cmp(second, cluster.nodes["node3"].data_dir / "files" / "npz" / second.name, shallow=False)


def test_peer_with_wiped_disk_returns_as_a_new_incarnation(cluster, tmp_path):
    f = _random_file(tmp_path / "canonical_sq8_2p.pth", 1 * MiB)
    with cluster.nodes["node1"].client() as c:
        put = c.put(f, "model")
    wait_for(_everyone_holds(cluster, f.name, put["digest"]), 30, what="the model everywhere")
    old = cluster.nodes["node2"].query("status")["incarnation"]

    cluster.signal("node2", signal.SIGKILL)
    shutil.rmtree(cluster.nodes["node2"].data_dir)
    cluster.start("node2")
    cluster.wait_ready("node2")

    def new_life_known_everywhere():
        docs = cluster.query_all("status")
        incs = {n: {m["name"]: m["incarnation"] for m in d["members"]}.get("node2") for n, d in docs.items() if d}
        return len(incs) == 3 and all(i is not None and i > old for i in incs.values())

    wait_for(new_life_known_everywhere, 30, what="node2's new incarnation everywhere")
    wait_for(_everyone_holds(cluster, f.name, put["digest"]), 30, what="node2 to fetch the model again")
    wait_for(cluster.converged, 30, what="identical manifests")


def test_put_rejects_bad_input_and_the_daemon_goes_on(cluster, tmp_path):
    f = _random_file(tmp_path / "ok.pth", 1000)
    env = {**os.environ}
    cli = [sys.executable, "-m", "ringmesh"]
    data = ["--data-dir", str(cluster.nodes["node1"].data_dir)]
    for args in (["--name", "../../etc/passwd"], ["--name", ".hidden"], ["--name", "a/b"]):
        r = subprocess.run(
            cli + ["put", str(f), "--type", "model", *args, *data], capture_output=True, text=True, env=env
        )
        assert r.returncode == 2 and "INVALID_ARGUMENT" in r.stderr, (args, r.stderr)
    r = subprocess.run(
        cli + ["put", str(tmp_path / "missing.pth"), "--type", "model", *data], capture_output=True, text=True
    )
    assert r.returncode == 2 and "not a regular file" in r.stderr
    r = subprocess.run(cli + ["status", "--data-dir", str(tmp_path / "nowhere")], capture_output=True, text=True)
    assert r.returncode == 2 and "no ringmesh daemon" in r.stderr
    assert cluster.nodes["node1"].query("status")["items"] == 0
    r = subprocess.run(cli + ["put", str(f), "--type", "model", "--json", *data], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (cluster.nodes["node1"].data_dir / "etc").exists()


def test_a_second_daemon_on_the_same_data_dir_is_refused(cluster):
    nd = cluster.nodes["node1"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringmesh",
            "serve",
            "--config",
            str(cluster.config_path),
            "--node",
            "node1",
            "--data-dir",
            str(nd.data_dir),
            "--listen",
            "127.0.0.1:1",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "another ringmesh daemon" in r.stderr
    assert nd.query("status") is not None
