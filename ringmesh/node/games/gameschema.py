"""The schema travels with the games.

A self-play database's game data is the `games` table and every table that references it
(by a foreign key, directly or through another game table), with their indexes and
triggers. `of_source` reads that part of a source's `sqlite_master` as a `Schema`; its
fingerprint (xxh3-128 of the statements) names it. Records carry the fingerprint only; the
statements travel once per fingerprint (a manifest fact, see `daemon.py`).

`adapt` makes a consumer database able to hold every row of a schema: a table it lacks is
created from the source's statement (its columns, keys, defaults, checks and foreign keys as
the source has them); a column it lacks is added (`ALTER TABLE ... ADD COLUMN`, nullable,
with the source's default); indexes and triggers it lacks are created. Sources of many
versions feeding one consumer end in one database with the union of their columns; a column
a source lacks stays NULL (or its default) in that source's rows. Tables without a foreign
key to `games` (`schema_metadata`, the v14 quarantine `orphaned_games`) are not game data
and are not replicated.

The design question of constraints: a table is created from the first source that has it,
with its constraints. A later, *older* source's row then lacks the newer columns; SQLite adds
columns through migrations only as nullable or with a default (ALTER TABLE cannot add a
NOT NULL column without one), so the operators' schema history never makes such a row
invalid. A database written from a newer CREATE TABLE with a NOT NULL column and no default
would: its older rows are refused, naming the column, listed and retryable (`games retry`)
rather than silently changed.
"""

from __future__ import annotations

import re
import sqlite3
import zlib
from dataclasses import dataclass

import msgpack
import xxhash

KINDS = ("table", "index", "trigger")
MAX_SCHEMA_BYTES = 60 * 1024  # fits one manifest fact
MAX_PLAIN_BYTES = 1 << 20  # what one decompresses to at most
_STATEMENT = {
    "table": re.compile(r"\s*CREATE\s+TABLE\s", re.I),
    "index": re.compile(r"\s*CREATE\s+(UNIQUE\s+)?INDEX\s", re.I),
    "trigger": re.compile(r"\s*CREATE\s+TRIGGER\s", re.I),
}
#: A trigger that changes rows is not taken from a source: a consumer keeps exactly the rows it was sent.
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE|DROP|ALTER|ATTACH|DETACH|PRAGMA|VACUUM)\b", re.I)


class SchemaError(ValueError):
    """A schema that does not decode or does not match its fingerprint."""


@dataclass(frozen=True, slots=True)
class Schema:
    objects: tuple[tuple[str, str, str, str], ...]  # (type, name, table, sql), tables in creation order

    @property
    def fingerprint(self) -> str:
        return xxhash.xxh3_128_hexdigest("\n".join("\0".join(o) for o in self.objects).encode())

    def tables(self) -> list[str]:
        return [name for kind, name, _, _ in self.objects if kind == "table"]

    def encode(self) -> bytes:
        raw = zlib.compress(msgpack.packb([list(o) for o in self.objects]), 6)
        if len(raw) > MAX_SCHEMA_BYTES:
            raise SchemaError(
                f"schema of {len(self.objects)} objects is {len(raw)} bytes compressed (limit {MAX_SCHEMA_BYTES})"
            )
        return raw

    @classmethod
    def decode(cls, raw: bytes, fingerprint: str | None = None) -> Schema:
        try:
            z = zlib.decompressobj()
            plain = z.decompress(raw, MAX_PLAIN_BYTES)
            if z.unconsumed_tail:
                raise SchemaError(f"more than {MAX_PLAIN_BYTES} bytes of statements")
            objs = msgpack.unpackb(plain, raw=False, max_array_len=4096, max_str_len=1 << 16)
            s = cls(tuple((str(k), str(n), str(t), str(q)) for k, n, t, q in objs))
        except Exception as e:
            raise SchemaError(f"schema does not decode: {e}") from None
        if any(k not in KINDS or not _STATEMENT[k].match(q) for k, _, _, q in s.objects) or "games" not in s.tables():
            raise SchemaError(
                "schema without a games table, or with an object that is not a CREATE TABLE, INDEX or TRIGGER"
            )
        if fingerprint is not None and s.fingerprint != fingerprint:
            raise SchemaError(f"schema's fingerprint is {s.fingerprint}, not {fingerprint}")
        return s


def game_tables(conn: sqlite3.Connection) -> list[str]:
    """`games` and every table that references a game table, in creation (rowid) order."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        )
    ]
    refs = {n: {fk[2] for fk in conn.execute(f'PRAGMA foreign_key_list("{n}")')} for n in names}
    keep = {"games"} if "games" in names else set()
    grew = True
    while grew:
        grew = False
        for n in names:
            if n not in keep and refs[n] & keep:
                keep.add(n)
                grew = True
    return [n for n in names if n in keep]


def of_source(conn: sqlite3.Connection) -> Schema:
    """The game-data part of a database's schema, as its `sqlite_master` has it."""
    tables = game_tables(conn)
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    order = {t: i for i, t in enumerate(tables)}
    objs = [(k, n, t, q) for k, n, t, q in rows if t in order and k in KINDS]
    objs.sort(key=lambda o: (KINDS.index(o[0]), order[o[2]] if o[0] != "table" else order[o[1]], o[1]))
    schema = Schema(tuple(objs))
    if len(_SEEN) > 256:
        _SEEN.clear()
    _SEEN.setdefault(schema.fingerprint, schema)
    return schema


_SEEN: dict[str, Schema] = {}  # the schemas this process read (`of_source`), by fingerprint


def recall(fingerprint: str) -> Schema | None:
    """A schema this process read from a source (what a client sends beside the records)."""
    return _SEEN.get(fingerprint)


_COLUMNS: dict[str, dict[str, list[tuple]]] = {}  # fingerprint -> table -> PRAGMA table_info rows


def _columns_of(schema: Schema) -> dict[str, list[tuple]]:
    """Each table's columns as the schema declares them (its statements run in memory)."""
    fp = schema.fingerprint
    got = _COLUMNS.get(fp)
    if got is None:
        mem = sqlite3.connect(":memory:")
        try:
            for kind, name, _, sql in schema.objects:
                if kind == "table":
                    mem.execute(sql)
            got = {t: list(mem.execute(f'PRAGMA table_info("{t}")')) for t in schema.tables()}
        finally:
            mem.close()
        if len(_COLUMNS) > 256:
            _COLUMNS.clear()
        _COLUMNS[fp] = got
    return got


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def adapt(db: sqlite3.Connection, schema: Schema) -> list[str]:
    """Make `db` able to hold every row of `schema`'s tables; returns what it did (for the log).
    Runs inside the caller's transaction."""
    done: list[str] = []
    have = {r[0]: r[1] for r in db.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'")}
    declared = _columns_of(schema)
    for kind, name, table, sql in schema.objects:
        if kind != "table":
            continue
        if name not in have:
            db.execute(sql)
            done.append(f"created table {name}")
            continue
        cols = {r[1] for r in db.execute(f"PRAGMA table_info({_quote(name)})")}
        for _cid, col, ctype, _notnull, default, _pk in declared[name]:
            if col not in cols:
                db.execute(
                    f"ALTER TABLE {_quote(name)} ADD COLUMN {_quote(col)} {ctype or ''}"
                    + (f" DEFAULT {default}" if default is not None else "")
                )
                done.append(f"added column {name}.{col}")
    for kind, name, table, sql in schema.objects:
        if (
            kind == "trigger"
            and name not in have
            and _WRITES.search(sql.split("BEGIN", 1)[-1] if "BEGIN" in sql.upper() else "")
        ):
            done.append(f"skipped trigger {name}: it changes rows (a consumer keeps exactly the rows it was sent)")
            continue
        if kind != "table" and name not in have:
            try:
                db.execute(sql)
                done.append(f"created {kind} {name}")
            except sqlite3.Error as e:  # e.g. a UNIQUE index the rows already there break: keep the rows
                done.append(f"skipped {kind} {name}: {e}")
    return done


def adapt_once(db: sqlite3.Connection, schema: Schema) -> list[str]:
    """`adapt`, once per schema per database: the fingerprints a database took are kept in it
    (`ringmesh_schemas`, not game data), so that what an operator changed afterwards (a trigger
    dropped, an index removed) stays as they left it."""
    db.execute(
        "CREATE TABLE IF NOT EXISTS ringmesh_schemas (fingerprint TEXT PRIMARY KEY, tables TEXT, adapted_at TEXT)"
    )
    if db.execute("SELECT 1 FROM ringmesh_schemas WHERE fingerprint=?", (schema.fingerprint,)).fetchone():
        return []
    done = adapt(db, schema)
    db.execute(
        "INSERT INTO ringmesh_schemas VALUES (?, ?, datetime('now'))", (schema.fingerprint, ",".join(schema.tables()))
    )
    return done
