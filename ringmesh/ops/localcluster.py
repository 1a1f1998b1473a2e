"""A cluster of real `ringmesh serve` processes on loopback: for the demo and the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from ringmesh.api.client import ClientError, LocalClient


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(cond: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `cond` until it returns something truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Node:
    name: str
    address: str
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    exits: list[int] = field(default_factory=list)

    def client(self) -> LocalClient:
        return LocalClient(self.data_dir, timeout=10)

    def query(self, what: str) -> dict | None:
        """status/ls of the node, or None while it does not answer."""
        try:
            with self.client() as c:
                return c.status() if what == "status" else c.ls()
        except ClientError:
            return None

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class LocalCluster:
    def __init__(
        self,
        root: str | Path,
        n: int,
        *,
        gossip_interval: float = 0.25,
        roles: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        routing: dict | None = None,
        own: dict | None = None,
        hosts: dict[str, dict] | None = None,
        tls: bool = False,
    ) -> None:
        """`tls`: a cluster CA and one certificate per node in <root>/tls, and peers that talk
        mutual TLS (`ringmesh.tls` in the config); otherwise plaintext."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(n)
        self.nodes = {
            f"node{i + 1}": Node(
                f"node{i + 1}", f"127.0.0.1:{p}", self.root / f"node{i + 1}", self.root / f"node{i + 1}.log"
            )
            for i, p in enumerate(ports)
        }
        roles = roles or {}
        self.tls_dir = self.root / "tls" if tls else None
        if self.tls_dir is not None:
            from ringmesh.node.wire.tls import init_ca, issue

            init_ca(self.tls_dir)
            for name in self.nodes:
                issue(self.tls_dir, name)
            own = {**(own or {}), "tls": {"ca": "tls/ca.crt", "cert": "tls/{node}.crt", "key": "tls/{node}.key"}}
        self.config_path = self.root / "distributed_hosts.yaml"
        self.config_path.write_text(
            yaml.safe_dump(
                {
                    # Loopback: a generous limit (MB/s) instead of the 20 MB/s built-in default.
                    "sync_routing": {
                        "gossip_interval_seconds": gossip_interval,
                        "min_copies": 2,
                        "bandwidth_limit_mbps": 400,
                        **(routing or {}),
                    },
                    **({"ringmesh": own} if own else {}),
                    "hosts": {
                        nd.name: {
                            "address": nd.address,
                            "provider": "local",
                            "role": roles.get(nd.name, "selfplay"),
                            **(hosts or {}).get(nd.name, {}),
                        }
                        for nd in self.nodes.values()
                    },
                },
                sort_keys=False,
            )
        )
        self.env = {**os.environ, **(env or {})}

    @classmethod
    def of(
        cls, root: str | Path, config_path: str | Path, addresses: dict[str, str], env: dict[str, str] | None = None
    ) -> LocalCluster:
        """Peers of a config written elsewhere (`ringmesh rehearse`): `addresses` name -> host:port."""
        c = cls.__new__(cls)
        c.root, c.config_path, c.tls_dir = Path(root), Path(config_path), None
        c.nodes = {n: Node(n, a, c.root / n, c.root / f"{n}.log") for n, a in addresses.items()}
        c.env = {**os.environ, **(env or {})}
        return c

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        env: dict[str, str] | None = None,
        launcher: tuple[str, ...] = ("-m", "ringmesh"),
        args: tuple[str, ...] = (),
    ) -> None:
        """Start `name`'s daemon; `launcher`: the interpreter's arguments before `serve` (a test's
        `ringmesh.testing.faults.launcher(...)` starts one with faults installed); `args`: more
        arguments of `serve` (`--listen` elsewhere than the file says: a host nobody can dial)."""
        nd = self.nodes[name]
        log = open(nd.log_path, "ab")
        nd.proc = subprocess.Popen(
            [
                sys.executable,
                *launcher,
                "serve",
                "--config",
                str(self.config_path),
                "--node",
                name,
                "--data-dir",
                str(nd.data_dir),
                *args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
        )
        log.close()

    def start_all(self, timeout: float = 30.0) -> None:
        for name in self.nodes:
            self.start(name)
        for name in self.nodes:
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 30.0) -> dict:
        nd = self.nodes[name]

        def ready():
            if nd.proc is not None and nd.proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {nd.proc.returncode}:\n{nd.log_tail()}")
            return nd.query("status")

        return wait_for(ready, timeout, what=f"{name} to answer")

    def signal(self, name: str, sig: int, timeout: float = 20.0) -> int | None:
        """Send `sig`; for SIGTERM/SIGKILL wait for the exit and return its code."""
        nd = self.nodes[name]
        if nd.proc is None or nd.proc.poll() is not None:
            return None
        nd.proc.send_signal(sig)
        if sig not in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
            return None
        try:
            code = nd.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            nd.proc.kill()
            code = nd.proc.wait()
        nd.exits.append(code)
        nd.proc = None
        return code

    def stop_all(self) -> dict[str, int | None]:
        return {name: self.signal(name, signal.SIGTERM) for name in self.nodes}

    def running(self) -> list[str]:
        return [n for n, nd in self.nodes.items() if nd.proc is not None and nd.proc.poll() is None]

    def query_all(self, what: str) -> dict[str, dict | None]:
        return {n: self.nodes[n].query(what) for n in self.running()}

    def converged(self) -> bool:
        """Every running node reports the same manifest fingerprint."""
        docs = self.query_all("status")
        prints = {d["fingerprint"] if d else None for d in docs.values()}
        return len(prints) == 1 and None not in prints
