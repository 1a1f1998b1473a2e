"""The versions whose copy on this host went bad, and what became of each.

A copy goes bad two ways (`store.Damaged`): a chunk fails verification (a read to serve it, or
the scrub, `node/scrub.py`), or the file at its path is not what ringmesh wrote there (its
size, mtime or inode changed: an operator's edit, a training job writing in place; the rescan
here notices within `rescan_seconds`). Either way the version is quarantined at once (served to
nobody) and, per the file type's `changed_files` mode:

* the default, `keep`: the core hears `FileDamaged`, retracts the holding and pulls the version
  again if the router still places it here (CRITICAL while too few good copies are left). A
  changed file is moved aside untouched (`<name>.changed-<time>`) before the repaired copy goes
  in; a rotten one is simply replaced.
* `adopt` (a changed file only): once the file has stopped changing, it is hashed where it is
  and published as a new version of the item.

Every damage is logged loudly with its path, counted (found and repaired, per data type: files,
games, manifest), listed in `status` until repaired and kept across restarts in
`<data>/integrity.msgpack`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

from ringmesh.core import catalog
from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.messages import FileDamaged, FilePublished, ItemKey
from ringmesh.node.files.store import Damaged, FileStore
from ringmesh.ops.logs import about

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.integrity")
MAX_LISTED = 1000  # repaired damages kept in the list (unrepaired ones are all kept)
DATA_TYPES = ("files", "games", "manifest")
LOST = "lost: no host has a good copy"


@dataclass(slots=True)
class Damage:
    what: str  # "files" | "games" | "manifest"
    name: str  # the item, the stream segment, or the store's path
    digest: str  # the version (files); "" otherwise
    kind: str  # "corrupt" | "changed"
    detail: str
    found_at: float
    repaired_at: float | None = None
    outcome: str = ""  # "re-pulled" | "adopted as <digest>" | "rewritten" | "no longer placed here"
    last_copy: bool = False  # no other host held a good copy when it was found


def _item(name: str) -> ItemKey:
    kind, _, rest = name.partition("/")
    return ItemKey(kind, rest)


class Integrity:
    def __init__(self, node: Daemon, files: FileStore) -> None:
        self.node, self.files = node, files
        self.path = Path(node.data_dir) / "integrity.msgpack"
        self.found: Counter[str] = Counter()
        self.repaired: Counter[str] = Counter()
        self.damages: list[Damage] = []
        self._changing: dict[str, tuple[int, int]] = {}  # digest -> (size, mtime) last seen (adopt)
        self._load()

    # -- what is bad now ---------------------------------------------------------------

    def quarantined(self, digest: str) -> bool:
        return any(d.digest == digest and d.repaired_at is None for d in self.damages if d.what == "files")

    def open_damages(self) -> list[Damage]:
        return [d for d in self.damages if d.repaired_at is None]

    # -- reports -----------------------------------------------------------------------

    def report(self, err: Damaged) -> None:
        """Our copy of `err.digest` is bad: stop serving it and have it repaired (or adopted)."""
        if self.quarantined(err.digest):
            return
        peer = self.node.peer
        others = [h for h in catalog.holders(peer.manifest).get((err.item, err.digest), []) if h != peer.me]
        path = self.files.path_of(err.item)
        d = Damage("files", str(err.item), err.digest, err.kind, err.detail, time.time(), last_copy=not others)
        self._add(d)
        mode = self.node.config.changed_files_mode(err.item.type) if err.kind == "changed" else "keep"
        if not others:
            log.error(
                "DATA LOSS: the only copy of %s %s failed verification at %s (%s); no other host holds it",
                err.item,
                err.digest[:12],
                path,
                err.detail,
                extra=about(item=str(err.item), digest=err.digest),
            )
        else:
            log.error(
                "%s %s at %s is %s (%s): no longer served; %s",
                err.item,
                err.digest[:12],
                path,
                "changed behind ringmesh's back" if err.kind == "changed" else "corrupt",
                err.detail,
                "adopting it as a new version once it stops changing"
                if mode == "adopt"
                else f"pulling it again from {'/'.join(others[:3])} if it is still placed here",
                extra=about(item=str(err.item), digest=err.digest),
            )
        if mode != "adopt":
            self.node.submit_nowait(FileDamaged(item=err.item, digest=err.digest))

    def found_elsewhere(self, what: str, name: str, kind: str, detail: str, repaired: bool, outcome: str = "") -> None:
        """A damage the games or the manifest store found (and maybe repaired) themselves."""
        now = time.time()
        self._add(Damage(what, name, "", kind, detail, now, now if repaired else None, outcome))
        if repaired:
            self.repaired[what] += 1
            self._save()

    def games(self, found: list[tuple[str, str, int]], repaired: list[tuple[str, str, int]]) -> None:
        """Game records the stream log found bad, and those a good copy replaced (`GameStreams`)."""
        now = time.time()
        for origin, key, seq in found:
            self.found["games"] += 1
            self.damages.append(Damage("games", f"{origin}/{key} #{seq}", "", "corrupt", "checksum failed", now))
        fixed = {f"{o}/{k} #{q}" for o, k, q in repaired}
        for d in self.damages:
            if d.what == "games" and d.repaired_at is None and d.name in fixed:
                d.repaired_at, d.outcome = now, "re-fetched from a good copy"
                self.repaired["games"] += 1
        if found or repaired:
            self._trim()
            self._save()

    def games_lost(self, origin: str, config_key: str, seqs: list[int]) -> None:
        """No host has a good copy of these games: closed as lost (listed, never repaired)."""
        gone = {f"{origin}/{config_key} #{q}" for q in seqs}
        now = time.time()
        for d in self.damages:
            if d.what == "games" and d.repaired_at is None and d.name in gone:
                d.repaired_at, d.outcome = now, LOST
        self._save()

    def stored(self, item: ItemKey, digest: str, outcome: str = "re-pulled") -> None:
        """A good copy of `digest` is installed here again (a pull finished)."""
        for d in self.damages:
            if d.what == "files" and d.digest == digest and d.repaired_at is None:
                d.repaired_at, d.outcome = time.time(), outcome
                self.repaired["files"] += 1
                log.warning(
                    "%s %s repaired (%s)", item, digest[:12], outcome, extra=about(item=str(item), digest=digest)
                )
                self._save()

    def _add(self, d: Damage) -> None:
        self.found[d.what] += 1
        self.damages.append(d)
        self._trim()
        self._save()

    def _trim(self) -> None:
        closed = [x for x in self.damages if x.repaired_at is not None]
        if len(closed) > MAX_LISTED:
            drop = {id(x) for x in closed[: len(closed) - MAX_LISTED]}
            self.damages = [x for x in self.damages if id(x) not in drop]

    # -- files changed behind our back -------------------------------------------------

    async def rescan(self) -> None:
        """Every `rescan_seconds`: stat each installed version we hold; a changed one is damaged."""
        every = self.node.config.timings["rescan_seconds"]
        while True:
            await asyncio.sleep(every)
            try:
                await self.rescan_once()
            except OSError as e:
                log.warning("rescan of installed files failed: %s", e)

    async def rescan_once(self) -> int:
        """One pass; returns how many changed versions it found."""
        peer = self.node.peer
        held = [(item, digest) for digest, (item, _s, _c) in catalog.held_versions(peer.manifest, peer.me).items()]
        found = 0
        for item, digest in held:
            if self.quarantined(digest):
                continue
            why = await asyncio.to_thread(self.files.changed, item, digest)
            if why is not None:
                found += 1
                self.report(Damaged(item, digest, "changed", why))
        await self.unshare_pending()
        for d in [d for d in self.open_damages() if d.what == "files" and d.kind == "changed"]:
            item = _item(d.name)
            if self.node.config.changed_files_mode(item.type) == "adopt":
                await self._adopt(item, d)
        return found

    async def _adopt(self, item: ItemKey, d: Damage) -> None:
        """Publish the changed file at `item`'s path as a new version, once two rescans in a row
        saw the same size and mtime (a job still writing it is not caught half-way)."""
        try:
            st = os.stat(self.files.path_of(item))
        except FileNotFoundError:
            d.repaired_at, d.outcome = time.time(), "removed"
            self._save()
            self.node.submit_nowait(FileDamaged(item=item, digest=d.digest))  # nothing to adopt: repair it
            return
        seen = (st.st_size, st.st_mtime_ns)
        if self._changing.get(d.digest) != seen:
            self._changing[d.digest] = seen
            return
        try:
            hashed = await asyncio.to_thread(self.files.hash_in_place, item)
        except LocalProtocolError:  # it changed while read: next rescan
            self._changing.pop(d.digest, None)
            return
        del self._changing[d.digest]
        await self.node.submit(
            FilePublished(item=item, digest=hashed.digest, size=hashed.size, chunk_size=hashed.chunk_size, attrs={})
        )
        d.repaired_at, d.outcome = time.time(), f"adopted as {hashed.digest}"
        self.repaired["files"] += 1
        self.node.count("files_adopted")
        log.warning(
            "%s: the changed file at %s is published as version %s (changed_files: adopt)",
            item,
            self.files.path_of(item),
            hashed.digest[:12],
            extra=about(item=str(item), digest=hashed.digest),
        )
        self._save()

    # -- versions put by hard link -------------------------------------------------------

    async def unshare(self, item: ItemKey, digest: str, chunk_size: int) -> None:
        """Give a version `put` hard-linked a copy of its own (`FileStore.unshare`)."""
        try:
            if await asyncio.to_thread(self.files.unshare, item, digest, chunk_size):
                self.node.count("puts_copied_after")
        except Damaged as e:
            self.report(e)
        except OSError as e:
            log.warning("%s: no copy of its own yet (%s); tried again at the next rescan", item, e.strerror or e)

    async def unshare_pending(self) -> None:
        """Every version still sharing its source's inode (a restart in the middle, a full disk)."""
        held = catalog.held_versions(self.node.peer.manifest, self.node.peer.me)
        for item, digest in self.files.shared():
            if digest in held and not self.quarantined(digest):
                await self.unshare(item, digest, held[digest][2])

    # -- persistence and status ------------------------------------------------------------

    def _load(self) -> None:
        try:
            raw = msgpack.unpackb(self.path.read_bytes())
            self.found.update(raw["found"])
            self.repaired.update(raw["repaired"])
            self.damages = [Damage(**d) for d in raw["damages"]]
        except FileNotFoundError:
            pass
        except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
            aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            os.replace(self.path, aside)
            log.error("%s: unreadable (%s), moved to %s; the damage list starts empty", self.path, e, aside)

    def _save(self) -> None:
        blob = msgpack.packb(
            {"found": dict(self.found), "repaired": dict(self.repaired), "damages": [asdict(d) for d in self.damages]}
        )
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, self.path)

    def status(self) -> dict[str, Any]:
        peer = self.node.peer
        holders = catalog.holders(peer.manifest)
        short = sorted(
            {
                d.name
                for d in self.open_damages()
                if d.what == "files"
                and len([h for h in holders.get((_item(d.name), d.digest), []) if h != peer.me])
                < peer.config.min_copies
            }
        )
        return {
            "found": {t: self.found[t] for t in DATA_TYPES},
            "repaired": {t: self.repaired[t] for t in DATA_TYPES},
            "unrepaired": [asdict(d) for d in self.open_damages()],
            "recent": [asdict(d) for d in self.damages if d.repaired_at is not None][-20:],
            "lost": sum(1 for d in self.damages if d.outcome == LOST),
            "below_min_copies": short,
        }
