"""A node's own state on disk: the manifest store and the data-dir lock.

The manifest on disk: SQLite in WAL mode, in `<data dir>/state.db`.

Blocking; the daemon calls it from one dedicated worker thread, so writes land in the order
the core produced them. A restart reads back the incarnation, the clock and every origin.

One daemon per data dir: an exclusive `flock` on `<data dir>/lock`, with the holder's pid
written into the file for the message a second daemon prints.

The kernel drops the lock when its holder dies, however it dies (SIGKILL included), so a lock
"left behind" is never stale: the file may still name a dead pid, but the next daemon takes the
lock at once and writes its own pid. The pid in the file is only ever read to explain a refusal.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from pathlib import Path

from ringmesh.core.errors import RingmeshError
from ringmesh.core.manifest import Fact, OriginChange, OriginState

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
        self._open()

    def _open(self) -> None:
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

    # -- scrub -----------------------------------------------------------------------------

    def scrub(self, expected: dict[str, OriginState]) -> list[str]:
        """What is wrong with the store on disk: SQLite's own check, then every origin and fact
        against `expected`, the manifest in memory when this job was queued. The store thread
        writes in the order the core produced the changes, so the disk may lag memory but never
        lead it: a fact on disk that memory lacks, holds older or holds with other bytes (at the
        same counter) is damage."""
        try:
            problems = [r[0] for r in self.db.execute("PRAGMA integrity_check") if r[0] != "ok"]
            if problems:
                return problems[:20]
            on_disk = self.load()
        except sqlite3.DatabaseError as e:
            return [f"unreadable: {e}"]
        for origin, st in sorted(on_disk.items()):
            mem = expected.get(origin)
            if mem is None:
                problems.append(f"origin {origin!r} is not in memory")
                continue
            if (st.incarnation, st.max_counter) > (mem.incarnation, mem.max_counter) or st.floor > mem.floor:
                problems.append(f"origin {origin!r}: ahead of memory")
            elif st.incarnation == mem.incarnation:
                for key, f in st.facts.items():
                    m = mem.facts.get(key)
                    if m is None and f.counter > mem.floor:
                        problems.append(f"{origin}: {key!r} is not in memory")
                    elif m is not None and (f.counter > m.counter or (f.counter == m.counter and f != m)):
                        problems.append(f"{origin}: {key!r} differs from memory")
            if len(problems) >= 20:
                break
        return problems

    def rewrite(self, states: dict[str, OriginState], hlc: int, vote: tuple[int, str | None]) -> Path:
        """Write `states` (the manifest in memory) into a fresh store that replaces this one; the
        damaged one is kept beside it (`state.db.corrupt-<time>`, returned) for a post-mortem."""
        fresh = self.path.with_name("state.db.rewrite")
        fresh.unlink(missing_ok=True)
        new = Store.__new__(Store)
        new.path = fresh
        new._open()
        changes = tuple(
            OriginChange(o, st.incarnation, st.heartbeat, st.max_counter, st.floor, True, tuple(st.facts.values()), ())
            for o, st in states.items()
        )
        new.apply(changes, hlc)
        new.save_vote(*vote)
        new.db.close()
        self.db.close()
        aside = self.path.with_name(f"state.db.corrupt-{int(time.time())}")
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        os.replace(self.path, aside)
        os.replace(fresh, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._open()
        return aside


LOCK_NAME = "lock"


class DataDirBusy(RingmeshError):
    """Another daemon holds the data dir."""


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 64, 0)
    except OSError:
        return None
    text = raw.decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class DataDirLock:
    def __init__(self, data_dir: str | Path) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        # no O_TRUNC: the file of a running holder keeps its pid for our message
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        for attempt in range(3):  # `holder()` (ringmesh doctor) may hold a shared lock for an instant
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt < 2:
                    time.sleep(0.05)
        else:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise DataDirBusy(
                f"{self.path.parent}: another ringmesh daemon is running on this data dir ({who} holds {self.path}); "
                f"stop it first, or give this one a --data-dir of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # a clean stop leaves no pid behind
            except OSError:
                pass
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(data_dir: str | Path) -> int | None:
    """The pid of the daemon holding `data_dir` now (0 if the file names none), or None if no
    daemon holds it. Takes and drops a shared lock to find out; never blocks."""
    path = Path(data_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
