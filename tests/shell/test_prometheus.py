"""Real Prometheus tooling against real peers: `promtool check metrics` accepts a peer's
`/metrics`, and a real Prometheus server scrapes every peer and answers a query for each.

Needs the `prometheus` and `promtool` binaries (Debian/Ubuntu package `prometheus`, which
`.ci/run` installs); skipped without them."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import LocalCluster, free_ports

from .conftest import serving

PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    not (PROMETHEUS and PROMTOOL),
    reason="needs the prometheus and promtool binaries "
    "(apt-get install --no-install-recommends prometheus; .ci/run installs it)",
)


def _poll(cond, timeout: float, what: str, interval: float = 0.2):
    """`cond()` until truthy, at most `timeout` seconds and timeout/interval + 1 tries."""
    deadline = time.monotonic() + timeout
    last = None
    for _ in range(int(timeout / interval) + 1):
        last = cond()
        if last and last[0]:
            return last[1]
        if time.monotonic() > deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last and last[1]}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return r.read()


def _api(base: str, path: str, **params) -> dict | None:
    """The `data` of a Prometheus HTTP API answer, or None while the server does not answer."""
    url = f"{base}/api/v1/{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        doc = json.loads(_get(url))
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    assert doc["status"] == "success", doc
    return doc["data"]


@pytest.fixture
def peers(tmp_path):
    """3 peers with /metrics on a free port each; 3 games published on node1 and durable (so
    the per-config families have samples too). Yields the cluster and {node: metrics address}."""
    c = LocalCluster(
        tmp_path / "c",
        3,
        gossip_interval=0.2,
        roles={f"node{i}": "training" for i in (1, 2, 3)},
        own={"metrics_listen": "127.0.0.1:0"},
    )
    with serving(c):
        selfplay.generate_games(tmp_path / "selfplay.db", 3, config_key="hex8_2p", seed=1, moves=(20, 24))
        records, _ = gamedb.read_completed_games(tmp_path / "selfplay.db")
        with c.nodes["node1"].client() as cl:
            assert cl.publish_games("hex8_2p", records) == [1, 2, 3]
            assert cl.wait_durable("hex8_2p", 3, timeout=30)
        yield c, {n: d["metrics"]["listen"] for n, d in c.query_all("status").items()}


def test_promtool_accepts_the_metrics_and_prometheus_scrapes_every_peer(peers, tmp_path):
    c, metrics = peers
    assert sorted(metrics) == sorted(c.nodes) and all(metrics.values()), metrics

    text = _get(f"http://{metrics['node1']}/metrics")
    assert b"ringmesh_config_games{" in text  # the per-config families are not empty
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, b""), (lint.stdout + lint.stderr).decode()

    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    prom_dir = tmp_path / "prometheus"
    (prom_dir / "data").mkdir(parents=True)
    (prom_dir / "prometheus.yml").write_text(
        json.dumps(
            {  # JSON is YAML
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "ringmesh",
                        "static_configs": [
                            {"targets": [addr], "labels": {"node": n}} for n, addr in sorted(metrics.items())
                        ],
                    }
                ],
            }
        )
    )
    log = open(prom_dir / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={prom_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={prom_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=prom_dir,
    )
    log.close()

    def alive():
        assert prom.poll() is None, (
            f"prometheus exited with {prom.returncode}:\n"
            + (prom_dir / "prometheus.log").read_text(errors="replace")[-3000:]
        )

    try:

        def targets_up():
            alive()
            data = _api(base, "targets", state="active")
            got = {
                t["labels"].get("node"): (t["health"], t["lastError"]) for t in (data or {}).get("activeTargets", [])
            }
            return got == {n: ("up", "") for n in metrics}, got

        _poll(targets_up, 30, "every peer's target up with no lastError")

        def members_everywhere():
            alive()
            data = _api(base, "query", query='ringmesh_members{state="alive"}')
            got = {r["metric"].get("node"): float(r["value"][1]) for r in (data or {}).get("result", [])}
            return got == {n: 3.0 for n in metrics}, got

        _poll(members_everywhere, 30, "ringmesh_members{state=alive} = 3 from every peer")

        def node1_changes_everywhere():  # the renamed gauge: node1 published, every peer knows it
            alive()
            data = _api(base, "query", query='ringmesh_origin_max_change{origin="node1"}')
            got = {r["metric"].get("node"): float(r["value"][1]) for r in (data or {}).get("result", [])}
            return set(got) == set(metrics) and min(got.values()) >= 1, got

        _poll(node1_changes_everywhere, 30, "ringmesh_origin_max_change{origin=node1} >= 1 from every peer")
    finally:
        prom.terminate()
        try:
            prom.wait(timeout=15)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(timeout=15)
