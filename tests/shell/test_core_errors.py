"""A step of the core that raises costs no liveness (issue 22).

node1 runs in this process, so that its core can be made to raise once, on a probe timer;
node2 is a real `ringmesh serve`. Before the fix the step's effects were lost, the probe loop's
next timer among them: node1 never probed again. Now the daemon counts the error, shows it in
`status`, metrics and `doctor`, and the core re-arms its timers.
"""

from __future__ import annotations

import asyncio

from ringmesh.config import load_config
from ringmesh.core.messages import TimerFired
from ringmesh.node.runtime import Daemon
from ringmesh.ops import statusreport
from ringmesh.ops.doctor import FAIL, _daemon
from ringmesh.ops.localcluster import LocalCluster
from ringmesh.ops.metrics import _families

from .conftest import serving, until


async def _run(c: LocalCluster) -> None:
    d = Daemon(load_config(str(c.config_path)), "node1", c.nodes["node1"].data_dir)
    await d.start()
    try:
        handle, raised = d.peer.handle, []

        def buggy(event, now):
            if isinstance(event, TimerFired) and event.name == "probe" and not raised:
                raised.append(now)
                raise ValueError("max() arg is an empty sequence")
            return handle(event, now)

        d.peer.handle = buggy
        await until(lambda: raised, 20, "the probe timer to fire")
        probes, rounds = d.peer.membership.stats["probes"], d.peer.rounds
        await until(lambda: d.peer.membership.stats["probes"] >= probes + 3, 20, "probing to go on")
        await until(lambda: d.peer.rounds >= rounds + 3, 20, "gossip to go on")
        await until(lambda: d.peer.membership.view("node2") == "alive", 20, "node2 seen alive")
        st = statusreport.status(d.view)
        assert st["core_errors"]["total"] == 1 and st["core_errors"]["last_10_min"] == 1
        assert "TimerFired: ValueError: max() arg" in st["core_errors"]["recent"][0]["what"]
        families = {f.name: f for f in _families(d.view)}
        assert families["ringmesh_core_errors"].samples[0].value == 1
        check = await asyncio.to_thread(_daemon, d.data_dir)
        assert check.status == FAIL and "raised 1 time(s) in the last 10 minutes" in check.detail
    finally:
        await d.close()


def test_a_core_that_raises_once_on_a_timer_leaves_probing_and_gossip_running(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles={"node1": "training", "node2": "training"})
    with serving(c):
        c.signal("node1", 15)  # node1 runs in this process instead
        c.nodes["node1"].exits.clear()
        asyncio.run(_run(c))
