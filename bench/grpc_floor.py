"""The transport's own floor: how fast, and at what CPU cost, grpc.aio moves 4 MiB chunk frames
between two processes on loopback, with no ringmesh logic (no hashing, no disk) — beside rsync
(daemon mode, --whole-file) moving the same bytes in the same run.

    .venv/bin/python bench/grpc_floor.py [--size 512MiB] [--inflight 4]

`bench/swarm.py` (c) runs the two halves in two namespaces, beside the ringmesh pull and rsync:
`--serve PORT --bind ADDR` in one, `--connect ADDR:PORT --size N` (prints seconds) in the other.

Prints MB/s and CPU seconds per GiB (both processes) for each, and their ratios. It answers
"how much of a pull's cost is gRPC itself": ringmesh's pull can be no cheaper than this.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 4 << 20
OPTS = [("grpc.max_send_message_length", 8 << 20), ("grpc.max_receive_message_length", 8 << 20)]


def _cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, bind: str = "127.0.0.1") -> None:
    import grpc

    from ringmesh.node.wire import codec
    from ringmesh.v1 import mesh_pb2_grpc

    data = os.urandom(CHUNK)

    class Peer(mesh_pb2_grpc.PeerServicer):
        async def FetchChunks(self, request, context):
            for i in request.indices:
                yield codec.Chunk(index=i, offset=0, data=data)

    async def main() -> None:
        server = grpc.aio.server(options=OPTS)
        mesh_pb2_grpc.add_PeerServicer_to_server(Peer(), server)
        server.add_insecure_port(f"{bind}:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    asyncio.run(main())


async def fetch(port: int, n: int, inflight: int, host: str = "127.0.0.1") -> int:
    import grpc

    from ringmesh.node.wire import codec
    from ringmesh.v1 import mesh_pb2_grpc

    async with grpc.aio.insecure_channel(f"{host}:{port}", options=OPTS) as ch:
        stub = mesh_pb2_grpc.PeerStub(ch)
        sem = asyncio.Semaphore(inflight)

        async def one(i: int) -> int:  # one call per chunk, as ringmesh's pull makes them
            async with sem:
                got = 0
                async for fr in stub.FetchChunks(codec.ChunkRequest(digest="0" * 32, indices=[i])):
                    got += len(fr.data)
                return got

        return sum(await asyncio.gather(*(one(i) for i in range(n))))


def parse_size(text: str) -> int:
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}
    t = text.strip().lower()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * m)
    return int(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=512 << 20)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--serve", type=int, help="only serve, on this port")
    ap.add_argument("--bind", default="127.0.0.1", help="with --serve: the address to listen on")
    ap.add_argument("--connect", help="only fetch --size from a server at HOST:PORT; prints the seconds")
    a = ap.parse_args()
    if a.serve:
        serve(a.serve, a.bind)
        return 0
    n = max(1, a.size // CHUNK)
    if a.connect:
        host, _, port_text = a.connect.rpartition(":")
        t0 = time.perf_counter()
        assert asyncio.run(fetch(int(port_text), n, a.inflight, host)) == n * CHUNK
        print(f"{time.perf_counter() - t0:.3f}")
        return 0
    size = n * CHUNK
    port = _free_port()
    srv = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        s0, c0, t0 = _cpu(srv.pid), time.process_time(), time.perf_counter()
        got = asyncio.run(fetch(port, n, a.inflight))
        dt, cpu = time.perf_counter() - t0, _cpu(srv.pid) - s0 + time.process_time() - c0
    finally:
        srv.terminate()
        srv.wait()
    assert got == size
    grpc_rate, grpc_cpu = size / dt / 1e6, cpu / (size / (1 << 30))

    tmp = Path(tempfile.mkdtemp(prefix="grpc-floor-"))
    os.chmod(tmp, 0o755)  # an rsync daemon started as root reads as nobody
    try:
        src, dst = tmp / "src", tmp / "dst"
        src.mkdir()
        dst.mkdir()
        with open(src / "f", "wb") as f:
            for _ in range(n):
                f.write(os.urandom(CHUNK))
        rport = _free_port()
        (tmp / "rsyncd.conf").write_text(
            f"port = {rport}\naddress = 127.0.0.1\nuse chroot = no\n[m]\npath = {src}\nread only = yes\n"
        )
        d = subprocess.Popen(["rsync", "--daemon", "--no-detach", f"--config={tmp / 'rsyncd.conf'}"])
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", rport)) == 0:
                        break
            t0 = time.perf_counter()
            r = subprocess.run(["rsync", "--whole-file", f"rsync://127.0.0.1:{rport}/m/f", str(dst / "f")])
            rdt = time.perf_counter() - t0
            ru = os.times()
            rcpu = ru.children_user + ru.children_system  # the client; the daemon's forks are not ours
        finally:
            d.terminate()
            d.wait()
        assert r.returncode == 0
    finally:
        shutil.rmtree(tmp)
    rsync_rate = size / rdt / 1e6
    print(f"{size >> 20} MiB in 4 MiB chunks, {a.inflight} calls in flight")
    print(f"  grpc.aio alone: {grpc_rate:7.0f} MB/s, {grpc_cpu:.2f} CPU s per GiB (server + client)")
    print(f"  rsync daemon:   {rsync_rate:7.0f} MB/s, {rcpu / (size / (1 << 30)):.2f} CPU s per GiB (client only)")
    print(f"  ratio rsync time / grpc time: {rdt / dt:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
