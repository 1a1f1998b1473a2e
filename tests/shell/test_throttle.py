"""The asyncio throttle: real event-loop time, small rates, measured ratios (never a bare wall
time as the criterion); then a transfer between two real peers with a limited egress."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from ringmesh.config import ConfigError
from ringmesh.core.bandwidth import WEIGHTS, Priority
from ringmesh.node.files.throttle import (
    EGRESS_ENV,
    INGRESS_ENV,
    Throttle,
    priority_from_metadata,
    priority_metadata,
    rate_setting,
)
from ringmesh.ops.localcluster import LocalCluster, wait_for

P = Priority
MiB = 1 << 20


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_one_transfer_goes_at_the_configured_rate():
    async def main():
        rate, burst, total, piece = 2_000_000, 100_000, 2_100_000, 64 * 1024
        th = Throttle(rate, burst)
        loop = asyncio.get_running_loop()
        t0, sent = loop.time(), 0
        while sent < total:
            await th.acquire(min(piece, total - sent))
            sent += min(piece, total - sent)
        elapsed = loop.time() - t0
        th.close()
        return elapsed / ((total - burst) / rate), th.granted[P.NORMAL]

    ratio, granted = run(main())
    assert granted == 2_100_000
    assert 0.95 <= ratio <= 1.25, ratio


def test_busy_classes_share_the_rate_by_weight():
    async def main():
        th = Throttle(2_000_000, 16 * 1024)
        stop = asyncio.Event()

        async def flood(cls):
            while not stop.is_set():
                await th.acquire(8 * 1024, cls)

        tasks = [asyncio.create_task(flood(c)) for c in (P.CRITICAL, P.NORMAL, P.BACKGROUND) for _ in range(2)]
        await asyncio.sleep(0.1)  # let every class get demand, then count from here
        before = dict(th.granted)
        await asyncio.sleep(1.0)
        after = dict(th.granted)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        th.close()
        return {c: after[c] - before.get(c, 0) for c in after}, th

    got, th = run(main())
    total, wsum = sum(got.values()), sum(WEIGHTS[c] for c in got)
    assert 0.8 <= total / 2_000_000 <= 1.2, total
    for c, n in got.items():
        assert n / total == pytest.approx(WEIGHTS[c] / wsum, rel=0.15), (c, got)
    assert th.waiting == 0 and th._limiter.pending == 0, "cancelled waiters are withdrawn"


def test_critical_is_not_starved_by_a_background_flood():
    async def main():
        rate, piece = 2_000_000, 50_000
        th = Throttle(rate, piece)
        tasks = [asyncio.create_task(_forever(th, piece, P.BACKGROUND)) for _ in range(20)]
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(10):
            await th.acquire(piece, P.CRITICAL)
        elapsed = loop.time() - t0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        th.close()
        return elapsed / (10 * piece / (rate * 16 / 17))

    ratio = run(main())
    assert 0.8 <= ratio <= 1.3, ratio  # a starving scheduler would take ~17 times as long


async def _forever(th, n, cls):
    while True:
        await th.acquire(n, cls)


def test_a_cancelled_wait_is_withdrawn_and_does_not_block_others():
    async def main():
        th = Throttle(100_000, 100_000)
        await th.acquire(100_000)  # empties the bucket
        waiter = asyncio.create_task(th.acquire(100_000, P.CRITICAL))
        await asyncio.sleep(0)
        assert th.waiting == 1
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert th.waiting == 0 and th._limiter.pending == 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await th.acquire(50_000, P.BACKGROUND)
        ratio = (loop.time() - t0) / 0.5
        th.close()
        return ratio, th.granted

    ratio, granted = run(main())
    assert 0.9 <= ratio <= 1.5, ratio
    assert granted[P.CRITICAL] == 0 and granted[P.BACKGROUND] == 50_000


def test_a_request_above_the_burst_is_taken_in_pieces():
    async def main():
        th = Throttle(1_000_000, 100_000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await th.acquire(600_000, P.HIGH)
        return (loop.time() - t0) / 0.5, th.granted[P.HIGH], th.report()

    ratio, granted, report = run(main())
    assert granted == 600_000 and 0.9 <= ratio <= 1.5, ratio
    assert report["granted_bytes"]["high"] == 600_000 and report["rate_bytes_per_s"] == 1_000_000


def test_no_limit_only_counts():
    async def main():
        th = Throttle(None)
        for _ in range(1000):
            await th.acquire(MiB, P.LOW)
        return th.report()

    report = run(main())
    assert report["rate_bytes_per_s"] is None and report["granted_bytes"]["low"] == 1000 * MiB


def test_rate_settings():
    assert rate_setting(EGRESS_ENV, 20_000_000, env={}) == 20_000_000
    assert rate_setting(EGRESS_ENV, 20_000_000, env={EGRESS_ENV: "5000000"}) == 5_000_000
    assert rate_setting(INGRESS_ENV, 20_000_000, env={INGRESS_ENV: "0"}) is None
    assert rate_setting(INGRESS_ENV, None, env={}) is None
    for bad in ("-1", "fast", "1.5"):
        with pytest.raises(ConfigError, match=INGRESS_ENV):
            rate_setting(INGRESS_ENV, 1, env={INGRESS_ENV: bad})


def test_priority_travels_in_call_metadata():
    assert priority_from_metadata(priority_metadata(P.CRITICAL)) is P.CRITICAL
    assert priority_from_metadata([("user-agent", "x"), ("ringmesh-priority", "background")]) is P.BACKGROUND
    assert priority_from_metadata([]) is P.NORMAL and priority_from_metadata(None) is P.NORMAL
    assert priority_from_metadata([("ringmesh-priority", "urgent")]) is None


def test_a_pull_between_real_peers_keeps_to_the_egress_limit_at_its_priority(tmp_path):
    """node2 pulls a model at CRITICAL (set for its config) from node1, whose egress is 4 MB/s."""
    rate, size = 4_000_000, 6 * MiB + 4321
    c = LocalCluster(tmp_path / "cluster", 2, gossip_interval=0.2)
    try:
        c.start("node1", env={EGRESS_ENV: str(rate)})
        c.start("node2", env={INGRESS_ENV: "0"})
        for name in c.nodes:
            c.wait_ready(name)
        with c.nodes["node2"].client() as cl:
            cl.control("priority", config_key="hex8_2p", priority="critical")
        src = tmp_path / "canonical_hex8_2p.pth"
        src.write_bytes(os.urandom(size))
        with c.nodes["node1"].client() as cl:
            digest = cl.put(src, "model")["digest"]

        def node2_has_it():
            doc = c.nodes["node2"].query("status") or {}
            return doc if doc.get("counters", {}).get("transfers_done") else None

        t0 = time.monotonic()
        wait_for(node2_has_it, 60, what="node2 to pull the model")
        elapsed = time.monotonic() - t0
        egress = c.nodes["node1"].query("status")["bandwidth"]["egress"]
        ingress = c.nodes["node2"].query("status")["bandwidth"]["ingress"]
    finally:
        c.stop_all()
    assert egress["rate_bytes_per_s"] == rate and ingress["rate_bytes_per_s"] is None
    assert egress["granted_bytes"]["critical"] == size and egress["granted_bytes"]["normal"] == 0
    assert ingress["granted_bytes"]["critical"] == size
    # the bucket lets one burst through at once; the rest goes at the rate (elapsed also counts
    # the gossip that announced the model, so only a lower bound is firm)
    assert elapsed / ((size - egress["burst_bytes"]) / rate) >= 0.9, elapsed
    assert digest
