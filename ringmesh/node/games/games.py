"""The daemon's game streams: the stream log on disk and, on game hosts, the SQLite
databases the training processes read (one per config, the self-play schema, WAL).

Blocking; the daemon calls it from its store worker thread, one call at a time.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import msgpack

from ringmesh.node.games import gamedb, gameschema
from ringmesh.node.games.streamlog import StreamLog, StreamLogError

log = logging.getLogger("ringmesh.node.games.games")
MAX_OPEN_DBS = 32  # consumer databases kept open (the cluster has 12 configs)


def pack_record(record: dict[str, Any]) -> bytes:
    return msgpack.packb(record, use_bin_type=True)


def unpack_record(raw: bytes) -> dict[str, Any] | None:
    """A game record, or None if `raw` is none. Bounded: lengths by the size of `raw` (msgpack's
    default), nesting by msgpack's stack, and maps and arrays, which cost far more in memory
    than in msgpack, to one per 16 bytes (a real record has a few hundred in megabytes)."""
    budget = [64 + len(raw) // 16]

    def spend(container):
        budget[0] -= 1
        if budget[0] < 0:
            raise ValueError("too many maps and arrays for a game record")
        return container

    try:
        rec = msgpack.unpackb(raw, raw=False, strict_map_key=False, list_hook=spend, object_hook=spend)
    except Exception:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("game_id"), str) or not isinstance(rec.get("tables"), dict):
        return None
    return rec


class Games:
    def __init__(self, data_dir: str | Path, *, consume: bool, games_dir: str | Path | None = None) -> None:
        self.root = Path(data_dir)
        self.games_dir = Path(games_dir) if games_dir else self.root / "games"  # the consumer databases
        self.log = StreamLog(self.root / "streams")
        self.consume = consume
        self.dbs: dict[str, Any] = {}
        self.counts = {"materialised": 0, "duplicates": 0, "rejected": 0, "undecodable": 0}
        self.schemas: dict[str, gameschema.Schema] = {}  # fingerprint -> schema (the daemon adds the manifest's)
        self.adapted: dict[str, set[str]] = {}  # config_key -> fingerprints its database took
        self.held = Held(self.root / "games-held.db") if consume else None
        self.held_summary = self.held.per_config() if self.held else {}  # config_key -> {kind: n}, for status
        self.held_version = 0  # moves whenever a game is held or released (the daemon publishes then)
        self.by_config: Counter[str] = Counter()  # config_key -> games materialised since start
        # games lost on every holder (the log's `lost` files; game ids as far as they were readable)
        self.lost: list[dict[str, Any]] = [
            {"origin": o, "config_key": k, "seq": q, "game_id": None}
            for (o, k) in sorted(self.log.streams())
            for q in self.log.lost(o, k)
        ]

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()
        if self.held is not None:
            self.held.close()
        self.log.close()

    def append_own(self, me: str, config_key: str, payloads: list[bytes]) -> tuple[tuple[tuple[int, bytes], ...], int]:
        seqs = self.log.append(me, config_key, payloads)
        self.log.flush()  # group commit: one fsync for the whole batch, before anyone hears of it
        self._materialise(config_key, [(me, q, p) for q, p in zip(seqs, payloads)])
        return tuple(zip(seqs, payloads)), self.log.high_water(me, config_key)

    def store(self, origin: str, config_key: str, games) -> int:
        fresh = []
        for q, g in games:
            try:
                if self.log.append_at(origin, config_key, q, g):
                    fresh.append((origin, q, g))
            except (StreamLogError, ValueError) as e:  # a peer sent a different game under a known seq
                log.warning("game %s/%s #%d refused: %s", origin, config_key, q, e)
                self.counts["rejected"] += 1
        self.log.flush()
        self._materialise(config_key, fresh)
        return self.log.high_water(origin, config_key)

    def read(self, origin: str, config_key: str, first: int, last: int) -> tuple[tuple[int, bytes], ...]:
        return tuple(self.log.read(origin, config_key, first, last))

    def scrub(self, origin: str, config_key: str, segno: int) -> int:
        """Verify one segment of the stream log (what it found: `log.take_found`); returns
        the bytes verified."""
        size = next(
            (s.size for s in self.log.segments() if (s.origin, s.config_key, s.segno) == (origin, config_key, segno)), 0
        )
        self.log.verify_segment(origin, config_key, segno)
        return size

    def mark_lost(self, origin: str, config_key: str, seqs: Iterable[int]) -> tuple[int, int]:
        """Games lost on every holder: listed (by game id where our bad copy still decodes)
        and skipped by the log's mark. Returns (how many were new here, the stream's mark)."""
        known = {(g["origin"], g["config_key"], g["seq"]) for g in self.lost}
        new = [q for q in sorted(set(seqs)) if (origin, config_key, q) not in known]
        for q in new:
            raw = self.log.bad_copy(origin, config_key, q)
            rec = unpack_record(raw) if raw is not None else None
            self.lost.append({"origin": origin, "config_key": config_key, "seq": q, "game_id": rec and rec["game_id"]})
            log.error("game %s/%s #%d is lost: no holder has a good copy", origin, config_key, q)
        return len(new), self.log.mark_lost(origin, config_key, seqs)

    def _materialise(self, config_key: str, items: list[tuple[str, int, bytes]]) -> list[tuple[str, int]]:
        """Append the games `(origin, seq, payload)` to this host's database of `config_key`
        (game hosts only). A game that waits for its schema or that the database refuses is
        kept in `held` (and in the stream log); returns the `(origin, seq)` that landed."""
        if not self.consume or not items:
            return []
        assert self.held is not None
        records: list[dict[str, Any]] = []
        where: dict[str, tuple[str, int]] = {}
        for origin, q, p in items:
            rec = unpack_record(p)
            if rec is None:
                self.counts["undecodable"] += 1
                self.held.hold(config_key, origin, q, None, None, "refused", "the record does not decode")
            else:
                records.append(rec)
                where.setdefault(rec["game_id"], (origin, q))
        if not records:
            return []
        db = self.dbs.pop(config_key, None)
        if db is None:
            while len(self.dbs) >= MAX_OPEN_DBS:  # peers may name many configs: bound the open files
                self.dbs.pop(next(iter(self.dbs))).close()
            self.games_dir.mkdir(parents=True, exist_ok=True)
            db = gamedb.open_consumer_db(self.games_dir / f"{config_key}.db")
        self.dbs[config_key] = db  # the most recently used last
        rejected: list = []
        waiting: list = []
        try:
            inserted, dups = gamedb.append_games(
                db,
                records,
                rejected=rejected,
                schemas=self.schemas,
                adapted=self.adapted.setdefault(config_key, set()),
                waiting=waiting,
            )
        except sqlite3.Error as e:  # the database itself failed (disk, adapting its schema): hold them all
            self.dbs.pop(config_key, None)
            db.close()
            self.adapted.pop(config_key, None)
            rejected, waiting, inserted, dups = [(r["game_id"], f"database error: {e}") for r in records], [], 0, 0
        self.counts["materialised"] += inserted
        self.by_config[config_key] += inserted
        self.counts["duplicates"] += dups
        self.counts["rejected"] += len(rejected)
        for game_id, err in rejected:
            log.warning("game %s of %s refused by the database: %s", game_id, config_key, err)
            self.held.hold(config_key, *where[game_id], game_id, None, "refused", err)
        for rec, fp in waiting:
            self.held.hold(
                config_key,
                *where[rec["game_id"]],
                rec["game_id"],
                fp,
                "waiting",
                f"its schema {fp} is not known here yet",
            )
        kept = {where[g] for g, _ in rejected} | {where[r["game_id"]] for r, _ in waiting}
        if kept:
            self.held_summary = self.held.per_config()
            self.held_version += 1
        return [w for w in where.values() if w not in kept]

    def retry(self, config_key: str | None = None, fingerprints: set[str] | None = None) -> dict[str, int]:
        """Materialise held games again (all of `config_key`, or those waiting for one of
        `fingerprints`); those that land leave `held`. Returns how many landed and are held."""
        if self.held is None:
            return {"landed": 0, "held": 0}
        landed = 0
        for key, rows in self.held.select(config_key, fingerprints).items():
            items = []
            for origin, q in rows:
                got = self.log.read(origin, key, q, q)
                if got:
                    items.append((origin, q, got[0][1]))
            done = self._materialise(key, items)
            self.held.release(key, done)
            landed += len(done)
        self.held_summary = self.held.per_config()
        self.held_version += 1
        return {"landed": landed, "held": self.held.count()}


def load_cursors(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            cursors = json.load(f)
        return cursors if isinstance(cursors, dict) else {}
    except (OSError, ValueError):
        return {}


def save_cursors(path: str | Path, cursors: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(cursors, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def ingest(
    patterns: Iterable[str],
    cursors_path: str | Path,
    publish: Callable[[str, list[dict[str, Any]], dict], Any],
    *,
    min_moves: int | str | None = None,
    batch: int = 64,
    progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """Take the completed games of the self-play databases matching `patterns` (paths or globs),
    each once: a database's cursor is saved only after `publish(config_key, records, schemas)`
    returned, i.e. after the peer fsynced the games it covers. Returns how many games were taken.
    Blocking.

    `progress(rows_examined, rows_to_examine, games_taken)` hears after every batch how far the
    scan of the databases' `games` rows (as many as there were at the start) has come."""
    cursors = load_cursors(cursors_path)
    total = 0
    paths = sorted({p for pat in patterns for p in (glob.glob(pat) or ([pat] if os.path.exists(pat) else []))})
    start = {p: int((cursors.get(os.path.abspath(p)) or {}).get("hw", 0)) for p in paths}
    ends = {p: gamedb.max_rowid(p) for p in paths} if progress else {}
    todo = sum(max(0, ends[p] - start[p]) for p in ends)

    def report() -> None:
        if progress:
            done = sum(
                max(0, min(ends[p], int((cursors.get(os.path.abspath(p)) or {}).get("hw", 0))) - start[p]) for p in ends
            )
            progress(done, todo, total)

    for path in paths:
        key = os.path.abspath(path)
        while True:
            schemas: dict = {}
            records, cursor = gamedb.read_completed_games(
                path, cursors.get(key), min_moves=min_moves, limit=batch, schemas=schemas
            )
            by_config: dict[str, list[dict[str, Any]]] = {}
            for r in records:
                by_config.setdefault(r["config_key"], []).append(r)
            for config_key, recs in sorted(by_config.items()):
                publish(config_key, recs, schemas)
                total += len(recs)
            if cursor != cursors.get(key):
                cursors[key] = cursor
                save_cursors(cursors_path, cursors)
            report()
            if not records:
                break
    return total


class Held:
    """Games a game host holds back from its database: refused (a constraint, a corrupt record)
    or waiting for their schema. Listed by `ringmesh games refused`, landed by `games retry`
    (and, for a schema that arrives, at once). The games stay in the stream log meanwhile."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("""CREATE TABLE IF NOT EXISTS held (config_key TEXT, origin TEXT, seq INTEGER, game_id TEXT,
                           schema TEXT, kind TEXT, reason TEXT, first_seen REAL, last_tried REAL,
                           PRIMARY KEY (config_key, origin, seq))""")

    def close(self) -> None:
        self.db.close()

    def hold(
        self, config_key: str, origin: str, seq: int, game_id: str | None, schema: str | None, kind: str, reason: str
    ) -> None:
        now = time.time()
        self.db.execute(
            """INSERT INTO held VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (config_key, origin, seq)
                           DO UPDATE SET kind=excluded.kind, reason=excluded.reason, schema=excluded.schema,
                           last_tried=excluded.last_tried""",
            (config_key, origin, seq, game_id, schema, kind, reason[:500], now, now),
        )

    def release(self, config_key: str, done: list[tuple[str, int]]) -> None:
        self.db.executemany(
            "DELETE FROM held WHERE config_key=? AND origin=? AND seq=?", [(config_key, o, q) for o, q in done]
        )

    def select(self, config_key: str | None, fingerprints: set[str] | None) -> dict[str, list[tuple[str, int]]]:
        out: dict[str, list[tuple[str, int]]] = {}
        for key, origin, seq, schema in self.db.execute(
            "SELECT config_key, origin, seq, schema FROM held ORDER BY config_key, origin, seq"
        ):
            if (config_key is None or key == config_key) and (fingerprints is None or schema in fingerprints):
                out.setdefault(key, []).append((origin, seq))
        return out

    def count(self, kind: str | None = None) -> int:
        q = "SELECT count(*) FROM held" + (" WHERE kind=?" if kind else "")
        return self.db.execute(q, (kind,) if kind else ()).fetchone()[0]

    def listing(self, config_key: str | None = None) -> list[dict[str, Any]]:
        cols = ("config_key", "origin", "seq", "game_id", "schema", "kind", "reason", "first_seen", "last_tried")
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM held ORDER BY first_seen, config_key, origin, seq")
        return [dict(zip(cols, r)) for r in rows if config_key is None or r[0] == config_key]

    def per_config(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for key, kind, n in self.db.execute("SELECT config_key, kind, count(*) FROM held GROUP BY config_key, kind"):
            out.setdefault(key, {})[kind] = n
        return out

    def streams(self) -> dict[str, dict[str, tuple[int, ...]]]:
        """`{config_key: {origin: held seqs}}` (what `gh/` facts publish)."""
        out: dict[str, dict[str, list[int]]] = {}
        for key, origin, seq in self.db.execute(
            "SELECT config_key, origin, seq FROM held ORDER BY config_key, origin, seq"
        ):
            out.setdefault(key, {}).setdefault(origin, []).append(seq)
        return {k: {o: tuple(qs) for o, qs in v.items()} for k, v in out.items()}
