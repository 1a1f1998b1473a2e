"""A test cluster in Linux network namespaces: one namespace per host, all joined by one bridge,
with `tc tbf` bandwidth limits and `iptables` faults. Root only; used by benchmarks and tests.

    with NetLab(3) as lab:                      # hosts 0..2 at 198.18.0.1 .. 198.18.0.3
        lab.limit(0, egress_bytes_per_s=25_000_000)
        p = lab.exec(1, ["python3", "-m", "http.server", "--bind", lab.address(1)])
        lab.partition([0], [1, 2]); lab.heal()

Layout of one run (its *tag* is `prefix` plus 4 random characters, so runs never collide):
  namespace `<tag>-<i>`: `lo` and `eth0` (198.18.0.1+i/16, 198.18.0.0/15 is the benchmarking
  range of RFC 2544, routed nowhere);
  `<tag>v<i>` in the root namespace: the bridge side of host i's veth pair, a port of bridge `<tag>b`;
  the bridge has no address, so traffic stays between the namespaces.
A run registers itself in REGISTRY (`<tag>` -> owner pid and start time) before it creates
anything; `cleanup_stale(prefix)` removes what belongs to runs whose owner is gone.

Shaping (`limit`): egress is a tbf on the namespace's `eth0`, ingress a tbf on the bridge side
`<tag>v<i>` (what the host can download). Rates are L2 bytes (Ethernet header included), so TCP
goodput over 1500-byte frames is ~0.958 of the rate (measured here: one TCP flow, 4 s, at 20, 25,
50 and 100 MB/s, egress, ingress or both: 0.9585 of the rate every time). Parameters (see `tbf_args`): burst =
10 ms of the rate, at least 64 KiB (so that 64 KiB GSO super-packets pass unsegmented; at
25-100 MB/s that is 250 KB-1 MB, well above what a 1 kHz-or-finer timer needs); queue = 100 ms
of the rate (latency 100ms): long enough that a forwarded TCP flow at the bridge side does not
see tail drops before it settles, short enough to keep the added delay bounded. netem is not
used (not every kernel has it).

Faults (`loss`, `partition`, `heal`) are iptables rules in the namespaces' own filter tables,
in chains NETLAB-LOSS and NETLAB-PART jumped to from INPUT.

NAT (`block_inbound`, `unblock_inbound`): a host nobody can dial, as behind a NAT or a firewall
that only lets replies in. One rule in chain NETLAB-NAT (jumped to from INPUT, first): TCP SYNs
arriving on `eth0` are dropped (`-p tcp --syn`: SYN set, ACK/RST/FIN clear), so a connection
*to* the host never opens (the caller's connect times out: dropped, not refused), while the
host's own connections out work both ways (their SYN-ACKs and later segments pass). Stateless:
connections open when the block comes keep working. TCP only (ringmesh speaks gRPC over TCP).
A property of the host rather than a fault: `heal` leaves it in place; `close` removes it.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import random
import shutil
import signal
import string
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Iterable, Sequence

REGISTRY = Path(os.environ.get("NETLAB_REGISTRY", "/run/ringmesh-netlab"))
BASE = ipaddress.IPv4Address("198.18.0.0")
PREFIXLEN = 16
MAX_IFNAME = 15
BURST_SECONDS, MIN_BURST, LATENCY_MS = 0.010, 64 * 1024, 100
CMD_TIMEOUT = 20.0


class NetLabError(RuntimeError):
    """A command setting up, changing or tearing down the lab failed."""


def _sh(argv: Sequence[str], *, check: bool = True, timeout: float = CMD_TIMEOUT) -> subprocess.CompletedProcess:
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise NetLabError(f"{' '.join(argv)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


def tbf_args(rate_bytes_per_s: int) -> list[str]:
    """`tc qdisc` arguments of a tbf at `rate_bytes_per_s` (see the module docstring)."""
    rate = int(rate_bytes_per_s)
    if rate <= 0:
        raise ValueError(f"rate must be > 0 bytes/s, got {rate_bytes_per_s!r}")
    burst = max(MIN_BURST, int(rate * BURST_SECONDS))
    return ["tbf", "rate", f"{rate * 8}bit", "burst", str(burst), "latency", f"{LATENCY_MS}ms"]


def _proc_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def available(tools: Iterable[str] = ()) -> str | None:
    """None when a NetLab can be built here, else why not (for `pytest.skip`). `tools`: further
    commands that must exist (e.g. "tc", "iptables")."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", *tools):
        if shutil.which(tool) is None:
            return f"{tool!r} is not installed"
    name = f"nlprobe{os.getpid()}"
    try:
        p = _sh(["ip", "netns", "add", name], check=False)
        if p.returncode != 0:
            return f"cannot create a network namespace: {p.stderr.strip()}"
        p = _sh(["ip", "link", "add", name[:MAX_IFNAME], "type", "bridge"], check=False)
        if p.returncode != 0:
            return f"cannot create a bridge: {p.stderr.strip()}"
        _sh(["ip", "link", "del", name[:MAX_IFNAME]], check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot run ip: {e}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=CMD_TIMEOUT)
    return None


def _owner_alive(tag: str) -> bool:
    try:
        pid_s, start = (REGISTRY / tag).read_text().split()
        return _proc_start(int(pid_s)) == start
    except (OSError, ValueError):
        return False


def _tag_of(name: str, prefix: str) -> str | None:
    """The run tag in a namespace or interface name of ours (`<prefix>XXXX...`)."""
    if not name.startswith(prefix) or len(name) < len(prefix) + 5:
        return None
    tag, rest = name[: len(prefix) + 4], name[len(prefix) + 4 :]
    return tag if rest[:1] in ("-", "v", "b") else None


def cleanup_stale(prefix: str = "rmnl") -> list[str]:
    """Remove namespaces, bridges, veths and registry entries of `prefix` runs whose owner
    process is gone (a crashed earlier run). Live runs are left alone. Returns what was removed."""
    removed: list[str] = []
    nets = [ln.split()[0] for ln in _sh(["ip", "netns", "list"], check=False).stdout.splitlines() if ln.strip()]
    links = [
        ln.split(": ")[1].split("@")[0]
        for ln in _sh(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
        if ln.count(": ") >= 2
    ]
    registered = [f.name for f in REGISTRY.iterdir()] if REGISTRY.is_dir() else []
    live = [t for t in registered if _owner_alive(t)]

    def stale(name: str) -> bool:  # ours, and no live run's (of any prefix: "rmnl" is a prefix of "rmnlt")
        return _tag_of(name, prefix) is not None and not any(name.startswith(t) for t in live)

    for ns in filter(stale, nets):
        _kill_netns_pids(ns)
    for link in sorted(filter(stale, links), key=lambda n: n.endswith("b")):  # veths first, then bridges
        if _sh(["ip", "link", "del", link], check=False).returncode == 0:
            removed.append(link)
    for ns in filter(stale, nets):
        if _sh(["ip", "netns", "del", ns], check=False).returncode == 0:
            removed.append(ns)
    for tag in registered:
        if tag.startswith(prefix) and tag not in live:
            (REGISTRY / tag).unlink(missing_ok=True)
    return removed


def _kill_netns_pids(ns: str, grace: float = 3.0) -> None:
    """Stop every process still inside namespace `ns` (all of them started by its lab): TERM, then KILL."""

    def pids() -> list[int]:
        out = _sh(["ip", "netns", "pids", ns], check=False).stdout
        return [int(x) for x in out.split() if x.isdigit() and int(x) != os.getpid()]

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        left = pids()
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = pids()


_live: "weakref.WeakSet[NetLab]" = weakref.WeakSet()
_handlers_installed = False


def _teardown_all() -> None:
    for lab in list(_live):
        lab.close()


def _install_handlers() -> None:
    """Tear every live lab down at exit and on SIGTERM/SIGHUP, then let the previous handler act.
    (SIGINT raises KeyboardInterrupt, which leaves the `with` block and tears down there.)"""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_teardown_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        prev = signal.getsignal(sig)

        def handler(signum, frame, prev=prev):
            _teardown_all()
            if callable(prev):
                prev(signum, frame)
            elif prev != signal.SIG_IGN:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


class NetLab:
    """n hosts (0..n-1), each in its own network namespace, on one bridge. A context manager."""

    def __init__(self, n: int, prefix: str = "rmnl", *, mtu: int = 1500) -> None:
        if not 1 <= n <= 999:
            raise ValueError(f"n must be in 1..999, got {n}")
        if not prefix.isalnum() or not prefix[0].isalpha():
            raise ValueError(f"prefix must be letters and digits, got {prefix!r}")
        self.n, self.prefix, self.mtu = n, prefix, mtu
        alphabet = string.ascii_lowercase + string.digits
        self.tag = prefix + "".join(random.SystemRandom().choice(alphabet) for _ in range(4))
        self.bridge = f"{self.tag}b"
        if len(self.veth(n - 1)) > MAX_IFNAME:
            raise ValueError(
                f"prefix {prefix!r} too long for {n} hosts: {self.veth(n - 1)!r} exceeds {MAX_IFNAME} characters"
            )
        self.procs: list[subprocess.Popen] = []
        self.limits: dict[int, dict[str, int | None]] = {}
        self._firewall: set[int] = set()
        self._nat: set[int] = set()  # hosts whose inbound connections are blocked
        self._loss: dict[tuple[int, int | None], float] = {}  # (receiver, sender or None: anyone) -> p
        self._up = False
        self._closed = False
        self._lock = threading.RLock()

    # -- names -----------------------------------------------------------------------------

    def netns(self, host: int) -> str:
        return f"{self.tag}-{self._check(host)}"

    def veth(self, host: int) -> str:
        """The bridge side (root namespace) of host's veth pair; the namespace side is `eth0`."""
        return f"{self.tag}v{host}"

    def address(self, host: int) -> str:
        return str(BASE + 1 + self._check(host))

    def hosts(self) -> range:
        return range(self.n)

    def _check(self, host: int) -> int:
        if not isinstance(host, int) or not 0 <= host < self.n:
            raise IndexError(f"no host {host!r} (hosts 0..{self.n - 1})")
        return host

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> NetLab:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        _install_handlers()
        REGISTRY.mkdir(parents=True, exist_ok=True)
        (REGISTRY / self.tag).write_text(f"{os.getpid()} {_proc_start(os.getpid())}\n")
        _live.add(self)
        self._up = True
        try:
            _sh(["ip", "link", "add", self.bridge, "type", "bridge"])
            _sh(["ip", "link", "set", self.bridge, "mtu", str(self.mtu), "up"])
            for i in self.hosts():
                ns, v = self.netns(i), self.veth(i)
                _sh(["ip", "netns", "add", ns])
                _sh(["ip", "link", "add", v, "mtu", str(self.mtu), "type", "veth", "peer", "name", "eth0", "netns", ns])
                _sh(["ip", "link", "set", v, "master", self.bridge, "up"])
                _sh(["ip", "-n", ns, "addr", "add", f"{self.address(i)}/{PREFIXLEN}", "dev", "eth0"])
                _sh(["ip", "-n", ns, "link", "set", "eth0", "mtu", str(self.mtu), "up"])
                _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the lab's processes, delete veths, bridge, namespaces (their iptables rules go
        with them) and the registry entry. Idempotent; never raises on a missing piece."""
        with self._lock:
            if self._closed or not self._up:
                self._closed = True
                return
            self._closed = True
            for p in self.procs:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + 5.0
            for p in self.procs:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            for i in self.hosts():
                ns = self.netns(i)
                _kill_netns_pids(ns)
                if i in self._firewall:
                    for table_cmd in (["-F"], ["-X"]):
                        _sh(["ip", "netns", "exec", ns, "iptables", *table_cmd], check=False)
                _sh(["ip", "link", "del", self.veth(i)], check=False)  # deletes the pair now, not when the netns goes
                _sh(["ip", "netns", "del", ns], check=False)
            _sh(["ip", "link", "del", self.bridge], check=False)
            self._nat.clear()
            (REGISTRY / self.tag).unlink(missing_ok=True)
            _live.discard(self)

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run that still exist (empty after `close`)."""
        nets = _sh(["ip", "netns", "list"], check=False).stdout.split()
        links = _sh(["ip", "-o", "link", "show"], check=False).stdout
        return [x for x in nets if x.startswith(self.tag)] + [
            ln.split(": ")[1].split("@")[0]
            for ln in links.splitlines()
            if ln.count(": ") >= 2 and ln.split(": ")[1].startswith(self.tag)
        ]

    # -- processes -------------------------------------------------------------------------

    def argv(self, host: int, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(host), *argv]

    def exec(self, host: int, argv: Sequence[str], **popen_kwargs) -> subprocess.Popen:
        """Start `argv` inside host's namespace (`ip netns exec` execs in place: the Popen's pid is
        the program's). The lab stops it at teardown if it still runs."""
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.argv(host, argv), **popen_kwargs)
        self.procs.append(p)
        return p

    def run(
        self, host: int, argv: Sequence[str], timeout: float = 30.0, check: bool = False, **run_kwargs
    ) -> subprocess.CompletedProcess:
        """Run `argv` inside host's namespace to completion (output captured as text by default)."""
        run_kwargs.setdefault("capture_output", True)
        run_kwargs.setdefault("text", True)
        run_kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(host, argv), timeout=timeout, check=check, **run_kwargs)

    def pids(self, host: int) -> list[int]:
        return [
            int(x) for x in _sh(["ip", "netns", "pids", self.netns(host)], check=False).stdout.split() if x.isdigit()
        ]

    # -- shaping ---------------------------------------------------------------------------

    def limit(self, host: int, egress_bytes_per_s: int | None = None, ingress_bytes_per_s: int | None = None) -> None:
        """Cap what `host` sends (egress) and receives (ingress), bytes/s of L2 frames; None
        removes that direction's cap."""
        for dev, rate, netns in (
            ("eth0", egress_bytes_per_s, ["-n", self.netns(host)]),
            (self.veth(host), ingress_bytes_per_s, []),
        ):
            if rate is None:
                _sh(["tc", *netns, "qdisc", "del", "dev", dev, "root"], check=False)
            else:
                _sh(["tc", *netns, "qdisc", "replace", "dev", dev, "root", *tbf_args(rate)])
        self.limits[host] = {"egress": egress_bytes_per_s, "ingress": ingress_bytes_per_s}

    def unlimit(self, host: int | None = None) -> None:
        for h in self.hosts() if host is None else [host]:
            self.limit(h, None, None)

    # -- faults ----------------------------------------------------------------------------

    def _ipt(self, host: int, *args: str) -> None:
        _sh(["ip", "netns", "exec", self.netns(host), "iptables", "-w", "5", *args])

    def _chains(self, host: int) -> None:
        if host in self._firewall:
            return
        for chain in ("NETLAB-NAT", "NETLAB-LOSS", "NETLAB-PART"):
            self._ipt(host, "-N", chain)
            self._ipt(host, "-A", "INPUT", "-j", chain)
        self._firewall.add(host)

    def loss(self, host: int, p: float, both_ways: bool = False) -> None:
        """Drop each packet arriving at `host` with probability p (0 removes the loss). With
        `both_ways`, packets `host` sends are dropped too, with the same p, at every other host
        (a lossy link, not a lossy receiver). Another host's own loss setting is kept."""
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        rules: dict[tuple[int, int | None], float] = {(host, None): p}
        if both_ways or p == 0:  # p == 0 also lifts the loss on what `host` sends
            rules.update({(dst, host): (p if both_ways else 0.0) for dst in self.hosts() if dst != host})
        touched = set()
        for (dst, src), q in rules.items():
            if q > 0:
                self._loss[(dst, src)] = q
            elif self._loss.pop((dst, src), None) is None and src is not None:
                continue  # nothing was set there
            touched.add(dst)
        for dst in sorted(touched):
            self._chains(dst)
            self._ipt(dst, "-F", "NETLAB-LOSS")
            for (d, src), q in sorted(
                self._loss.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])
            ):
                if d == dst:
                    match = [] if src is None else ["-s", self.address(src)]
                    self._ipt(
                        dst,
                        "-A",
                        "NETLAB-LOSS",
                        *match,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        f"{q:.6f}",
                        "-j",
                        "DROP",
                    )

    def losses(self) -> dict[tuple[int, int | None], float]:
        """The loss rules in place: (receiving host, sending host or None for any) -> p."""
        return dict(self._loss)

    def partition(self, group_a: Iterable[int], group_b: Iterable[int], one_way: bool = False) -> None:
        """Cut `group_a` off from `group_b`. Two-way: every packet between them is dropped.
        One-way: hosts of a can no longer reach b (every packet a sends on a connection a opened
        to b is dropped at b, so such connections fail), while b still reaches a (connections b
        opens to a work both ways). Adds to the partitions already in place."""
        a, b = [self._check(h) for h in group_a], [self._check(h) for h in group_b]
        if set(a) & set(b):
            raise ValueError(f"groups overlap: {sorted(set(a) & set(b))}")
        for dst, srcs in [(h, a) for h in b] + ([] if one_way else [(h, b) for h in a]):
            self._chains(dst)
            for s in srcs:
                match = ["-m", "conntrack", "--ctdir", "ORIGINAL"] if one_way else []
                self._ipt(dst, "-A", "NETLAB-PART", "-s", self.address(s), *match, "-j", "DROP")

    def block_inbound(self, host: int) -> None:
        """Nobody can dial `host` any more (as behind a NAT): TCP connection attempts arriving at
        it are dropped; its own connections out, and their replies, still pass. Idempotent."""
        self._check(host)
        with self._lock:
            if host in self._nat:
                return
            self._chains(host)
            self._ipt(host, "-A", "NETLAB-NAT", "-i", "eth0", "-p", "tcp", "--syn", "-j", "DROP")
            self._nat.add(host)

    def unblock_inbound(self, host: int) -> None:
        """Undo `block_inbound`: `host` can be dialled again. Idempotent."""
        self._check(host)
        with self._lock:
            if host not in self._nat:
                return
            self._ipt(host, "-F", "NETLAB-NAT")
            self._nat.discard(host)

    def inbound_blocked(self) -> set[int]:
        """The hosts nobody can dial now (`block_inbound`)."""
        return set(self._nat)

    def heal(self) -> None:
        """Remove every partition and every loss rule (a `block_inbound` stays)."""
        self._loss.clear()
        for h in sorted(self._firewall):
            self._ipt(h, "-F", "NETLAB-PART")
            self._ipt(h, "-F", "NETLAB-LOSS")


__all__ = ["NetLab", "NetLabError", "available", "cleanup_stale", "tbf_args"]
