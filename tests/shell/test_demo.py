"""`ringmesh demo`, the one-command first run: the whole job on six real peers, every check held."""

import json
import subprocess
import sys


def test_the_demo_loses_no_game_delivers_the_model_and_fails_over():
    r = subprocess.run(
        [sys.executable, "-m", "ringmesh", "demo", "--file-size", "8M", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s["ok"] and all(c["ok"] for c in s["checks"].values()), s["checks"]
    assert len(s["checks"]) == 6
    g = s["games"]
    assert g["lost"] == 0 and g["produced"] > 50
    spot = g["spot_first_life"]
    assert g["on_every_training_host"] == g["produced"] - spot["died_with_the_host"]  # all but the spot's last few
    assert min(spot["training_marks"]) >= spot["durable_reported"] > 0  # what it reported durable survived it
    assert g["publish_to_every_training_host_s"]["n"] == g["on_every_training_host"]
    assert sorted(s["model"]["hosts"]) == ["node1", "node2", "node3", "node4", "node5"]  # not the coordinator
    f = s["failover"]
    assert f["successor"] != f["killed"] and f["seconds"] > 0
    assert set(s["exit_codes"].values()) == {0}
