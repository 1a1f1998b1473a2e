"""Running a peer for real: one daemon per data dir (the refusal names the holder's pid; a
SIGKILLed daemon's lock never blocks a restart), systemd readiness, health NOT_SERVING while
draining, `ringmesh doctor` failing on a peer that is down, and the deploy/ example config."""

from __future__ import annotations

import configparser
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ringmesh.node.games import gamedb
from ringmesh.node.state import holder
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import LocalCluster, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ringmesh"]


def _pid_in_lock(data_dir: Path) -> int | None:
    text = (data_dir / "lock").read_text().strip()
    return int(text) if text else None


def test_one_daemon_per_data_dir_and_a_killed_daemons_lock_is_not_stale(tmp_path):
    c = LocalCluster(tmp_path / "c", 1, gossip_interval=0.2)
    nd = c.nodes["node1"]
    try:
        c.start_all()
        pid = nd.proc.pid
        assert _pid_in_lock(nd.data_dir) == pid and holder(nd.data_dir) == pid
        r = subprocess.run(
            CLI
            + [
                "serve",
                "--config",
                str(c.config_path),
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
        assert r.returncode == 2
        assert f"another ringmesh daemon is running on this data dir (pid {pid} holds" in r.stderr, r.stderr
        assert nd.query("status") is not None and _pid_in_lock(nd.data_dir) == pid  # the refusal wrote nothing

        assert c.signal("node1", signal.SIGKILL) == -signal.SIGKILL
        assert _pid_in_lock(nd.data_dir) == pid  # a dead pid stays in the file ...
        assert holder(nd.data_dir) is None  # ... but the kernel dropped the lock with the process
        c.start("node1")
        c.wait_ready("node1", timeout=30)
        assert _pid_in_lock(nd.data_dir) == nd.proc.pid != pid
        assert c.signal("node1", signal.SIGTERM) == 0
        assert holder(nd.data_dir) is None and _pid_in_lock(nd.data_dir) is None  # a clean stop clears it
    finally:
        c.stop_all()


def test_doctor_fails_on_a_peer_that_is_down_and_health_is_not_serving_while_draining(tmp_path):
    """node2 never runs: node1's games cannot become durable, so its drain uses the notice."""
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, own={"drain_notice_seconds": 3})
    nd = c.nodes["node1"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(30)
    try:
        c.start("node1", env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        c.wait_ready("node1")
        assert b"READY=1" in notify.recv(4096)  # systemd Type=notify: ready once serving

        r = subprocess.run(
            CLI
            + [
                "doctor",
                "--config",
                str(c.config_path),
                "--node",
                "node1",
                "--data-dir",
                str(nd.data_dir),
                "--deadline",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 1, r.stdout + r.stderr
        fail = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")]
        assert (
            len(fail) == 1
            and "peer node2" in fail[0]
            and c.nodes["node2"].address in fail[0]
            and "unreachable" in fail[0]
        ), r.stdout
        assert r.stdout.splitlines()[-1].startswith("doctor: node1: 1 check(s) FAILED")

        source = tmp_path / "selfplay.db"
        selfplay.generate_games(source, 1, config_key="hex8_2p", seed=2, moves=(20, 21))
        records, _ = gamedb.read_completed_games(source)
        with nd.client() as cl:
            cl.publish_games("hex8_2p", records)

        def health() -> str:
            with grpc.insecure_channel(nd.address) as ch:
                try:
                    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.RpcError as e:
                    return e.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

        assert health() == "SERVING"
        nd.proc.send_signal(signal.SIGTERM)
        assert b"STOPPING=1" in notify.recv(4096)
        assert wait_for(lambda: health() == "NOT_SERVING", 5, what="NOT_SERVING while draining")
        assert nd.proc.poll() is None, "still draining"
        assert nd.proc.wait(30) == 0
        nd.proc = None
    finally:
        notify.close()
        c.stop_all()


def test_the_example_config_loads_and_the_unit_outlasts_the_drain():
    example = ROOT / "deploy" / "distributed_hosts.example.yaml"
    r = subprocess.run(CLI + ["config", "check", str(example)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "warnings (0)" in r.stdout

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(ROOT / "deploy" / "ringmesh.service")
    service = unit["Service"]
    drain = yaml.safe_load(example.read_text())["ringmesh"]["drain_notice_seconds"]
    assert float(service["TimeoutStopSec"]) > drain + 5
    assert service["KillSignal"] == "SIGTERM" and service["Type"] == "notify"
    assert "ringmesh serve" in service["ExecStart"] and service["Restart"] == "on-failure"
    assert os.path.basename(service["ExecStart"].split()[0]) == "ringmesh"


def test_doctor_checks_the_certificates_and_reaches_peers_over_mutual_tls(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, tls=True)
    try:
        c.start_all()
        args = ["doctor", "--node", "node1", "--data-dir", str(c.nodes["node1"].data_dir)]
        r = subprocess.run(CLI + args + ["--config", str(c.config_path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ok    certificates  mutual TLS:" in r.stdout and "names node1, signed by" in r.stdout
        assert [ln for ln in r.stdout.splitlines() if "peer node2" in ln][0].startswith("ok ")

        doc = yaml.safe_load(c.config_path.read_text())  # node1 given node2's certificate by mistake
        doc["hosts"]["node1"]["tls"] = {"cert": "tls/node2.crt", "key": "tls/node2.key"}
        wrong = c.root / "wrong.yaml"
        wrong.write_text(yaml.safe_dump(doc))
        r = subprocess.run(CLI + args + ["--config", str(wrong)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1
        (cert,) = [ln for ln in r.stdout.splitlines() if " certificates " in ln]
        assert cert.startswith("FAIL") and "names 'node2', not this host 'node1'" in cert, r.stdout
    finally:
        c.stop_all()
