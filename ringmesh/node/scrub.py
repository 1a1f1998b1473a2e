"""The scrub: everything this host keeps at rest is read back and verified on a schedule.

Targets: every file version it holds (each chunk against its recipe, the same check a read to
serve it makes: `FileStore.read_verified`), every game-stream segment (each record's checksum:
`GameStreams.scrub_segment`) and the manifest store (SQLite's own check, then every row against
the manifest in memory: `Store.scrub`). A target is due `scrub_interval_seconds` after it was
last verified (default: a day); the oldest-verified goes first. Reading is paced by a budget of
its own (`ringmesh.scrub_rate`, default 4 MB/s) at the BACKGROUND class, so a scrub never
competes with a transfer for the link and takes a bounded share of the disk.

What it finds goes to `integrity.py` (files: quarantined and repaired from other holders), the
game streams (records re-fetched, or listed lost) or is repaired here (the manifest store is
rewritten from memory; the damaged file is kept beside it).

When each target was last verified is kept in `<data>/scrub.msgpack`, so a restart resumes
where the schedule was rather than starting over. `ringmesh scrub --now [--item ...]` makes
targets due at once (`request`), and `status()` reports how far that has got.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from ringmesh.core import catalog, recipe
from ringmesh.core.bandwidth import Priority
from ringmesh.core.errors import LocalProtocolError
from ringmesh.node.files.store import Damaged
from ringmesh.node.files.throttle import Throttle

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.scrub")
BLOCK = 1 << 20  # the budget is spent in pieces this size
SAVE_EVERY = 5.0  # seconds between writes of the schedule
IDLE_CHECK = 60.0  # with nothing due, look again this often (new holdings, new segments)


@dataclass(frozen=True, slots=True)
class Target:
    id: str  # "file:<digest>" | "seg:<origin>/<config_key>/<segno>" | "manifest"
    what: str  # "files" | "games" | "manifest"
    name: str  # what an operator calls it: the item, the segment, the store
    size: int
    verify: Callable[[Callable[[int], Awaitable[None]]], Awaitable[int]]  # spend -> bytes verified


class Scrubber:
    def __init__(self, node: Daemon) -> None:
        self.node = node
        self.interval = node.config.timings["scrub_interval_seconds"]
        self.throttle = Throttle(node.config.scrub_bytes_per_s)
        self.path = Path(node.data_dir) / "scrub.msgpack"
        self.verified: dict[str, float] = {}  # target id -> when it was last verified whole
        self.bytes_verified: Counter[str] = Counter()
        self.forced: set[str] = set()  # ids asked for now
        self.forced_bytes = [0, 0]  # [verified, asked] of the current request
        self.current: tuple[str, int, int] | None = None  # (name, bytes done, size)
        self.started_at = time.time()
        self._wake = asyncio.Event()
        self._targets: list[Target] = []
        self._saved = 0.0
        self._load()

    # -- what there is to verify --------------------------------------------------------

    async def targets(self) -> list[Target]:
        """Everything held here now (kept for `status`)."""
        node, peer = self.node, self.node.peer
        out = []
        for digest, (item, size, cs) in sorted(catalog.held_versions(peer.manifest, peer.me).items()):
            if not node.integrity.quarantined(digest):
                out.append(
                    Target(f"file:{digest}", "files", str(item), size, self._file_verifier(item, digest, size, cs))
                )
        for seg in await node.games.segments():
            origin, key, segno, size = seg.origin, seg.config_key, seg.segno, seg.size
            out.append(
                Target(
                    f"seg:{origin}/{key}/{segno}",
                    "games",
                    f"{origin}/{key} segment {segno}",
                    size,
                    self._segment(origin, key, segno, size),
                )
            )
        try:
            db_size = os.stat(node.store.path).st_size
        except OSError:
            db_size = 0
        out.append(Target("manifest", "manifest", str(node.store.path), db_size, self._manifest))
        self._targets = out
        return out

    def _file_verifier(self, item, digest: str, size: int, cs: int):
        files = self.node.transfers.files

        async def verify(spend: Callable[[int], Awaitable[None]]) -> int:
            done = 0
            for index in range(recipe.chunk_count(size, cs)):
                length = recipe.chunk_span(index, size, cs)[1]
                await spend(length)
                try:
                    await asyncio.to_thread(files.read_verified, item, digest, index, size, cs)
                except Damaged as e:
                    self.node.integrity.report(e)
                    return done
                done += length
                self.current = (str(item), done, size)
            return done

        return verify

    def _segment(self, origin: str, key: str, segno: int, size: int):
        async def verify(spend: Callable[[int], Awaitable[None]]) -> int:
            await spend(size)
            return await self.node.games.scrub_segment(origin, key, segno)

        return verify

    async def _manifest(self, spend: Callable[[int], Awaitable[None]]) -> int:
        node = self.node
        path = node.store.path
        size = os.stat(path).st_size if path.exists() else 0
        await spend(size)
        snapshot = copy.deepcopy(node.peer.manifest.origins)  # no await before the job is queued
        problems = await node.in_store(node.store.scrub, snapshot)
        if not problems:
            return size
        detail = "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)" if len(problems) > 3 else "")
        log.error("the manifest store %s is damaged: %s; rewriting it from memory", path, detail)
        peer = node.peer
        snapshot = copy.deepcopy(peer.manifest.origins)
        vote = (peer.election.term, peer.election.voted_for)
        aside = await node.in_store(node.store.rewrite, snapshot, peer.clock.last, vote)
        log.warning("the manifest store is rewritten; the damaged copy is kept at %s", aside)
        node.integrity.found_elsewhere("manifest", str(path), "corrupt", detail, True, f"rewritten; kept {aside.name}")
        return size

    # -- the schedule -------------------------------------------------------------------

    async def request(self, items: list[str] | None = None) -> dict[str, Any]:
        """Make targets due now: all of them, or those named (items, 'games', 'manifest')."""
        targets = await self.targets()
        chosen = [
            t
            for t in targets
            if not items or t.name in items or t.what in items or (t.what == "games" and t.name.split(" ")[0] in items)
        ]
        if items and not chosen:
            raise LocalProtocolError(f"nothing held here by the name(s) {', '.join(items)}")
        fresh = {t.id for t in chosen} - self.forced
        if not self.forced:
            self.forced_bytes = [0, 0]
        self.forced |= fresh
        self.forced_bytes[1] += sum(t.size for t in chosen if t.id in fresh)
        self._wake.set()
        return self.status()

    async def run(self) -> None:
        while True:
            targets = await self.targets()
            now = time.time()
            due = [t for t in targets if t.id in self.forced or now - self.verified.get(t.id, 0.0) >= self.interval]
            live = {t.id for t in targets}
            self.forced &= live
            if not due:
                self._save(force=True)
                oldest = min((self.verified.get(t.id, 0.0) for t in targets), default=now)
                wait = max(0.05, min(IDLE_CHECK, oldest + self.interval - now))
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except asyncio.TimeoutError:
                    pass
                continue
            t = min(due, key=lambda t: (t.id not in self.forced, self.verified.get(t.id, 0.0), t.id))
            await self._verify(t)

    async def _verify(self, t: Target) -> None:
        forced = t.id in self.forced

        async def spend(n: int) -> None:
            while n > 0:
                piece = min(n, BLOCK)
                await self.throttle.acquire(piece, Priority.BACKGROUND)
                n -= piece

        self.current = (t.name, 0, t.size)
        try:
            done = await t.verify(spend)
        except (OSError, LocalProtocolError) as e:
            log.warning("scrub of %s failed: %s; tried again next round", t.name, e)
            done = 0
        finally:
            self.current = None
        self.bytes_verified[t.what] += done
        self.node.count(f"scrub_bytes_{t.what}", done)
        self.verified[t.id] = time.time()
        if forced:
            self.forced.discard(t.id)
            self.forced_bytes[0] += t.size
        self._save()

    # -- persistence and status ------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = msgpack.unpackb(self.path.read_bytes())
            self.verified = {str(k): float(v) for k, v in raw["verified"].items()}
            self.bytes_verified.update(raw.get("bytes", {}))
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as e:
            log.warning("%s: unreadable (%s); the scrub schedule starts over", self.path, e)

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved < SAVE_EVERY:
            return
        self._saved = now
        blob = msgpack.packb({"verified": self.verified, "bytes": dict(self.bytes_verified)})
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self.path)

    def close(self) -> None:
        self.throttle.close()
        self._save(force=True)

    def status(self) -> dict[str, Any]:
        targets = self._targets  # as the schedule last saw them
        times = [self.verified.get(t.id) for t in targets]
        last_full = None if not times or None in times else min(t for t in times if t is not None)
        return {
            "interval_seconds": self.interval,
            "rate_bytes_per_s": self.throttle.rate,
            "targets": len(targets),
            "bytes_held": (held := sum(t.size for t in targets)),
            # a pass at the budget: above the interval, each target waits this long, not the interval
            "full_pass_s": round(held / self.throttle.rate, 1) if self.throttle.rate else None,
            "never_verified": sum(1 for x in times if x is None),
            "last_full_scrub": last_full,  # every target now held was verified at or after this
            "bytes_verified": {w: self.bytes_verified[w] for w in ("files", "games", "manifest")},
            "current": None if self.current is None else dict(zip(("name", "done", "size"), self.current)),
            "requested": {"left": len(self.forced), "done_bytes": self.forced_bytes[0], "bytes": self.forced_bytes[1]},
            **self.node.integrity.status(),
        }
