"""The self-play database adapter: schema, fixture, intake from a live DB, consumption."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time

import msgpack
import pytest

from ringmesh.node.games import gamedb
from ringmesh.node.games.gamedb import append_games, create_db, min_moves_for, open_consumer_db, read_completed_games
from ringmesh.node.games.gamedb_schema import CHILD_TABLES
from ringmesh.ops.selfplay import FixtureWriter, generate_games

ALL_TABLES = ("games",) + tuple(CHILD_TABLES)


def cols(conn, table):
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]


def rows_of(conn, table, game_ids=None):
    pk = {"games": ("game_id",), **CHILD_TABLES}[table]
    out = conn.execute(
        f"SELECT *, {', '.join(f'typeof({c})' for c in cols(conn, table))} FROM {table} ORDER BY {', '.join(pk)}"
    ).fetchall()
    if game_ids is not None:
        out = [r for r in out if r[0] in game_ids]
    return out


def record_bytes(rec):
    n = 0
    for rows in rec["tables"].values():
        for r in rows:
            for v in r:
                n += len(v) if isinstance(v, (bytes, str)) else 8
    return n


# ----------------------------------------------------------------------------- schema


def test_schema_matches_reference(tmp_path):
    c = create_db(tmp_path / "s.db")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert c.execute("SELECT value FROM schema_metadata WHERE key='schema_version'").fetchone()[0] == "9"
    assert cols(c, "game_players") == [
        "game_id",
        "player_number",
        "player_type",
        "ai_type",
        "ai_difficulty",
        "ai_profile_id",
        "final_eliminated_rings",
        "final_territory_spaces",
        "final_rings_in_hand",
    ]
    assert cols(c, "game_moves")[-4:] == ["engine_time_ms", "move_probs", "search_stats_json", "heuristic_features"]
    assert cols(c, "game_state_snapshots") == ["game_id", "move_number", "state_json", "compressed", "state_hash"]
    assert cols(c, "game_initial_state") == ["game_id", "initial_state_json", "compressed"]
    g = cols(c, "games")
    assert g[:3] == ["game_id", "board_type", "num_players"] and g[-2:] == ["opponent_type", "opponent_model_id"]
    assert {"parity_status", "quality_score", "engine_mode", "metadata_json", "time_control_type"} <= set(g)
    for t in CHILD_TABLES:
        fks = list(c.execute(f"PRAGMA foreign_key_list({t})"))
        assert [(fk[2], fk[3], fk[4], fk[6]) for fk in fks] == [("games", "game_id", "game_id", "CASCADE")]
        pk = [r[1] for r in sorted((r for r in c.execute(f"PRAGMA table_info({t})") if r[5]), key=lambda r: r[5])]
        assert tuple(pk) == CHILD_TABLES[t]


def _moves(c, gid, k):
    c.executemany(
        "INSERT INTO game_moves (game_id, move_number, turn_number, player, phase, move_type, move_json)"
        " VALUES (?,?,?,1,'movement','move_stack','{}')",
        [(gid, i, i) for i in range(k)],
    )


def test_triggers_and_cascade(tmp_path):
    c = create_db(tmp_path / "t.db")
    ins = (
        "INSERT INTO games (game_id, board_type, num_players, created_at, game_status, total_moves,"
        " total_turns, schema_version) VALUES (?, 'hex8', 2, '2026-01-01', ?, ?, 0, 9)"
    )
    for status in ("completed", "finished"):  # inserted already completed, no moves: refused
        with pytest.raises(sqlite3.IntegrityError, match="fewer than 5 moves"):
            c.execute(ins, (f"x-{status}", status, 10))
    c.execute(ins, ("g1", "active", 0))
    _moves(c, "g1", 3)
    for status in ("completed", "finished"):  # completing with total_moves < 5: refused
        with pytest.raises(sqlite3.IntegrityError, match="total_moves < 5"):
            c.execute("UPDATE games SET game_status=?, total_moves=3 WHERE game_id='g1'", (status,))
    assert c.execute("SELECT game_status FROM games WHERE game_id='g1'").fetchone() == ("active",)
    _moves(c, "g1", 0)
    c.execute(
        "INSERT INTO game_moves (game_id, move_number, turn_number, player, phase, move_type, move_json)"
        " VALUES ('g1', 3, 3, 1, 'p', 'm', '{}'), ('g1', 4, 4, 1, 'p', 'm', '{}')"
    )
    c.execute("UPDATE games SET game_status='completed', total_moves=5 WHERE game_id='g1'")
    with pytest.raises(sqlite3.IntegrityError):  # foreign key on
        _moves(c, "nope", 1)
    c.execute("DELETE FROM games WHERE game_id='g1'")
    assert c.execute("SELECT COUNT(*) FROM game_moves").fetchone() == (0,)
    w = FixtureWriter(tmp_path / "t.db", seed=1)
    g = w.start()
    w.play(g, 4)
    with pytest.raises(sqlite3.IntegrityError):
        w.finish(g)
    w.conn.execute("ROLLBACK")
    w.close()


# ----------------------------------------------------------------------------- fixture


def test_fixture_sizes_and_determinism(tmp_path):
    ids = generate_games(tmp_path / "a.db", 6, seed=7)
    assert ids == generate_games(tmp_path / "b.db", 6, seed=7)
    assert ids != generate_games(tmp_path / "c.db", 6, seed=8)
    assert all(len(i) == 36 and i[14] == "4" for i in ids)  # UUID4
    ra, _ = read_completed_games(tmp_path / "a.db")
    rb, _ = read_completed_games(tmp_path / "b.db")
    assert ra == rb and [r["game_id"] for r in ra] == ids
    for r in ra:
        size = record_bytes(r)
        assert 50_000 <= size <= 3_000_000, size
        t = r["tables"]
        assert len(t["game_moves"]) == len(t["game_history_entries"]) == r["tables"]["games"][0][9]
        assert len(t["game_state_snapshots"]) == len(t["game_moves"]) // 20
        assert t["game_initial_state"][0][2] == 1 and t["game_initial_state"][0][1][:2] == b"\x1f\x8b"
        assert isinstance(t["game_moves"][0][-1], bytes)
    hist = sum(record_bytes({"tables": {"h": r["tables"]["game_history_entries"]}}) for r in ra)
    assert hist > 0.7 * sum(record_bytes(r) for r in ra)  # history entries are the bulk


@pytest.mark.parametrize("board", gamedb.BOARDS)
def test_every_config_generates(tmp_path, board):
    for p in (2, 3, 4):
        ids = generate_games(tmp_path / f"{board}{p}.db", 1, config_key=f"{board}_{p}p", moves=(20, 25))
        (rec,), _ = read_completed_games(tmp_path / f"{board}{p}.db")
        assert rec["game_id"] == ids[0] and rec["config_key"] == f"{board}_{p}p"
        assert len(rec["tables"]["game_players"]) == p


def test_fixture_size_extremes_at_default_move_range(tmp_path):
    """The biggest board at the longest default game stays under 3 MB, the smallest over 50 KB."""
    for ck, mv in (("hexagonal_2p", 120), ("square19_4p", 120), ("square8_2p", 40)):
        generate_games(tmp_path / f"{ck}.db", 1, config_key=ck, moves=(mv, mv))
        (rec,), _ = read_completed_games(tmp_path / f"{ck}.db")
        assert 50_000 <= record_bytes(rec) <= 3_000_000, (ck, record_bytes(rec))


# ----------------------------------------------------------------------------- intake


def test_intake_skips_active_and_takes_once(tmp_path):
    db = tmp_path / "sp.db"
    ids = generate_games(db, 5, active=3, moves=(20, 30))
    recs, cur = read_completed_games(db)
    assert [r["game_id"] for r in recs] == ids
    assert len(cur["pending"]) == 3
    assert read_completed_games(db, cur)[0] == []
    assert msgpack.unpackb(msgpack.packb(cur)) == cur


def test_game_completed_after_seen_active_taken_once(tmp_path):
    db = tmp_path / "sp.db"
    w = FixtureWriter(db, seed=3)
    g = w.start()
    w.play(g, 12)
    recs, cur = read_completed_games(db)
    assert recs == [] and cur["pending"] == [g.game_id]
    g2 = w.start()
    w.play(g2, 25)
    w.finish(g2)
    w.play(g, 20)
    w.finish(g)
    recs, cur = read_completed_games(db, cur)
    assert sorted(r["game_id"] for r in recs) == sorted([g.game_id, g2.game_id])
    assert [len(r["tables"]["game_moves"]) for r in recs] == [32, 25]
    assert cur["pending"] == []
    assert read_completed_games(db, cur)[0] == []
    w.close()


def test_rowid_reuse_after_writer_deletes_newest(tmp_path):
    db = tmp_path / "sp.db"
    w = FixtureWriter(db, seed=4)
    g1 = w.start()
    w.play(g1, 10)
    g2 = w.start()
    w.play(g2, 6)
    _, cur = read_completed_games(db)
    assert sorted(cur["pending"]) == sorted([g1.game_id, g2.game_id])
    w.conn.execute("DELETE FROM games WHERE game_id=?", (g2.game_id,))  # abandoned: cascades
    g3 = w.start()  # reuses g2's rowid
    assert w.conn.execute("SELECT rowid FROM games WHERE game_id=?", (g3.game_id,)).fetchone()[0] == cur["hw"]
    w.play(g3, 8)
    w.finish(g3)
    recs, cur = read_completed_games(db, cur)
    assert [r["game_id"] for r in recs] == [g3.game_id] and cur["pending"] == [g1.game_id]
    w.conn.execute("UPDATE games SET game_status='abandoned' WHERE game_id=?", (g1.game_id,))
    recs, cur = read_completed_games(db, cur)
    assert recs == [] and cur["pending"] == []
    w.close()


def test_min_move_filters(tmp_path):
    assert min_moves_for("hex8", 3, "cluster") == 30 and min_moves_for("square8", 4, "cluster") == 40
    assert min_moves_for("square19", 2, "cluster") == 50 and min_moves_for("hexagonal", 3, "cluster") == 80
    assert min_moves_for("hexagonal", 4, "cluster") == 100 and min_moves_for("hex8", 2, None) == 0
    db = tmp_path / "sp.db"
    generate_games(db, 30, config_key="square8_3p", moves=(10, 60))
    allr, _ = read_completed_games(db)
    totals = {r["game_id"]: r["tables"]["games"][0][9] for r in allr}
    cl, cur = read_completed_games(db, min_moves="cluster")
    assert {r["game_id"] for r in cl} == {g for g, t in totals.items() if t >= 30} != set(totals)
    assert cur["pending"] == [] and read_completed_games(db, cur)[0] == []
    n45, _ = read_completed_games(db, min_moves=45)
    assert {r["game_id"] for r in n45} == {g for g, t in totals.items() if t >= 45}
    limited, cur = read_completed_games(db, limit=7)
    rest, _ = read_completed_games(db, cur)
    assert [r["game_id"] for r in limited + rest] == [r["game_id"] for r in allr] and len(limited) == 7


def _writer_proc(path, n, active):
    generate_games(path, n, active=active, seed=11, moves=(20, 50), writer_pause=0.002, commit_every=5)


def test_intake_from_live_writer_process(tmp_path):
    src, dst = tmp_path / "selfplay_live.db", tmp_path / "consumer.db"
    create_db(src).close()
    proc = multiprocessing.get_context("spawn").Process(target=_writer_proc, args=(str(src), 40, 2))
    proc.start()
    consumer = open_consumer_db(dst)
    taken: list[str] = []
    schemas: dict = {}
    cur, polls, deadline, saw_active = None, 0, time.monotonic() + 20, 0
    try:
        while time.monotonic() < deadline:
            alive = proc.is_alive()
            recs, cur = read_completed_games(src, msgpack.unpackb(msgpack.packb(cur)) if cur else None, schemas=schemas)
            polls += 1
            saw_active += bool(cur["pending"])
            assert all(r["tables"]["games"][0][6] == "completed" for r in recs)
            taken += [r["game_id"] for r in recs]
            recs = msgpack.unpackb(msgpack.packb(recs))  # as they travel
            assert append_games(consumer, recs, schemas=schemas) == (len(recs), 0)
            if not alive:
                break
            time.sleep(0.01)
    finally:
        proc.join(10)
    assert proc.exitcode == 0
    assert polls > 3 and saw_active and len(taken) == len(set(taken))
    s = sqlite3.connect(src)
    completed = [r[0] for r in s.execute("SELECT game_id FROM games WHERE game_status='completed' ORDER BY rowid")]
    assert len(completed) == 40 and taken == completed
    assert len(cur["pending"]) == 2
    for t in ALL_TABLES:
        assert rows_of(consumer, t) == rows_of(s, t, set(completed)), t
    assert consumer.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ----------------------------------------------------------------------------- consumption


def test_append_identical_dedup_and_readable_while_written(tmp_path):
    src = tmp_path / "sp.db"
    generate_games(src, 8, config_key="square19_2p", moves=(50, 70), active=1)
    schemas: dict = {}
    recs, _ = read_completed_games(src, schemas=schemas)
    wire = msgpack.unpackb(msgpack.packb(recs))
    db = open_consumer_db(tmp_path / "canonical_square19_2p.db")
    waiting: list = []
    assert append_games(db, wire[:2], waiting=waiting) == (0, 0) and len(waiting) == 2  # its schema is not known yet
    assert append_games(db, wire[:3] + wire[:1], schemas=schemas) == (3, 1)  # duplicate inside the batch
    assert append_games(db, wire, schemas=schemas) == (5, 3)
    assert append_games(db, []) == (0, 0)
    s = sqlite3.connect(src)
    ids = {r["game_id"] for r in recs}
    for t in ALL_TABLES:
        assert rows_of(db, t) == rows_of(s, t, ids), t
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    # a reader sees committed games while a write transaction is open
    db.execute("BEGIN IMMEDIATE")
    db.execute("DELETE FROM games")
    reader = sqlite3.connect(f"file:{tmp_path / 'canonical_square19_2p.db'}?mode=ro", uri=True)
    assert reader.execute("SELECT COUNT(*) FROM games").fetchone() == (8,)
    db.execute("ROLLBACK")
    # a record the triggers refuse is rolled back alone
    bad = msgpack.unpackb(msgpack.packb(recs[0]))
    bad["game_id"] = "bad"
    for rows in bad["tables"].values():
        for r in rows:
            r[0] = "bad"
    bad["tables"]["games"][0][9] = 3
    good = {**wire[0]}
    rejected = []
    assert append_games(db, [bad, good], rejected=rejected, schemas=schemas) == (0, 1)
    assert [g for g, _ in rejected] == ["bad"]
    assert db.execute("SELECT COUNT(*) FROM game_moves WHERE game_id='bad'").fetchone() == (0,)
