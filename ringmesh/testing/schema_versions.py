"""Self-play databases shaped like the operators' schema versions (REFERENCE.md, "Schema
versions"), for the schema-travels tests: the fixture writer's games, rewritten into the
tables and columns each version had.

    v7   no quality (v9), engine mode (v12), parity (v13), opponent (v16) columns on games; no
         soft-policy / search-stats (v10-11) or heuristic features (v18) on moves; no NNUE table
    v14  + game_nnue_features (v8) with rows, + orphaned_games (v14, no foreign key); no v16/v18 columns
    v18  every column, NNUE rows, orphaned_games
    v19  v18 + a new column on games (elo_delta) and a new child table (game_annotations)
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from ringmesh.ops.selfplay import generate_games

DROP = {
    "v7": {
        "games": {
            "quality_score",
            "quality_category",
            "engine_mode",
            "parity_status",
            "parity_checked_at",
            "parity_divergence_move",
            "opponent_type",
            "opponent_model_id",
        },
        "game_moves": {"move_probs", "search_stats_json", "heuristic_features"},
    },
    "v14": {"games": {"opponent_type", "opponent_model_id"}, "game_moves": {"heuristic_features"}},
    "v18": {},
    "v19": {},
}
VERSION = {"v7": 7, "v14": 14, "v18": 18, "v19": 19}
NNUE = """CREATE TABLE game_nnue_features (
    game_id TEXT NOT NULL,
    move_number INTEGER NOT NULL,
    player_perspective INTEGER NOT NULL,
    features BLOB NOT NULL,
    value REAL,
    board_type TEXT,
    feature_dim INTEGER,
    PRIMARY KEY (game_id, move_number, player_perspective),
    FOREIGN KEY (game_id) REFERENCES games(game_id) ON DELETE CASCADE
)"""
ORPHANS = "CREATE TABLE orphaned_games (game_id TEXT PRIMARY KEY, reason TEXT, found_at TEXT)"
ANNOTATIONS = """CREATE TABLE game_annotations (
    game_id TEXT NOT NULL REFERENCES games(game_id) ON DELETE CASCADE,
    move_number INTEGER NOT NULL,
    note TEXT NOT NULL,
    PRIMARY KEY (game_id, move_number)
)"""


def _without(sql: str, cols: set[str]) -> str:
    """A CREATE TABLE of the fixture schema (one column a line) without `cols`."""
    lines = [ln for ln in sql.splitlines() if ln.strip().split(" ", 1)[0] not in cols]
    body = "\n".join(lines)
    return body.replace(",\n)", "\n)")


def make(path: str | Path, version: str, n: int, *, seed: int = 0, config_key: str = "hex8_2p") -> list[str]:
    """A database of `version`'s shape at `path` with `n` completed games; returns their ids."""
    path = Path(path)
    base = path.with_suffix(".base.db")
    ids = generate_games(base, n, config_key=config_key, seed=seed, moves=(20, 30))
    src = sqlite3.connect(base)
    dst = sqlite3.connect(path)
    dst.execute("PRAGMA journal_mode=WAL")
    drop = DROP[version]
    objects = src.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
    ).fetchall()
    for kind, name, table, sql in objects:
        if kind == "table":
            dst.execute(_without(sql, drop.get(name, set())).replace("IF NOT EXISTS ", ""))
    if version != "v7":
        dst.execute(NNUE)
        dst.execute(ORPHANS)
    if version == "v19":
        dst.execute(ANNOTATIONS)
        dst.execute("ALTER TABLE games ADD COLUMN elo_delta REAL DEFAULT 0")
    rng = random.Random(f"{seed}/{version}")
    dst.execute("BEGIN")
    for kind, name, table, sql in objects:
        if kind != "table":
            continue
        cols = [
            r[1]
            for r in dst.execute(f'PRAGMA table_info("{name}")')
            if r[1] in {c[1] for c in src.execute(f'PRAGMA table_info("{name}")')}
        ]
        rows = src.execute(f'SELECT {", ".join(cols)} FROM "{name}" ORDER BY rowid').fetchall()
        if name == "schema_metadata":
            rows = [("schema_version", str(VERSION[version]))]
        dst.executemany(f'INSERT INTO "{name}" ({", ".join(cols)}) VALUES ({",".join("?" * len(cols))})', rows)
    if version != "v7":
        for gid in ids:
            for mv in (0, 10, 19):
                for p in (1, 2):
                    dst.execute(
                        "INSERT INTO game_nnue_features VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (gid, mv, p, rng.randbytes(64), rng.uniform(-1, 1), config_key.rsplit("_", 1)[0], 256),
                    )
        dst.execute("INSERT INTO orphaned_games VALUES ('lost-1', 'no moves', '2025-12-31T00:00:00Z')")
    if version == "v19":
        for gid in ids:
            dst.execute("UPDATE games SET elo_delta=? WHERE game_id=?", (rng.uniform(-20, 20), gid))
            dst.execute("INSERT INTO game_annotations VALUES (?, 3, ?)", (gid, f"note for {gid[:8]}"))
    dst.execute("COMMIT")
    # the indexes and triggers last (the triggers would refuse completed rows copied in)
    for kind, name, table, sql in objects:
        if kind in ("index", "trigger") and not (set(drop.get(table, ())) & set(sql.split())):
            dst.execute(sql)
    dst.close()
    src.close()
    base.unlink()
    for extra in ("-wal", "-shm"):
        Path(str(base) + extra).unlink(missing_ok=True)
    return ids
