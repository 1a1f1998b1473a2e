"""Materialisation throughput of v18 games with NNUE rows, beside a plain SQLite copy.

    python bench/gamedb_materialise.py [--games 400] [--batch 64]

One v18-shaped self-play database (the fixture writer's games rewritten into v18's tables,
with `game_nnue_features` rows) is made in a scratch folder; then, in the same run:

  copy         the floor: ATTACH the source and `INSERT INTO ... SELECT` every game table into an
               empty database of the same tables and indexes, one transaction (no decoding, no
               per-row Python)
  materialise  ringmesh's consumer path, batched: records as they travel (msgpack) unpacked,
               the consumer adapted to their schema, `append_games` in batches of --batch
  store        the whole game-host intake: stream log append + fsync, then materialise (`Games.store`)

It prints games/s and MB/s (the source database's size over the time) and each ratio to the
copy. Target (issue 15): materialise >= 0.5 x the copy.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringmesh.node.games import gamedb, gameschema  # noqa: E402
from ringmesh.node.games.games import Games, pack_record, unpack_record  # noqa: E402
from ringmesh.testing.schema_versions import make  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--games", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ringmesh-bench-mat-"))
    src = root / "selfplay_v18.db"
    make(src, "v18", args.games, seed=1)
    size = src.stat().st_size + sum(Path(str(src) + x).stat().st_size for x in ("-wal",) if Path(str(src) + x).exists())
    schemas: dict = {}
    records, _ = gamedb.read_completed_games(src, schemas=schemas)
    payloads = [pack_record(r) for r in records]
    n = len(records)

    # the floor: a plain SQLite -> SQLite copy of the same games
    dst = root / "copy.db"
    con = sqlite3.connect(src)
    tables = gameschema.game_tables(con)
    # the same tables and indexes as the consumer keeps (the triggers would refuse a completed
    # game inserted before its moves, which is why the consumer inserts it active, then completes it)
    ddl = [sql for kind, name, _, sql in gameschema.of_source(con).objects if kind in ("table", "index")]
    con.close()
    out = sqlite3.connect(dst, isolation_level=None)
    out.execute("PRAGMA journal_mode=WAL")
    out.execute("PRAGMA synchronous=FULL")
    for sql in ddl:
        out.execute(sql)
    t0 = time.perf_counter()
    out.execute(f"ATTACH DATABASE '{src}' AS s")
    out.execute("BEGIN")
    for t in tables:
        out.execute(f'INSERT INTO main."{t}" SELECT * FROM s."{t}"')
    out.execute("COMMIT")
    copy_s = time.perf_counter() - t0
    out.close()

    # ringmesh's consumer path, batched
    db = gamedb.open_consumer_db(root / "consumer.db")
    adapted: set = set()
    t0 = time.perf_counter()
    for i in range(0, n, args.batch):
        batch = [unpack_record(p) for p in payloads[i : i + args.batch]]
        gamedb.append_games(db, batch, schemas=schemas, adapted=adapted)
    mat_s = time.perf_counter() - t0
    got = db.execute("SELECT count(*) FROM games").fetchone()[0]
    db.close()

    # the whole intake of a game host
    g = Games(root / "host", consume=True)
    g.schemas.update(schemas)
    t0 = time.perf_counter()
    for i in range(0, n, args.batch):
        g.store("selfplay-a.1", "hex8_2p", [(i + k + 1, p) for k, p in enumerate(payloads[i : i + args.batch])])
    store_s = time.perf_counter() - t0
    landed = g.counts["materialised"]
    g.close()

    assert got == n == landed, (got, n, landed)
    mb = size / 1e6
    print(f"{n} v18 games with NNUE rows, {mb:.1f} MB of source database, batches of {args.batch}")
    for name, s in (
        ("copy (ATTACH + INSERT SELECT)", copy_s),
        ("materialise (unpack + adapt + append)", mat_s),
        ("store (stream log + fsync + materialise)", store_s),
    ):
        print(f"  {name:42} {s:7.3f} s  {n / s:8.0f} games/s  {mb / s:7.1f} MB/s  {copy_s / s:5.2f} x copy")
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
