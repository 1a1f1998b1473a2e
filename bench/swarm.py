"""Swarm benchmarks: real `ringmesh serve` peers, one per network namespace, links shaped with tc tbf
(`ringmesh/testing/netlab.py`); each figure is a ratio to a bound or a baseline measured in the same run.

(a) many-to-one: one model held by 4 holders, each capped at 25 MB/s egress; a sink joins and
    pulls it from all 4 at once. Sink throughput vs the 100 MB/s aggregate, and vs aria2c
    fetching the same file from nginx on the same 4 holders (same limits, one URI per holder).
(b) broadcast: a model from a publisher to 8 hosts, every link 50 MB/s each way. Time until all 8
    hold it vs S/B (size / 50 MB/s) and vs the publisher rsyncing it to each host in turn.
(c) one transfer between two namespaces, no limits, vs `rsync --whole-file` from an rsync daemon,
    and vs grpc.aio alone moving the same bytes as 4 MiB frames (`bench/grpc_floor.py`: the floor).

Timing: (a) from starting the sink's daemon until the file is installed at the sink; (b), (c) from
the moment `ringmesh put` returns (the file is imported and hashed; that time is shown apart)
until every receiver has it installed. Completion is seen by polling for the installed file
(atomic rename), so polling costs no CPU; `ringmesh ls --json` confirms the holders after.
CPU: seconds of user+system time per namespace over the timed stretch (from /proc; children that
ended included) and the machine's busy share of its cores. tbf limits L2 frames: TCP goodput
over 1500-byte frames is at most ~0.958 of a limit, for ringmesh and the baselines alike.
ringmesh's own limiter is off (RINGMESH_{EGRESS,INGRESS}_BYTES_PER_S=0): tc does the shaping.

Run (root; needs iproute2, nginx, aria2, rsync; see .ci/run):
    .venv/bin/python bench/swarm.py [--size 1GiB] [--only a|b|c] [--json] [--workdir /work/tmp] [--keep]
Units: MB = 10^6 bytes, MiB = 2^20 bytes, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import xxhash
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ringmesh.node.files.throttle import EGRESS_ENV, INGRESS_ENV  # noqa: E402
from ringmesh.ops.localcluster import wait_for  # noqa: E402
from ringmesh.testing.netlab import NetLab, available, cleanup_stale  # noqa: E402

MB, MiB = 1_000_000, 1 << 20
PY = sys.executable
PORT, HTTP_PORT, RSYNC_PORT, FLOOR_PORT = 7700, 8080, 8730, 7790
NAME = "canonical_hex8_2p.pth"  # a model: placement sends it to every selfplay host
PREFIX = "rmsw"
CLK = os.sysconf("SC_CLK_TCK")
GOT = re.compile(r"got (\S+) (\w+) \((\d+) bytes[^)]*\) from (\S+) in ([\d.]+)s")


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?B?)\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256MiB, 1GiB, 500MB)")
    n, p, suffix = float(m[1]), m[2].upper(), m[3].lower()
    base = 1000 if suffix == "b" and p else 1024  # 500MB: decimal; 256MiB, 64M: binary
    return int(n * base ** " KMGT".index(p or " "))


def random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        for off in range(0, size, 8 * MiB):
            f.write(os.urandom(min(8 * MiB, size - off)))
    return path


def digest_of(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while b := f.read(8 * MiB):
            h.update(b)
    return h.hexdigest()


# -- CPU accounting ---------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """user+system seconds of `pid` and of its children that ended and were waited for."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f[11:15]) / CLK
    except (OSError, IndexError, ValueError):
        return 0.0


def machine() -> tuple[int, int]:
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4], sum(f)  # busy (not idle, not iowait), total


SETTLE = {"timeout": 60.0, "busy": 0.35}  # --settle: wait for others' load to drop before a timed stretch


def settle() -> float:
    """Wait (at most SETTLE["timeout"] s) until the machine was less than SETTLE["busy"] busy over
    half a second, so that other work on a shared machine disturbs the timing less; returns the
    busy share of the last window (a measurement, not a synchronisation)."""
    deadline, share = time.monotonic() + SETTLE["timeout"], 1.0
    while True:
        b0, t0 = machine()
        time.sleep(0.5)
        b1, t1 = machine()
        share = (b1 - b0) / max(1, t1 - t0)
        if share < SETTLE["busy"] or time.monotonic() > deadline:
            return round(share, 3)


class CpuMeter:
    """CPU seconds per namespace host over a stretch; processes that end inside it are covered by
    `ended` (their parent's waited-for children, e.g. rsync's forks) or by RUSAGE_CHILDREN."""

    def __init__(self, lab: NetLab, hosts, busy_before: float | None = None) -> None:
        """`busy_before`: the `settle()` result when the caller settled already (before a put)."""
        self.lab, self.hosts, self.busy_before = lab, list(hosts), busy_before

    def sample(self) -> tuple[dict[int, dict[int, float]], tuple[int, int], float]:
        import resource

        per = {h: {p: cpu_s(p) for p in self.lab.pids(h)} for h in self.hosts}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return per, machine(), ru.ru_utime + ru.ru_stime

    def __enter__(self) -> CpuMeter:
        if self.busy_before is None:
            self.busy_before = settle()
        self.before = self.sample()
        return self

    def __exit__(self, *exc) -> None:
        self.after = self.sample()

    def report(self, names: dict[int, str]) -> dict:
        (b, mb, cb), (a, ma, ca) = self.before, self.after
        per = {names[h]: round(sum(v - b[h].get(p, 0.0) for p, v in a[h].items()), 2) for h in self.hosts}
        busy, total = ma[0] - mb[0], ma[1] - mb[1]
        return {
            "cpu_s": per,
            "waited_children_cpu_s": round(ca - cb, 2),
            "ours_cpu_s": round(sum(per.values()) + ca - cb, 2),
            "machine_busy_cpu_s": round(busy / CLK, 2),  # everything on the machine, other users' work too
            "machine_busy": round(busy / total, 3) if total else None,
            "cores": os.cpu_count(),
            "busy_share_before": self.busy_before,
        }


# -- a ringmesh cluster in a NetLab -------------------------------------------------------------


class Ring:
    def __init__(self, lab: NetLab, root: Path, names: list[str]) -> None:
        self.lab, self.root, self.names = lab, root, names
        self.data = [root / n for n in names]
        self.logs = [root / f"{n}.log" for n in names]
        self.procs: dict[int, subprocess.Popen] = {}
        self.started_wall: dict[int, float] = {}
        self.config = root / "distributed_hosts.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    # ringmesh's limiter is off (env below); tc shapes. 1 TB/s: "no limit" in config terms.
                    "sync_routing": {
                        "gossip_interval_seconds": 0.25,
                        "min_copies": 2,
                        "bandwidth_limit_mbps": 1_000_000,
                    },
                    "ringmesh": {"drain_notice_seconds": 1.0},
                    "hosts": {
                        n: {"address": f"{lab.address(i)}:{PORT}", "provider": "local", "role": "selfplay"}
                        for i, n in enumerate(names)
                    },
                },
                sort_keys=False,
            )
        )
        self.env = {**os.environ, EGRESS_ENV: "0", INGRESS_ENV: "0"}

    def start(self, i: int) -> None:
        log = open(self.logs[i], "ab")
        self.started_wall[i] = time.time()
        self.procs[i] = self.lab.exec(
            i,
            [
                PY,
                "-m",
                "ringmesh",
                "serve",
                "--config",
                str(self.config),
                "--node",
                self.names[i],
                "--data-dir",
                str(self.data[i]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
        )
        log.close()

    def cli(self, i: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """`ringmesh ARGS --data-dir D` from the root namespace (the CLI talks over the data dir's Unix socket)."""
        return subprocess.run(
            [PY, "-m", "ringmesh", *args, "--data-dir", str(self.data[i])],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def status(self, i: int) -> dict | None:
        if self.procs[i].poll() is not None:
            raise RuntimeError(f"{self.names[i]} exited with {self.procs[i].returncode}:\n{self.tail(i)}")
        r = self.cli(i, "status", "--json")
        return json.loads(r.stdout) if r.returncode == 0 else None

    def wait_ready(self, idx, timeout: float = 60) -> None:
        for i in idx:
            wait_for(lambda: self.status(i), timeout, 0.2, f"{self.names[i]} to answer `ringmesh status`")

    def wait_members(self, idx, timeout: float = 60) -> None:
        """Every host of `idx` sees every host of `idx` alive."""
        want = {self.names[i] for i in idx}

        def seen() -> bool:
            for i in idx:
                doc = self.status(i) or {}
                alive = {m["name"] for m in doc.get("members", []) if m["state"] == "alive"}
                if not want <= alive:
                    return False
            return True

        wait_for(seen, timeout, 0.2, "membership to settle")

    def put(self, i: int, path: Path, broadcast: bool) -> dict:
        r = self.cli(
            i, "put", str(path), "--type", "model", "--json", *(["--broadcast"] if broadcast else []), timeout=3600
        )
        if r.returncode != 0:
            raise RuntimeError(f"ringmesh put: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def file(self, i: int) -> Path:
        return self.data[i] / "files" / "model" / NAME

    def holds(self, i: int) -> bool:
        return self.file(i).exists()

    def wait_hold(self, idx, timeout: float, t0: float) -> dict[int, float]:
        """Poll (a stat per host, every 20 ms) until each host of idx holds the file; seconds after t0."""
        done: dict[int, float] = {}

        def check() -> bool:
            for i in idx:
                if i not in done and self.holds(i):
                    done[i] = time.monotonic() - t0
                if i in self.procs and self.procs[i].poll() is not None:
                    raise RuntimeError(f"{self.names[i]} exited:\n{self.tail(i)}")
            return len(done) == len(idx)

        wait_for(check, timeout, 0.02, f"{len(idx)} host(s) to hold the file")
        return done

    def pull(self, i: int) -> dict | None:
        m = None
        for m in GOT.finditer(self.logs[i].read_text(errors="replace")):
            pass
        return {"sources": m[4].split(","), "seconds": float(m[5])} if m else None

    def listening_after(self, i: int) -> float | None:
        """Seconds from starting host i's daemon until it logged that it listens."""
        m = re.search(
            r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*listening on", self.logs[i].read_text(errors="replace"), re.M
        )
        if not m:
            return None
        return round(time.mktime(time.strptime(m[1], "%Y-%m-%d %H:%M:%S")) + int(m[2]) / 1000 - self.started_wall[i], 2)

    def holders(self, i: int) -> list[str]:
        r = self.cli(i, "ls", "--json")
        items = json.loads(r.stdout)["items"] if r.returncode == 0 else []
        return sorted(next((it["holders"] for it in items if it["name"] == NAME), []))

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def tail(self, i: int, n: int = 30) -> str:
        return "\n".join(self.logs[i].read_text(errors="replace").splitlines()[-n:])


def broadcast_flag() -> bool:
    r = subprocess.run([PY, "-m", "ringmesh", "put", "--help"], capture_output=True, text=True, timeout=30)
    return "--broadcast" in r.stdout


def wait_port(lab: NetLab, frm: int, to: int, port: int, timeout: float = 15) -> None:
    code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()"
    wait_for(
        lambda: lab.run(frm, [PY, "-c", code, lab.address(to), str(port)], timeout=10).returncode == 0,
        timeout,
        0.1,
        f"port {port} on host {to}",
    )


def nginx(lab: NetLab, host: int, root: Path, serve_dir: Path) -> None:
    d = root / f"nginx{host}"
    (d / "tmp").mkdir(parents=True, exist_ok=True)
    temp = "".join(f"{k}_temp_path {d}/tmp/{k};\n" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (d / "nginx.conf").write_text(f"""user root; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{ access_log off; sendfile on; tcp_nopush on; default_type application/octet-stream;
{temp}server {{ listen {lab.address(host)}:{HTTP_PORT}; root {serve_dir}; }} }}
""")
    lab.exec(
        host,
        ["nginx", "-e", f"{d}/error.log", "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def rsyncd(lab: NetLab, host: int, root: Path, path: Path) -> None:
    d = root / f"rsyncd{host}"
    d.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    (d / "rsyncd.conf").write_text(
        f"pid file = {d}/rsyncd.pid\nuse chroot = no\nlog file = {d}/rsyncd.log\n"
        f"[bench]\n  path = {path}\n  read only = false\n  uid = root\n  gid = root\n"
    )
    lab.exec(
        host,
        [
            "rsync",
            "--daemon",
            "--no-detach",
            f"--config={d}/rsyncd.conf",
            f"--address={lab.address(host)}",
            f"--port={RSYNC_PORT}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def deadline_for(size: int, rate: float) -> float:
    return 120 + 4 * size / rate


# -- the scenarios ----------------------------------------------------------------------------


def bench_a(root: Path, src: Path, digest: str) -> dict:
    size, cap, n_hold = src.stat().st_size, 25 * MB, 4
    with NetLab(n_hold + 1, prefix=PREFIX) as lab:
        names = [f"holder{i}" for i in range(n_hold)] + ["sink"]
        sink, holders = n_hold, list(range(n_hold))
        (root / "a").mkdir()
        ring = Ring(lab, root / "a", names)
        for i in holders:
            ring.start(i)
        ring.wait_ready(holders)
        ring.wait_members(holders)
        t = time.monotonic()
        ring.put(0, src, False)
        put_s = time.monotonic() - t
        spread = ring.wait_hold(holders, deadline_for(size, 50 * MB), time.monotonic())
        for i in holders:
            lab.limit(i, egress_bytes_per_s=cap)
        with CpuMeter(lab, range(n_hold + 1)) as cpu:
            t0 = time.monotonic()
            ring.start(sink)
            took = ring.wait_hold([sink], deadline_for(size, n_hold * cap), t0)[sink]
        pull, listening = ring.pull(sink), ring.listening_after(sink)
        held = ring.holders(sink)
        ok = digest_of(ring.file(sink)) == digest
        ring.stop()
        cpu_ring = cpu.report(dict(enumerate(names)))

        out = root / "a" / "aria2"
        for i in holders:
            nginx(lab, i, root / "a", ring.file(i).parent)
        for i in holders:
            wait_port(lab, sink, i, HTTP_PORT)
        uris = [f"http://{lab.address(i)}:{HTTP_PORT}/{NAME}" for i in holders]
        with CpuMeter(lab, range(n_hold + 1)) as cpu:
            t0 = time.monotonic()
            r = lab.run(
                sink,
                [
                    "aria2c",
                    "--file-allocation=none",
                    f"-s{n_hold}",
                    "-x1",
                    "-j1",
                    "--min-split-size=4M",
                    "--allow-overwrite=true",
                    "--auto-file-renaming=false",
                    "--console-log-level=warn",
                    "--summary-interval=0",
                    "--download-result=hide",
                    "-d",
                    str(out),
                    "-o",
                    NAME,
                    *uris,
                ],
                timeout=deadline_for(size, n_hold * cap),
            )
            aria_s = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"aria2c failed ({r.returncode}): {r.stdout[-2000:]} {r.stderr[-2000:]}")
        aria_ok = digest_of(out / NAME) == digest
        cpu_aria = cpu.report(dict(enumerate(names)))
        (out / NAME).unlink()
    tput, aria_tput = size / took, size / aria_s
    return {
        "size_bytes": size,
        "holders": n_hold,
        "holder_egress_bytes_per_s": cap,
        "aggregate_bytes_per_s": n_hold * cap,
        "put_s": round(put_s, 2),
        "spread_unlimited_s": round(max(spread.values()), 2),
        "ringmesh": {
            "s": round(took, 2),
            "bytes_per_s": round(tput),
            "sink_listening_after_s": listening,
            "pull_s_from_log": pull and pull["seconds"],
            "pull_sources": pull and pull["sources"],
            # from listening until the pull began: joining, learning the version and its holders
            "discovery_s": round(took - listening - pull["seconds"], 2) if pull and listening is not None else None,
            "holders_seen_by_sink": held,
            "identical": ok,
            **cpu_ring,
        },
        "aria2c": {"s": round(aria_s, 2), "bytes_per_s": round(aria_tput), "identical": aria_ok, **cpu_aria},
        "ratio_vs_aggregate": round(tput / (n_hold * cap), 3),
        "ratio_pull_only_vs_aggregate": round(size / pull["seconds"] / (n_hold * cap), 3) if pull else None,
        "ratio_vs_aria2c": round(tput / aria_tput, 3),
        "aria2c_vs_aggregate": round(aria_tput / (n_hold * cap), 3),
    }


def bench_b(root: Path, src: Path, digest: str) -> dict:
    size, link, n_recv = src.stat().st_size, 50 * MB, 8
    use_broadcast = broadcast_flag()
    with NetLab(n_recv + 1, prefix=PREFIX) as lab:
        (root / "b").mkdir()
        names = ["publisher"] + [f"recv{i}" for i in range(1, n_recv + 1)]
        recv = list(range(1, n_recv + 1))
        for i in lab.hosts():
            lab.limit(i, egress_bytes_per_s=link, ingress_bytes_per_s=link)
        ring = Ring(lab, root / "b", names)
        for i in lab.hosts():
            ring.start(i)
        ring.wait_ready(lab.hosts())
        ring.wait_members(lab.hosts())
        busy = settle()
        t = time.monotonic()
        ring.put(0, src, use_broadcast)
        put_s = time.monotonic() - t
        with CpuMeter(lab, lab.hosts(), busy) as cpu:
            t0 = time.monotonic()
            done = ring.wait_hold(recv, deadline_for(size, link / 2), t0)
            took = max(done.values())
        pulls = {names[i]: ring.pull(i) for i in recv}
        held = ring.holders(0)
        ok = all(digest_of(ring.file(i)) == digest for i in recv)
        ring.stop()
        cpu_ring = cpu.report(dict(enumerate(names)))

        dests = {i: root / "b" / f"rsync{i}" for i in recv}
        for i in recv:
            rsyncd(lab, i, root / "b", dests[i])
        for i in recv:
            wait_port(lab, 0, i, RSYNC_PORT)
        each = {}
        with CpuMeter(lab, lab.hosts()) as cpu:
            t0 = time.monotonic()
            for i in recv:
                t = time.monotonic()
                lab.run(
                    0,
                    ["rsync", "--whole-file", str(ring.file(0)), f"rsync://{lab.address(i)}:{RSYNC_PORT}/bench/"],
                    timeout=deadline_for(size, link),
                    check=True,
                )
                each[names[i]] = round(time.monotonic() - t, 2)
            rsync_s = time.monotonic() - t0
        rsync_ok = all(digest_of(dests[i] / NAME) == digest for i in recv)
        cpu_rsync = cpu.report(dict(enumerate(names)))
        for d in dests.values():
            shutil.rmtree(d, ignore_errors=True)
    s_over_b = size / link
    return {
        "size_bytes": size,
        "receivers": n_recv,
        "link_bytes_per_s": link,
        "s_over_b_s": round(s_over_b, 2),
        "put_broadcast_flag": use_broadcast,
        "put_s": round(put_s, 2),
        "ringmesh": {
            "s": round(took, 2),
            "per_host_s": {names[i]: round(v, 2) for i, v in sorted(done.items())},
            "pulls_from_log": pulls,
            "holders_seen_by_publisher": held,
            "identical": ok,
            **cpu_ring,
        },
        "rsync_sequential": {"s": round(rsync_s, 2), "per_host_s": each, "identical": rsync_ok, **cpu_rsync},
        "ratio_vs_s_over_b": round(took / s_over_b, 3),
        "ratio_incl_put_vs_s_over_b": round((took + put_s) / s_over_b, 3),
        "speedup_vs_rsync": round(rsync_s / took, 3),
        "target_ratio_vs_s_over_b": 1.3,
    }


def bench_c(root: Path, src: Path, digest: str) -> dict:
    size = src.stat().st_size
    with NetLab(2, prefix=PREFIX) as lab:
        (root / "c").mkdir()
        names = ["source", "dest"]
        ring = Ring(lab, root / "c", names)
        for i in (0, 1):
            ring.start(i)
        ring.wait_ready([0, 1])
        ring.wait_members([0, 1])
        busy = settle()
        t = time.monotonic()
        ring.put(0, src, False)
        put_s = time.monotonic() - t
        with CpuMeter(lab, [0, 1], busy) as cpu:
            t0 = time.monotonic()
            took = ring.wait_hold([1], deadline_for(size, 20 * MB), t0)[1]
        pull = ring.pull(1)
        ok = digest_of(ring.file(1)) == digest
        ring.stop()
        cpu_ring = cpu.report(dict(enumerate(names)))

        rsyncd(lab, 0, root / "c", ring.file(0).parent)
        wait_port(lab, 1, 0, RSYNC_PORT)
        dest = root / "c" / "rsync-dest"
        dest.mkdir()
        with CpuMeter(lab, [0, 1]) as cpu:
            t0 = time.monotonic()
            lab.run(
                1,
                ["rsync", "--whole-file", f"rsync://{lab.address(0)}:{RSYNC_PORT}/bench/{NAME}", f"{dest}/"],
                timeout=deadline_for(size, 20 * MB),
                check=True,
            )
            rsync_s = time.monotonic() - t0
        rsync_ok = digest_of(dest / NAME) == digest
        cpu_rsync = cpu.report(dict(enumerate(names)))
        shutil.rmtree(dest, ignore_errors=True)

        floor_py = str(Path(__file__).resolve().parent / "grpc_floor.py")
        lab.exec(0, [PY, floor_py, "--serve", str(FLOOR_PORT), "--bind", lab.address(0)], stdout=subprocess.DEVNULL)
        wait_port(lab, 1, 0, FLOOR_PORT)
        with CpuMeter(lab, [0, 1]) as cpu:
            t0 = time.monotonic()
            lab.run(
                1,
                [PY, floor_py, "--connect", f"{lab.address(0)}:{FLOOR_PORT}", "--size", str(size)],
                timeout=deadline_for(size, 20 * MB),
                check=True,
            )
            floor_s = time.monotonic() - t0
        cpu_floor = cpu.report(dict(enumerate(names)))
    gib = size / (1 << 30)
    return {
        "size_bytes": size,
        "put_s": round(put_s, 2),
        "ringmesh": {
            "s": round(took, 2),
            "bytes_per_s": round(size / took),
            "pull_s_from_log": pull and pull["seconds"],
            "identical": ok,
            **cpu_ring,
        },
        "rsync_daemon": {
            "s": round(rsync_s, 2),
            "bytes_per_s": round(size / rsync_s),
            "identical": rsync_ok,
            **cpu_rsync,
        },
        "grpc_floor": {"s": round(floor_s, 2), "bytes_per_s": round(size / floor_s), **cpu_floor},
        "cpu_s_per_gib": {
            "ringmesh": round(cpu_ring["ours_cpu_s"] / gib, 2),
            "rsync": round(cpu_rsync["ours_cpu_s"] / gib, 2),
            "grpc_floor": round(cpu_floor["ours_cpu_s"] / gib, 2),
        },
        "ratio_cpu_ringmesh_over_grpc_floor": round(cpu_ring["ours_cpu_s"] / max(cpu_floor["ours_cpu_s"], 1e-9), 3),
        "target_cpu_ratio": 1.25,
        "ratio_rsync_time_over_ringmesh_time": round(rsync_s / took, 3),
        "ratio_pull_only": round(rsync_s / pull["seconds"], 3) if pull else None,
        "target_ratio": 1.0,
    }


def show(key: str, r: dict) -> None:
    mb = lambda x: f"{x / MB:.1f} MB/s"  # noqa: E731

    def cpu(d: dict) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in d["cpu_s"].items()) + (
            f"; all ours {d['ours_cpu_s']:.1f}; machine {d['machine_busy_cpu_s']:.1f} "
            f"({d['machine_busy']:.0%} of {d['cores']} cores; "
            f"{d['busy_share_before']:.0%} busy before)"
        )

    if key == "a":
        g, a = r["ringmesh"], r["aria2c"]
        print(
            f"(a) {r['size_bytes'] / MiB:.0f} MiB from {r['holders']} holders "
            f"at {r['holder_egress_bytes_per_s'] / MB:.0f} MB/s egress each "
            f"(put {r['put_s']} s, unlimited spread to the holders {r['spread_unlimited_s']} s)"
        )
        print(
            f"    ringmesh sink: {g['s']} s from daemon start = {mb(g['bytes_per_s'])}; "
            f"ratio to {r['aggregate_bytes_per_s'] / MB:.0f} MB/s {r['ratio_vs_aggregate']}  "
            f"(pull alone {g['pull_s_from_log']} s -> ratio {r['ratio_pull_only_vs_aggregate']}; "
            f"listening after {g['sink_listening_after_s']} s, pull began {g['discovery_s']} s later; "
            f"sources {g['pull_sources']}; identical {g['identical']})"
        )
        print(
            f"    aria2c/nginx:  {a['s']} s = {mb(a['bytes_per_s'])}; ratio to aggregate {r['aria2c_vs_aggregate']}; "
            f"identical {a['identical']}"
        )
        print(f"    ringmesh / aria2c throughput: {r['ratio_vs_aria2c']}")
        print(
            f"    CPU s ringmesh: {cpu(g)}\n    CPU s aria2c:   {cpu(a)} (aria2c itself {a['waited_children_cpu_s']})"
        )
    elif key == "b":
        g, s = r["ringmesh"], r["rsync_sequential"]
        print(
            f"(b) {r['size_bytes'] / MiB:.0f} MiB to {r['receivers']} hosts, "
            f"links {r['link_bytes_per_s'] / MB:.0f} MB/s each way; "
            f"S/B {r['s_over_b_s']} s; put {r['put_s']} s (--broadcast: {r['put_broadcast_flag']})"
        )
        print(
            f"    ringmesh: all hold after {g['s']} s; ratio to S/B {r['ratio_vs_s_over_b']} "
            f"(target <= {r['target_ratio_vs_s_over_b']}); "
            f"with put {r['ratio_incl_put_vs_s_over_b']}; identical {g['identical']}"
        )
        print(f"    per host: {g['per_host_s']}")
        print(
            f"    rsync one host after another: {s['s']} s; ringmesh speed-up {r['speedup_vs_rsync']}; "
            f"identical {s['identical']}"
        )
        print(f"    CPU s ringmesh: {cpu(g)}\n    CPU s rsync:    {cpu(s)} (clients {s['waited_children_cpu_s']})")
    else:
        g, s = r["ringmesh"], r["rsync_daemon"]
        print(f"(c) {r['size_bytes'] / MiB:.0f} MiB between two namespaces, no limits (put {r['put_s']} s)")
        print(
            f"    ringmesh: {g['s']} s = {mb(g['bytes_per_s'])} (pull alone {g['pull_s_from_log']} s); "
            f"identical {g['identical']}"
        )
        print(f"    rsync --whole-file from rsyncd: {s['s']} s = {mb(s['bytes_per_s'])}; identical {s['identical']}")
        print(
            f"    ratio rsync time / ringmesh time: {r['ratio_rsync_time_over_ringmesh_time']} "
            f"(target >= {r['target_ratio']}); "
            f"pull alone {r['ratio_pull_only']}"
        )
        print(f"    CPU s ringmesh: {cpu(g)}\n    CPU s rsync:    {cpu(s)} (client {s['waited_children_cpu_s']})")
        f, per = r["grpc_floor"], r["cpu_s_per_gib"]
        print(f"    grpc.aio floor (bench/grpc_floor.py, same namespaces): {f['s']} s = {mb(f['bytes_per_s'])}")
        print(f"    CPU s grpc floor: {cpu(f)}")
        print(
            f"    CPU s per GiB, both ends: ringmesh {per['ringmesh']}, rsync {per['rsync']}, "
            f"grpc floor {per['grpc_floor']}; ringmesh / floor {r['ratio_cpu_ringmesh_over_grpc_floor']} "
            f"(target <= {r['target_cpu_ratio']})"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--size", type=parse_size, default=parse_size("1GiB"), help="file size, e.g. 256MiB, 1GiB (default 1GiB)"
    )
    ap.add_argument("--only", choices=["a", "b", "c"], action="append", help="run only this scenario (repeatable)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--workdir",
        default="/work/tmp" if Path("/work").is_dir() else None,
        help="where data dirs go (not tmpfs: up to 9 copies of the file)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, data dirs)")
    ap.add_argument(
        "--settle",
        type=float,
        default=SETTLE["timeout"],
        help="before each timed stretch wait up to this many s for the machine to be < 35%% busy (default 60)",
    )
    args = ap.parse_args(argv)
    SETTLE["timeout"] = args.settle
    why = available(("tc", "nginx", "aria2c", "rsync"))
    if why:
        print(f"bench/swarm.py: cannot run: {why}", file=sys.stderr)
        return 2
    cleanup_stale(PREFIX)
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="ringmesh-swarm-", dir=args.workdir))
    started = time.monotonic()
    doc: dict = {
        "head": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        ).stdout.strip(),
        "dirty": subprocess.run(
            ["git", "status", "--short", "--untracked-files=no", "ringmesh"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent.parent,
        ).stdout.split("\n")[:-1],
    }
    try:
        src = random_file(root / NAME, args.size)
        digest = digest_of(src)
        for key, fn in (("a", bench_a), ("b", bench_b), ("c", bench_c)):
            if args.only and key not in args.only:
                continue
            doc[key] = fn(root, src, digest)
            if not args.json:
                show(key, doc[key])
                sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"interrupted; torn down{'' if not args.keep else ', work dir kept: ' + str(root)}", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"work dir kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    doc["wall_s"] = round(time.monotonic() - started, 1)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"wall time {doc['wall_s']} s (commit {doc['head']}; uncommitted ringmesh/ files: {len(doc['dirty'])})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
