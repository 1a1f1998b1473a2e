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
        #: (source, digest) -> the counters of its holding and pulling facts when it sent a bad chunk
        self.distrusted: dict[tuple[str, str], tuple[int, int]] = {}

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
                distrust=lambda source: self.distrust(source, v),
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
        node.integrity.stored(v.item, v.digest)
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
        """Healthy peers holding `v` whole, and healthy peers in the middle of it; not those
        that sent us a bad chunk of it, until they advertise their copy anew."""
        peer, now, key = self.node.peer, time.time(), (v.item, v.digest)

        def usable(h: str) -> bool:
            return h != peer.me and peer.healthy(h, now) and self._trusted(h, v)

        ok = [h for h in catalog.holders(peer.manifest).get(key, []) if usable(h)]
        mid = [h for h in catalog.holders(peer.manifest, keys.PULLING).get(key, []) if usable(h)]
        return ok, mid

    def _advertised(self, source: str, item: ItemKey) -> tuple[int, int]:
        """The counters of `source`'s holding and pulling facts of `item` (0: none)."""
        st = self.node.peer.manifest.origins.get(source)
        facts = st.facts if st else {}
        h, p = facts.get(catalog.holding_key(item)), facts.get(catalog.pulling_key(item))
        return (h.counter if h else 0, p.counter if p else 0)

    def distrust(self, source: str, v: FileVersion) -> None:
        """`source` sent a chunk of `v` that failed verification (or said its copy is bad)."""
        if (source, v.digest) not in self.distrusted:
            self.node.count("sources_distrusted")
            log.warning(
                "%s sent a bad chunk of %s %s: not asked for it again until it advertises its copy anew",
                source,
                v.item,
                v.digest[:12],
                extra=about(peer=source, item=str(v.item), digest=v.digest),
            )
        self.distrusted[(source, v.digest)] = self._advertised(source, v.item)

    def _trusted(self, source: str, v: FileVersion) -> bool:
        seen = self.distrusted.get((source, v.digest))
        if seen is None:
            return True
        if self._advertised(source, v.item) == seen:
            return False
        del self.distrusted[(source, v.digest)]  # re-advertised (a repaired copy): trusted again
        log.info("%s advertises %s %s anew: asked for it again", source, v.item, v.digest[:12])
        return True

    async def _discard_after(self, task: asyncio.Task, digest: str) -> None:
        await asyncio.gather(task, return_exceptions=True)
        if digest not in self.pulling:
            await asyncio.to_thread(self.files.discard, digest)
