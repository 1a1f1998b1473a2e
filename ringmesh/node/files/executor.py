"""The executor of the core's file effects: `StartTransfer` pulls a version from the healthy
peers holding it (or in the middle of it), `CancelTransfer` drops a superseded one.

It owns the pulls under way (`transfers`, and `pulling`: the partial versions this host also
serves to peers pulling the same version) and reports each outcome to the core as an event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from ringmesh.core import catalog, keys
from ringmesh.core.errors import RingmeshError
from ringmesh.core.messages import CancelTransfer, FileStored, FileVersion, ItemKey, StartTransfer, TransferFailed
from ringmesh.node.files.store import FileStore
from ringmesh.node.files.throttle import Throttle
from ringmesh.node.files.transfer import DiskFull, Progress, pull
from ringmesh.node.telemetry import IN
from ringmesh.ops.logs import about

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.files")


class Transfers:
    def __init__(self, node: Daemon, files: FileStore, ingress: Throttle) -> None:
        self.node = node
        self.files = files
        self.ingress = ingress
        self.running: dict[
            tuple[ItemKey, str], tuple[asyncio.Task, FileVersion, float]
        ] = {}  # -> (task, version, started)
        self.pulling: dict[str, Progress] = {}  # digest -> a pull under way, served to peers

    def start(self, e: StartTransfer) -> None:
        self.running[(e.version.item, e.version.digest)] = (
            asyncio.create_task(self._pull(e.version)),
            e.version,
            time.time(),
        )

    def cancel(self, e: CancelTransfer) -> None:
        """Superseded by a newer version: stop it and drop its partial file."""
        entry = self.running.pop((e.item, e.digest), None)
        if entry:
            entry[0].cancel()
            self.node.spawn(self._discard_after(entry[0], e.digest))

    async def close(self) -> None:
        """Cancel every pull (their partial files stay, to resume) and wait for them."""
        tasks = [task for task, _v, _t in self.running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pull(self, v: FileVersion) -> None:
        """Pull one version (cancelled at shutdown: its partial file stays, to resume)."""
        node, peer, key = self.node, self.node.peer, (v.item, v.digest)
        try:
            # the class is asked per chunk: a pull that a broadcast reaches mid-way turns CRITICAL
            got = await pull(
                v,
                lambda: self.sources_of(v),
                node.links,
                self.files,
                self.pulling,
                priority=lambda: peer.priority_of(v),
                throttle=self.ingress,
                stored=lambda: node.submit(FileStored(item=v.item, digest=v.digest)),
                me=peer.me,
                received=lambda source, n: node.telemetry.chunks(source, IN, n),
            )
        except (RingmeshError, OSError) as e:
            self.running.pop(key, None)
            node.count("transfers_disk_full" if isinstance(e, DiskFull) else "transfers_failed")
            node.telemetry.transfer(peer.priority_of(v).label, "failed")
            log.warning(
                "transfer of %s %s failed: %s", v.item, v.digest[:12], e, extra=about(item=str(v.item), digest=v.digest)
            )
            node.submit_nowait(TransferFailed(item=v.item, digest=v.digest, reason=str(e)))
            return
        started = self.running.pop(key, (None, None, time.time()))[2]
        node.count("transfers_done")
        node.telemetry.transfer(peer.priority_of(v).label, "done")
        node.count("bytes_received", got.fetched_bytes)
        node.count("bytes_resumed", got.resumed_bytes)
        sources = ",".join(got.sources)
        log.info(
            "got %s %s (%d bytes%s) from %s in %.2fs",
            v.item,
            v.digest[:12],
            v.size,
            f", {got.resumed_bytes} resumed" if got.resumed_bytes else "",
            sources or "disk",
            time.time() - started,
            extra=about(item=str(v.item), digest=v.digest, peer=sources or None),
        )

    def sources_of(self, v: FileVersion) -> tuple[list[str], list[str]]:
        """Healthy peers holding `v` whole, and healthy peers in the middle of it."""
        peer, now, key = self.node.peer, time.time(), (v.item, v.digest)
        ok = [h for h in catalog.holders(peer.manifest).get(key, []) if h != peer.me and peer.healthy(h, now)]
        mid = [
            h
            for h in catalog.holders(peer.manifest, keys.PULLING).get(key, [])
            if h != peer.me and peer.healthy(h, now)
        ]
        return ok, mid

    async def _discard_after(self, task: asyncio.Task, digest: str) -> None:
        await asyncio.gather(task, return_exceptions=True)
        if digest not in self.pulling:
            await asyncio.to_thread(self.files.discard, digest)
