"""The names the cluster's operators already call, on top of ringmesh.

Every call goes to the peer running on this host (its Unix socket) and returns what the mesh
reports; nothing here is a second implementation of syncing. Waiting calls
(`sync_training_data`, `sync_models`, `full_cluster_sync`) ask the peer to plan at once and
wait, with a deadline, until the mesh shows the data in place.

    from ringmesh.compat import get_sync_orchestrator, DataType, TransferPriority
    orch = get_sync_orchestrator(); orch.initialize(); print(orch.get_status())
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .client import LocalClient
from .core.bandwidth import Priority as TransferPriority
from .core.errors import RingmeshError
from .core.recipe import DEFAULT_CHUNK
from .core.router import DataType
from .files import hash_file

__all__ = [
    "AutoSyncConfig", "AutoSyncDaemon", "DataType", "DistributedSyncCoordinator", "SyncOrchestrator",
    "TransferPriority", "check_sqlite_integrity", "compute_file_checksum", "create_ephemeral_sync_daemon",
    "get_cluster_data_status", "get_replication_targets", "get_sync_orchestrator", "get_sync_recommendations",
    "schedule_priority_sync", "verify_sync_integrity",
]


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or os.environ.get("RINGMESH_DATA_DIR", os.path.expanduser("~/.ringmesh")))


def _client(data_dir=None) -> LocalClient:
    return LocalClient(_data_dir(data_dir))


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout:.0f} s")
        time.sleep(0.2)


# -- module-level calls ----------------------------------------------------------------------


def get_cluster_data_status(data_dir=None) -> dict[str, Any]:
    with _client(data_dir) as c:
        return c.get("cluster")


def get_sync_recommendations(data_dir=None) -> list[dict[str, Any]]:
    with _client(data_dir) as c:
        return c.get("recommendations")["recommendations"]


def schedule_priority_sync(config_key: str, priority: TransferPriority | str = TransferPriority.HIGH,
                           data_dir=None) -> list[dict[str, Any]]:
    """Move the transfers of `config_key` to the front, at `priority`; returns the new plan."""
    with _client(data_dir) as c:
        return c.control("priority", config_key=config_key,
                         priority=TransferPriority.parse(priority).label)["recommendations"]


def get_replication_targets(data_id: str, data_type: DataType | str = DataType.MODEL, min_copies: int = 2,
                            data_dir=None) -> list[dict[str, Any]]:
    with _client(data_dir) as c:
        return c.get("replication_targets", item=data_id, type=DataType(data_type).value, min_copies=min_copies)["targets"]


def compute_file_checksum(path: str | os.PathLike, chunk_size: int = DEFAULT_CHUNK) -> str:
    """The ringmesh digest of a file: xxh3-128 of its chunks' xxh3-128 digests."""
    return hash_file(path, chunk_size)


@dataclass
class IntegrityReport:
    is_valid: bool
    errors: list[str] = field(default_factory=list)
    source_checksum: str | None = None
    dest_checksum: str | None = None


def verify_sync_integrity(source_path: str | os.PathLike, dest_path: str | os.PathLike) -> IntegrityReport:
    errors = []
    sums = []
    for label, p in (("source", source_path), ("dest", dest_path)):
        try:
            sums.append(compute_file_checksum(p))
        except OSError as e:
            sums.append(None)
            errors.append(f"{label} {p}: {e.strerror}")
    if None not in sums and sums[0] != sums[1]:
        errors.append(f"checksums differ: {sums[0]} != {sums[1]}")
    if not errors and str(source_path).endswith(".db"):
        for p in (source_path, dest_path):
            ok, messages = check_sqlite_integrity(p)
            errors += [] if ok else [f"{p}: {m}" for m in messages]
    return IntegrityReport(not errors, errors, sums[0], sums[1])


def check_sqlite_integrity(path: str | os.PathLike) -> tuple[bool, list[str]]:
    """`PRAGMA integrity_check` on a read-only connection: (ok, messages)."""
    try:
        db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in db.execute("PRAGMA integrity_check")]
        finally:
            db.close()
    except sqlite3.Error as e:
        return False, [str(e)]
    return rows == ["ok"], rows


# -- the orchestrator ------------------------------------------------------------------------


class SyncOrchestrator:
    def __init__(self, data_dir=None) -> None:
        self.data_dir = _data_dir(data_dir)
        self._client: LocalClient | None = None

    def initialize(self) -> bool:
        """Connect to the local peer; raises if none runs on the data dir."""
        self._client = LocalClient(self.data_dir)
        self._client.status()
        return True

    @property
    def client(self) -> LocalClient:
        if self._client is None:
            self.initialize()
        return self._client  # type: ignore[return-value]

    def sync_all(self) -> dict[str, Any]:
        """Plan every pending transfer now; returns the plan."""
        return self.client.control("sync")

    def get_status(self) -> dict[str, Any]:
        return self.client.status()

    def shutdown(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None


_orchestrators: dict[Path, SyncOrchestrator] = {}


def get_sync_orchestrator(data_dir=None) -> SyncOrchestrator:
    key = _data_dir(data_dir)
    return _orchestrators.setdefault(key, SyncOrchestrator(key))


# -- the coordinator -------------------------------------------------------------------------


class DistributedSyncCoordinator:
    _instances: dict[Path, DistributedSyncCoordinator] = {}

    def __init__(self, data_dir=None) -> None:
        self.data_dir = _data_dir(data_dir)

    @classmethod
    def get_instance(cls, data_dir=None) -> DistributedSyncCoordinator:
        key = _data_dir(data_dir)
        return cls._instances.setdefault(key, cls(key))

    def _sync_items(self, select, target_nodes: Iterable[str] | None, timeout: float) -> dict[str, Any]:
        with LocalClient(self.data_dir) as c:
            c.control("sync")
            chosen: list[dict[str, Any]] = []

            def done() -> bool:
                chosen[:] = [it for it in c.get("cluster")["items"] if select(it)]
                for it in chosen:
                    hosts = set(target_nodes) & set(it["targets"]) if target_nodes else set(it["targets"])
                    if not hosts <= set(it["holders"]):
                        return False
                return True

            _wait(done, timeout, "the sync")
        # Bytes moved to make the copies the mesh now holds (every copy but the publisher's).
        return {"files_synced": len(chosen), "bytes_transferred": sum(it["size_bytes"] * (it["copies"] - 1) for it in chosen),
                "items": [it["item"] for it in chosen]}

    def sync_training_data(self, target_node: str | None = None, config_key: str | None = None,
                           timeout: float = 600) -> dict[str, Any]:
        """Wait until the training data (NPZ, game DBs) of `config_key` is on its hosts."""
        def select(it):
            return it["type"] in ("npz", "gamedb") and (config_key is None or config_key in it["item"])
        return self._sync_items(select, [target_node] if target_node else None, timeout)

    def sync_models(self, model_ids: Iterable[str] | None = None, target_nodes: Iterable[str] | None = None,
                    timeout: float = 600) -> dict[str, Any]:
        ids = set(model_ids or ())
        def select(it):
            return it["type"] == "model" and (not ids or it["item"].split("/", 1)[1] in ids)
        return self._sync_items(select, target_nodes, timeout)

    def full_cluster_sync(self, timeout: float = 1800) -> dict[str, Any]:
        return self._sync_items(lambda it: True, None, timeout)


# -- the auto-sync daemon --------------------------------------------------------------------


@dataclass
class AutoSyncConfig:
    interval_seconds: float = 60.0
    strategy: str = "hybrid"  # hybrid (persistent hosts) | ephemeral (spot hosts) | broadcast

    def __post_init__(self) -> None:
        if self.interval_seconds <= 0:
            raise RingmeshError("interval_seconds must be positive")
        if self.strategy not in ("hybrid", "ephemeral", "broadcast"):
            raise RingmeshError(f"unknown strategy {self.strategy!r}")


class AutoSyncDaemon:
    """Asks the local peer to sync every `interval_seconds` (the peer also syncs by itself:
    this keeps the old entry point working and its cadence honoured)."""

    def __init__(self, config: AutoSyncConfig | None = None, data_dir=None) -> None:
        self.config = config or AutoSyncConfig()
        self.data_dir = _data_dir(data_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_error: str | None = None

    def start(self) -> None:
        LocalClient(self.data_dir).__exit__(None, None, None)  # fails now if no peer runs
        self._thread = threading.Thread(target=self._run, name="ringmesh-autosync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with LocalClient(self.data_dir) as c:
                    c.control("sync")
                self.rounds += 1
                self.last_error = None
            except RingmeshError as e:
                self.last_error = str(e)
            self._stop.wait(self.config.interval_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def create_ephemeral_sync_daemon(data_dir=None) -> AutoSyncDaemon:
    """The spot-host cadence: sync every 5 s (game streams add their own drain on SIGTERM)."""
    return AutoSyncDaemon(AutoSyncConfig(interval_seconds=5.0, strategy="ephemeral"), data_dir)
