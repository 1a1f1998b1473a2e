"""Shared fixtures: a running 3-peer loopback cluster, and `serving` for clusters of other shapes."""

import asyncio
import contextlib
import signal
import time

import pytest

from ringmesh.ops.localcluster import LocalCluster


async def until(cond, timeout: float, what: str):
    """Await until `cond()` is truthy (returned), polling; AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (got := cond()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
    return got


@contextlib.contextmanager
def serving(c: LocalCluster):
    """Start every peer of `c`; at the end stop them, print the log of any peer that exited
    other than cleanly or by our SIGKILL, and assert every peer stopped with exit code 0."""
    try:
        c.start_all()
        yield c
    finally:
        codes = c.stop_all()
        for name, nd in c.nodes.items():
            if any(code not in (0, -signal.SIGKILL) for code in nd.exits):
                print(f"--- {name} ---\n{nd.log_tail(40)}")
        assert all(code in (0, None) for code in codes.values()), codes


@pytest.fixture
def cluster(tmp_path):
    with serving(
        LocalCluster(tmp_path / "cluster", 3, gossip_interval=0.2, roles={f"node{i}": "training" for i in (1, 2, 3)})
    ) as c:
        yield c
