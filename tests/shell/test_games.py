"""Game streams between real peers: self-play games taken from a real self-play database,
published on a selfplay host, durable once acked, and materialised once, byte-identical,
into the training and backup hosts' databases."""

from __future__ import annotations

import signal
import sqlite3

from ringmesh.node.games import gamedb
from ringmesh.node.games.gamedb_schema import CHILD_TABLES
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import LocalCluster, wait_for


def _rows(db_path, game_id):
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        out = {"games": con.execute("SELECT * FROM games WHERE game_id=?", (game_id,)).fetchall()}
        for table, pk in CHILD_TABLES.items():
            out[table] = con.execute(
                f"SELECT * FROM {table} WHERE game_id=? ORDER BY {', '.join(pk)}", (game_id,)
            ).fetchall()
        return out
    finally:
        con.close()


def test_selfplay_games_reach_the_training_databases_once_and_intact(tmp_path):
    source = tmp_path / "selfplay_hex8_2p.db"
    ids = selfplay.generate_games(source, 6, config_key="hex8_2p", seed=3, moves=(20, 30), active=1)
    records, cursor = gamedb.read_completed_games(source)
    assert len(records) == 6
    roles = {"node1": "training", "node2": "backup", "node3": "selfplay", "node4": "selfplay"}
    c = LocalCluster(tmp_path / "c", 4, gossip_interval=0.2, roles=roles)
    try:
        c.start_all()
        wait_for(c.converged, 30, what="a settled cluster")
        with c.nodes["node3"].client() as cl:
            seqs = cl.publish_games("hex8_2p", records[:4])
            assert seqs == [1, 2, 3, 4]
            assert cl.wait_durable("hex8_2p", 4, timeout=30), "acked by two game hosts"
        # the selfplay host dies; its games are already on the game hosts
        c.signal("node3", signal.SIGKILL)
        with c.nodes["node4"].client() as cl:
            assert cl.publish_games("hex8_2p", records[4:] + records[:1]) == [1, 2, 3]  # its own stream; one duplicate
            assert cl.wait_durable("hex8_2p", 3, timeout=30)
        dbs = {n: c.nodes[n].data_dir / "games" / "hex8_2p.db" for n in ("node1", "node2")}
        wait_for(
            lambda: all(gamedb.count_games(p) == 6 for p in dbs.values()),
            30,
            what="6 games in every game host's database",
        )
        for n, p in dbs.items():
            for gid in [r["game_id"] for r in records]:
                assert _rows(p, gid) == _rows(source, gid), (n, gid)
            assert gamedb.open_consumer_db(p).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            st = c.nodes[n].query("status")["games"]
            assert st["materialised"] == 6 and st["duplicates"] == 1, (n, st)
        fresh = wait_for(
            lambda: (lambda f: f if f.get("hosts_behind") == [] else None)(
                c.nodes["node1"].query("status")["freshness"].get("hex8_2p", {})
            ),
            20,
            what="no game host behind",
        )
        assert fresh["streams"] == 2 and fresh["games"] == 7 and fresh["newest_age_s"] is not None
        assert gamedb.count_games(source) == 7 and set(ids) == {r["game_id"] for r in records}, (
            "the active game was not taken"
        )
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def test_sigterm_drains_games_that_are_not_durable_yet(tmp_path):
    source = tmp_path / "selfplay_sq8_2p.db"
    selfplay.generate_games(source, 3, config_key="square8_2p", seed=5, moves=(20, 25))
    records, _ = gamedb.read_completed_games(source)
    roles = {"node1": "training", "node2": "backup", "node3": "selfplay"}
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=roles)
    try:
        c.start_all()
        wait_for(c.converged, 30, what="a settled cluster")
        for n in ("node1", "node2"):
            c.signal(n, signal.SIGSTOP)  # the game hosts cannot ack for now
        with c.nodes["node3"].client() as cl:
            assert cl.publish_games("square8_2p", records) == [1, 2, 3]
            assert not cl.wait_durable("square8_2p", 3, timeout=1.0)
        for n in ("node1", "node2"):
            c.signal(n, signal.SIGCONT)
        assert c.signal("node3", signal.SIGTERM, timeout=40) == 0
        assert "drain: every game is durable" in c.nodes["node3"].log_tail(40)
        dbs = [c.nodes[n].data_dir / "games" / "square8_2p.db" for n in ("node1", "node2")]
        wait_for(lambda: all(gamedb.count_games(p) == 3 for p in dbs), 30, what="the drained games on the game hosts")
    finally:
        for n in c.nodes:
            c.signal(n, signal.SIGCONT)
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def test_games_ingest_and_add_from_the_command_line(tmp_path):
    import subprocess
    import sys

    from ringmesh.node.games.games import pack_record

    source = tmp_path / "gumbel_hex8_3p.db"
    selfplay.generate_games(source, 4, config_key="hex8_3p", seed=9, moves=(20, 25), active=1)
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles={"node1": "training", "node2": "selfplay"})
    try:
        c.start_all()
        dd = str(c.nodes["node2"].data_dir)
        cli = [sys.executable, "-m", "ringmesh", "games"]
        r = subprocess.run(
            cli + ["ingest", str(source), "--data-dir", dd, "--json"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and '"games": 4' in r.stdout, r.stderr
        r = subprocess.run(
            cli + ["ingest", str(source), "--data-dir", dd, "--json"], capture_output=True, text=True, timeout=60
        )
        assert '"games": 0' in r.stdout, "a game is never taken twice"
        extra = tmp_path / "extra.db"
        selfplay.generate_games(extra, 1, config_key="hex8_3p", seed=10, moves=(20, 21))
        (record,), _ = gamedb.read_completed_games(extra)
        r = subprocess.run(
            cli + ["add", "--config-key", "hex8_3p", "--wait", "20", "--data-dir", dd],
            input=pack_record(record),
            capture_output=True,
            timeout=60,
        )
        assert r.returncode == 0 and b'"seq": 5' in r.stdout and b'"durable": true' in r.stdout, r.stderr
        r = subprocess.run(
            cli + ["add", "--config-key", "hex8_3p", "--data-dir", dd], input=b"nonsense", capture_output=True
        )
        assert r.returncode == 2 and b"not a game record" in r.stderr
        db = c.nodes["node1"].data_dir / "games" / "hex8_3p.db"
        wait_for(lambda: gamedb.count_games(db) == 5, 30, what="5 games on the training host")
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def test_spot_kill_and_sigterm_mid_stream_lose_no_durable_game(tmp_path):
    """3 selfplay peers in watch mode over real, growing self-play databases (node5 a spot
    host) and 2 training peers. node5 is SIGKILLed mid-stream, node4 SIGTERMed (it drains).
    Every game an origin reported durable is in both training databases, once, intact."""
    import threading

    from ringmesh.node.games.games import unpack_record
    from ringmesh.node.games.streamlog import StreamLog

    roles = {"node1": "training", "node2": "training", "node3": "selfplay", "node4": "selfplay", "node5": "selfplay"}
    own = {
        "watch_games": [str(tmp_path / "{node}" / "selfplay_*.db")],
        "watch_interval_seconds": 0.2,
        "drain_notice_seconds": 15,
    }
    c = LocalCluster(
        tmp_path / "c", 5, gossip_interval=0.2, roles=roles, own=own, routing={"ephemeral_hosts": ["node5"]}
    )
    origins = ["node3", "node4", "node5"]
    sources = {n: tmp_path / n / "selfplay_hex8_2p.db" for n in origins}
    for p in sources.values():
        p.parent.mkdir()
    seen: dict[str, int] = {n: 0 for n in origins}  # the last durable_through each origin reported
    stop = threading.Event()

    def monitor():
        while not stop.is_set():
            for n in origins:
                st = c.nodes[n].query("status") if n in c.running() else None
                if st:
                    seen[n] = max(seen[n], st["games"]["durable_through"].get("hex8_2p", 0))
            stop.wait(0.05)

    try:
        c.start_all()
        wait_for(c.converged, 30, what="a settled cluster")
        writers = [
            threading.Thread(
                target=selfplay.generate_games,
                args=(sources[n], 25),
                kwargs=dict(config_key="hex8_2p", seed=i, moves=(20, 30), writer_pause=0.03, commit_every=1),
            )
            for i, n in enumerate(origins)
        ]
        mon = threading.Thread(target=monitor)
        mon.start()
        for w in writers:
            w.start()
        wait_for(lambda: seen["node5"] >= 3, 30, what="node5's first durable games")
        c.signal("node5", signal.SIGKILL)
        wait_for(lambda: seen["node4"] >= 3, 30, what="node4's first durable games")
        assert c.signal("node4", signal.SIGTERM, timeout=40) == 0
        for w in writers:
            w.join(60)
        wait_for(lambda: seen["node3"] >= 25, 60, what="all of node3's games durable")
        stop.set()
        mon.join()
        assert seen["node4"] >= 3 and seen["node5"] >= 3

        durable_ids = set()
        for n in ("node4", "node5"):  # their processes are gone: read their logs from disk
            with StreamLog(c.nodes[n].data_dir / "streams") as log:
                (origin,) = [o for o, k in log.streams() if k == "hex8_2p" and o.startswith(n + ".")]
                for q, raw in log.read(origin, "hex8_2p", 1, seen[n]):
                    durable_ids.add(unpack_record(raw)["game_id"])
        assert len(durable_ids) == seen["node4"] + seen["node5"]
        src_of = {}
        for n, p in sources.items():
            con = sqlite3.connect(p)
            src_of.update({gid: p for (gid,) in con.execute("SELECT game_id FROM games WHERE game_status='completed'")})
            con.close()
        dbs = [c.nodes[n].data_dir / "games" / "hex8_2p.db" for n in ("node1", "node2")]

        def all_there():
            for p in dbs:
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                have = {gid for (gid,) in con.execute("SELECT game_id FROM games")}
                con.close()
                if not durable_ids <= have or not {g for g, s in src_of.items() if s == sources["node3"]} <= have:
                    return False
            return True

        wait_for(all_there, 60, what="every durable game on both training hosts")
        for p in dbs:
            for gid in sorted(durable_ids)[:10] + sorted(durable_ids)[-5:]:
                assert _rows(p, gid) == _rows(src_of[gid], gid)
            con = sqlite3.connect(p)
            assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert (
                con.execute("SELECT count(*), count(DISTINCT game_id) FROM games").fetchone()[0]
                == con.execute("SELECT count(DISTINCT game_id) FROM games").fetchone()[0]
            )
            con.close()
    finally:
        stop.set()
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values()), codes


def test_mesh_client_sync_and_async(tmp_path):
    import asyncio

    from ringmesh.api.mesh_client import AsyncMeshClient, MeshClient

    source = tmp_path / "selfplay.db"
    selfplay.generate_games(source, 3, config_key="hexagonal_2p", seed=4, moves=(20, 22))
    records, _ = gamedb.read_completed_games(source)
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles={"node1": "training", "node2": "selfplay"})
    try:
        c.start_all()
        with MeshClient(c.nodes["node2"].data_dir) as mesh:
            assert mesh.publish_game("hexagonal_2p", records[0]["game_id"], records[0]) == 1
            assert mesh.wait_durable(records[0]["game_id"], timeout=20)

        async def publish_rest():
            async with AsyncMeshClient(c.nodes["node2"].data_dir) as mesh:
                for r in records[1:]:
                    await mesh.publish_game("hexagonal_2p", r["game_id"], r)
                return await mesh.wait_durable(records[-1]["game_id"], timeout=20)

        assert asyncio.run(publish_rest())
        with MeshClient(c.nodes["node1"].data_dir) as reader:
            got = wait_for(
                lambda: (lambda g: g if len(g) == 3 else None)(list(reader.iter_games("hexagonal_2p"))),
                20,
                what="three games on the training host",
            )
            assert [g["game_id"] for g in got] == [r["game_id"] for r in records]
            assert (
                list(reader.iter_games("hexagonal_2p", since=got[1]["cursor"]))[0]["game_id"] == records[2]["game_id"]
            )
            assert len(got[0]["tables"]["game_moves"]) == got[0]["total_moves"]
    finally:
        c.stop_all()


def test_a_spot_host_drops_its_games_only_once_durable_and_old_enough(tmp_path):
    source = tmp_path / "selfplay.db"
    selfplay.generate_games(source, 3, config_key="square19_2p", seed=6, moves=(20, 22))
    records, _ = gamedb.read_completed_games(source)
    c = LocalCluster(
        tmp_path / "c",
        2,
        gossip_interval=0.2,
        roles={"node1": "training", "node2": "selfplay"},
        routing={"ephemeral_hosts": ["node2"]},
        own={"retention_seconds": 1.0},
    )
    try:
        c.start_all()
        c.signal("node1", signal.SIGSTOP)  # nobody can hold a second copy: nothing may be dropped
        with c.nodes["node2"].client() as cl:
            cl.publish_games("square19_2p", records)
            assert not cl.wait_durable("square19_2p", 3, timeout=2.5)
        assert "retention: dropped" not in c.nodes["node2"].log_tail(50)
        c.signal("node1", signal.SIGCONT)
        with c.nodes["node2"].client() as cl:
            assert cl.wait_durable("square19_2p", 3, timeout=30)
        wait_for(
            lambda: "retention: dropped games of square19_2p through #3" in c.nodes["node2"].log_tail(50),
            20,
            what="the spot host to drop its durable games",
        )
    finally:
        c.signal("node1", signal.SIGCONT)
        c.stop_all()
