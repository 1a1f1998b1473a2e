"""The manifest on disk: SQLite in WAL mode, in `<data dir>/state.db`.

Blocking; the daemon calls it from one dedicated worker thread, so writes land in the order
the core produced them. A restart reads back the incarnation, the clock and every origin.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .core.manifest import Fact, OriginChange, OriginState

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS origins (
    origin TEXT PRIMARY KEY, incarnation INTEGER NOT NULL, heartbeat INTEGER NOT NULL,
    max_counter INTEGER NOT NULL, floor INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS vote (id INTEGER PRIMARY KEY CHECK (id = 0), term INTEGER NOT NULL, voted_for TEXT);
CREATE TABLE IF NOT EXISTS facts (
    origin TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
    counter INTEGER NOT NULL, deleted_at INTEGER NOT NULL, PRIMARY KEY (origin, key));
"""


def _i64(x: int) -> int:
    """SQLite integers are signed 64-bit; HLCs and counters are unsigned."""
    return x - (1 << 64) if x >= 1 << 63 else x


def _u64(x: int) -> int:
    return x + (1 << 64) if x < 0 else x


class Store:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / "state.db"
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def meta(self, key: str) -> int | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else _u64(row[0])

    def set_meta(self, key: str, value: int) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, _i64(value)))

    def vote(self) -> tuple[int, str | None]:
        row = self.db.execute("SELECT term, voted_for FROM vote WHERE id = 0").fetchone()
        return (0, None) if row is None else (_u64(row[0]), row[1])

    def save_vote(self, term: int, voted_for: str | None) -> None:
        """The election's promise; synchronous=FULL makes it durable before we answer."""
        self.db.execute("INSERT OR REPLACE INTO vote VALUES (0, ?, ?)", (_i64(term), voted_for))

    def load(self) -> dict[str, OriginState]:
        states = {}
        for origin, inc, hb, mx, floor in self.db.execute("SELECT * FROM origins"):
            states[origin] = OriginState(_u64(inc), _u64(hb), _u64(mx), _u64(floor))
        for origin, key, value, counter, deleted_at in self.db.execute("SELECT * FROM facts"):
            if origin in states:
                states[origin].facts[key] = Fact(key, bytes(value), _u64(counter), _u64(deleted_at))
        return states

    def apply(self, changes: tuple[OriginChange, ...], hlc: int) -> None:
        """Write a batch of manifest changes in one transaction."""
        db = self.db
        db.execute("BEGIN")
        try:
            for ch in changes:
                if ch.reset:
                    db.execute("DELETE FROM facts WHERE origin=?", (ch.origin,))
                db.execute(
                    "INSERT OR REPLACE INTO origins VALUES (?, ?, ?, ?, ?)",
                    (ch.origin, _i64(ch.incarnation), _i64(ch.heartbeat), _i64(ch.max_counter), _i64(ch.floor)),
                )
                db.executemany(
                    "INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?, ?)",
                    [(ch.origin, f.key, f.value, _i64(f.counter), _i64(f.deleted_at)) for f in ch.upserts],
                )
                db.executemany("DELETE FROM facts WHERE origin=? AND key=?", [(ch.origin, k) for k in ch.removed])
            db.execute("INSERT OR REPLACE INTO meta VALUES ('hlc', ?)", (_i64(hlc),))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on some errors (SQLITE_FULL at COMMIT):
                db.execute("ROLLBACK")  # a second ROLLBACK would raise and hide the error that matters
            raise
