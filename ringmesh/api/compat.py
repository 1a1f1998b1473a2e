"""The names the cluster's operators already call, on top of ringmesh.

Every call goes to the peer running on this host (its Unix socket) and returns what the mesh
reports; nothing here is a second implementation of syncing. Waiting calls
(`sync_training_data`, `sync_models`, `full_cluster_sync`) ask the peer to plan at once and
wait, with a deadline, until the mesh shows the data in place.

Sync and async, one rule: the calls the operators' scripts `await` are coroutines —
`SyncOrchestrator.initialize / sync_all / shutdown / schedule_priority_sync`,
`schedule_priority_sync`, `DistributedSyncCoordinator.sync_training_data / sync_models /
full_cluster_sync` and `AutoSyncDaemon.start`. Each runs its blocking client work in a worker
thread (`asyncio.to_thread`), so the event loop keeps running while it waits, and each has a
synchronous twin of the same name with `_blocking` appended (`initialize_blocking()`,
`sync_models_blocking()`, ...) that does the same work in the calling thread, for plain
scripts. Every other call (`get_status`, `get_cluster_data_status`, `get_sync_recommendations`,
`get_replication_targets`, `verify_sync_integrity`, ...) is plain, as their scripts call it;
those are single local requests (or local file reads).

    import asyncio
    from ringmesh.api.compat import get_sync_orchestrator, SyncPriority

    async def main():
        orch = get_sync_orchestrator()
        await orch.initialize()
        print(orch.get_status()["games_synced"])
        await orch.shutdown()

    asyncio.run(main())

    # a plain script:  orch = get_sync_orchestrator(); orch.initialize_blocking(); ...
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from ringmesh.api.client import LocalClient
from ringmesh.core.bandwidth import Priority as TransferPriority
from ringmesh.core.errors import RingmeshError
from ringmesh.core.recipe import DEFAULT_CHUNK
from ringmesh.core.router import DataType
from ringmesh.node.files.store import hash_file

#: The operators' name for the transfer classes (the same enum: `SyncPriority.HIGH is TransferPriority.HIGH`).
SyncPriority = TransferPriority

__all__ = [
    "AutoSyncConfig",
    "AutoSyncDaemon",
    "ClusterDataStatus",
    "DataType",
    "DistributedSyncCoordinator",
    "IntegrityReport",
    "SyncOrchestrator",
    "SyncPriority",
    "SyncRecommendation",
    "SyncStats",
    "TransferPriority",
    "check_sqlite_integrity",
    "compute_file_checksum",
    "create_ephemeral_sync_daemon",
    "get_cluster_data_status",
    "get_replication_targets",
    "get_sync_orchestrator",
    "get_sync_recommendations",
    "schedule_priority_sync",
    "schedule_priority_sync_blocking",
    "verify_sync_integrity",
]

POLL_S = 0.2  # how often a waiting call looks at the mesh again


def _data_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir or os.environ.get("RINGMESH_DATA_DIR", os.path.expanduser("~/.ringmesh")))


def _client(data_dir=None) -> LocalClient:
    return LocalClient(_data_dir(data_dir))


def _wait(predicate, timeout: float, what: str, cancel: threading.Event | None = None) -> None:
    """Poll `predicate` until true; TimeoutError after `timeout` s; stop early once `cancel` is set."""
    cancel = cancel or threading.Event()
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not done within {timeout:.0f} s")
        if cancel.wait(POLL_S):
            raise RingmeshError(f"{what}: cancelled")


async def _off_loop(fn: Callable[..., Any], /, *args: Any, cancellable: bool = False, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)` in a worker thread. `cancellable`: `fn` takes `cancel=`, an Event set
    when the awaiting task is cancelled, so a cancelled wait does not poll on until its deadline."""
    if not cancellable:
        return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
    cancel = threading.Event()
    try:
        return await asyncio.to_thread(functools.partial(fn, *args, cancel=cancel, **kwargs))
    except asyncio.CancelledError:
        cancel.set()
        raise


class _Record(dict):
    """A dict whose keys also read as attributes (`r.reason` and `r["reason"]`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class SyncRecommendation(_Record):
    """One transfer the peer recommends: the peer's recommendation (`host`, `item`, `digest`,
    `sources`, `priority`, `config_key`, `reason`, `bytes`, `estimated_seconds`, ...) plus the
    operators' names `target` (= `host`, the host that should pull) and `source` (= the first of
    `sources`, the healthy holders, in the peer's order; None when no holder is reachable)."""

    @classmethod
    def of(cls, rec: dict[str, Any]) -> SyncRecommendation:
        sources = rec.get("sources") or []
        return cls(rec, target=rec.get("host"), source=sources[0] if sources else None)


def _recommendations(recs: list[dict[str, Any]]) -> list[SyncRecommendation]:
    return [SyncRecommendation.of(r) for r in recs]


class ClusterDataStatus(dict):
    """`config_key → info`, every config the peer knows of (from its files or its game streams).

    Per config, from what the local peer reports:
      - `game_count`: games of that config produced in the cluster as this peer knows them —
        the peer's `status` → `freshness[config]["games"]`: over every game stream of the
        config, its origin's own high-water mark (else the highest any holder advertises);
        0 when no stream of the config is known;
      - `age_hours`: hours since the newest game of the config was stored by its origin —
        `freshness[config]["newest_age_s"] / 3600` (the origin stamps its mark with its clock);
        None when unknown (no games, or no origin stamp seen yet);
      - `streams`: how many game streams (origin, config) it has;
      - `files`, `bytes`: the newest file versions (npz, models, ...) of the config and their
        total size (`cluster` → `configs`); `newest_file_hlc`: the newest of their HLCs;
      - `hosts_behind`: hosts lacking some newest file or some game of the config.

    `.report` is the peer's whole `cluster` report (`items`, `disks`, `members`, `configs`);
    `.freshness` its game freshness per config; `.node` the peer that answered."""

    def __init__(self, report: dict[str, Any], freshness: dict[str, Any]) -> None:
        files, games = report.get("configs", {}), freshness
        for key in sorted(set(files) | set(games)):
            f, g = files.get(key, {}), games.get(key, {})
            age_s = g.get("newest_age_s")
            self[key] = {
                "config_key": key,
                "game_count": g.get("games", 0),
                "age_hours": None if age_s is None else age_s / 3600.0,
                "streams": g.get("streams", 0),
                "files": f.get("items", 0),
                "bytes": f.get("bytes", 0),
                "newest_file_hlc": f.get("newest_hlc") or None,
                "hosts_behind": sorted(set(f.get("hosts_behind", ())) | set(g.get("hosts_behind", ()))),
            }
        self.report, self.freshness, self.node = report, freshness, report.get("node")


@dataclass
class SyncStats:
    """What a waiting sync call saw once the data was in place. `files_synced`: the newest file
    versions it waited for; `bytes_transferred`: the bytes of their copies beyond the first
    (size × (copies − 1)), i.e. what the mesh moved to make the copies it now holds — the local
    API reports holders, not per-call byte counts, so copies made before the call are included.
    Reads as attributes and, for old callers, as `stats["files_synced"]`."""

    files_synced: int
    bytes_transferred: int
    items: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


# -- module-level calls ----------------------------------------------------------------------


def get_cluster_data_status(data_dir=None) -> ClusterDataStatus:
    with _client(data_dir) as c:
        return ClusterDataStatus(c.get("cluster"), c.status().get("freshness", {}))


def get_sync_recommendations(data_dir=None) -> list[SyncRecommendation]:
    with _client(data_dir) as c:
        return _recommendations(c.get("recommendations")["recommendations"])


def schedule_priority_sync_blocking(
    config_key: str, priority: TransferPriority | str = TransferPriority.HIGH, data_dir=None
) -> list[SyncRecommendation]:
    """Move the transfers of `config_key` to the front, at `priority`; returns the new plan."""
    with _client(data_dir) as c:
        return _recommendations(
            c.control("priority", config_key=config_key, priority=TransferPriority.parse(priority).label)[
                "recommendations"
            ]
        )


async def schedule_priority_sync(
    config_key: str, priority: TransferPriority | str = TransferPriority.HIGH, data_dir=None
) -> list[SyncRecommendation]:
    """`schedule_priority_sync_blocking`, awaited (the request runs in a worker thread)."""
    return await _off_loop(schedule_priority_sync_blocking, config_key, priority, data_dir)


def get_replication_targets(
    data_id: str, data_type: DataType | str = DataType.MODEL, min_copies: int = 2, data_dir=None
) -> list[dict[str, Any]]:
    with _client(data_dir) as c:
        return c.get("replication_targets", item=data_id, type=DataType(data_type).value, min_copies=min_copies)[
            "targets"
        ]


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
    sums: list[str | None] = []
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


def _models_held(listing: dict[str, Any]) -> int:
    """Model versions (newest or older) the answering peer lists itself as a holder of."""
    me, n = listing.get("node"), 0
    for it in listing.get("items", []):
        if it.get("type") == DataType.MODEL.value:
            n += me in it.get("holders", [])
            n += sum(me in hs for hs in it.get("older_versions", {}).values())
    return n


class SyncOrchestrator:
    """The local peer, as the operators' orchestrator. Awaited: `initialize`, `sync_all`,
    `shutdown`, `schedule_priority_sync` (twins: `..._blocking`); plain: `get_status`,
    `get_cluster_data_status`, `get_sync_recommendations`."""

    def __init__(self, data_dir=None) -> None:
        self.data_dir = _data_dir(data_dir)
        self._client: LocalClient | None = None

    def initialize_blocking(self) -> bool:
        """Connect to the local peer; raises if none runs on the data dir."""
        client = LocalClient(self.data_dir)
        try:
            client.status()
        except BaseException:
            client.__exit__(None, None, None)
            raise
        old, self._client = self._client, client
        if old is not None:
            old.__exit__(None, None, None)
        return True

    async def initialize(self) -> bool:
        return await _off_loop(self.initialize_blocking)

    @property
    def client(self) -> LocalClient:
        if self._client is None:
            self.initialize_blocking()
        return self._client  # type: ignore[return-value]

    def sync_all_blocking(self) -> dict[str, Any]:
        """Plan every pending transfer now; returns the plan (`recommendations` as
        `SyncRecommendation`s, `blocked_items`, `priorities`)."""
        plan = self.client.control("sync")
        plan["recommendations"] = _recommendations(plan.get("recommendations", []))
        return plan

    async def sync_all(self) -> dict[str, Any]:
        return await _off_loop(self.sync_all_blocking)

    def get_status(self) -> dict[str, Any]:
        """The peer's `status`, plus the operators' figures:
        - `games_synced`: games this host holds in its stream log — over every game stream it
          keeps (its own and those it took in), the stream's high-water mark, i.e. games
          1..hw all held (games below a retention floor count as taken in);
        - `models_synced`: model versions (newest or older) this host holds, from the peer's
          `ls` (versions whose holders include this host)."""
        c = self.client
        status = c.status()
        status["games_synced"] = sum(status.get("games", {}).get("streams", {}).values())
        status["models_synced"] = _models_held(c.ls())
        return status

    def get_cluster_data_status(self) -> ClusterDataStatus:
        return get_cluster_data_status(self.data_dir)

    def get_sync_recommendations(self) -> list[SyncRecommendation]:
        return get_sync_recommendations(self.data_dir)

    def schedule_priority_sync_blocking(
        self, config_key: str, priority: TransferPriority | str = TransferPriority.HIGH
    ) -> list[SyncRecommendation]:
        return schedule_priority_sync_blocking(config_key, priority, self.data_dir)

    async def schedule_priority_sync(
        self, config_key: str, priority: TransferPriority | str = TransferPriority.HIGH
    ) -> list[SyncRecommendation]:
        return await schedule_priority_sync(config_key, priority, self.data_dir)

    def shutdown_blocking(self) -> None:
        if self._client is not None:
            self._client.__exit__(None, None, None)
            self._client = None

    async def shutdown(self) -> None:
        await _off_loop(self.shutdown_blocking)


_orchestrators: dict[Path, SyncOrchestrator] = {}


def get_sync_orchestrator(data_dir=None) -> SyncOrchestrator:
    key = _data_dir(data_dir)
    return _orchestrators.setdefault(key, SyncOrchestrator(key))


# -- the coordinator -------------------------------------------------------------------------


class DistributedSyncCoordinator:
    """Waiting syncs. Awaited: `sync_training_data`, `sync_models`, `full_cluster_sync` (twins:
    `..._blocking`); each returns `SyncStats` once the mesh shows the data on its hosts, or
    raises TimeoutError after `timeout` s. Cancelling the awaiting task ends the wait too."""

    _instances: dict[Path, DistributedSyncCoordinator] = {}

    def __init__(self, data_dir=None) -> None:
        self.data_dir = _data_dir(data_dir)

    @classmethod
    def get_instance(cls, data_dir=None) -> DistributedSyncCoordinator:
        key = _data_dir(data_dir)
        return cls._instances.setdefault(key, cls(key))

    def _sync_items(
        self, select, target_nodes: Iterable[str] | None, timeout: float, cancel: threading.Event | None = None
    ) -> SyncStats:
        targets = set(target_nodes) if target_nodes else None
        with LocalClient(self.data_dir) as c:
            c.control("sync")
            chosen: list[dict[str, Any]] = []

            def done() -> bool:
                chosen[:] = [it for it in c.get("cluster")["items"] if select(it)]
                for it in chosen:
                    hosts = targets & set(it["targets"]) if targets else set(it["targets"])
                    if not hosts <= set(it["holders"]):
                        return False
                return True

            _wait(done, timeout, "the sync", cancel)
        return SyncStats(
            files_synced=len(chosen),
            bytes_transferred=sum(it["size_bytes"] * max(0, it["copies"] - 1) for it in chosen),
            items=[it["item"] for it in chosen],
        )

    def sync_training_data_blocking(
        self,
        target_node: str | None = None,
        config_key: str | None = None,
        timeout: float = 600,
        cancel: threading.Event | None = None,
    ) -> SyncStats:
        """Wait until the training data (NPZ, game DBs) of `config_key` is on its hosts
        (on `target_node` if given, among them)."""

        def select(it):
            return it["type"] in ("npz", "gamedb") and (config_key is None or config_key in it["item"])

        return self._sync_items(select, [target_node] if target_node else None, timeout, cancel)

    async def sync_training_data(
        self, target_node: str | None = None, config_key: str | None = None, timeout: float = 600
    ) -> SyncStats:
        return await _off_loop(self.sync_training_data_blocking, target_node, config_key, timeout, cancellable=True)

    def sync_models_blocking(
        self,
        model_ids: Iterable[str] | None = None,
        target_nodes: Iterable[str] | None = None,
        timeout: float = 600,
        cancel: threading.Event | None = None,
    ) -> SyncStats:
        """Wait until the models `model_ids` (file names; all models if none) are on their
        hosts (on those of `target_nodes` that are among them, if given)."""
        ids = set(model_ids or ())

        def select(it):
            return it["type"] == "model" and (not ids or it["item"].split("/", 1)[1] in ids)

        return self._sync_items(select, target_nodes, timeout, cancel)

    async def sync_models(
        self, model_ids: Iterable[str] | None = None, target_nodes: Iterable[str] | None = None, timeout: float = 600
    ) -> SyncStats:
        return await _off_loop(
            self.sync_models_blocking,
            list(model_ids or ()) or None,
            list(target_nodes) if target_nodes else None,
            timeout,
            cancellable=True,
        )

    def full_cluster_sync_blocking(self, timeout: float = 1800, cancel: threading.Event | None = None) -> SyncStats:
        """Wait until every newest file version is on all its hosts."""
        return self._sync_items(lambda it: True, None, timeout, cancel)

    async def full_cluster_sync(self, timeout: float = 1800) -> SyncStats:
        return await _off_loop(self.full_cluster_sync_blocking, timeout, cancellable=True)


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
    this keeps the old entry point working and its cadence honoured), from a background
    thread. `await start()` (or `start_blocking()`) checks that a peer runs and returns once
    the thread is started; `stop()` is plain."""

    def __init__(self, config: AutoSyncConfig | None = None, data_dir=None) -> None:
        self.config = config or AutoSyncConfig()
        self.data_dir = _data_dir(data_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_error: str | None = None

    def start_blocking(self) -> None:
        if self.is_running():
            return
        LocalClient(self.data_dir).__exit__(None, None, None)  # fails now if no peer runs
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ringmesh-autosync", daemon=True)
        self._thread.start()

    async def start(self) -> None:
        await _off_loop(self.start_blocking)

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
