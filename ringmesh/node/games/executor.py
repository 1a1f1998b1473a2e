"""The executor of the core's game-stream effects: intake, storage, reads, durability, retention,
watch mode, game schemas and the games a game host holds back.

It owns the stream log and game databases (`Games`) and how far our own games are durable;
the runtime hands it `StoreGames`, `ReadGames`, `GamesDurable`, `DropGames` (the core decides
retention), `GamesLost` and each manifest change that may carry a game schema. Rot the log
finds (a scrub: `scrub_segment`, a read, opening) goes to the core as `GamesCorrupt`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Iterable

from ringmesh.core import keys
from ringmesh.core.manifest import Fact
from ringmesh.core.messages import (
    DropGames,
    GamesCorrupt,
    GamesHeld,
    GamesLost,
    GamesRead,
    GamesStored,
    ReadGames,
    SchemaPublished,
    StoreGames,
)
from ringmesh.node.games import gameschema
from ringmesh.node.games.games import Games, ingest, pack_record
from ringmesh.node.games.streamlog import SegmentInfo

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.games")


class GameStreams:
    def __init__(self, node: Daemon, games: Games) -> None:
        self.node = node
        self.games = games
        self.durable: dict[str, int] = {}  # config_key -> our games durable through
        self.durable_changed = asyncio.Condition()
        self._held_published: tuple[int, dict] = (-1, {})  # (Games.held_version, what gh/ facts say)

    def start(self) -> None:
        """Watch mode, as configured; rot found while opening the log goes to the core."""
        node, config = self.node, self.node.config
        node.spawn(self._report_rot())
        if config.watch_games:  # "{node}" in a pattern stands for this host's name
            patterns = tuple(p.replace("{node}", node.peer.me) for p in config.watch_games)
            node.spawn(self._watch(patterns, config.timings.get("watch_interval_seconds", 2.0)))

    async def close(self) -> None:
        await self.node.in_store(self.games.close)

    # -- effects ---------------------------------------------------------------------------

    async def store(self, e: StoreGames) -> None:
        try:
            hw = await self.node.in_store(self.games.store, e.origin, e.config_key, e.games)
        except OSError as err:  # disk full or failing: no ack, the sender retries elsewhere
            log.warning("cannot store games of %s/%s: %s", e.origin, e.config_key, err)
            self.node.count("games_store_failed")
            return
        self.node.count("games_stored", len(e.games))
        await self._report_rot()
        await self._publish_held()
        self.node.submit_nowait(
            GamesStored(
                origin=e.origin, config_key=e.config_key, seqs=tuple(q for q, _ in e.games), hw=hw, ack_to=e.ack_to
            )
        )

    async def read(self, e: ReadGames) -> None:
        games = await self.node.in_store(self.games.read, e.origin, e.config_key, e.first, e.last)
        await self._report_rot()  # a record bad on the way out is not sent: the core hears of it
        self.node.submit_nowait(GamesRead(origin=e.origin, config_key=e.config_key, games=games, reply_to=e.reply_to))

    # -- rot -------------------------------------------------------------------------------

    async def segments(self) -> list[SegmentInfo]:
        """Every segment of the stream log (what the scrubber walks)."""
        return await self.node.in_store(self.games.log.segments)

    async def scrub_segment(self, origin: str, config_key: str, segno: int) -> int:
        """Verify one segment; records found bad stop being served and counted, and the core
        hears of them (`GamesCorrupt`: pulled again from a good copy). Returns bytes verified."""
        n = await self.node.in_store(self.games.scrub, origin, config_key, segno)
        await self._report_rot()
        return n

    async def _report_rot(self) -> None:
        """Tell the core which of our records the log found bad since the last time (each
        stream's mark with it), and count those found and those a good copy replaced."""
        found, repaired = await self.node.in_store(self.games.log.take_found)
        self.node.integrity.games(found, repaired)  # the damage list, `status` and doctor
        if repaired:
            self.node.count("corrupt_games_repaired", len(repaired))
            log.info("%d corrupt game(s) repaired from a peer's copy", len(repaired))
        if not found:
            return
        self.node.count("corrupt_games_found", len(found))
        by_stream: dict[tuple[str, str], list[int]] = {}
        for origin, key, q in found:
            by_stream.setdefault((origin, key), []).append(q)
        for (origin, key), seqs in sorted(by_stream.items()):
            hw = await self.node.in_store(self.games.log.high_water, origin, key)
            log.warning("%d corrupt game(s) of %s/%s found (#%s); pulling them again", len(seqs), origin, key, seqs[:8])
            await self.node.submit(GamesCorrupt(origin=origin, config_key=key, seqs=tuple(sorted(seqs)), hw=hw))

    async def lost(self, e: GamesLost) -> None:
        """Games lost on every holder: listed, counted, and skipped by our mark from now on."""
        new, hw = await self.node.in_store(self.games.mark_lost, e.origin, e.config_key, e.seqs)
        if new:
            self.node.count("games_lost", new)
        self.node.integrity.games_lost(e.origin, e.config_key, list(e.seqs))
        self.node.submit_nowait(GamesStored(origin=e.origin, config_key=e.config_key, seqs=(), hw=hw))

    async def mark_durable(self, config_key: str, through: int) -> None:
        async with self.durable_changed:
            self.durable[config_key] = max(self.durable.get(config_key, 0), through)
            self.durable_changed.notify_all()

    # -- intake ----------------------------------------------------------------------------

    async def publish(
        self, config_key: str, payloads: list[bytes], schemas: dict[str, gameschema.Schema] | None = None
    ) -> list[int]:
        """Intake: append to our stream, fsync, then let the core push them; returns the seqs.
        `schemas`: the game schemas the records name; each new one is published once (a fact)."""
        node = self.node
        for fp, schema in (schemas or {}).items():
            if self._know_schema(fp, schema):
                await node.submit(SchemaPublished(fingerprint=fp, schema=schema.encode()))
        me = node.peer.replication.origin  # our stream: this host in this incarnation
        games, hw = await node.in_store(self.games.append_own, me, config_key, payloads)
        node.count("games_published", len(games))
        await self._publish_held()
        await node.submit(
            GamesStored(origin=me, config_key=config_key, seqs=tuple(q for q, _ in games), hw=hw, games=games)
        )
        return [q for q, _ in games]

    async def wait_durable(self, config_key: str, seq: int, timeout: float) -> bool:
        async with self.durable_changed:
            try:
                await asyncio.wait_for(
                    self.durable_changed.wait_for(lambda: self.durable.get(config_key, 0) >= seq), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def wait_changed(self, timeout: float) -> None:
        """Until durability moves (or `timeout` seconds)."""
        async with self.durable_changed:
            try:
                await asyncio.wait_for(self.durable_changed.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _watch(self, patterns: tuple[str, ...], every: float) -> None:
        """Watch mode: take the completed games of the configured self-play databases, each once."""
        loop = asyncio.get_running_loop()

        def publish(config_key: str, records: list, schemas: dict) -> None:  # called from the ingest thread
            payloads = [pack_record(r) for r in records]
            asyncio.run_coroutine_threadsafe(self.publish(config_key, payloads, schemas), loop).result(timeout=120)

        cursors = self.node.data_dir / "ingest-cursors.json"
        while True:
            try:
                n = await asyncio.to_thread(
                    ingest, patterns, cursors, publish, min_moves=self.node.config.watch_min_moves
                )
                if n:
                    log.info("watch: took %d game(s) from %s", n, ", ".join(patterns))
            except Exception as e:  # a broken database must not stop the daemon
                self.node.count("watch_errors")
                log.warning("watch: %s: %s", type(e).__name__, e)
            await asyncio.sleep(every)

    async def drop(self, e: DropGames) -> None:
        """Retention, as the core decided it: our own games of a config dropped through a seq."""
        origin = self.node.peer.replication.origin
        dropped = await self.node.in_store(self.games.log.drop_through, origin, e.config_key, e.through)
        log.info("retention: dropped games of %s through #%d (%d segment(s))", e.config_key, e.through, dropped)

    # -- schemas and held games --------------------------------------------------------------

    def learn_schemas(self, facts: Iterable[tuple[str, Fact]]) -> None:
        """Game schemas that reached the manifest (`gs/` facts, as `(origin, fact)`): known from
        now on, and the games that waited for them land."""
        for origin, f in facts:
            fp = f.key[len(keys.SCHEMA) :]
            if f.key.startswith(keys.SCHEMA) and not f.tombstone and fp not in self.games.schemas:
                try:
                    self._know_schema(fp, gameschema.Schema.decode(f.value, fp))
                except gameschema.SchemaError as e:
                    self.node.count("schemas_refused")
                    log.warning("game schema %s from %s refused: %s", fp[:16], origin, e)

    def _know_schema(self, fp: str, schema: gameschema.Schema) -> bool:
        """A game schema known from now on (from our own intake or a peer's fact); the games
        that waited for it land. Whether it was new here."""
        if fp in self.games.schemas:
            return False
        self.games.schemas[fp] = schema
        if self.games.held is not None:
            self.node.spawn(self.retry(fingerprints={fp}))
        return True

    async def _publish_held(self) -> None:
        """Tell the cluster which games this host holds back, per config, when that changed."""
        if self.games.held is None or self.games.held_version == self._held_published[0]:
            return
        version = self.games.held_version
        now = await self.node.in_store(self.games.held.streams)
        for key in sorted(set(now) | set(self._held_published[1])):
            if now.get(key, {}) != self._held_published[1].get(key, {}):
                await self.node.submit(GamesHeld(config_key=key, held=now.get(key, {})))
        self._held_published = (version, now)

    async def retry(self, config_key: str | None = None, fingerprints: set[str] | None = None) -> dict[str, int]:
        """Held games whose cause is gone land in their databases (`ringmesh games retry`)."""
        if self.games.held is None:
            return {"landed": 0, "held": 0}
        got = await self.node.in_store(self.games.retry, config_key, fingerprints)
        await self._report_rot()  # a held game read back may have rotted meanwhile
        await self._publish_held()
        if got["landed"]:
            log.info("%d held game(s) landed in their databases (%d still held)", got["landed"], got["held"])
        return got

    async def held_games(self, config_key: str | None = None) -> dict[str, Any]:
        """`ringmesh games refused`: the games this host holds back, and why."""
        if self.games.held is None:
            return {"node": self.node.peer.me, "consumer": False, "games": []}
        games = await self.node.in_store(self.games.held.listing, config_key)
        return {"node": self.node.peer.me, "consumer": True, "games": games}
