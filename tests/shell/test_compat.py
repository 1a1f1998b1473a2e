"""The operators' API against real running peers (no mocks): the synchronous twins
(`..._blocking`) that plain scripts call; tests/shell/test_compat_scripts.py runs the awaited
calls from real async scripts."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import threading
import time

import pytest

from ringmesh.api import compat
from ringmesh.api.client import ClientError
from ringmesh.ops.localcluster import wait_for


def _dd(cluster, name):
    return cluster.nodes[name].data_dir


def test_orchestrator_coordinator_and_reports(cluster, tmp_path):
    dd = _dd(cluster, "node1")
    orch = compat.get_sync_orchestrator(dd)
    assert orch is compat.get_sync_orchestrator(dd) and orch.initialize_blocking()
    st = orch.get_status()
    assert st["node"] == "node1" and st["games_synced"] == 0 and st["models_synced"] == 0

    npz = tmp_path / "hex8_2p.npz"
    npz.write_bytes(os.urandom(3 * 1024 * 1024))
    with cluster.nodes["node1"].client() as c:
        c.put(npz, "npz")
    stats = compat.DistributedSyncCoordinator.get_instance(dd).sync_training_data_blocking(
        config_key="hex8_2p", timeout=30
    )
    assert stats["files_synced"] == 1 and stats["bytes_transferred"] == 2 * npz.stat().st_size
    assert (stats.files_synced, stats.bytes_transferred, stats.items) == (
        1,
        2 * npz.stat().st_size,
        ["npz/hex8_2p.npz"],
    )

    status = compat.get_cluster_data_status(dd)
    (item,) = [it for it in status.report["items"] if it["item"] == "npz/hex8_2p.npz"]
    assert sorted(item["holders"]) == ["node1", "node2", "node3"] and item["hosts_behind"] == []
    assert list(status) == ["hex8_2p"] and status.node == "node1"
    assert status["hex8_2p"] == {
        "config_key": "hex8_2p",
        "game_count": 0,
        "age_hours": None,
        "streams": 0,
        "files": 1,
        "bytes": npz.stat().st_size,
        "newest_file_hlc": item["hlc"],
        "hosts_behind": [],
    }
    assert compat.get_sync_recommendations(dd) == []
    assert orch.sync_all_blocking()["recommendations"] == []

    ranked = compat.get_replication_targets("hex8_2p.npz", compat.DataType.CHECKPOINT, min_copies=2, data_dir=dd)
    assert [r["rank"] for r in ranked] == [1, 2, 0] and ranked[2]["reason"] == "enough copies elsewhere"

    copy = _dd(cluster, "node2") / "files" / "npz" / npz.name
    assert compat.verify_sync_integrity(npz, copy).is_valid
    bad = tmp_path / "bad.npz"
    bad.write_bytes(copy.read_bytes()[:-1] + b"\0")
    report = compat.verify_sync_integrity(npz, bad)
    assert not report.is_valid and "checksums differ" in report.errors[0]
    assert compat.compute_file_checksum(npz) == report.source_checksum
    orch.shutdown_blocking()
    assert orch._client is None and orch.get_status()["node"] == "node1", "reconnects on use"
    orch.shutdown_blocking()


def test_recommendations_and_priority_while_hosts_cannot_pull(cluster, tmp_path):
    dd = _dd(cluster, "node1")
    for n in ("node2", "node3"):
        cluster.signal(n, signal.SIGSTOP)
    try:
        model = tmp_path / "canonical_square8_2p.pth"
        model.write_bytes(os.urandom(2 * 1024 * 1024))
        with cluster.nodes["node1"].client() as c:
            c.put(model, "model")
        recs = compat.get_sync_recommendations(dd)
        assert {r["host"] for r in recs} == {"node2", "node3"} == {r.target for r in recs}
        assert all(r.source == "node1" and r.reason == r["reason"] and "not held" in r.reason for r in recs)
        assert all(
            r["sources"] == ["node1"]
            and r["bytes"] == model.stat().st_size
            and r["estimated_seconds"] > 0
            and r["priority"] == "normal"
            for r in recs
        )
        recs = compat.schedule_priority_sync_blocking("square8_2p", compat.SyncPriority.CRITICAL, data_dir=dd)
        assert {r["priority"] for r in recs} == {"critical"} and {r["config_key"] for r in recs} == {"square8_2p"}
    finally:
        for n in ("node2", "node3"):
            cluster.signal(n, signal.SIGCONT)
    wait_for(lambda: compat.get_sync_recommendations(dd) == [], 30, what="the model on every host")


def test_auto_sync_daemon_and_sqlite_check(cluster, tmp_path):
    d = compat.AutoSyncDaemon(compat.AutoSyncConfig(interval_seconds=0.1), _dd(cluster, "node1"))
    d.start_blocking()
    wait_for(lambda: d.rounds >= 3, 10, what="three auto-sync rounds")
    d.stop()
    assert not d.is_running() and d.last_error is None
    assert compat.create_ephemeral_sync_daemon(_dd(cluster, "node1")).config.interval_seconds == 5.0
    assert compat.SyncPriority is compat.TransferPriority and compat.SyncPriority.HIGH.label == "high"

    db = tmp_path / "selfplay.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE games (game_id TEXT PRIMARY KEY)")
        con.execute("INSERT INTO games VALUES ('g1')")
    assert compat.check_sqlite_integrity(db) == (True, ["ok"])
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    ok, messages = compat.check_sqlite_integrity(tmp_path / "junk.db")
    assert not ok and messages


def test_sync_command_line(cluster):
    import subprocess
    import sys

    dd = str(_dd(cluster, "node1"))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringmesh",
            "sync",
            "--config-key",
            "hex8_2p",
            "--priority",
            "critical",
            "--data-dir",
            dd,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and "hex8_2p at critical priority" in r.stdout, r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "ringmesh", "sync", "--data-dir", dd, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0 and '"priorities"' in r.stdout and '"hex8_2p": "critical"' in r.stdout


def test_awaited_calls_raise_without_a_peer_and_a_cancelled_wait_stops(tmp_path):
    with pytest.raises(ClientError):
        asyncio.run(compat.get_sync_orchestrator(tmp_path / "nobody").initialize())
    with pytest.raises(ClientError):
        asyncio.run(compat.DistributedSyncCoordinator.get_instance(tmp_path / "nobody").full_cluster_sync())
    started, ended = threading.Event(), threading.Event()

    def never_done(cancel):
        started.set()
        try:
            compat._wait(lambda: False, 60, "nothing", cancel)
        finally:
            ended.set()

    async def main():
        wait = asyncio.ensure_future(compat._off_loop(never_done, cancellable=True))
        deadline = time.monotonic() + 10
        while not started.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        wait.cancel()
        with pytest.raises(asyncio.CancelledError):
            await wait

    t0 = time.monotonic()
    asyncio.run(main())  # waits for the worker thread
    assert started.is_set() and ended.wait(10) and time.monotonic() - t0 < 10, "the worker stopped polling"
