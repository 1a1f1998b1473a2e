"""The schema travels with the games (issue 15): sources of the operators' schema versions feed
one consumer database, every row of every game table identical to its source, in any order;
a game that waits for its schema or that the database refuses is held, listed and lands on
retry."""

from __future__ import annotations

import sqlite3

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmesh.node.games import gamedb, gameschema
from ringmesh.node.games.games import Games, pack_record
from ringmesh.testing.schema_versions import make

VERSIONS = ("v7", "v14", "v18", "v19")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One database per version (3 games each), its records as they travel, and its schema."""
    root = tmp_path_factory.mktemp("versions")
    out = {}
    for i, v in enumerate(VERSIONS):
        path = root / f"selfplay_{v}.db"
        make(path, v, 3, seed=i)
        schemas: dict = {}
        recs, _ = gamedb.read_completed_games(path, schemas=schemas)
        out[v] = (path, msgpack.unpackb(msgpack.packb(recs)), schemas)
    return out


def _rows(conn: sqlite3.Connection, table: str, ids: set[str]) -> list[dict]:
    cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')]
    rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
    out = [dict(zip(cols, r)) for r in rows if r[cols.index("game_id")] in ids]
    return sorted(out, key=lambda d: repr(sorted(d.items())))


def _consumer_state(db: sqlite3.Connection) -> dict:
    tables = gameschema.game_tables(db)
    return {
        t: sorted(
            repr(sorted(d.items())) for d in _rows(db, t, {r[0] for r in db.execute("SELECT game_id FROM games")})
        )
        for t in tables
    }


def test_fingerprints_differ_by_version_and_schemas_round_trip(sources):
    fps = {v: next(iter(s)) for v, (_, _, s) in sources.items()}
    assert len(set(fps.values())) == 4
    for v, (_, recs, schemas) in sources.items():
        assert {r["schema"] for r in recs} == {fps[v]}
        (schema,) = schemas.values()
        assert gameschema.Schema.decode(schema.encode(), fps[v]) == schema
        assert "orphaned_games" not in schema.tables() and "schema_metadata" not in schema.tables()
    assert "game_nnue_features" in sources["v18"][2][fps["v18"]].tables()
    with pytest.raises(gameschema.SchemaError, match="fingerprint"):
        gameschema.Schema.decode(sources["v7"][2][fps["v7"]].encode(), fps["v18"])
    with pytest.raises(gameschema.SchemaError, match="does not decode"):
        gameschema.Schema.decode(b"garbage")


def test_four_versions_one_consumer_every_row_identical(sources, tmp_path):
    db = gamedb.open_consumer_db(tmp_path / "hex8_2p.db")
    schemas = {fp: s for _, _, ss in sources.values() for fp, s in ss.items()}
    adapted: set = set()
    rejected: list = []
    for v in ("v18", "v7", "v19", "v14"):  # a newer source first, then an older one
        recs = sources[v][1]
        assert gamedb.append_games(db, recs, schemas=schemas, adapted=adapted, rejected=rejected) == (3, 0), v
    assert rejected == []
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    cons_cols = {t: {r[1] for r in db.execute(f'PRAGMA table_info("{t}")')} for t in gameschema.game_tables(db)}
    assert (
        "elo_delta" in cons_cols["games"]
        and "game_annotations" in cons_cols
        and "heuristic_features" in cons_cols["game_moves"]
    )
    for v, (path, recs, _) in sources.items():
        src = sqlite3.connect(path)
        ids = {r["game_id"] for r in recs}
        for t in gameschema.game_tables(src):
            want = _rows(src, t, ids)
            got = [{c: row[c] for c in want[0]} for row in _rows(db, t, ids)] if want else _rows(db, t, ids)
            assert got == want, (v, t)
            extra = cons_cols[t] - set(want[0]) if want else set()
            for row in _rows(db, t, ids):  # columns this version lacks: NULL or their default
                assert all(row[c] in (None, 0, "pending", "none") for c in extra), (v, t, extra)
        if v == "v7":
            assert _rows(db, "game_nnue_features", ids) == []
        else:
            assert len(_rows(db, "game_nnue_features", ids)) == 18
    assert db.execute("SELECT count(*) FROM games").fetchone() == (12,)
    assert "orphaned_games" not in cons_cols


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.permutations(list(range(12))), st.integers(1, 5))
def test_any_interleaving_of_versions_gives_the_same_database(sources, tmp_path_factory, order, batch):
    schemas = {fp: s for _, _, ss in sources.values() for fp, s in ss.items()}
    records = [r for v in VERSIONS for r in sources[v][1]]
    states = []
    for seq in (list(range(12)), order):
        db = gamedb.open_consumer_db(tmp_path_factory.mktemp("perm") / "c.db")
        adapted: set = set()
        picked = [records[i] for i in seq]
        for i in range(0, len(picked), batch):
            gamedb.append_games(db, picked[i : i + batch], schemas=schemas, adapted=adapted)
        states.append(_consumer_state(db))
        db.close()
    assert states[0] == states[1]


def test_games_wait_for_their_schema_and_a_refused_one_is_held_across_a_restart(sources, tmp_path):
    path, recs, schemas = sources["v19"]
    (fp,) = schemas
    g = Games(tmp_path / "data", consume=True)
    payloads = [pack_record(r) for r in recs]
    bad = dict(recs[0], game_id="broken")
    bad["tables"] = {"games": [[*recs[0]["tables"]["games"][0]]]}
    bad["columns"] = {"games": recs[0]["columns"]["games"]}
    bad["tables"]["games"][0][0] = "broken"
    bad["tables"]["games"][0][bad["columns"]["games"].index("total_moves")] = 3  # the triggers refuse it
    payloads.append(pack_record(bad))
    g.store("selfplay-a.1", "hex8_2p", list(enumerate(payloads, start=1)))
    assert g.held.count("waiting") == 4 and g.counts["materialised"] == 0  # the schema is not known here yet
    g.schemas[fp] = schemas[fp]
    assert g.retry(fingerprints={fp}) == {"landed": 3, "held": 1}
    (held,) = g.held.listing()
    assert (held["game_id"], held["kind"], held["origin"], held["seq"]) == ("broken", "refused", "selfplay-a.1", 4)
    assert "total_moves < 5" in held["reason"] and g.held_summary == {"hex8_2p": {"refused": 1}}
    g.close()
    g = Games(tmp_path / "data", consume=True)  # a restart: still held, still in the stream log
    g.schemas[fp] = schemas[fp]
    assert g.held.count("refused") == 1 and g.read("selfplay-a.1", "hex8_2p", 4, 4)
    assert g.retry("hex8_2p") == {"landed": 0, "held": 1}
    g.close()


def test_a_source_migrated_between_two_reads_is_read_with_the_schema_of_each_read(tmp_path):
    path = tmp_path / "selfplay.db"
    make(path, "v14", 2, seed=5)
    s1: dict = {}
    first, cur = gamedb.read_completed_games(path, schemas=s1)
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE games ADD COLUMN opponent_type TEXT")  # the writer migrates (v16)
    row = con.execute("SELECT * FROM games LIMIT 1").fetchone()
    cols = [r[1] for r in con.execute("PRAGMA table_info(games)")]
    moved = dict(zip(cols, row), game_id="after-migration", opponent_type="nn", game_status="active")
    con.execute(f"INSERT INTO games ({','.join(moved)}) VALUES ({','.join('?' * len(moved))})", list(moved.values()))
    src_id = row[0]
    for t in ("game_moves", "game_players"):
        tc = [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
        for r in con.execute(f"SELECT * FROM {t} WHERE game_id=?", (src_id,)).fetchall():
            d = dict(zip(tc, r), game_id="after-migration")
            con.execute(f"INSERT INTO {t} ({','.join(d)}) VALUES ({','.join('?' * len(d))})", list(d.values()))
    con.execute("UPDATE games SET game_status='completed' WHERE game_id='after-migration'")
    con.commit()
    con.close()
    s2: dict = {}
    second, _ = gamedb.read_completed_games(path, cur, schemas=s2)
    (rec,) = second
    assert rec["schema"] != first[0]["schema"] and set(s1) != set(s2)
    assert "opponent_type" in rec["columns"]["games"] and "opponent_type" not in first[0]["columns"]["games"]
    assert len(rec["tables"]["games"][0]) == len(rec["columns"]["games"])
    db = gamedb.open_consumer_db(tmp_path / "c.db")
    assert gamedb.append_games(db, first + second, schemas={**s1, **s2}) == (3, 0)
    assert db.execute("SELECT opponent_type FROM games WHERE game_id='after-migration'").fetchone() == ("nn",)


def test_hostile_schemas_are_refused_and_row_changing_triggers_are_not_taken():
    c = sqlite3.connect(":memory:")
    c.execute("CREATE TABLE games (game_id TEXT PRIMARY KEY, x INT)")
    c.execute("CREATE TRIGGER wipe AFTER INSERT ON games BEGIN DELETE FROM games; END")
    c.execute("CREATE TRIGGER check_x AFTER INSERT ON games WHEN NEW.x < 0 BEGIN SELECT RAISE(ABORT, 'neg'); END")
    s = gameschema.of_source(c)
    done = gameschema.adapt(sqlite3.connect(":memory:"), gameschema.Schema.decode(s.encode(), s.fingerprint))
    assert "created trigger check_x" in done and any(
        d.startswith("skipped trigger wipe: it changes rows") for d in done
    )
    import zlib

    with pytest.raises(gameschema.SchemaError, match="more than"):
        gameschema.Schema.decode(zlib.compress(b"\0" * (5 << 20)))
    evil = gameschema.Schema(
        (("table", "games", "games", "CREATE TABLE games (game_id TEXT)"), ("index", "x", "games", "DROP TABLE games"))
    )
    with pytest.raises(gameschema.SchemaError, match="not a CREATE"):
        gameschema.Schema.decode(evil.encode())
