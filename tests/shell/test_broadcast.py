"""The leader's broadcast between real processes: `ringmesh put --broadcast` on one host, every
eligible host ends up with the file byte-identical, and `status` on the leader reports delivery
per host and the excluded host with its reason."""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys

import pytest

from ringmesh.api.mesh_client import MeshClient
from ringmesh.core.router import EXCLUDED
from ringmesh.ops.localcluster import LocalCluster, wait_for

from .conftest import serving

MiB = 1 << 20
ELIGIBLE = ("node1", "node2", "node3")


@pytest.fixture
def four(tmp_path):
    c = LocalCluster(tmp_path / "c4", 4, gossip_interval=0.2, routing={"exclude_from_sync": ["node4"]})
    with serving(c):
        yield c


def _ringmesh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ringmesh", *args], capture_output=True, text=True, timeout=60)


def _leader(cluster):
    """The leader every host reports, once they all agree and it holds its lease."""
    docs = [cluster.nodes[n].query("status") for n in cluster.nodes]
    if any(d is None for d in docs) or len({d["leader"] for d in docs}) != 1:
        return None
    leader = docs[0]["leader"]
    st = cluster.nodes[leader].query("status") if leader else None
    return leader if st and st["election"]["is_leader"] else None


def test_put_broadcast_reaches_every_eligible_host_and_status_reports_it(four, tmp_path):
    leader = wait_for(lambda: _leader(four), 30, what="a leader known to all")
    publisher = next(n for n in ELIGIBLE if n != leader)  # the directive has to travel
    model = tmp_path / "canonical_hex8_2p.pth"
    model.write_bytes(os.urandom(9 * MiB + 77))
    r = _ringmesh(
        "put", str(model), "--type", "model", "--broadcast", "--json", "--data-dir", str(four.nodes[publisher].data_dir)
    )
    assert r.returncode == 0, r.stderr
    digest = json.loads(r.stdout)["digest"]

    def delivered():
        return all((four.nodes[n].data_dir / "files" / "model" / model.name).exists() for n in ELIGIBLE)

    wait_for(delivered, 60, what="every eligible host to hold the model")
    for n in ELIGIBLE:
        assert filecmp.cmp(model, four.nodes[n].data_dir / "files" / "model" / model.name, shallow=False), n

    def reported():
        st = four.nodes[leader].query("status") or {}
        entries = [b for b in st.get("broadcasts", []) if b["item"] == f"model/{model.name}"]
        return entries[0] if entries and entries[0]["state"] == "delivered" else None

    entry = wait_for(reported, 30, what="the leader to report the broadcast delivered")
    term = four.nodes[leader].query("status")["term"]
    assert (entry["digest"], entry["leader"], entry["term"], entry["valid"]) == (digest, leader, term, True)
    assert entry["hosts"] == {n: "delivered" for n in ELIGIBLE}
    assert entry["ineligible"] == {"node4": EXCLUDED}
    assert (entry["delivered"], entry["eligible"]) == (3, 3)
    assert not (four.nodes["node4"].data_dir / "files" / "model" / model.name).exists()
    assert four.nodes[leader].query("status")["broadcast_stats"]["directives_issued"] == 1

    text = _ringmesh("status", "--data-dir", str(four.nodes[leader].data_dir))
    assert text.returncode == 0, text.stderr
    assert f"broadcast model/{model.name} {digest[:12]} (term {term} by {leader}): 3/3 delivered" in text.stdout
    assert f"not eligible: {EXCLUDED}" in text.stdout
    out = json.loads(_ringmesh("status", "--json", "--data-dir", str(four.nodes[leader].data_dir)).stdout)
    assert out["broadcasts"][0]["hosts"] == {n: "delivered" for n in ELIGIBLE}

    # a newer version, promoted through the Python client from another host, replaces the broadcast
    model.write_bytes(os.urandom(MiB))
    with MeshClient(four.nodes[leader].data_dir) as mesh:
        digest2 = mesh.publish_file(model, "model", broadcast=True)["digest"]

    def replaced():
        entry = reported()
        return entry if entry and entry["digest"] == digest2 else None

    entry = wait_for(replaced, 60, what="the new version delivered")
    assert entry["hosts"] == {n: "delivered" for n in ELIGIBLE} and entry["term"] == term
    for n in ELIGIBLE:
        assert filecmp.cmp(model, four.nodes[n].data_dir / "files" / "model" / model.name, shallow=False), n
