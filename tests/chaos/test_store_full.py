"""A full disk under a peer's manifest store, reduced to its smallest case (3 peers on loopback,
one data dir on a 8 MiB tmpfs): while the disk is full, another host publishes a model; once the
space is back, the peer must pull it, and its log must show no internal error.

The bug this pins (found by the chaos suite): `Daemon._interpret` persisted a step's manifest
changes first and, when `Store.apply` raised SQLITE_FULL, dropped the step's other effects — its
StartTransfer among them — while the core already counted the pull as running, so the version
was never pulled until a restart. Now the write is retried until it lands and the host pauses
meanwhile (health NOT_SERVING, `status.paused` says why). Root needed (mount)."""

from __future__ import annotations

import os
import subprocess

import pytest

from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.testing.netlab import available

from .scenarios import fill

REASON = available(("mount",))
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(120)]


def test_a_version_learned_while_the_store_is_full_is_pulled_once_there_is_room(tmp_path):
    c = LocalCluster(
        tmp_path / "c", 3, gossip_interval=0.2, roles={"node1": "training", "node2": "training", "node3": "selfplay"}
    )
    dd = c.nodes["node2"].data_dir
    dd.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(dd)], check=True, timeout=20)
    try:
        c.start_all()
        wait_for(c.converged, 30, what="a settled cluster")
        filler = dd / "filler.bin"
        fill(filler)
        model = tmp_path / "canonical_sq8_2p.pth"
        model.write_bytes(os.urandom(1 << 20))
        with c.nodes["node1"].client() as cl:
            digest = cl.put(model, "model")["digest"]

        def learned():  # node2 has the version in its manifest (the step that failed to persist it)
            doc = c.nodes["node2"].query("ls") or {}
            return any(it["digest"] == digest for it in doc.get("items", []))

        wait_for(learned, 20, what="node2 to learn of the new version")
        wait_for(
            lambda: (c.nodes["node2"].query("status") or {}).get("paused"),
            20,
            what="node2 to report that it pauses for a full disk",
        )
        filler.unlink()
        held = dd / "files" / "model" / model.name
        wait_for(held.exists, 15, what="node2 to pull the version once there is room")
        log = c.nodes["node2"].log_path.read_text()
        assert "internal error" not in log and "resuming" in log, log[-3000:]
        assert not c.nodes["node2"].query("status")["paused"]
    finally:
        c.stop_all()
        subprocess.run(["umount", "-l", str(dd)], capture_output=True, timeout=20)
