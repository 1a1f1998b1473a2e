"""A ringmesh cluster for chaos runs: real `ringmesh serve` processes, one per network namespace
of a `ringmesh.testing.netlab.NetLab` (its own address in 198.18.0.0/15, its own data dir), real TCP
between them, links shaped with tc, lossy or cut with iptables, processes killed, stopped and
replaced. Used by tests/chaos/ and bench/soak.py. Root only (`netlab.available()`).

    with NetCluster(root, standard_hosts(), seed=7) as c:
        c.start()                                   # every host answers and sees every other alive
        c.lab.loss(c.index("spot1"), 0.1, both_ways=True)
        c.kill("spot1"); c.replace("spot1")         # SIGKILL, then a fresh host (new data dir)
        c.pause("train1"); c.resume("train1")       # SIGSTOP / SIGCONT
        c.check_one_leader(20)                      # a failed check raises ChaosFailure:
                                                    # which check, the seed, each peer's last log lines

Hosts keep their name and namespace for the whole run; a *replaced* host is a new incarnation of
the name with an empty data dir (`<root>/<name>/life<k>`), as a new spot instance would be.
Every wait is a poll with a deadline. `close()` tears everything down (processes, namespaces,
tmpfs mounts) also when the run failed.
"""

from __future__ import annotations

import filecmp
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ringmesh.api.client import ClientError, LocalClient
from ringmesh.api.mesh_client import MeshClient
from ringmesh.node.files.throttle import EGRESS_ENV, INGRESS_ENV
from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.testing.netlab import NetLab

PY = sys.executable
PORT = 7800
CONFIG_KEY = "hex8_2p"
MODEL = "canonical_hex8_2p.pth"
TAIL_LINES = 20
# log lines that mean a daemon hit a bug: an uncaught exception, the driver's "internal error", an
# ERROR/CRITICAL record, or gRPC's C core logging an error (E<mmdd> ...)
LOG_PROBLEM = re.compile(r"Traceback \(most recent call last\)|internal error| ERROR | CRITICAL |^E\d{4} ", re.M)
RECORD_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} |[EWID]\d{4} )")
# grpcio's own ERROR record when a response cannot be sent because the caller is gone (a peer
# killed mid-call, a connection cut) or the server is stopping: grpc/grpc#32551 logs it instead of
# raising it. Not a ringmesh failure; counted and reported, not failed on.
GRPC_NOISE = re.compile(
    r"^\S+ \S+ ERROR \S+ grpc\._cython\.cygrpc: ExecuteBatchError raised in core by servicer method "
    r"\[/ringmesh\.v1\.\w+/\w+\]\nTraceback[^\n]*(\n  [^\n]*)*\ngrpc\._cython\.cygrpc\.ExecuteBatchError: "
    r"Failed \"execute_batch\"[^\n]*$"
)

# The `ringmesh:` section of chaos configs: the built-in protocol timings (probe 1 s / 0.4 s,
# lease 0.8 s, election 1 s), a short drain notice and fast broadcast re-orders.
CHAOS_TIMINGS: dict[str, float] = {"drain_notice_seconds": 10.0, "broadcast_reorder_seconds": 1.0}
GOSSIP_INTERVAL = 0.25


class ChaosFailure(AssertionError):
    """A chaos check failed; the message names the check, the seed and each peer's last log lines."""


@dataclass(frozen=True)
class HostSpec:
    name: str
    role: str = "selfplay"
    ephemeral: bool = False
    voter: bool | None = None  # None: ringmesh's default (persistent hosts vote)
    paths: tuple[tuple[str, str], ...] = ()  # file type -> destination directory (`hosts.X.paths`)
    # nobody can dial it (issue 2.4): `nat_blocked: true` + `force_relay_mode: true` in the file, and
    # its namespace drops inbound connections (NetLab.block_inbound) before its daemon starts
    nat_blocked: bool = False


def standard_hosts(training: int = 2, selfplay: int = 3, spot: int = 3) -> list[HostSpec]:
    """`train1..` (training: game hosts and voters), `self1..` (persistent selfplay, voters),
    `spot1..` (ephemeral selfplay, not voters)."""
    return (
        [HostSpec(f"train{i + 1}", "training") for i in range(training)]
        + [HostSpec(f"self{i + 1}") for i in range(selfplay)]
        + [HostSpec(f"spot{i + 1}", ephemeral=True) for i in range(spot)]
    )


@dataclass
class Host:
    spec: HostSpec
    index: int
    root: Path
    life: int = 0
    proc: subprocess.Popen | None = None
    paused: bool = False
    logs: list[Path] = field(default_factory=list)
    exit_seen: bool = False  # the current process's exit is in NetCluster.exits

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def data_dir(self) -> Path:
        return self.root / f"life{self.life}"

    @property
    def log(self) -> Path:
        return self.root / f"life{self.life}.log"

    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll `cond` until it returns something truthy (returned) or `timeout` s passed (None)."""
    deadline = time.monotonic() + timeout
    while True:
        r = cond()
        if r:
            return r
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class NetCluster:
    def __init__(
        self,
        root: str | Path,
        specs: list[HostSpec],
        *,
        seed: int,
        prefix: str = "rmch",
        timings: dict[str, float] | None = None,
        routing: dict | None = None,
        port: int = PORT,
        block_nat: bool = True,
    ) -> None:
        """`block_nat=False`: hosts whose spec says nat_blocked are configured so, but their
        namespaces are left dialable (a control run: what the config alone changes)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.lab = NetLab(len(specs), prefix=prefix)
        self.hosts = {s.name: Host(s, i, self.root / s.name) for i, s in enumerate(specs)}
        self.port = port
        self.block_nat = block_nat
        self.config_path = self.root / "distributed_hosts.yaml"
        hosts_doc = {}
        for h in self.hosts.values():
            d = {
                "address": f"{self.lab.address(h.index)}:{port}",
                "provider": "local",
                "role": h.spec.role,
                "ephemeral": h.spec.ephemeral,
            }
            if h.spec.voter is not None:
                d["voter"] = h.spec.voter
            if h.spec.paths:
                d["paths"] = dict(h.spec.paths)
            if h.spec.nat_blocked:
                d["nat_blocked"] = True
                d["force_relay_mode"] = True
            hosts_doc[h.name] = d
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    # tc shapes links; ringmesh's own limiter is off (env below). 1 TB/s: "no limit".
                    "sync_routing": {
                        "gossip_interval_seconds": GOSSIP_INTERVAL,
                        "min_copies": 2,
                        "bandwidth_limit_mbps": 1_000_000,
                        **(routing or {}),
                    },
                    "ringmesh": {**CHAOS_TIMINGS, **(timings or {})},
                    "hosts": hosts_doc,
                },
                sort_keys=False,
            )
        )
        self.env = {**os.environ, EGRESS_ENV: "0", INGRESS_ENV: "0"}
        self.exits: list[tuple[str, int, int, int]] = []  # (host, life, exit code, code expected)
        self.mounts: list[Path] = []
        self.events: list[tuple[float, str]] = []  # what the run did to the cluster, for the report
        self.t0 = time.monotonic()
        self.rss: list[tuple[float, str, int, int]] = []  # (s since start, host, life, bytes)
        self._sampler: threading.Thread | None = None
        self._stop_sampler = threading.Event()
        self.workers: list[Producer | StatusSampler] = []  # stopped at close, also when the run failed
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> NetCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def note(self, what: str) -> None:
        t = time.monotonic() - self.t0
        self.events.append((t, what))
        print(f"[{t:7.2f}s] {what}", flush=True)

    def start(self, timeout: float = 90.0, *, bound: float | None = None) -> float:
        """Build the lab, start every host, wait until every host sees every other alive; returns
        the seconds that took from the first daemon's start. With `bound`, all of it (every daemon
        answering, every host seeing every other alive) must happen within `bound` s of that start
        (check "every host sees every other alive within <bound> s of start")."""
        self.lab.start()
        t = time.monotonic()
        for name in self.hosts:
            self.start_host(name)
        for name in self.hosts:
            self.wait_ready(name, timeout if bound is None else max(0.1, bound - (time.monotonic() - t)))
        if bound is None:
            self.wait_members(list(self.hosts), timeout)
        else:
            self.wait_members(
                list(self.hosts),
                max(0.1, bound - (time.monotonic() - t)),
                check=f"every host sees every other alive within {bound:.0f} s of start",
            )
        took = round(time.monotonic() - t, 2)
        self.note(
            f"{len(self.hosts)} hosts up, every one seeing every other alive after {took} s: "
            + ", ".join(
                f"{h.name}={self.lab.address(h.index)}{' (NAT)' if h.spec.nat_blocked else ''}"
                for h in self.hosts.values()
            )
        )
        return took

    def start_host(self, name: str) -> None:
        h = self.hosts[name]
        if h.up():
            raise RuntimeError(f"{name} is running")
        if h.spec.nat_blocked and self.block_nat:
            self.lab.block_inbound(h.index)  # before the daemon listens; idempotent (a restart, a replacement)
        h.data_dir.mkdir(parents=True, exist_ok=True)
        if h.log not in h.logs:
            h.logs.append(h.log)
        with open(h.log, "ab") as log:
            h.proc = self.lab.exec(
                h.index,
                [
                    PY,
                    "-m",
                    "ringmesh",
                    "serve",
                    "--config",
                    str(self.config_path),
                    "--node",
                    name,
                    "--data-dir",
                    str(h.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        h.paused = False
        h.exit_seen = False

    def wait_ready(self, name: str, timeout: float = 60.0) -> dict:
        h = self.hosts[name]

        def ready():
            if not h.up():
                self.fail("daemon starts", f"{name} exited with {h.proc.returncode if h.proc else None} while starting")
            return self.status(name)

        return self.wait(ready, timeout, "daemon answers", f"{name} to answer `status`")

    def wait_members(self, names: list[str], timeout: float = 60.0, check: str = "membership settles") -> None:
        """Every host of `names` sees every host of `names` alive."""
        want = set(names)

        def seen():
            for n in names:
                alive = {m["name"] for m in (self.status(n) or {}).get("members", []) if m["state"] == "alive"}
                if not want <= alive:
                    return False
            return True

        self.wait(seen, timeout, check, f"every one of {sorted(want)} to see the others alive")

    def _signal(self, name: str, sig: int, expect: int | None, timeout: float) -> int | None:
        h = self.hosts[name]
        if not h.up():
            return None
        if h.paused and sig != signal.SIGKILL:
            h.proc.send_signal(signal.SIGCONT)
            h.paused = False
        h.proc.send_signal(sig)
        try:
            code = h.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            self._exited(name, h.proc.wait(10), expect)
            self.fail(
                "daemon stops", f"{name} did not exit within {timeout:.0f} s of signal {signal.Signals(sig).name}"
            )
        self._exited(name, code, expect)
        h.paused = False
        return code

    def _exited(self, name: str, code: int, expect: int | None) -> None:
        h = self.hosts[name]
        if not h.exit_seen:
            h.exit_seen = True
            self.exits.append((name, h.life, code, expect))

    def reap(self) -> list[str]:
        """Record the exit of every daemon that ended without being told to (a crash); returns them."""
        out = []
        for n, h in self.hosts.items():
            if h.proc is not None and not h.exit_seen and h.proc.poll() is not None:
                self._exited(n, h.proc.returncode, None)
                out.append(n)
        return out

    def kill(self, name: str) -> int | None:
        """SIGKILL (a spot host vanishing, a crash)."""
        self.reap()
        self.note(f"SIGKILL {name}")
        return self._signal(name, signal.SIGKILL, -signal.SIGKILL, 10)

    def terminate(self, name: str, timeout: float | None = None) -> int | None:
        """SIGTERM: the daemon drains and must exit 0."""
        self.reap()
        self.note(f"SIGTERM {name}")
        drain = float(yaml.safe_load(self.config_path.read_text())["ringmesh"]["drain_notice_seconds"])
        return self._signal(name, signal.SIGTERM, 0, timeout or drain + 20)

    def pause(self, name: str) -> None:
        h = self.hosts[name]
        self.note(f"SIGSTOP {name}")
        h.proc.send_signal(signal.SIGSTOP)
        h.paused = True

    def resume(self, name: str) -> None:
        h = self.hosts[name]
        self.note(f"SIGCONT {name}")
        h.proc.send_signal(signal.SIGCONT)
        h.paused = False

    def replace(self, name: str) -> None:
        """A fresh host under the same name and address: empty data dir, new incarnation."""
        h = self.hosts[name]
        if h.up():
            self.kill(name)
        h.life += 1
        self.note(f"replace {name} (life {h.life})")
        self.start_host(name)

    def running(self) -> list[str]:
        """Hosts whose daemon runs and is not stopped."""
        return [n for n, h in self.hosts.items() if h.up() and not h.paused]

    def index(self, name: str) -> int:
        return self.hosts[name].index

    def names(self, *, role: str | None = None, ephemeral: bool | None = None, nat: bool | None = None) -> list[str]:
        return [
            n
            for n, h in self.hosts.items()
            if (role is None or h.spec.role == role)
            and (ephemeral is None or h.spec.ephemeral == ephemeral)
            and (nat is None or h.spec.nat_blocked == nat)
        ]

    def mount_tmpfs(self, path: Path, size: str) -> None:
        """A tmpfs of `size` (e.g. "48m") at `path` (created); unmounted at close."""
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            check=True,
            capture_output=True,
            timeout=20,
        )
        self.mounts.append(path)

    def stop_all(self) -> dict[str, int | None]:
        """SIGCONT what is stopped, SIGTERM every daemon at once; each must drain and exit 0."""
        drain = float(yaml.safe_load(self.config_path.read_text())["ringmesh"]["drain_notice_seconds"])
        self.reap()
        up = [n for n, h in self.hosts.items() if h.up()]
        self.note(f"SIGTERM {', '.join(up) or 'nobody'}")
        for n in up:
            h = self.hosts[n]
            if h.paused:
                h.proc.send_signal(signal.SIGCONT)
                h.paused = False
            h.proc.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {n: None for n in self.hosts}
        deadline = time.monotonic() + drain + 20
        for n in up:
            h = self.hosts[n]
            try:
                codes[n] = h.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                h.proc.kill()
                codes[n] = h.proc.wait(10)
                self._exited(n, codes[n], 0)
                self.fail("daemon stops", f"{n} did not exit within {drain + 20:.0f} s of SIGTERM")
            self._exited(n, codes[n], 0)
        return codes

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_sampler.set()
        for w in self.workers:
            w.stop()
        try:
            for h in self.hosts.values():
                if h.up():
                    if h.paused:
                        h.proc.send_signal(signal.SIGCONT)
                    h.proc.terminate()
            for h in self.hosts.values():
                if h.proc is not None and h.proc.poll() is None:
                    try:
                        h.proc.wait(20)
                    except subprocess.TimeoutExpired:
                        h.proc.kill()
                        h.proc.wait(10)
        finally:
            self.lab.close()
            for m in reversed(self.mounts):
                if subprocess.run(["umount", str(m)], capture_output=True, timeout=20).returncode != 0:
                    subprocess.run(["umount", "-l", str(m)], capture_output=True, timeout=20)

    # -- queries ---------------------------------------------------------------------------

    def client(self, name: str, timeout: float = 5.0) -> LocalClient:
        return LocalClient(self.hosts[name].data_dir, timeout=timeout)

    def query(self, name: str, what: str = "status", timeout: float = 5.0) -> dict | None:
        """`status` or `ls` of a running host, or None while it does not answer."""
        h = self.hosts[name]
        if not h.up() or h.paused:
            return None
        try:
            with self.client(name, timeout) as c:
                return c.status() if what == "status" else c.ls()
        except ClientError:
            return None

    def status(self, name: str) -> dict | None:
        return self.query(name, "status")

    def ls(self, name: str) -> dict | None:
        return self.query(name, "ls")

    def dest_dir(self, name: str, type_: str) -> Path:
        """Where `name` installs files of `type_`: its configured path, else `files/<type>/`."""
        h = self.hosts[name]
        return Path(dict(h.spec.paths)[type_]) if type_ in dict(h.spec.paths) else h.data_dir / "files" / type_

    def model_path(self, name: str, model: str = MODEL) -> Path:
        return self.dest_dir(name, "model") / model

    def publish_model(self, name: str, path: Path, broadcast: bool = True) -> dict:
        with self.client(name, timeout=120) as c:
            r = c.put(path, "model", broadcast=broadcast)
        self.note(
            f"{'promote' if broadcast else 'publish'} model {r['digest'][:12]} ({r['size_bytes']} bytes) from {name}"
        )
        return r

    def leader_view(self) -> tuple[str | None, int | None, list[str], dict[str, tuple]]:
        """(leader, term) if every running host agrees, the hosts acting as leader, and each view."""
        views, acting = {}, []
        for n in self.running():
            st = self.status(n)
            if st is None:
                continue
            views[n] = (st["leader"], st["term"])
            if st["election"]["is_leader"]:
                acting.append(n)
        agreed = set(views.values())
        leader, term = agreed.pop() if len(agreed) == 1 else (None, None)
        return leader, term, acting, views

    def acting_leaders(self) -> list[str]:
        return [n for n in self.running() if ((self.status(n) or {}).get("election") or {}).get("is_leader")]

    def leases(self) -> list[tuple[str, int, float, float]]:
        """The hosts acting as leader: (host, term, asked at, lease until), wall-clock seconds
        (one clock: every namespace shares this machine's)."""
        out = []
        for n in self.running():
            before = time.time()
            e = (self.status(n) or {}).get("election") or {}
            after = time.time()
            if e.get("is_leader"):  # held at the host's "now", somewhere in [before, after]: sure from `after`
                out.append((n, e["term"], after, before + e["lease_left_s"]))  # to at least `before + left`
        return out

    # -- memory ----------------------------------------------------------------------------

    def sample_rss(self) -> None:
        t = time.monotonic() - self.t0
        for n, h in self.hosts.items():
            if h.up():
                b = rss_bytes(h.proc.pid)
                if b is not None:
                    self.rss.append((round(t, 1), n, h.life, b))

    def sample_rss_every(self, seconds: float) -> None:
        def loop():
            while not self._stop_sampler.is_set():
                self.sample_rss()
                self._stop_sampler.wait(seconds)

        self._sampler = threading.Thread(target=loop, name="rss", daemon=True)
        self._sampler.start()

    # -- failing ---------------------------------------------------------------------------

    def tails(self, n: int = TAIL_LINES) -> str:
        out = []
        for name, h in self.hosts.items():
            state = (
                "stopped" if h.paused else ("running" if h.up() else f"exited {h.proc.returncode if h.proc else '-'}")
            )
            out.append(f"--- {name} (life {h.life}, {state}, {self.lab.address(h.index)}) last {n} log lines ---")
            try:
                out += h.log.read_text(errors="replace").splitlines()[-n:]
            except OSError:
                out.append("(no log)")
        return "\n".join(out)

    def fail(self, check: str, detail: str) -> None:
        events = "\n".join(f"  [{t:7.2f}s] {w}" for t, w in self.events[-30:])
        raise ChaosFailure(
            f"CHECK FAILED: {check}\nseed: {self.seed}\n{detail}\nwhat the run did (last 30):\n{events}\n{self.tails()}"
        )

    def wait(self, cond: Callable[[], Any], timeout: float, check: str, what: str, interval: float = 0.1) -> Any:
        r = wait_until(cond, timeout, interval)
        if not r:
            self.fail(check, f"timed out after {timeout:.0f} s waiting for {what}")
        return r

    # -- checks ------------------------------------------------------------------------------

    def check_one_leader(self, timeout: float) -> tuple[str, int]:
        """Every running host names the same leader and term, and only that host acts as leader."""
        last: list = []

        def one():
            leader, term, acting, views = self.leader_view()
            last[:] = [views, acting]
            return (leader, term) if leader is not None and acting == [leader] else None

        r = wait_until(one, timeout, 0.2)
        if not r:
            self.fail(
                "one leader",
                f"within {timeout:.0f} s: views (leader, term) {last[0] if last else '?'}, "
                f"acting as leader {last[1] if last else '?'}",
            )
        return r

    def converged(self) -> bool:
        prints = set()
        for n in self.running():
            st = self.status(n)
            if st is None:
                return False
            prints.add(st["fingerprint"])
        return len(prints) == 1

    def check_converged(self, bound: float, since: float | None = None) -> float:
        """Every running host's manifest (version vector fingerprint) is the same, within `bound`
        seconds of `since` (monotonic; default now). Returns the seconds it took."""
        since = time.monotonic() if since is None else since
        left = bound - (time.monotonic() - since)
        if not wait_until(self.converged, max(0.0, left), 0.1):
            prints = {n: (self.status(n) or {}).get("fingerprint") for n in self.running()}
            self.fail("manifests converged", f"not within {bound:.0f} s of the heal: fingerprints {prints}")
        return round(time.monotonic() - since, 2)

    def check_model(self, source: Path, digest: str, timeout: float, model: str = MODEL) -> list[str]:
        """Every eligible host (the placement's targets, as every running host agrees on them)
        holds `digest` of `model`, byte-identical to `source`. Returns the targets."""
        state: dict[str, Any] = {}

        def delivered():
            targets: set[str] | None = None
            holds: set[str] = set()  # hosts whose own manifest says they hold `digest` (installed)
            for n in self.running():
                doc = self.ls(n)
                it = next((i for i in (doc or {}).get("items", []) if i["name"] == model), None)
                if it is None or it["digest"] != digest:
                    state["why"] = f"{n} lists {it and it['digest']} as the newest {model}"
                    return None
                t = set(it["targets"]) & set(self.running())
                if targets is not None and t != targets:
                    state["why"] = f"targets differ: {sorted(t)} vs {sorted(targets)}"
                    return None
                targets = t
                state["left_out"] = it["left_out"]
                if n in it["holders"]:
                    holds.add(n)
            missing = sorted((targets or set()) - holds)
            state["why"] = f"not yet held by {missing}"
            return sorted(targets) if targets and not missing else None

        targets = wait_until(delivered, timeout, 0.25)
        if not targets:
            self.fail(
                "newest model everywhere",
                f"{model} {digest[:12]} within {timeout:.0f} s: {state.get('why')}; left out: {state.get('left_out')}",
            )
        wrong = [n for n in targets if not filecmp.cmp(source, self.model_path(n, model), shallow=False)]
        if wrong:
            self.fail("newest model byte-identical", f"{model} differs from the published file on {wrong}")
        should = {n for n in self.running() if self.hosts[n].spec.role in ("training", "selfplay")}
        if not should <= set(targets):
            self.fail(
                "newest model everywhere",
                f"eligible hosts {sorted(should - set(targets))} are not targets: {state.get('left_out')}",
            )
        return targets

    def check_no_partials(self, timeout: float = 30.0) -> None:
        """No temp or partial file at any destination path (`files/<type>/`), and, once no pull
        runs, none in `tmp/` (partial pulls, imports) or `recipes/` either."""

        def clean():
            bad = []
            for n in self.running():
                dd = self.hosts[n].data_dir
                dests = list((dd / "files").glob("*/*")) + [
                    f for _, d in self.hosts[n].spec.paths for f in Path(d).glob("*")
                ]
                for f in dests:
                    if f.name.startswith(".") or f.name.endswith((".part", ".tmp", ".ringmesh-tmp")):
                        bad.append(str(f))
                st = self.status(n) or {}
                if not st.get("transfers"):
                    bad += [str(f) for f in (dd / "tmp").iterdir()] if (dd / "tmp").is_dir() else []
                    bad += [str(f) for f in (dd / "recipes").glob(".*")]
            state["bad"] = bad
            return not bad

        state: dict[str, list] = {}
        if not wait_until(clean, timeout, 0.5):
            self.fail("no temp or partial files", "left behind: " + ", ".join(state["bad"]))

    def check_daemons(self) -> dict[str, int]:
        """No daemon crashed: every exit was one we caused (SIGKILL: -9; SIGTERM: 0 after the
        drain) and no log has an uncaught traceback, an "internal error" or an ERROR record.
        Returns how many records of gRPC's own shutdown/peer-gone noise were set aside
        (`GRPC_NOISE`: logged at ERROR by grpcio itself when a peer vanishes mid-call)."""
        self.reap()
        bad = [
            f"{n} (life {life}) exited {code}, " + ("without being told to" if want is None else f"expected {want}")
            for n, life, code, want in self.exits
            if code != want
        ]
        noise: dict[str, int] = {}
        for n, h in self.hosts.items():
            for log in h.logs:
                problems, ignored = log_problems(log)
                if ignored:
                    noise[str(log.relative_to(self.root))] = ignored
                if problems:
                    bad.append(
                        f"{log.relative_to(self.root)}: {len(problems)} problem record(s), first:\n{problems[0]}"
                    )
        if bad:
            self.fail("no daemon crashed", "\n".join(bad))
        return noise


def overlapping_leases(leases: list[tuple[str, int, float, float]]) -> list[tuple]:
    """Pairs of different hosts whose leases, as they reported them, held at one instant: two
    leaders at once (split brain). Each lease held at least from when it was asked until its end."""
    bad = []
    for i, (h1, t1, a1, u1) in enumerate(leases):
        for h2, t2, a2, u2 in leases[i + 1 :]:
            if h1 != h2 and (t1 == t2 or max(a1, a2) < min(u1, u2)):
                bad.append(((h1, t1), (h2, t2)))
    return bad


def log_records(path: Path) -> list[str]:
    """A daemon log's records: a line with a timestamp, plus the lines that continue it (a traceback)."""
    records: list[str] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return records
    for ln in lines:
        if RECORD_START.match(ln) or not records:
            records.append(ln)
        else:
            records[-1] += "\n" + ln
    return records


def log_problems(path: Path) -> tuple[list[str], int]:
    """(records that show a bug, records of gRPC noise set aside)."""
    problems, ignored = [], 0
    for r in log_records(path):
        if LOG_PROBLEM.search(r):
            if GRPC_NOISE.search(r):
                ignored += 1
            else:
                problems.append(r)
    return problems, ignored


# -- sampling views ------------------------------------------------------------------------


class StatusSampler(threading.Thread):
    """Every `interval` s, every running host's `status`: the state it gives each member, the
    leader it names and whether it acts as leader. Kept for checks the scenario runs later (in
    its own thread): `unexpected` (a member seen suspect or dead while it was up: a false
    suspicion or death), `leaders_seen`. A host the run takes down is announced with
    `expect_down` (before the signal) and `expect_up` (once every host sees it alive again);
    what anyone says about it, and what it says itself, in between is not held against anyone.
    Times are seconds since the cluster's start (NetCluster.t0)."""

    def __init__(self, cluster: NetCluster, interval: float = 0.5) -> None:
        super().__init__(name="status-sampler", daemon=True)
        self.cluster, self.interval = cluster, interval
        cluster.workers.append(self)  # stopped at close, also when the run failed
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.rounds = 0
        self.views = 0  # status documents read
        # (asked at, answered at, observer, member, state) of every member seen not alive
        self.not_alive: list[tuple[float, float, str, str, str]] = []
        self.named_leader: Counter[str] = Counter()  # status["leader"], over every view
        self.acting_leader: Counter[str] = Counter()  # hosts whose view says they lead (election.is_leader)
        self.down: dict[str, list[list[float]]] = {}  # host -> [from, until] spans it is expected down

    def stop(self) -> None:
        self.stop_event.set()

    def _now(self) -> float:
        return time.monotonic() - self.cluster.t0

    def expect_down(self, name: str) -> None:
        with self.lock:
            self.down.setdefault(name, []).append([self._now(), float("inf")])

    def expect_up(self, name: str) -> None:
        with self.lock:
            spans = self.down.get(name) or [[self._now(), float("inf")]]
            spans[-1][1] = self._now()

    def _excused(self, name: str, asked: float, answered: float) -> bool:
        return any(answered >= a and asked < u for a, u in self.down.get(name, []))

    def run(self) -> None:
        while not self.stop_event.is_set():
            for n in self.cluster.running():
                asked = self._now()
                st = self.cluster.status(n)
                answered = self._now()
                if st is None:
                    continue
                with self.lock:
                    self.views += 1
                    if st.get("leader"):
                        self.named_leader[st["leader"]] += 1
                    if (st.get("election") or {}).get("is_leader"):
                        self.acting_leader[n] += 1
                    for m in st.get("members", []):
                        if m["name"] != n and m["state"] != "alive":
                            self.not_alive.append((asked, answered, n, m["name"], m["state"]))
            self.rounds += 1
            self.stop_event.wait(self.interval)

    def unexpected(self, members: list[str] | None = None, states: tuple[str, ...] = ("dead",)) -> list[tuple]:
        """Views of a member (of `members`, default all) in one of `states` while neither it nor
        the observer was expected down: (asked at, observer, member, state)."""
        with self.lock:
            return [
                (round(a, 2), o, m, st)
                for a, u, o, m, st in self.not_alive
                if st in states
                and (members is None or m in members)
                and not self._excused(m, a, u)
                and not self._excused(o, a, u)
            ]

    def leaders_seen(self) -> tuple[dict[str, int], dict[str, int]]:
        """(hosts named leader: views, hosts that said they lead: views) over every sample."""
        with self.lock:
            return dict(self.named_leader), dict(self.acting_leader)


# -- games ---------------------------------------------------------------------------------


class GameFactory:
    """Distinct, valid self-play game records, cheaply: a few real ones generated once (the
    self-play schema, selfplay.generate_games), cloned under fresh game ids drawn from the seed."""

    def __init__(self, workdir: Path, seed: int, templates: int = 6, moves: tuple[int, int] = (6, 10)) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        db = workdir / f"templates-{seed}.db"
        selfplay.generate_games(db, templates, config_key=CONFIG_KEY, seed=seed, moves=moves)
        self.templates, _ = gamedb.read_completed_games(db)
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def make(self) -> dict[str, Any]:
        with self.lock:
            t = self.rng.choice(self.templates)
            gid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        tables = {}
        for name, rows in t["tables"].items():
            i = list(t["columns"][name]).index("game_id")
            tables[name] = [tuple(gid if j == i else v for j, v in enumerate(r)) for r in rows]
        return {**t, "game_id": gid, "tables": tables}


class Producer(threading.Thread):
    """Self-play on one host: publishes `batch` games to its daemon every `interval` s with
    MeshClient.publish_game (over the Unix socket; each returns once fsynced), then waits up to
    `durable_wait` s for the last to become durable (durability is a prefix of the stream).
    Records what the daemon acknowledged (fsynced) and what it reported durable, per life of the
    host; survives its host being killed and replaced."""

    def __init__(
        self,
        cluster: NetCluster,
        name: str,
        factory: GameFactory,
        *,
        interval: float = 0.5,
        batch: int = 2,
        durable_wait: float = 10.0,
    ) -> None:
        super().__init__(name=f"producer-{name}", daemon=True)
        self.cluster, self.host, self.factory = cluster, name, factory
        cluster.workers.append(self)
        self.interval, self.batch, self.durable_wait = interval, batch, durable_wait
        self.stop_event = threading.Event()
        self.acked: dict[tuple[int, int], str] = {}  # (life, seq) -> game_id, fsynced on the origin
        self.durable: set[str] = set()  # game ids the origin reported durable
        # every game id handed to a daemon, acknowledged or not: a call cut by a SIGKILL may have
        # been fsynced (and replicated) before its reply was lost, so such a game is not "unknown"
        self.offered: set[str] = set()
        self.durable_through: dict[int, int] = {}  # life -> highest seq reported durable
        self.errors: Counter[str] = Counter()
        self.lock = threading.Lock()

    def stop(self) -> None:
        self.stop_event.set()

    def _mark(self, life: int, through: int) -> None:
        with self.lock:
            if through > self.durable_through.get(life, 0):
                self.durable_through[life] = through
                self.durable.update(g for (lf, q), g in self.acked.items() if lf == life and q <= through)

    def run(self) -> None:
        h = self.cluster.hosts[self.host]
        while not self.stop_event.is_set():
            life = h.life
            if not h.up() or h.paused:
                self.stop_event.wait(0.1)
                continue
            try:
                with MeshClient(h.data_dir) as mesh:  # what a self-play process uses
                    while not self.stop_event.is_set() and h.life == life and h.up():
                        for _ in range(self.batch):
                            rec = self.factory.make()
                            with self.lock:
                                self.offered.add(rec["game_id"])
                            q = mesh.publish_game(CONFIG_KEY, rec["game_id"], rec)  # returns once fsynced
                            with self.lock:
                                self.acked[(life, q)] = rec["game_id"]
                        if mesh.wait_durable(rec["game_id"], timeout=self.durable_wait):  # durable through q
                            self._mark(life, q)
                        self.stop_event.wait(self.interval)
            except ClientError as e:  # the daemon went (killed, replaced) or is not up yet
                self.errors["no socket" if str(e).startswith("no ringmesh daemon") else str(e).split(":")[0]] += 1
                self.stop_event.wait(0.2)

    def settle(self, timeout: float) -> None:
        """After the run: learn how far the host's current stream is durable now."""
        h = self.cluster.hosts[self.host]
        if not h.up() or h.paused:
            return
        life = h.life
        with self.lock:
            last = max((q for (lf, q) in self.acked if lf == life), default=0)
        if last and last > self.durable_through.get(life, 0):
            try:
                with LocalClient(h.data_dir, timeout=10) as c:
                    if c.wait_durable(CONFIG_KEY, last, timeout=timeout):
                        self._mark(life, last)
            except ClientError:
                pass


def game_ids(db: Path) -> tuple[int, set[str]]:
    """(rows, distinct game ids) of a game host's database of CONFIG_KEY."""
    if not db.exists():
        return 0, set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        ids = [g for (g,) in con.execute("SELECT game_id FROM games")]
        return len(ids), set(ids)
    except sqlite3.Error:
        return 0, set()
    finally:
        con.close()


def check_games(cluster: NetCluster, producers: list[Producer], timeout: float, *, fail: bool = True) -> dict[str, int]:
    """Every game an origin reported durable is in every training host's database, exactly once
    (waiting up to `timeout` s for the pulls); no game there that no producer handed to a daemon; and every
    game acknowledged on a host that still runs became durable (`settle` first). Returns the
    counts; `fail=False` reports lost games (durable, yet missing on a training host) in the
    counts instead of failing."""
    for p in producers:
        p.settle(timeout)
    durable = set().union(*(p.durable for p in producers))
    acked = {g for p in producers for g in p.acked.values()}
    offered = set().union(*(p.offered for p in producers))  # acked ones and calls cut short
    training = cluster.names(role="training")
    dbs = {n: cluster.hosts[n].data_dir / "games" / f"{CONFIG_KEY}.db" for n in training}
    state: dict[str, Any] = {}
    lost: set[str] = set()

    def present():
        lost.clear()
        for n, db in dbs.items():
            rows, ids = game_ids(db)
            missing = durable - ids
            lost.update(missing)
            state[n] = (rows, len(ids), len(missing), sorted(missing)[:5])
        return not lost

    if not wait_until(present, timeout, 0.5) and fail:
        cluster.fail(
            "every durable game on every training host",
            f"{len(durable)} games reported durable; "
            f"per training host (rows, distinct, missing, some missing): {state}",
        )
    for n, db in dbs.items():
        rows, ids = game_ids(db)
        if rows != len(ids):
            cluster.fail("each game once", f"{n}: {rows} rows for {len(ids)} distinct game ids")
        extra = ids - offered
        if extra:
            cluster.fail(
                "no unknown game", f"{n} holds {len(extra)} game(s) nobody published, e.g. {sorted(extra)[:3]}"
            )
    undurable_on_live = []
    for p in producers:
        h = cluster.hosts[p.host]
        if h.up() and not h.paused:
            with p.lock:
                pending = [q for (lf, q) in p.acked if lf == h.life and q > p.durable_through.get(lf, 0)]
            if pending:
                undurable_on_live.append(f"{p.host}: seqs {min(pending)}..{max(pending)} of life {h.life}")
    if undurable_on_live:
        cluster.fail("games on running hosts become durable", "; ".join(undurable_on_live))
    return {
        "produced": len(acked),
        "durable": len(durable),
        "lost": len(lost),
        "not_durable_when_their_host_died": len(acked - durable),
        "unacked_calls_landed": len(set().union(*(game_ids(db)[1] for db in dbs.values())) - acked),
    }


def random_file(path: Path, size: int, rng: random.Random) -> Path:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 20)
            f.write(rng.randbytes(n))
            left -= n
    return path
