"""Shared fixtures: a running 3-peer loopback cluster."""

import signal

import pytest

from ringmesh.localcluster import LocalCluster


@pytest.fixture
def cluster(tmp_path):
    c = LocalCluster(tmp_path / "cluster", 3, gossip_interval=0.2, roles={f"node{i}": "training" for i in (1, 2, 3)})
    try:
        c.start_all()
        yield c
    finally:
        codes = c.stop_all()
        for name, nd in c.nodes.items():
            if any(code not in (0, -signal.SIGKILL) for code in nd.exits):
                print(f"--- {name} ---\n{nd.log_tail(40)}")
        assert all(code in (0, None) for code in codes.values()), codes
