"""NetLab.block_inbound: a host nobody can dial (as behind a NAT). A connect *to* it times out
(the SYN is dropped, not refused), while its own connections out work and carry data both ways;
other hosts are unaffected; `heal` leaves the block; `unblock_inbound` lifts it; both idempotent.
Every network step has a short timeout; nothing sleeps to wait."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ringmesh.testing.netlab import NetLab, available, cleanup_stale
from tests.shell.test_netlab import PORT, eventually, reaches, start_server

REASON = available(("iptables",))
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(60)]
PREFIX = "rmnn"
PY = sys.executable
CONNECT_TIMEOUT = 0.5

# Connect from inside a namespace and say how it went: "ok" (an echo round trip: data both
# ways), "timeout" (no answer: the SYN was dropped) or "refused"/"error ..." (an answer we do not expect).
DIAL = r"""
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
try:
    c = socket.create_connection((host, port), timeout=timeout); c.settimeout(timeout)
    c.sendall(b"x" * 64); got = b""
    while len(got) < 64 and (b := c.recv(64 - len(got))):
        got += b
    print("ok" if got == b"x" * 64 else f"error short echo {len(got)}")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print(f"error {e}")
"""


def dial(lab: NetLab, src: int, dst: int, timeout: float = CONNECT_TIMEOUT) -> tuple[str, float]:
    """(outcome, seconds) of one TCP connect + echo from `src` to `dst`'s echo server."""
    t = time.monotonic()
    r = lab.run(src, [PY, "-c", DIAL, lab.address(dst), str(PORT), str(timeout)], timeout=timeout * 2 + 10)
    return r.stdout.strip() or f"error {r.stderr.strip()[-200:]}", time.monotonic() - t


def nat_rules(lab: NetLab, host: int) -> list[str]:
    out = lab.run(host, ["iptables", "-w", "5", "-S", "NETLAB-NAT"], check=True).stdout.splitlines()
    return [ln for ln in out if ln.startswith("-A")]


def test_a_blocked_host_can_dial_out_but_nobody_can_dial_in():
    cleanup_stale(PREFIX)
    with NetLab(3, prefix=PREFIX) as lab:
        for h in lab.hosts():
            start_server(lab, h, "echo")
        assert dial(lab, 1, 0)[0] == "ok"  # before: an ordinary host
        lab.block_inbound(0)
        lab.block_inbound(0)  # idempotent: still one rule
        assert lab.inbound_blocked() == {0} and len(nat_rules(lab, 0)) == 1
        for src in (1, 2):
            outcome, seconds = dial(lab, src, 0)
            assert outcome == "timeout", (src, outcome)  # dropped, not refused
            assert seconds < CONNECT_TIMEOUT + 5, seconds  # bounded by the connect timeout (+ process start)
        for dst in (1, 2):  # out: the connect works and data flows both ways (an echo round trip)
            assert dial(lab, 0, dst)[0] == "ok", dst
        assert dial(lab, 1, 2)[0] == "ok" and dial(lab, 2, 1)[0] == "ok"  # the others are unaffected
        assert reaches(lab, 0, 0)  # the host still dials itself (loopback is not blocked)
        lab.heal()  # a partition/loss heal is not a NAT change
        assert dial(lab, 1, 0)[0] == "timeout" and lab.inbound_blocked() == {0}
        lab.partition([0], [1])
        lab.heal()
        assert dial(lab, 0, 1)[0] == "ok" and dial(lab, 2, 0)[0] == "timeout"
        lab.unblock_inbound(0)
        lab.unblock_inbound(0)  # idempotent
        assert lab.inbound_blocked() == set() and nat_rules(lab, 0) == []
        assert eventually(lambda: dial(lab, 1, 0)[0] == "ok") and dial(lab, 2, 0)[0] == "ok"
        lab.block_inbound(0)  # again, after an unblock
        assert dial(lab, 1, 0)[0] == "timeout" and dial(lab, 0, 1)[0] == "ok"
    assert lab.leftovers() == [] and lab.inbound_blocked() == set()


def test_a_connection_open_when_the_block_comes_keeps_working():
    """Stateless (SYNs only): what the host accepted before keeps flowing; new dials fail."""
    cleanup_stale(PREFIX)
    keep = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5); c.settimeout(5)
print("connected", flush=True)
for line in sys.stdin:
    c.sendall(b"p"); print("ok" if c.recv(1) == b"p" else "bad", flush=True)
"""
    relay = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4); print("ready", flush=True)
c, _ = s.accept(); c.settimeout(20)
while (b := c.recv(1)):
    c.sendall(b)
"""
    with NetLab(2, prefix=PREFIX) as lab:
        srv = lab.exec(0, [PY, "-c", relay, lab.address(0), str(PORT + 1)], stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        cli = lab.exec(
            1,
            [PY, "-c", keep, lab.address(0), str(PORT + 1)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert cli.stdout.readline().strip() == "connected"
        lab.block_inbound(0)
        for _ in range(3):
            cli.stdin.write("\n")
            cli.stdin.flush()
            assert cli.stdout.readline().strip() == "ok"  # bounded: the client's 5 s socket timeout
        cli.stdin.close()
        cli.wait(10)
        srv.wait(10)
    assert lab.leftovers() == []
