"""Real peers on loopback (issue 15): three self-play hosts take in games of three schema
versions into one config, one of them a spot host SIGTERMed right after intake; both training
hosts hold every completed game once, every table's rows identical to its source, integrity
ok, nothing held back. Then a corrupt record is refused, listed, survives a restart and lands
with `games retry` once the cause is fixed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys

from ringmesh.node.games import gamedb, gameschema
from ringmesh.ops.doctor import FAIL, run_checks
from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.testing.schema_versions import make

from .conftest import serving


def _rows(path, table: str, ids: set[str]) -> list[dict]:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
        rows = [dict(zip(cols, r)) for r in con.execute(f'SELECT * FROM "{table}"')]
    finally:
        con.close()
    return sorted((r for r in rows if r["game_id"] in ids), key=lambda d: repr(sorted(d.items())))


def _cli(data_dir, *args) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringmesh", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


def test_three_schema_versions_into_one_config_over_real_peers(tmp_path):
    roles = {"node1": "training", "node2": "training", "node3": "selfplay", "node4": "selfplay", "node5": "selfplay"}
    c = LocalCluster(tmp_path / "c", 5, gossip_interval=0.2, roles=roles, hosts={"node5": {"ephemeral": True}})
    sources = {"node3": "v7", "node4": "v14", "node5": "v19"}
    with serving(c):
        wait_for(c.converged, 30, what="a settled cluster")
        ids: dict[str, set[str]] = {}
        for i, (node, version) in enumerate(sorted(sources.items())):
            path = tmp_path / f"selfplay_{version}.db"
            make(path, version, 4, seed=i)
            records, _ = gamedb.read_completed_games(path)
            ids[version] = {r["game_id"] for r in records}
            with c.nodes[node].client() as cl:
                seqs = cl.publish_games("hex8_2p", records)
                if node == "node5":
                    assert c.signal("node5", signal.SIGTERM) == 0  # the spot host goes right after intake
                else:
                    assert cl.wait_durable("hex8_2p", seqs[-1], timeout=30)
        dbs = {n: c.nodes[n].data_dir / "games" / "hex8_2p.db" for n in ("node1", "node2")}
        wait_for(
            lambda: all(gamedb.count_games(p) == 12 for p in dbs.values()), 60, what="12 games on both training hosts"
        )
        for node, db in dbs.items():
            con = sqlite3.connect(db)
            assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            assert con.execute("SELECT count(DISTINCT game_id) FROM games").fetchone() == (12,)
            con.close()
            for version, gids in ids.items():
                src = sqlite3.connect(tmp_path / f"selfplay_{version}.db")
                for t in gameschema.game_tables(src):
                    want = _rows(tmp_path / f"selfplay_{version}.db", t, gids)
                    got = [{k: r[k] for k in want[0]} for r in _rows(db, t, gids)] if want else _rows(db, t, gids)
                    assert got == want, (node, version, t)
                src.close()
            st = c.nodes[node].query("status")
            assert st["games"]["held"] == {}, st["games"]["held"]

        # a corrupt record: refused, listed, kept across a restart and retention, landed by retry
        path = tmp_path / "selfplay_v18.db"
        make(path, "v18", 1, seed=9)
        (rec,), _ = gamedb.read_completed_games(path)
        row = list(rec["tables"]["games"][0])
        row[rec["columns"]["games"].index("total_moves")] = 3  # the triggers refuse it
        rec["tables"]["games"] = [tuple(row)]
        with c.nodes["node3"].client() as cl:
            (seq,) = cl.publish_games("hex8_2p", [rec])
            assert cl.wait_durable("hex8_2p", seq, timeout=30)

        def refused() -> list:
            r = _cli(c.nodes["node1"].data_dir, "games", "refused", "--json")
            return [g for g in json.loads(r.stdout)["games"] if g["kind"] == "refused"] if r.returncode == 0 else []

        (held,) = wait_for(refused, 30, what="the corrupt game listed on node1")
        assert held["game_id"] == rec["game_id"] and "total_moves < 5" in held["reason"]
        assert c.nodes["node1"].query("status")["games"]["held"] == {"hex8_2p": {"refused": 1}}

        def origin_view() -> tuple | None:  # on the game's origin: durable, but not in every game host's database
            g = (c.nodes["node3"].query("status") or {}).get("games") or {}
            d, m = g.get("durable_through", {}).get("hex8_2p"), g.get("materialised_through", {}).get("hex8_2p")
            return (d, m) if d == seq and m == seq - 1 else None

        wait_for(origin_view, 30, what="node3 to see its game durable but held back on node1")
        (daemon,) = [
            ch for ch in run_checks(str(c.config_path), "node1", c.nodes["node1"].data_dir) if ch.name == "daemon"
        ]
        assert daemon.status == FAIL and "1 game(s) refused by its databases (hex8_2p: 1)" in daemon.detail
        c.signal("node1", signal.SIGTERM)
        c.start("node1")
        c.wait_ready("node1")
        assert [g["game_id"] for g in refused()] == [rec["game_id"]]
        assert _cli(c.nodes["node1"].data_dir, "games", "retry").returncode == 1  # still refused: the cause stands
        # the cause fixed: the operator relaxes the trigger on both game hosts' databases, then retries
        for node in ("node1", "node2"):
            con = sqlite3.connect(dbs[node])
            con.execute("DROP TRIGGER enforce_moves_on_complete")
            con.close()
            r = _cli(c.nodes[node].data_dir, "games", "retry")
            assert r.returncode == 0 and "1 game(s) landed; 0 still held" in r.stdout, r.stdout + r.stderr
            assert gamedb.count_games(dbs[node]) == 13
        assert refused() == []
        wait_for(
            lambda: (
                (c.nodes["node3"].query("status") or {}).get("games", {}).get("materialised_through", {}).get("hex8_2p")
                == seq
            ),
            30,
            what="node3 to see the game in every game host's database",
        )
