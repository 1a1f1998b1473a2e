"""Adapter for the cluster's self-play game databases (SQLite, WAL, foreign keys on).

Blocking code: the daemon calls it from worker threads.  Each call opens its own
connection, so nothing here is shared between threads.

* :func:`create_db` — a database with the exact self-play schema (:mod:`gamedb_schema`).
* :func:`generate_games` / :class:`FixtureWriter` — a realistic, seeded fixture
  (:mod:`gamedb_fixture`, re-exported here).
* :func:`read_completed_games` — intake: take completed games out of a *live* self-play
  database without locking out its writer and without taking a game twice (a cursor).
* :func:`open_consumer_db` / :func:`append_games` — consumption: append game records into a
  local database of the same schema, deduplicated by ``game_id``, byte-identical rows.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterable

from ringmesh.node.games import gameschema
from ringmesh.node.games.gamedb_schema import CHILD_TABLES, COMPLETED_STATUSES, OPEN_STATUSES, SCHEMA, SCHEMA_VERSION

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "CLUSTER_MIN_MOVES",
    "create_db",
    "read_completed_games",
    "open_consumer_db",
    "append_games",
    "min_moves_for",
    "BOARDS",
]

log = logging.getLogger(__name__)

BOARDS = ("square8", "square19", "hex8", "hexagonal")

#: The cluster's minimum-move filter: board -> {num_players: min total_moves}.
CLUSTER_MIN_MOVES = {
    "hex8": {2: 20, 3: 30, 4: 40},
    "square8": {2: 20, 3: 30, 4: 40},
    "square19": {2: 50, 3: 80, 4: 100},
    "hexagonal": {2: 50, 3: 80, 4: 100},
}


def parse_config_key(config_key: str) -> tuple[str, int]:
    board, _, players = config_key.rpartition("_")
    if board not in BOARDS or players not in ("2p", "3p", "4p"):
        raise ValueError(f"bad config_key {config_key!r} (want {{{'|'.join(BOARDS)}}}_{{2|3|4}}p)")
    return board, int(players[0])


def min_moves_for(board: str, num_players: int, min_moves: int | str | None) -> int:
    """The minimum ``total_moves`` for a game of this board/players under ``min_moves``."""
    if min_moves is None:
        return 0
    if min_moves == "cluster":
        return CLUSTER_MIN_MOVES.get(board, {}).get(int(num_players), 0)
    if isinstance(min_moves, int) and not isinstance(min_moves, bool):
        return min_moves
    raise ValueError(f"min_moves must be None, 'cluster' or an int, not {min_moves!r}")


# ----------------------------------------------------------------------------- connections


def _connect_rw(path: str | Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


def _connect_ro(path: str | Path) -> sqlite3.Connection:
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30.0, check_same_thread=False)
    conn.execute("PRAGMA query_only=ON")
    return conn


def count_games(path: str | Path) -> int:
    """How many games a database holds (0 if it does not exist or has no games table yet)."""
    if not Path(path).exists():
        return 0
    try:
        conn = _connect_ro(path)
    except sqlite3.Error:
        return 0
    try:
        return conn.execute("SELECT count(*) FROM games").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def max_rowid(path: str | Path) -> int:
    """The highest `games.rowid` now (0 for none): how far `read_completed_games` examines."""
    conn = _connect_ro(path)
    try:
        return conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM games").fetchone()[0]
    finally:
        conn.close()


def create_db(path: str | Path, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """Create (or open) a self-play database with the schema; WAL, foreign keys on."""
    conn = _connect_rw(path, synchronous=synchronous)
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO schema_metadata(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
    )
    return conn


# ----------------------------------------------------------------------------- fixture

_TAIL_WINDOW = 256
_FETCH_BATCH = 16


def _child_tables(conn: sqlite3.Connection) -> list[tuple[str, list[str], list[str]]]:
    """Every table with a foreign key to ``games``: (name, columns, primary-key columns)."""
    out = []
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    order = {t: i for i, t in enumerate(CHILD_TABLES)}
    for name in sorted(names, key=lambda t: (order.get(t, len(order)), t)):
        if name == "games":
            continue
        if not any(fk[2] == "games" for fk in conn.execute(f'PRAGMA foreign_key_list("{name}")')):
            continue
        info = list(conn.execute(f'PRAGMA table_info("{name}")'))
        cols = [r[1] for r in info]
        pk = [r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5])] or ["rowid"]
        out.append((name, cols, pk))
    return out


def _fetch_game(
    conn: sqlite3.Connection, game_id: str, games_cols: list[str], children: list[tuple[str, list[str], list[str]]]
) -> dict | None:
    row = conn.execute("SELECT * FROM games WHERE game_id=?", (game_id,)).fetchone()
    if row is None:
        return None
    g = dict(zip(games_cols, row))
    rec: dict[str, Any] = {
        "game_id": game_id,
        "config_key": f"{g.get('board_type')}_{g.get('num_players')}p",
        "tables": {"games": [tuple(row)]},
        "columns": {"games": list(games_cols)},
    }
    for name, cols, pk in children:
        order = ", ".join(f'"{c}"' for c in pk)
        rows = conn.execute(f'SELECT * FROM "{name}" WHERE game_id=? ORDER BY {order}', (game_id,)).fetchall()
        rec["tables"][name] = [tuple(r) for r in rows]
        rec["columns"][name] = list(cols)
    return rec


def read_completed_games(
    path: str | Path,
    cursor: dict | None = None,
    *,
    min_moves: int | str | None = None,
    limit: int | None = None,
    schemas: dict | None = None,
) -> tuple[list[dict], dict]:
    """Take the completed games not yet taken out of a (live) self-play database.

    Returns ``(records, cursor)``; pass the cursor back on the next call (it is plain data,
    msgpack/JSON-serialisable; persist it *after* the records are durable, so a crash
    re-takes rather than loses — the consumer dedups by ``game_id``).

    A record is every row of one game in every table that references ``games``::

        {"game_id": str, "config_key": "hex8_2p", "schema": fingerprint,
         "columns": {table: [column names]},
         "tables": {table: [row tuples in primary-key order]}}   # "games" included; bytes stay bytes

    ``schema`` names the source's game schema (:mod:`gameschema`), read in the same transaction
    as the rows, so that a database mid-migration by its writer is read consistently; pass a
    dict as ``schemas`` to receive ``{fingerprint: Schema}`` of the records returned.

    Never locks out the writer: a read-only ``mode=ro`` URI connection, WAL, and short read
    transactions (one to scan statuses, then one per batch of <= 16 games fetched).

    **The cursor** ``{"v": 1, "hw": int, "tail": [[rowid, game_id], ...], "pending": [game_id, ...]}``:

    * ``hw`` — the highest ``games.rowid`` examined.  Rows are examined in rowid order, and
      SQLite gives a new row ``max(rowid)+1``, so new games appear above ``hw``.
    * ``pending`` — games seen below ``hw`` while still open (waiting/active/paused).  Each
      call looks them up by ``game_id``; once completed they are taken and removed, so a game
      first seen active and completed later is taken exactly once.  Pending games that
      vanish (deleted) or become ``abandoned`` are dropped.
    * ``tail`` — ``(rowid, game_id)`` of the last 256 rows examined.  If the writer deletes its
      newest games (an abandoned game, ``ON DELETE CASCADE``), SQLite reuses their rowids for
      the next inserts; every call rescans the tail range and treats a row whose
      ``(rowid, game_id)`` it has not seen as new.  (Limits: deleting more than 256 of the
      newest rows at once, or ``VACUUM`` renumbering rowids, can make a game be missed or
      re-taken — re-taking is harmless given dedup by ``game_id``.)

    Each completed game is therefore taken exactly once: at the call that first sees it
    completed, either as a new row above ``hw`` or as a pending one.  Games below the
    ``min_moves`` filter (None, an int, or ``"cluster"`` = 20/30/40 moves for hex8/square8 at
    2/3/4 players, 50/80/100 for square19/hexagonal) are consumed without being returned.
    ``limit`` caps the records per call (the rest come on the next call).
    """
    cur = cursor or {}
    hw = int(cur.get("hw", 0))
    tail: dict[int, str] = {int(r): gid for r, gid in cur.get("tail", [])}
    pending: set[str] = set(cur.get("pending", []))
    floor = min(min(tail), hw + 1) - 1 if tail else hw

    conn = _connect_ro(path)
    try:
        conn.execute("BEGIN")
        try:
            scanned = conn.execute(
                "SELECT rowid, game_id, game_status FROM games WHERE rowid > ? ORDER BY rowid", (floor,)
            ).fetchall()
            plist = sorted(pending)
            found: dict[str, tuple[int, str]] = {}
            for i in range(0, len(plist), 500):
                chunk = plist[i : i + 500]
                for rowid, gid, status in conn.execute(
                    f"SELECT rowid, game_id, game_status FROM games WHERE game_id IN ({','.join('?' * len(chunk))})",
                    chunk,
                ):
                    found[gid] = (rowid, status)
        finally:
            conn.execute("COMMIT")

        # Events in order: pending games first (by rowid), then rows not examined before.
        events: list[tuple[str, int, str, str]] = []  # (kind, rowid, game_id, status)
        for gid in plist:
            if gid not in found:
                pending.discard(gid)  # deleted
            else:
                events.append(("pending", found[gid][0], gid, found[gid][1]))
        events.sort(key=lambda e: e[1])
        for rowid, gid, status in scanned:
            if rowid <= hw and tail.get(rowid) == gid:
                continue
            if gid in pending:
                continue  # already handled as a pending event
            events.append(("new", rowid, gid, status))

        records: list[dict] = []
        to_fetch: list[tuple[str, int, str]] = []
        new_hw = hw

        def flush() -> None:
            if not to_fetch:
                return
            conn.execute("BEGIN")
            try:  # the shape of the tables as of this transaction (a writer may migrate between two)
                games_cols = [r[1] for r in conn.execute("PRAGMA table_info(games)")]
                children = _child_tables(conn)
                schema = gameschema.of_source(conn)
                fp = schema.fingerprint
                for kind, rowid, gid in to_fetch:
                    rec = _fetch_game(conn, gid, games_cols, children)
                    if rec is None:
                        pending.discard(gid)
                        continue
                    g = dict(zip(rec["columns"]["games"], rec["tables"]["games"][0]))
                    if g.get("game_status") not in COMPLETED_STATUSES:  # reopened: wait again
                        pending.add(gid)
                        continue
                    pending.discard(gid)
                    need = min_moves_for(g.get("board_type", ""), g.get("num_players") or 0, min_moves)
                    if (g.get("total_moves") or 0) < need:
                        continue
                    rec["schema"] = fp
                    if schemas is not None:
                        schemas[fp] = schema
                    records.append(rec)
            finally:
                conn.execute("COMMIT")
            to_fetch.clear()

        taken = 0
        for kind, rowid, gid, status in events:
            if limit is not None and taken >= limit:
                break
            if kind == "new":
                tail[rowid] = gid
                new_hw = max(new_hw, rowid)
            if status in COMPLETED_STATUSES:
                to_fetch.append((kind, rowid, gid))
                taken += 1
                if len(to_fetch) >= _FETCH_BATCH:
                    flush()
            elif status in OPEN_STATUSES or status is None:
                pending.add(gid)
            else:
                pending.discard(gid)  # abandoned or unknown terminal status
        flush()
    finally:
        conn.close()

    keep = sorted(tail)[-_TAIL_WINDOW:]
    new_cursor = {"v": 1, "hw": new_hw, "tail": [[r, tail[r]] for r in keep], "pending": sorted(pending)}
    return records, new_cursor


# ----------------------------------------------------------------------------- consumption


def open_consumer_db(path: str | Path) -> sqlite3.Connection:
    """A local consumer database (WAL: readable while written). Its tables come from the
    schemas of the records it takes in (`append_games`)."""
    return _connect_rw(path, synchronous="FULL")


_BUILTIN: list[gameschema.Schema] = []


def builtin_schema() -> gameschema.Schema:
    """The schema of records that name none (writers before schemas travelled): ringmesh's own copy."""
    if not _BUILTIN:
        mem = sqlite3.connect(":memory:")
        mem.executescript(SCHEMA)
        _BUILTIN.append(gameschema.of_source(mem))
        mem.close()
    return _BUILTIN[0]


def append_games(
    db: sqlite3.Connection,
    records: Iterable[dict],
    *,
    rejected: list | None = None,
    schemas: dict | None = None,
    adapted: set | None = None,
    waiting: list | None = None,
) -> tuple[int, int]:
    """Append game records in one transaction; returns ``(inserted, duplicates)``.

    Rows go in the writer's order — the ``games`` row as ``active``, then each child table in
    primary-key order, then the update to the record's status — so the triggers pass and the
    final rows are identical to the source's.  A record whose ``game_id`` is already present
    (or earlier in the batch) is a duplicate: counted, not inserted.  A record the database
    refuses (trigger, constraint, corrupt rows) is rolled back alone and appended to
    ``rejected`` as ``(game_id, error)`` if given.

    Before its rows, the database is adapted to the record's schema (``schemas``: fingerprint ->
    :class:`gameschema.Schema`; ``adapted``: the fingerprints this database already took, kept
    by the caller). A record naming a schema not in ``schemas`` is not inserted: it goes to
    ``waiting`` as ``(record, fingerprint)``, to be appended once the schema is known.
    """
    inserted = duplicates = 0
    schemas = schemas if schemas is not None else {}
    adapted = adapted if adapted is not None else set()
    db.execute("BEGIN IMMEDIATE")
    try:
        fresh: list[dict] = []
        seen: set[str] = set()
        for rec in records:
            gid = rec["game_id"]
            fp = rec.get("schema")
            schema = builtin_schema() if fp is None else schemas.get(fp)
            if schema is None:
                if waiting is not None:
                    waiting.append((rec, fp))
                continue
            if schema.fingerprint not in adapted:
                for change in gameschema.adapt_once(db, schema):
                    log.info("gamedb: %s (schema %s)", change, schema.fingerprint[:12])
                adapted.add(schema.fingerprint)
            if gid in seen or db.execute("SELECT 1 FROM games WHERE game_id=?", (gid,)).fetchone():
                duplicates += 1
                continue
            seen.add(gid)
            fresh.append(rec)
        # the whole batch at once (one statement per table and shape); if any record is refused,
        # each goes alone, so that only the refused ones are left out
        db.execute("SAVEPOINT batch")
        try:
            _insert_many(db, fresh)
        except _INSERT_ERRORS:
            db.execute("ROLLBACK TO batch")
            db.execute("RELEASE batch")
            for rec in fresh:
                db.execute("SAVEPOINT game")
                try:
                    _insert_many(db, [rec])
                except _INSERT_ERRORS as e:  # a record not shaped as `read_completed_games` makes them: a peer's fault
                    db.execute("ROLLBACK TO game")
                    db.execute("RELEASE game")
                    log.warning("gamedb: game %s refused: %s", rec["game_id"], e)
                    if rejected is not None:
                        rejected.append((rec["game_id"], str(e)))
                    continue
                db.execute("RELEASE game")
                inserted += 1
        else:
            db.execute("RELEASE batch")
            inserted += len(fresh)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return inserted, duplicates


_INSERT_ERRORS = (sqlite3.Error, LookupError, TypeError, ValueError, OverflowError, AttributeError)


def _insert_many(db: sqlite3.Connection, recs: list[dict]) -> None:
    """The writer's order for a batch: every `games` row as `active`, then each child table's
    rows, then the updates to their final status (so that the triggers pass)."""
    groups: dict[tuple[str, tuple[str, ...]], list] = {}
    finals: list[tuple[str, str]] = []
    for rec in recs:
        tables, columns = rec["tables"], rec["columns"]
        gcols = tuple(columns["games"])
        (grow,) = tables["games"]
        grow = list(grow)
        si = gcols.index("game_status")
        if grow[si] in COMPLETED_STATUSES:
            finals.append((grow[si], rec["game_id"]))
            grow[si] = "active"
        groups.setdefault(("games", gcols), []).append(grow)
    for rec in recs:
        for name, rows in rec["tables"].items():
            if name != "games" and rows:
                groups.setdefault((name, tuple(rec["columns"][name])), []).extend(rows)
    for (table, cols), rows in groups.items():  # games first: insertion order
        _insert_rows(db, table, list(cols), rows)
    if finals:
        db.executemany("UPDATE games SET game_status=? WHERE game_id=?", finals)


def _insert_rows(db: sqlite3.Connection, table: str, cols: list[str], rows: list) -> None:
    if not table.replace("_", "").isalnum():
        raise sqlite3.OperationalError(f"bad table name {table!r}")
    names = ", ".join('"' + c.replace('"', '""') + '"' for c in cols)
    db.executemany(f'INSERT INTO "{table}" ({names}) VALUES ({",".join("?" * len(cols))})', [tuple(r) for r in rows])
