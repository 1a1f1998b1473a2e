"""`ringmesh demo`, the one-command first run, converges and exits 0."""

import json
import subprocess
import sys


def test_demo_converges_and_exits_cleanly():
    r = subprocess.run(
        [sys.executable, "-m", "ringmesh", "demo", "--nodes", "3", "--file-size", "6M", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)
    assert s["ok"] and s["verified_copies"] == 3
    assert s["exit_codes"] == {"node1": 0, "node2": 0, "node3": 0}
    assert s["version_known_everywhere_s"] <= s["copies_everywhere_s"] <= s["manifests_identical_s"]


def test_demo_refuses_a_cluster_of_one():
    r = subprocess.run(
        [sys.executable, "-m", "ringmesh", "demo", "--nodes", "1"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 2 and "at least 2 nodes" in r.stderr
