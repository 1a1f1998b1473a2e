"""The daemon's game streams: the stream log on disk and, on game hosts, the SQLite
databases the training processes read (one per config, the self-play schema, WAL).

Blocking; the daemon calls it from its store worker thread, one call at a time.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import msgpack

from . import gamedb
from .streamlog import StreamLog, StreamLogError

log = logging.getLogger("ringmesh.games")
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
        self.by_config: Counter[str] = Counter()  # config_key -> games materialised since start

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()
        self.log.close()

    def append_own(self, me: str, config_key: str, payloads: list[bytes]) -> tuple[tuple[tuple[int, bytes], ...], int]:
        seqs = self.log.append(me, config_key, payloads)
        self.log.flush()  # group commit: one fsync for the whole batch, before anyone hears of it
        self._materialise(config_key, payloads)
        return tuple(zip(seqs, payloads)), self.log.high_water(me, config_key)

    def store(self, origin: str, config_key: str, games) -> int:
        fresh = []
        for q, g in games:
            try:
                if self.log.append_at(origin, config_key, q, g):
                    fresh.append(g)
            except (StreamLogError, ValueError) as e:  # a peer sent a different game under a known seq
                log.warning("game %s/%s #%d refused: %s", origin, config_key, q, e)
                self.counts["rejected"] += 1
        self.log.flush()
        self._materialise(config_key, fresh)
        return self.log.high_water(origin, config_key)

    def read(self, origin: str, config_key: str, first: int, last: int) -> tuple[tuple[int, bytes], ...]:
        return tuple(self.log.read(origin, config_key, first, last))

    def _materialise(self, config_key: str, payloads: list[bytes]) -> None:
        """Append the games to this host's database of `config_key` (game hosts only)."""
        if not self.consume or not payloads:
            return
        records = []
        for p in payloads:
            rec = unpack_record(p)
            if rec is None:
                self.counts["undecodable"] += 1
            else:
                records.append(rec)
        if not records:
            return
        db = self.dbs.pop(config_key, None)
        if db is None:
            while len(self.dbs) >= MAX_OPEN_DBS:  # peers may name many configs: bound the open files
                self.dbs.pop(next(iter(self.dbs))).close()
            self.games_dir.mkdir(parents=True, exist_ok=True)
            db = gamedb.open_consumer_db(self.games_dir / f"{config_key}.db")
        self.dbs[config_key] = db  # the most recently used last
        rejected: list = []
        inserted, dups = gamedb.append_games(db, records, rejected=rejected)
        self.counts["materialised"] += inserted
        self.by_config[config_key] += inserted
        self.counts["duplicates"] += dups
        self.counts["rejected"] += len(rejected)
        for game_id, err in rejected:
            log.warning("game %s of %s refused by the database: %s", game_id, config_key, err)


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
    patterns: Iterable[str], cursors_path: str | Path, publish: Callable[[str, list[dict[str, Any]]], Any],
    *, min_moves: int | str | None = None, batch: int = 64, progress: Callable[[int, int, int], None] | None = None,
) -> int:
    """Take the completed games of the self-play databases matching `patterns` (paths or globs),
    each once: a database's cursor is saved only after `publish` returned, i.e. after the peer
    fsynced the games it covers. Returns how many games were taken. Blocking.

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
            done = sum(max(0, min(ends[p], int((cursors.get(os.path.abspath(p)) or {}).get("hw", 0))) - start[p])
                       for p in ends)
            progress(done, todo, total)

    for path in paths:
        key = os.path.abspath(path)
        while True:
            records, cursor = gamedb.read_completed_games(path, cursors.get(key), min_moves=min_moves, limit=batch)
            by_config: dict[str, list[dict[str, Any]]] = {}
            for r in records:
                by_config.setdefault(r["config_key"], []).append(r)
            for config_key, recs in sorted(by_config.items()):
                publish(config_key, recs)
                total += len(recs)
            if cursor != cursors.get(key):
                cursors[key] = cursor
                save_cursors(cursors_path, cursors)
            report()
            if not records:
                break
    return total
