"""Seeing into real peers: Prometheus metrics scraped over HTTP, the gRPC health service and
server reflection on the peer port, JSON log lines, and `ringmesh status` / `doctor` on a
healthy cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import LocalCluster, wait_for

MiB = 1 << 20
FAMILIES = [
    "ringmesh_node_info",
    "ringmesh_gossip_rounds",
    "ringmesh_gossip_delta_bytes",
    "ringmesh_messages",
    "ringmesh_origin_lag_changes",
    "ringmesh_origin_lag_seconds",
    "ringmesh_origin_catch_up_seconds",
    "ringmesh_peer_last_heard_seconds",
    "ringmesh_origin_max_change",
    "ringmesh_members",
    "ringmesh_member_state",
    "ringmesh_leader_term",
    "ringmesh_leader",
    "ringmesh_is_leader",
    "ringmesh_transfers_running",
    "ringmesh_transfers",
    "ringmesh_throttle_bytes",
    "ringmesh_peer_bytes",
    "ringmesh_breaker_state",
    "ringmesh_games_published",
    "ringmesh_games_durable",
    "ringmesh_games_materialised",
    "ringmesh_config_games",
    "ringmesh_items",
    "ringmesh_items_under_replicated",
    "ringmesh_disk_used_percent",
    "ringmesh_disk_free_bytes",
    "ringmesh_scrub_last_full_timestamp_seconds",
    "ringmesh_scrub_verified_bytes",
    "ringmesh_corruptions_found",
    "ringmesh_corruptions_repaired",
    "ringmesh_corruptions_unrepaired",
    "ringmesh_damaged_items_below_min_copies",
    "ringmesh_events",
]


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    """3 training peers with /metrics on a free port each and JSON logs; a model of 5 MiB
    published on node1 and held everywhere; 5 games published on node1, durable."""
    root = tmp_path_factory.mktemp("obs")
    c = LocalCluster(
        root / "c",
        3,
        gossip_interval=0.2,
        roles={f"node{i}": "training" for i in (1, 2, 3)},
        own={"metrics_listen": "127.0.0.1:0", "log_json": True},
    )
    try:
        c.start_all()
        model = root / "canonical_hex8_2p.pth"
        model.write_bytes(os.urandom(5 * MiB))
        selfplay.generate_games(root / "selfplay.db", 5, config_key="hex8_2p", seed=1, moves=(20, 24))
        records, _ = gamedb.read_completed_games(root / "selfplay.db")
        with c.nodes["node1"].client() as cl:
            put = cl.put(model, "model")
            assert cl.publish_games("hex8_2p", records) == [1, 2, 3, 4, 5]
            assert cl.wait_durable("hex8_2p", 5, timeout=30)

        def everywhere():
            for n in c.nodes:
                ls = c.nodes[n].query("ls") or {"items": []}
                it = next((i for i in ls["items"] if i["name"] == model.name), None)
                if not it or sorted(it["holders"]) != sorted(c.nodes):
                    return False
            return True

        wait_for(everywhere, 30, what="the model on every peer")
        wait_for(
            lambda: all(d and d["leader"] for d in c.query_all("status").values()), 30, what="a leader known to all"
        )
        yield c, put
    finally:
        codes = c.stop_all()
        assert all(code == 0 for code in codes.values()), codes


def _scrape(c, name):
    st = c.nodes[name].query("status")
    with urllib.request.urlopen(f"http://{st['metrics']['listen']}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    samples = {}
    families = set()
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples, st


def _value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_are_scraped_over_http_with_every_family_and_real_values(obs):
    c, put = obs
    families, s1, _st = _scrape(c, "node1")
    assert not [f for f in FAMILIES if f not in families], sorted(families)

    assert _value(s1, "ringmesh_members", state="alive") == 3
    assert _value(s1, "ringmesh_members", state="dead") == 0
    assert _value(s1, "ringmesh_gossip_rounds_total") >= 1
    assert _value(s1, "ringmesh_gossip_delta_bytes_total", direction="in") > 0
    assert _value(s1, "ringmesh_gossip_delta_bytes_total", direction="out") > 0
    for other in ("node2", "node3"):
        assert _value(s1, "ringmesh_origin_lag_changes", origin=other) is not None
        assert _value(s1, "ringmesh_origin_max_change", origin=other) >= 1
        assert _value(s1, "ringmesh_peer_bytes_total", peer=other, direction="out", what="messages") > 0
        assert _value(s1, "ringmesh_breaker_state", peer=other, state="closed") == 1
    (leader_labels,) = [dict(labels) for (n, labels), v in s1.items() if n == "ringmesh_leader" and v == 1]
    assert leader_labels["leader"] in c.nodes
    assert int(leader_labels["term"]) == _value(s1, "ringmesh_leader_term") >= 1
    # node1 published the games: all 5 taken in, durable, materialised in its own database
    assert _value(s1, "ringmesh_games_published_total", config_key="hex8_2p") == 5
    assert _value(s1, "ringmesh_games_durable_total", config_key="hex8_2p") == 5
    assert _value(s1, "ringmesh_games_materialised_total", config_key="hex8_2p") == 5
    assert _value(s1, "ringmesh_config_games", config_key="hex8_2p") == 5
    assert _value(s1, "ringmesh_items") == 1
    assert _value(s1, "ringmesh_items_under_replicated") == 0
    assert 0 <= _value(s1, "ringmesh_disk_used_percent") <= 100
    assert _value(s1, "ringmesh_disk_free_bytes") > 0

    # node2 pulled the model: one transfer done, its chunk bytes counted per source peer
    _f, s2, _st = _scrape(c, "node2")
    assert _value(s2, "ringmesh_transfers_total", **{"class": "normal", "outcome": "done"}) == 1
    assert _value(s2, "ringmesh_transfers_total", **{"class": "normal", "outcome": "failed"}) == 0
    assert _value(s2, "ringmesh_transfers_running", **{"class": "normal"}) == 0
    chunks_in = sum(
        v
        for (n, labels), v in s2.items()
        if n == "ringmesh_peer_bytes_total" and ("direction", "in") in labels and ("what", "chunks") in labels
    )
    assert chunks_in == put["size_bytes"]
    assert _value(s2, "ringmesh_throttle_bytes_total", direction="in", **{"class": "normal"}) >= put["size_bytes"]
    # what node2 and node3 received of the model, node1 and the other counted as sent to them
    # (summed per scrape: both have the same series name and labels, so a merged dict would keep one)
    served = sum(
        v
        for scrape in (s1, _scrape(c, "node3")[1])
        for (n, labels), v in scrape.items()
        if n == "ringmesh_peer_bytes_total"
        and ("direction", "out") in labels
        and ("what", "chunks") in labels
        and dict(labels)["peer"] == "node2"
    )
    assert served >= put["size_bytes"]


def test_health_service_serves_and_reflection_lists_the_peer_service(obs):
    c, _put = obs
    nd = c.nodes["node2"]
    with grpc.insecure_channel(nd.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for service in ("", "ringmesh.v1.Peer"):
            resp, call = stub.Check.with_call(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        assert dict(call.trailing_metadata())["ringmesh-node"] == "node2"
        services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {"ringmesh.v1.Peer", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services
    assert "ringmesh.v1.Local" not in services  # the local API is on the Unix socket only


def test_log_lines_are_json_with_the_host_and_the_peer(obs):
    c, put = obs
    lines = [ln for ln in c.nodes["node2"].log_path.read_text().splitlines() if ln.strip()]
    docs = [json.loads(ln) for ln in lines]
    assert docs and all({"time", "level", "host", "logger", "message"} <= set(d) for d in docs)
    assert {d["host"] for d in docs} == {"node2"}
    got = [d for d in docs if d["message"].startswith("got model/")]
    assert got and got[0]["item"] == "model/canonical_hex8_2p.pth" and got[0]["digest"] == put["digest"]
    assert set(got[0]["peer"].split(",")) <= {"node1", "node3"}
    assert any(d.get("peer") in ("node1", "node2", "node3") and "leader" in d["message"] for d in docs)


def test_status_is_a_readable_view_and_json_stays(obs):
    c, _put = obs
    cli = [sys.executable, "-m", "ringmesh", "status", "--data-dir", str(c.nodes["node1"].data_dir)]
    r = subprocess.run(cli, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "\x1b[" not in out  # no colour into a pipe
    for heading in ("MEMBERS", "GAMES PER CONFIG", "ITEMS UNDER-REPLICATED", "TRANSFERS"):
        assert heading in out
    members = out.split("MEMBERS", 1)[1].split("\n\n", 1)[0].splitlines()
    header = members[1]
    rows = {ln.split()[0]: ln for ln in members[2:]}
    assert set(rows) == {"node1", "node2", "node3"}
    state_col = header.index("STATE")
    assert all(ln[state_col:].startswith("alive") for ln in rows.values()), out  # aligned columns
    assert "hex8_2p" in out and "every item is where the router wants it" in out
    r = subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=30)
    doc = json.loads(r.stdout)
    assert doc["node"] == "node1" and len(doc["members"]) == 3


def test_doctor_passes_on_a_healthy_cluster(obs):
    c, _put = obs
    nd = c.nodes["node1"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "ringmesh",
            "doctor",
            "--config",
            str(c.config_path),
            "--node",
            "node1",
            "--data-dir",
            str(nd.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    by_name = {ln[6:].split("  ")[0].strip(): ln[:4].strip() for ln in lines[:-1]}
    assert by_name["peer node2"] == "ok" and by_name["peer node3"] == "ok", r.stdout
    assert by_name["daemon"] == "ok" and by_name["disk"] in ("ok", "warn") and by_name["clock"] == "ok"
    assert by_name["certificates"] == "warn" and "PLAINTEXT" in r.stdout  # no ringmesh.tls here
    assert lines[-1].startswith("doctor: node1: healthy")
