"""The network-namespace harness for real: reachability, a tbf limit measured as a ratio to the
configured rate, partitions (two-way and one-way), loss, heal, teardown. Skipped (with the reason)
where namespaces cannot be made. Every network step has a bounded timeout; nothing sleeps to wait."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ringmesh.testing import netlab
from ringmesh.testing.netlab import NetLab, available, cleanup_stale

REASON = available(("tc", "iptables"))
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(60)]
PREFIX = "rmnlt"
PORT = 9100
PY = sys.executable

# One small program, four roles: echo server (forever), byte sink (one connection; prints
# bytes and seconds), connect check (exit 0 if an echo round trip works), sender (N bytes).
PROG = r"""
import socket, sys, time
mode, host = sys.argv[1], sys.argv[2]
if mode in ("echo", "sink"):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(sys.argv[3]))); s.listen(16); print("ready", flush=True)
    while True:
        c, _ = s.accept(); c.settimeout(20)
        if mode == "echo":
            c.sendall(c.recv(64)); c.close(); continue
        t0, n = time.monotonic(), 0
        while (b := c.recv(1 << 20)):
            n += len(b)
        print(n, time.monotonic() - t0, flush=True); break
elif mode == "check":
    try:
        timeout = float(sys.argv[4])
        c = socket.create_connection((host, int(sys.argv[3])), timeout=timeout); c.settimeout(timeout)
        c.sendall(b"ping"); sys.exit(0 if c.recv(64) == b"ping" else 1)
    except OSError:
        sys.exit(1)
else:
    size, c = int(sys.argv[4]), socket.create_connection((host, int(sys.argv[3])), timeout=10)
    c.settimeout(30); buf, sent = b"x" * (1 << 20), 0
    while sent < size:
        k = min(len(buf), size - sent); c.sendall(buf[:k]); sent += k
    c.close()
"""


def start_server(lab: NetLab, host: int, mode: str, port: int = PORT) -> subprocess.Popen:
    p = lab.exec(host, [PY, "-c", PROG, mode, lab.address(host), str(port)], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"  # bounded: the test's timeout; the server prints it first
    return p


def reaches(lab: NetLab, src: int, dst: int, timeout: float = 1.0) -> bool:
    """One TCP connect + echo from src to dst's echo server within `timeout` s (per step)."""
    r = lab.run(src, [PY, "-c", PROG, "check", lab.address(dst), str(PORT), str(timeout)], timeout=timeout * 2 + 10)
    return r.returncode == 0


def eventually(cond, timeout: float = 5.0) -> bool:
    """Poll `cond` (itself bounded) until true or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return True
        if time.monotonic() > deadline:
            return False


@pytest.fixture(scope="module")
def lab():
    cleanup_stale(PREFIX)
    with NetLab(3, prefix=PREFIX) as lab:
        for h in lab.hosts():
            start_server(lab, h, "echo")
        yield lab


@pytest.fixture(autouse=True)
def clean_faults(request):
    yield
    if "lab" in request.fixturenames:
        lab = request.getfixturevalue("lab")
        lab.heal()
        lab.unlimit()


def test_three_namespaces_reach_each_other(lab):
    assert [lab.address(h) for h in lab.hosts()] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]
    for src in lab.hosts():
        for dst in lab.hosts():
            assert eventually(lambda: reaches(lab, src, dst)), (src, dst)


def test_names_fit_and_stay_in_the_run():
    a, b = NetLab(999, prefix="abcdef"), NetLab(999, prefix="abcdef")
    assert a.tag != b.tag and len(a.veth(998)) <= 15 and a.netns(3).startswith(a.tag)
    with pytest.raises(ValueError):
        NetLab(10, prefix="toolongprefix")
    assert netlab.tbf_args(25_000_000) == ["tbf", "rate", "200000000bit", "burst", "250000", "latency", "100ms"]


def test_tbf_egress_limit_holds(lab):
    rate, size = 20_000_000, 20_000_000
    lab.limit(0, egress_bytes_per_s=rate)
    sink = start_server(lab, 1, "sink", PORT + 1)
    lab.run(0, [PY, "-c", PROG, "send", lab.address(1), str(PORT + 1), str(size)], timeout=30, check=True)
    n, seconds = sink.stdout.readline().split()
    sink.wait(10)
    assert int(n) == size
    ratio = int(n) / float(seconds) / rate
    assert 0.5 <= ratio <= 1.3, f"measured {ratio:.3f} x the configured rate"
    # the other direction is not limited: host 1 -> host 0 runs well above the rate
    sink = start_server(lab, 0, "sink", PORT + 2)
    lab.run(1, [PY, "-c", PROG, "send", lab.address(0), str(PORT + 2), str(size)], timeout=30, check=True)
    n, seconds = sink.stdout.readline().split()
    sink.wait(10)
    assert int(n) / float(seconds) > 1.5 * rate


def test_two_way_partition_blocks_and_heal_restores(lab):
    lab.partition([0], [1, 2])
    for a, b in [(0, 1), (1, 0), (0, 2), (2, 0)]:
        assert not reaches(lab, a, b), (a, b)
    assert reaches(lab, 1, 2) and reaches(lab, 2, 1)
    lab.heal()
    for a, b in [(0, 1), (1, 0), (0, 2), (2, 0)]:
        assert eventually(lambda: reaches(lab, a, b)), (a, b)


def test_one_way_partition_blocks_one_direction(lab):
    lab.partition([0], [1], one_way=True)
    assert not reaches(lab, 0, 1)
    assert reaches(lab, 1, 0)
    assert reaches(lab, 0, 2) and reaches(lab, 2, 1)
    lab.heal()
    assert eventually(lambda: reaches(lab, 0, 1))


def test_loss(lab):
    lab.loss(2, 1.0)
    assert not reaches(lab, 0, 2, timeout=0.5)
    lab.loss(2, 0.0)
    assert eventually(lambda: reaches(lab, 0, 2))


def names() -> str:
    return (
        subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
        + subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, timeout=10).stdout
    )


def test_teardown_leaves_nothing_even_when_the_body_raises():
    with pytest.raises(RuntimeError):
        with NetLab(2, prefix=PREFIX) as lab:
            lab.limit(0, egress_bytes_per_s=10_000_000, ingress_bytes_per_s=10_000_000)
            lab.partition([0], [1])
            server = start_server(lab, 1, "echo")
            assert lab.tag in names()
            raise RuntimeError("body failed")
    assert server.poll() is not None
    assert lab.tag not in names() and lab.leftovers() == []
    assert not (netlab.REGISTRY / lab.tag).exists()


def test_cleanup_stale_removes_a_crashed_run_and_spares_a_live_one():
    dead = subprocess.Popen(["true"])
    dead.wait(10)
    crashed, live = NetLab(2, prefix=PREFIX), NetLab(1, prefix=PREFIX)
    crashed.start()
    try:
        (netlab.REGISTRY / crashed.tag).write_text(f"{dead.pid} 0\n")  # as if its owner had died
        with live:
            removed = cleanup_stale(PREFIX)
            assert crashed.netns(0) in removed and crashed.bridge in removed
            assert crashed.tag not in names() and live.leftovers()
    finally:
        crashed.close()
    assert live.tag not in names()
