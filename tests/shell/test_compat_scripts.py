"""The operators' scripts, as they write them: `async def main()` awaiting the awaited calls
and reading the fields they read, run as a separate process (`python script.py`, import path
`ringmesh.api.compat` only, the peer found through RINGMESH_DATA_DIR) against real running peers."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import wait_for

REPO = Path(__file__).resolve().parents[2]
MODELS = ("canonical_hex8_2p.pth", "canonical_square8_2p.pth")

TRAINING_HOST_SCRIPT = """
import asyncio, json, sys, time
from ringmesh.api.compat import (AutoSyncConfig, AutoSyncDaemon, DataType, DistributedSyncCoordinator, SyncPriority,
                             check_sqlite_integrity, compute_file_checksum, create_ephemeral_sync_daemon,
                             get_cluster_data_status, get_replication_targets, get_sync_orchestrator,
                             get_sync_recommendations, schedule_priority_sync, verify_sync_integrity)


async def main():
    source_npz, local_npz, games_db = sys.argv[1:4]
    orchestrator = get_sync_orchestrator()
    await orchestrator.initialize()
    await orchestrator.sync_all()

    coordinator = DistributedSyncCoordinator.get_instance()
    data = await coordinator.sync_training_data(target_node="node2", config_key="square8_2p")
    models = await coordinator.sync_models(model_ids=["canonical_hex8_2p.pth", "canonical_square8_2p.pth"],
                                           target_nodes=["node2", "node3"])
    full = await coordinator.full_cluster_sync()
    print(f"cluster sync: {full.files_synced} files, {full.bytes_transferred} bytes")

    status = orchestrator.get_status()
    print(f"games synced: {status['games_synced']}, models synced: {status['models_synced']}")
    configs = {}
    for config_key, info in get_cluster_data_status().items():
        print(f"{config_key}: {info['game_count']} games, newest {info['age_hours']} h old")
        configs[config_key] = {"age_hours": info["age_hours"], "game_count": info["game_count"]}
    recs = [[rec.source, rec.target, rec.reason] for rec in get_sync_recommendations()]
    plan = await schedule_priority_sync(config_key="hex8_2p", priority=SyncPriority.HIGH)
    targets = get_replication_targets(data_id="canonical_hex8_2p.pth", data_type=DataType.MODEL, min_copies=2)

    report = verify_sync_integrity(source_path=source_npz, dest_path=local_npz)
    db_ok, db_messages = check_sqlite_integrity(games_db)

    daemon = AutoSyncDaemon(config=AutoSyncConfig(interval_seconds=0.2, strategy="hybrid"))
    await daemon.start()
    deadline = time.monotonic() + 30
    while daemon.rounds < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    rounds, running = daemon.rounds, daemon.is_running()
    daemon.stop()
    ephemeral = create_ephemeral_sync_daemon()
    await orchestrator.shutdown()

    print("RESULT " + json.dumps({
        "node": status["node"], "games_synced": status["games_synced"], "models_synced": status["models_synced"],
        "configs": configs, "recs": recs, "plan": [[r.source, r.target] for r in plan],
        "data": [data.files_synced, data.bytes_transferred], "models": [models.files_synced, models.bytes_transferred],
        "full": [full.files_synced, full.bytes_transferred], "targets": sorted(t["host"] for t in targets),
        "integrity": [report.is_valid, report.errors], "checksum": compute_file_checksum(local_npz),
        "db": [db_ok, db_messages], "daemon": [rounds, running, daemon.last_error],
        "ephemeral": [ephemeral.config.interval_seconds, ephemeral.config.strategy],
    }))


asyncio.run(main())
"""

PLAIN_SCRIPT = """
import json
from ringmesh.api.compat import DistributedSyncCoordinator, get_cluster_data_status, get_sync_orchestrator

orchestrator = get_sync_orchestrator()
orchestrator.initialize_blocking()
full = DistributedSyncCoordinator.get_instance().full_cluster_sync_blocking(timeout=60)
status = orchestrator.get_status()
hex8 = get_cluster_data_status()["hex8_2p"]
orchestrator.shutdown_blocking()
print("RESULT " + json.dumps({"full": [full.files_synced, full.bytes_transferred],
                              "games_synced": status["games_synced"], "game_count": hex8["game_count"]}))
"""

# On the publishing host while every other host is stopped: the plan, a priority raised, and a
# wait that lasts until the test lets the hosts go on; a ticker shows the loop runs meanwhile.
WAITING_SCRIPT = """
import asyncio, json, sys, time
from ringmesh.api.compat import (DistributedSyncCoordinator, SyncPriority, get_sync_recommendations,
                                 schedule_priority_sync)


async def main():
    model = sys.argv[1]
    recs = get_sync_recommendations()
    print("RECS " + json.dumps([[r.source, r.target, r.reason, r["priority"]] for r in recs]), flush=True)
    plan = await schedule_priority_sync(config_key="square8_2p", priority=SyncPriority.CRITICAL)
    coordinator = DistributedSyncCoordinator.get_instance()
    wait = asyncio.ensure_future(coordinator.sync_models(model_ids=[model], timeout=120))
    ticks = 0
    deadline = time.monotonic() + 150
    while not wait.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        ticks += 1
        if ticks == 10:
            print("WAITING", flush=True)
    stats = await wait
    print("RESULT " + json.dumps({"plan": [[r.target, r.priority, r.config_key] for r in plan], "ticks": ticks,
                                  "stats": [stats.files_synced, stats.bytes_transferred, stats.items]}), flush=True)


asyncio.run(main())
"""


def _env(data_dir) -> dict[str, str]:
    return {
        **os.environ,
        "RINGMESH_DATA_DIR": str(data_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def _script(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _result(stdout: str) -> dict:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def _run(tmp_path, name: str, text: str, data_dir, *args: str, timeout: float = 180) -> tuple[dict, str]:
    r = subprocess.run(
        [sys.executable, str(_script(tmp_path, name, text)), *map(str, args)],
        env=_env(data_dir),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return _result(r.stdout), r.stdout


def _games_held(nd) -> int:
    st = nd.query("status")
    return sum(st["games"]["streams"].values()) if st else -1


def test_a_training_hosts_async_script_as_written(cluster, tmp_path):
    n1, n2 = cluster.nodes["node1"], cluster.nodes["node2"]
    wait_for(cluster.converged, 30, what="a settled cluster")
    source = tmp_path / "selfplay_hex8_2p.db"
    selfplay.generate_games(source, 5, config_key="hex8_2p", seed=7, moves=(20, 24))
    records, _ = gamedb.read_completed_games(source)
    npz = tmp_path / "square8_2p.npz"
    npz.write_bytes(os.urandom(1024 * 1024))
    sizes = {}
    with n1.client() as c:
        assert c.publish_games("hex8_2p", records) == [1, 2, 3, 4, 5]
        npz_digest = c.put(npz, "npz")["digest"]
        for i, name in enumerate(MODELS):
            (tmp_path / name).write_bytes(os.urandom((i + 1) * 512 * 1024))
            c.put(tmp_path / name, "model")
            sizes[name] = (i + 1) * 512 * 1024
    # game streams are not files: the coordinator's waits do not cover them, so wait here
    wait_for(lambda: _games_held(n2) == 5, 60, what="node1's 5 games on node2")

    local_npz = n2.data_dir / "files" / "npz" / npz.name
    games_db = n2.data_dir / "games" / "hex8_2p.db"
    out, stdout = _run(
        tmp_path,
        "training_host.py",
        TRAINING_HOST_SCRIPT,
        n2.data_dir,
        n1.data_dir / "files" / "npz" / npz.name,
        local_npz,
        games_db,
    )
    assert "games synced: 5, models synced: 2" in stdout
    assert out["node"] == "node2" and out["games_synced"] == 5 and out["models_synced"] == 2

    assert set(out["configs"]) == {"hex8_2p", "square8_2p"}, out["configs"]
    hex8 = out["configs"]["hex8_2p"]
    assert hex8["game_count"] == 5 and hex8["age_hours"] is not None and 0 <= hex8["age_hours"] < 0.5, hex8
    assert out["configs"]["square8_2p"] == {"game_count": 0, "age_hours": None}, "files only, no games"

    npz_size, model_bytes = npz.stat().st_size, sum(sizes.values())
    assert out["data"] == [1, 2 * npz_size]  # three copies: two made by the mesh
    assert out["models"] == [2, 2 * model_bytes]
    assert out["full"] == [3, 2 * (npz_size + model_bytes)]
    assert out["recs"] == [] and out["plan"] == [], "everything in place: nothing to recommend"
    assert out["targets"] == ["node1", "node2", "node3"]
    assert out["integrity"] == [True, []] and out["db"] == [True, ["ok"]]
    assert out["daemon"][0] >= 2 and out["daemon"][1:] == [True, None]
    assert out["ephemeral"] == [5.0, "ephemeral"]
    assert out["checksum"] == npz_digest, "the ringmesh digest of the file"

    plain, _ = _run(tmp_path, "plain.py", PLAIN_SCRIPT, n2.data_dir)
    assert plain == {"full": out["full"], "games_synced": 5, "game_count": 5}


def _lines(proc: subprocess.Popen) -> queue.Queue:
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:  # ends when the script exits
            q.put(line)
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _next_line(q: queue.Queue, prefix: str, deadline: float, seen: list[str]) -> str:
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {prefix!r} line in time; output so far: {seen}"
        try:
            line = q.get(timeout=left)
        except queue.Empty:
            continue
        assert line is not None, f"the script exited before printing {prefix!r}: {seen}"
        seen.append(line)
        if line.startswith(prefix):
            return line


def test_awaited_wait_leaves_the_event_loop_running(cluster, tmp_path):
    """While `await coordinator.sync_models(...)` waits for hosts that are stopped, the script's
    other task keeps ticking: the wait runs off the event loop."""
    n1 = cluster.nodes["node1"]
    wait_for(cluster.converged, 30, what="a settled cluster")
    model = tmp_path / "canonical_square8_2p.pth"
    model.write_bytes(os.urandom(2 * 1024 * 1024))
    stopped = ("node2", "node3")
    for n in stopped:
        cluster.signal(n, signal.SIGSTOP)
    proc: subprocess.Popen | None = None
    try:
        with n1.client() as c:
            c.put(model, "model")
        proc = subprocess.Popen(
            [sys.executable, str(_script(tmp_path, "waiting.py", WAITING_SCRIPT)), model.name],
            env=_env(n1.data_dir),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        q, seen = _lines(proc), []
        deadline = time.monotonic() + 60
        recs = json.loads(_next_line(q, "RECS ", deadline, seen)[len("RECS ") :])
        assert sorted(r[1] for r in recs) == ["node2", "node3"], recs
        assert all(
            r[0] == "node1" and r[2].startswith("model belongs on training hosts") and r[3] == "normal" for r in recs
        ), recs
        _next_line(q, "WAITING", deadline, seen)
        assert proc.poll() is None, "the wait is still on: the hosts are stopped"
        for n in stopped:
            cluster.signal(n, signal.SIGCONT)
        stopped = ()
        _next_line(q, "RESULT ", time.monotonic() + 120, seen)
        assert proc.wait(timeout=30) == 0, "".join(seen)
    finally:
        for n in stopped:
            cluster.signal(n, signal.SIGCONT)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
    out = _result("".join(seen))
    assert sorted(out["plan"]) == [["node2", "critical", "square8_2p"], ["node3", "critical", "square8_2p"]]
    assert out["stats"] == [1, 2 * model.stat().st_size, [f"model/{model.name}"]]
    assert out["ticks"] >= 10
