"""The peer daemon: interprets the core's effects in real time over gRPC, SQLite and files.

One driver task feeds events to the core one at a time (the core is a plain object, never
shared across threads) and carries out the effects it returns: manifest changes are written
to SQLite by one worker thread before anything else of that step happens; messages are sent
in tasks of their own; timers are loop callbacks; transfers are tasks that report back as
events. Blocking work (SQLite, hashing, file I/O) never runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import sqlite3
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc

from ringmesh.config import ClusterConfig, ConfigError, check_address, peer_config
from ringmesh.core import catalog, keys
from ringmesh.core.errors import RingmeshError, unknown
from ringmesh.core.manifest import Manifest
from ringmesh.core.messages import (
    CancelTransfer,
    DiskMeasured,
    DrainRequested,
    DropGames,
    Effect,
    Emit,
    Envelope,
    Event,
    GamesDurable,
    GamesLost,
    LeaveRequested,
    MessageReceived,
    Persist,
    ReadGames,
    RunBackup,
    SaveVote,
    Send,
    SendFailed,
    SetTimer,
    StartTransfer,
    StoreGames,
    Timer,
    TimerFired,
)
from ringmesh.core.peer import Peer
from ringmesh.node.backup import Backups
from ringmesh.node.files.executor import Transfers
from ringmesh.node.files.integrity import Integrity
from ringmesh.node.files.store import FileStore
from ringmesh.node.files.throttle import EGRESS_ENV, INGRESS_ENV, Throttle, rate_setting
from ringmesh.node.games.executor import GameStreams
from ringmesh.node.games.games import Games
from ringmesh.node.scrub import Scrubber
from ringmesh.node.state import DataDirBusy, DataDirLock, Store
from ringmesh.node.telemetry import OUT, Telemetry
from ringmesh.node.view import NodeView
from ringmesh.node.wire import codec
from ringmesh.node.wire.health import Health
from ringmesh.node.wire.links import SERVER_OPTIONS, Links
from ringmesh.node.wire.relay import RelayHub, RelayRouter
from ringmesh.node.wire.service import LocalService, PeerService, register
from ringmesh.node.wire.tls import PLAINTEXT_WARNING, load_node, server_credentials
from ringmesh.node.wire.uplinks import Reachability, Uplinks
from ringmesh.ops import statusreport
from ringmesh.ops.logs import about
from ringmesh.ops.metrics import MetricsServer, listen_setting

log = logging.getLogger("ringmesh.node.runtime")
MAX_INBOX = 10_000


class DaemonError(RingmeshError):
    """The daemon cannot start as configured."""


def socket_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "ringmesh.sock"


class Daemon:
    def __init__(
        self,
        config: ClusterConfig,
        node: str,
        data_dir: str | Path,
        listen: str | None = None,
        metrics_listen: str | None = None,
    ) -> None:
        members = config.members()
        if node not in members:
            h = config.hosts.get(node)
            why = "no such host" if h is None else h.inactive or "no address, tailscale_ip or ssh_host"
            raise DaemonError(
                f"{config.path}: host {node!r} takes no part ({why}); members: {', '.join(sorted(members)) or 'none'}"
            )
        self.config = config
        self.host = members[node]
        assert self.host.address is not None  # members() holds only hosts with an address
        self.address: str = self.host.address
        self.listen = check_address("--listen", "address", listen) if listen else self.address
        # peer TLS: this host's files are checked now, so that a bad one stops the start with a clear error
        self.tls = (
            load_node(self.host.tls.files(), node, {k: f"{config.path}: {v}" for k, v in self.host.tls.sources.items()})
            if self.host.tls
            else None
        )
        self.data_dir = Path(data_dir)
        self.metrics_listen = listen_setting(config.metrics_listen, metrics_listen)  # None: no /metrics
        self.metrics: MetricsServer | None = None
        self.uplinks: Uplinks | None = None  # nat_blocked: the links this host dials out
        self.reachability = Reachability(config.timings["unreachable_after_seconds"])
        self.telemetry = Telemetry()
        self.view = NodeView(self)
        self.counters: Counter[str] = Counter()
        self.learned: dict[str, str] = {}
        # one byte budget per direction, shared by every transfer (bytes/s; None: no limit)
        self.egress = Throttle(rate_setting(EGRESS_ENV, self.host.egress_bytes_per_s))
        self.ingress = Throttle(rate_setting(INGRESS_ENV, self.host.ingress_bytes_per_s))
        self.inbox: asyncio.Queue[tuple[Event, asyncio.Future | None]] = asyncio.Queue()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task] = set()
        self._stopped = asyncio.Event()
        self.started_at = time.time()
        self.disk: dict[str, Any] = {}
        self._blocked: set[str] = set()
        self.events: list[dict[str, Any]] = []  # the last membership and leadership changes
        self.paused: str | None = None  # why no event is handled now (state cannot be written)
        self.core_errors: list[tuple[float, str]] = []  # the last steps that raised: (when, what)

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = DataDirLock(self.data_dir)
        try:
            self._lock.acquire()  # released by the kernel however we die: never stale
        except DataDirBusy as e:
            raise DaemonError(str(e)) from None
        self.store_exec = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store")
        self.store = await self.in_store(Store, self.data_dir)
        files = await asyncio.to_thread(FileStore, self.data_dir, self.host.paths)
        self.transfers = Transfers(self, files, self.ingress)
        self.integrity = await asyncio.to_thread(Integrity, self, files)
        games = await self.in_store(
            lambda: Games(
                self.data_dir, consume=self.host.role in ("training", "backup"), games_dir=self.host.games_dir
            )
        )
        self.games = GameStreams(self, games)
        states = await self.in_store(self.store.load)
        hlc = await self.in_store(self.store.meta, "hlc") or 0
        vote = await self.in_store(self.store.vote)
        me = self.host.name
        incarnation = states[me].incarnation if me in states else int(time.time() * 1000)
        manifest = Manifest(me, incarnation)
        for origin, st in states.items():
            manifest.load(origin, st)
        self.peer = Peer(
            me,
            incarnation=incarnation,
            rng=random.Random(),
            hlc=hlc,
            vote=vote,
            manifest=manifest,
            config=replace(peer_config(self.config), pull_priority=self.host.sync_priority),
            seeds=self.config.members(),
            voters=[n for n, h in self.config.members().items() if h.voter],
            node_record={
                "address": self.address,
                "role": self.host.role,
                "provider": self.host.provider,
                "ephemeral": self.host.ephemeral,
            },
        )
        self.games.learn_schemas(manifest.live_facts(keys.SCHEMA))  # (and games that waited for one land)
        self.links = Links(self.resolve, tls=self.tls)
        self.relay_hub = RelayHub(self)  # every host relays for the hosts nobody can dial
        self.links.relayed = RelayRouter(self, self.links.direct)
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        service = PeerService(self)
        register(self.server, service)
        self.health = Health(self.server, me)  # grpc.health.v1 and reflection; SERVING once started
        await self.health.start_not_serving()
        if self.tls is None:
            log.warning(PLAINTEXT_WARNING)
            port = self.server.add_insecure_port(self.listen)
        else:
            if self.tls.key_mode_warning:
                log.warning(self.tls.key_mode_warning)
            log.info(
                "mutual TLS: peers need a certificate from the cluster CA (%s); this host's expires %s",
                self.host.tls.ca if self.host.tls else "?",
                f"{self.tls.not_after:%Y-%m-%d}",
            )
            port = self.server.add_secure_port(self.listen, server_credentials(self.tls))
        if port == 0:
            raise DaemonError(f"cannot listen on {self.listen}")
        sock = socket_path(self.data_dir)
        sock.unlink(missing_ok=True)
        self.local = grpc.aio.server(options=SERVER_OPTIONS)  # a 6 MiB game must fit
        register(self.local, LocalService(self))
        self.local.add_insecure_port(f"unix:{sock}")
        await self.server.start()
        await self.local.start()
        os.chmod(sock, 0o600)
        await self._interpret(self.peer.start(time.time()))
        self._driver = asyncio.create_task(self._drive())
        self.spawn(self._measure_disk())
        self.scrubber = Scrubber(self)
        self.spawn(self.scrubber.run())
        self.spawn(self.integrity.rescan())
        self.spawn(self.integrity.unshare_pending())
        self.backups = Backups(self)
        self.games.start()
        if self.host.nat_blocked:  # nobody can dial us: keep links to relays
            self.link_out(service)
        else:
            self.spawn(self._watch_reachability(service))
        self.spawn(self.telemetry.watch(self.peer.manifest, max(0.05, min(1.0, self.config.gossip_interval / 4))))
        if self.metrics_listen:
            self.metrics = MetricsServer(self.view, self.metrics_listen)
        await self.health.set_serving()
        log.info("node %s incarnation %d listening on %s (data %s)", me, incarnation, self.listen, self.data_dir)

    def link_out(self, service: PeerService) -> None:
        self.uplinks = Uplinks(self, service, self.links.direct)
        self.spawn(self.uplinks.run())

    async def _watch_reachability(self, service: PeerService) -> None:
        """Link out once this host finds nobody can dial it (`uplinks.Reachability`'s rule)."""
        while not self.reachability.unreachable():
            await asyncio.sleep(min(5.0, self.reachability.after / 4))
        log.warning(
            "no peer's call has reached this host for %.0f s while %d peers answered its own: it seems "
            "nobody can dial it (NAT, a firewall); linking out to relays (say `nat_blocked: true` in the file "
            "to do so at once)",
            self.reachability.after,
            len(self.reachability.answers),
        )
        self.count("found_unreachable")
        self.link_out(service)

    def stop(self) -> None:
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def drain(self, notice: float) -> int:
        """Before going: push every game not yet durable to persistent peers and wait, within
        `notice` seconds, until they are durable. Returns how many are still not durable."""
        await self.health.set_not_serving()
        deadline = time.monotonic() + notice
        left = self.peer.replication.undurable()
        while left and time.monotonic() < deadline:
            try:  # bounded: the driver may be waiting for room on a full disk
                await asyncio.wait_for(self.submit(DrainRequested()), max(0.1, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            await self.games.wait_changed(min(1.0, max(0.0, deadline - time.monotonic())))
            left = self.peer.replication.undurable()
        if left:
            log.warning("drain: %d game(s) not durable after %.0f s of notice", left, notice)
        else:
            log.info("drain: every game is durable")
        return left

    async def leave(self, timeout: float = 1.0) -> None:
        """Tell the cluster we are going (graceful leave), waiting a little for the sends."""
        try:
            await asyncio.wait_for(self.submit(LeaveRequested()), timeout)
            pending = [t for t in self._tasks if not t.done()]
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        except (asyncio.TimeoutError, RingmeshError):
            log.warning("could not announce the leave in time")

    async def close(self) -> None:
        log.info("stopping")
        await self.health.set_not_serving()
        if self.metrics is not None:
            await self.metrics.close()
        await self.local.stop(grace=0.5)
        await self.server.stop(grace=1.0)
        self._driver.cancel()
        for h in self._timers.values():
            h.cancel()
        self.egress.close()
        self.ingress.close()
        self.scrubber.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(self._driver, *self._tasks, self.transfers.close(), return_exceptions=True)
        await self.links.close()
        await self.games.close()
        await self.in_store(self.store.close)
        self.store_exec.shutdown()
        socket_path(self.data_dir).unlink(missing_ok=True)
        self._lock.release()

    # -- feeding the core ------------------------------------------------------------------

    def submit_nowait(self, event: Event) -> None:
        if isinstance(event, MessageReceived) and self.inbox.qsize() >= MAX_INBOX:
            self.count("dropped_messages")
            return
        self.inbox.put_nowait((event, None))

    async def submit(self, event: Event) -> None:
        """Hand an event to the core and wait until its effects are carried out."""
        fut = asyncio.get_running_loop().create_future()
        self.inbox.put_nowait((event, fut))
        await fut

    async def _drive(self) -> None:
        while True:
            event, fut = await self.inbox.get()
            try:
                await self._interpret(self.peer.handle(event, time.time()))
            except RingmeshError as e:
                self.count("rejected_events")
                log.warning("event %s rejected: %s", type(event).__name__, e)
                if fut is not None and not fut.done():
                    fut.set_exception(e)
            except Exception as e:  # a bug of ours: log it loudly, keep serving
                if fut is not None and not fut.done():
                    fut.set_exception(e)
                await self._recover(event, e)
            else:
                if fut is not None and not fut.done():
                    fut.set_result(None)

    async def _recover(self, event: Event, error: Exception) -> None:
        """A step raised: its effects are lost, the next timers of the core's loops among
        them. Count it, keep it for `status` and `doctor`, and have the core re-arm them."""
        self.count("core_errors")
        self.core_errors.append((time.time(), f"{type(event).__name__}: {type(error).__name__}: {error}"))
        del self.core_errors[:-20]
        log.error("internal error handling %s", type(event).__name__, exc_info=error)
        try:
            await self._interpret(self.peer.recover(time.time()))
        except Exception:
            log.exception("internal error while recovering from it")

    async def _interpret(self, effects: list[Effect]) -> None:
        persists = [e for e in effects if isinstance(e, Persist)]
        if persists:
            changes = tuple(ch for p in persists for ch in p.changes)
            await self._write_state(self.store.apply, changes, persists[-1].hlc)
            self.games.learn_schemas((ch.origin, f) for ch in changes for f in ch.upserts)
        votes = [e for e in effects if isinstance(e, SaveVote)]
        if votes:
            await self._write_state(self.store.save_vote, votes[-1].term, votes[-1].voted_for)
        for e in effects:
            match e:
                case Persist() | SaveVote():
                    pass  # written above, before anything else
                case Send():
                    self.spawn(self._send(e.to, e.envelope))
                case SetTimer():
                    self._set_timer(e.name, e.at)
                case StartTransfer():
                    self.transfers.start(e)
                case CancelTransfer():
                    self.transfers.cancel(e)
                case StoreGames():
                    self.spawn(self.games.store(e))
                case ReadGames():
                    self.spawn(self.games.read(e))
                case GamesDurable():
                    self.spawn(self.games.mark_durable(e.config_key, e.through))
                case DropGames():
                    self.spawn(self.games.drop(e))
                case GamesLost():
                    self.spawn(self.games.lost(e))
                case RunBackup():
                    self.backups.run(e)
                case Emit():
                    self.events.append(
                        {"at": round(time.time(), 3), "kind": e.kind, "subject": e.subject, "detail": e.detail}
                    )
                    del self.events[:-50]
                    log.log(
                        logging.WARNING if e.kind == "declared-dead" else logging.INFO,
                        "%s %s %s",
                        e.kind,
                        e.subject or "(none)",
                        e.detail,
                        extra=about(peer=e.subject or None),
                    )
                case _:
                    unknown(e)

    def spawn(self, coro) -> None:
        """Run `coro` as a task of this node's (cancelled at `close`)."""
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    def _set_timer(self, name: Timer, at: float) -> None:
        old = self._timers.pop(name, None)
        if old:
            old.cancel()
        delay = max(0.0, at - time.time())
        self._timers[name] = asyncio.get_running_loop().call_later(delay, self.submit_nowait, TimerFired(name=name))

    async def in_store(self, fn, *args):
        """`fn(*args)` on the store thread (SQLite, the stream log): in the order asked."""
        return await asyncio.get_running_loop().run_in_executor(self.store_exec, fn, *args)

    async def _write_state(self, fn, *args) -> None:
        """A manifest or vote write, which must land before any other effect of its step is
        carried out (the core already counts them done). A full or failing disk is waited out:
        the write is retried until it lands and meanwhile no further event is handled — the
        host pauses (health NOT_SERVING; to the others as if stopped). Nothing is carried out
        without its state on disk, and nothing is dropped."""
        delay, since = 0.05, None
        while True:
            try:
                await self.in_store(fn, *args)
                break
            except (OSError, sqlite3.Error) as e:
                self.count("state_write_retries")
                if since is None:
                    since, self.paused = time.monotonic(), f"cannot write state: {e}"
                    log.warning("cannot write the manifest state (%s): this host pauses until it can", e)
                    await self.health.set_not_serving()
            await asyncio.sleep(delay)
            delay = min(2 * delay, 1.0)
        if since is not None:
            self.paused = None
            log.warning("state written again after %.1f s: resuming", time.monotonic() - since)
            await self.health.set_serving()

    # -- the network -----------------------------------------------------------------------

    def resolve(self, node: str) -> str | None:
        rec = catalog.node_record(self.peer.manifest, node)
        addr = rec.get("address") if rec else None
        if isinstance(addr, str) and addr:
            return addr
        if node in self.learned:
            return self.learned[node]
        host = self.config.members().get(node)
        return host.address if host else None

    def learn_address(self, node: str, address: str) -> None:
        if node not in self.learned and node != self.peer.me:
            self.learned[node] = check_address("peer", "sender_address", address)

    async def _send(self, to: str, env: Envelope) -> None:
        stub = self.links.stub(to)
        if stub is None:
            self.submit_nowait(SendFailed(peer=to, reason="address unknown"))
            return
        msg = codec.encode_envelope(env, self.address)
        try:
            await stub.Deliver(msg, timeout=self.links.deadlines.deliver)
            self.reachability.answered(to)
            self.count("messages_sent")
            self.count("bytes_sent", msg.ByteSize())
            self.telemetry.message(to, OUT, msg)
        except grpc.aio.AioRpcError as e:
            self.count("send_failures")
            log.debug("send to %s failed: %s", to, e.code().name, extra=about(peer=to))
            self.submit_nowait(SendFailed(peer=to, reason=e.code().name))

    async def _measure_disk(self, every: float = 30.0) -> None:
        """Tell the core how full our disk is, now and every `every` seconds."""
        while True:
            try:
                st = await asyncio.to_thread(os.statvfs, self.data_dir)
            except OSError as e:
                log.warning("cannot measure the disk of %s: %s", self.data_dir, e.strerror)
            else:
                total = st.f_blocks * st.f_frsize
                free = st.f_bavail * st.f_frsize
                # as df counts it: used / (used + available to us), reserved blocks aside
                used_blocks = st.f_blocks - st.f_bfree
                used = 100.0 * used_blocks / (used_blocks + st.f_bavail) if used_blocks + st.f_bavail else 0.0
                self.disk = {"total_bytes": total, "free_bytes": free, "used_percent": round(used, 1)}
                self.submit_nowait(DiskMeasured(used_percent=used, free_bytes=free))
            self._warn_blocked()
            await asyncio.sleep(every)

    def blocked_items(self) -> list[dict[str, Any]]:
        """Items that no eligible host can take (every host of the right role is left out)."""
        placement = self.peer.placer()
        out = []
        for item, v in sorted(catalog.newest_versions(self.peer.manifest).items()):
            p = placement(v)
            if p.blocked:
                out.append({"item": str(item), "digest": v.digest, "size_bytes": v.size, "left_out": dict(p.left_out)})
        return out

    def _warn_blocked(self) -> None:
        blocked = self.blocked_items()
        now_blocked = {b["item"] for b in blocked}
        for b in blocked:
            if b["item"] not in self._blocked:
                log.warning(
                    "BLOCKED: no host can take %s (%d bytes): %s",
                    b["item"],
                    b["size_bytes"],
                    "; ".join(f"{h}: {why}" for h, why in sorted(b["left_out"].items())),
                    extra=about(item=b["item"]),
                )
        self._blocked = now_blocked
        self.counters["items_blocked"] = len(now_blocked)

    @staticmethod
    def now() -> float:
        return time.time()

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    # -- reports ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return statusreport.status(self.view)

    def listing(self) -> dict[str, Any]:
        return statusreport.listing(self.view)


async def serve(
    config: ClusterConfig, node: str, data_dir: str | Path, listen: str | None = None, metrics_listen: str | None = None
) -> None:
    """Run a daemon until SIGTERM/SIGINT, then stop cleanly."""
    import signal

    d = Daemon(config, node, data_dir, listen, metrics_listen)
    await d.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, d.stop)
    try:
        await d.wait()
        await d.drain(config.timings.get("drain_notice_seconds", 25.0))
        await d.leave()
    finally:
        await d.close()


__all__ = ["Daemon", "DaemonError", "serve", "socket_path", "ConfigError"]
