"""Game streams on a loopback cluster of real peers: publish -> durable, publish -> present on
every training host (p50/p99), and intake throughput against a plain SQLite-to-SQLite copy of
the same games measured in the same run.

    .venv/bin/python bench/games.py [--games 200] [--size-moves 40,120]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ringmesh.node.games import gamedb  # noqa: E402
from ringmesh.ops import selfplay  # noqa: E402
from ringmesh.ops.localcluster import LocalCluster, wait_for  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def plain_copy(src: Path, dst: Path) -> float:
    """The baseline: every table of the self-play DB copied into a fresh one with SQL."""
    t0 = time.perf_counter()
    db = gamedb.open_consumer_db(dst)
    db.executescript(gamedb.SCHEMA)  # consumer databases take their tables from the records' schema
    db.execute("PRAGMA foreign_keys=OFF")  # children first, so that the completion trigger sees the moves
    db.execute("ATTACH DATABASE ? AS src", (str(src),))
    for table in [
        "game_players",
        "game_initial_state",
        "game_moves",
        "game_state_snapshots",
        "game_choices",
        "game_history_entries",
        "games",
    ]:
        db.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table}")
    db.commit()
    db.close()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--games", type=int, default=200)
    ap.add_argument("--size-moves", default="40,120")
    args = ap.parse_args()
    lo, hi = map(int, args.size_moves.split(","))
    root = Path(tempfile.mkdtemp(prefix="ringmesh-bench-games-"))
    try:
        src = root / "selfplay_hex8_2p.db"
        selfplay.generate_games(src, args.games, config_key="hex8_2p", seed=1, moves=(lo, hi))
        src_bytes = src.stat().st_size
        t0 = time.perf_counter()
        records, _ = gamedb.read_completed_games(src)
        t_read = time.perf_counter() - t0
        t_copy = plain_copy(src, root / "copy.db")

        roles = {
            "node1": "training",
            "node2": "training",
            "node3": "selfplay",
            "node4": "selfplay",
            "node5": "selfplay",
        }
        c = LocalCluster(root / "c", 5, gossip_interval=0.2, roles=roles)
        c.start_all()
        wait_for(c.converged, 30, what="a settled cluster")
        dbs = [c.nodes[n].data_dir / "games" / "hex8_2p.db" for n in ("node1", "node2")]
        published: dict[str, float] = {}
        present: dict[str, float] = {}
        durable: list[float] = []
        stop = threading.Event()

        def watch() -> None:  # when does each game show up on *every* training host?
            while not stop.is_set():
                seen = None
                for p in dbs:
                    try:
                        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                        ids = {r[0] for r in con.execute("SELECT game_id FROM games")}
                        con.close()
                    except sqlite3.Error:
                        ids = set()
                    seen = ids if seen is None else seen & ids
                now = time.perf_counter()
                for gid in seen or ():
                    present.setdefault(gid, now)
                time.sleep(0.005)

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        clients = {n: c.nodes[n].client() for n in ("node3", "node4", "node5")}
        t_pub = time.perf_counter()
        for i, rec in enumerate(records):
            n = ("node3", "node4", "node5")[i % 3]
            t = time.perf_counter()
            published[rec["game_id"]] = t
            (seq,) = clients[n].publish_games("hex8_2p", [rec])
            assert clients[n].wait_durable("hex8_2p", seq, 30)
            durable.append(time.perf_counter() - t)
        t_pub = time.perf_counter() - t_pub
        wait_for(lambda: len(present) == len(records), 60, what="every game on every training host")
        stop.set()
        w.join()
        for cl in clients.values():
            cl.__exit__(None, None, None)
        codes = c.stop_all()
        arrive = [present[g] - published[g] for g in published]
        mb = src_bytes / 1e6
        print(f"{len(records)} games, {mb:.1f} MB in the self-play DB ({src_bytes / len(records) / 1e3:.0f} KB/game)")
        print(
            f"publish -> durable (2 copies, one persistent):   p50 {pct(durable, 0.5) * 1e3:.1f} ms"
            f"  p99 {pct(durable, 0.99) * 1e3:.1f} ms"
        )
        print(
            f"publish -> in both training DBs:                 p50 {pct(arrive, 0.5) * 1e3:.1f} ms"
            f"  p99 {pct(arrive, 0.99) * 1e3:.1f} ms"
        )
        print(
            f"intake, one game at a time, each waited durable: {len(records) / t_pub:.1f} games/s, "
            f"{mb / t_pub:.1f} MB/s"
        )
        print(
            f"read_completed_games alone:                      {len(records) / t_read:.1f} games/s, "
            f"{mb / t_read:.1f} MB/s"
        )
        print(
            f"baseline plain SQLite->SQLite copy:              {len(records) / t_copy:.1f} games/s, "
            f"{mb / t_copy:.1f} MB/s"
        )
        print(f"ratio ringmesh end-to-end intake / plain copy:   {t_copy / t_pub:.3f}")
        print(
            f"exit codes {sorted(set(codes.values()))}; mean publish->durable {statistics.mean(durable) * 1e3:.1f} ms"
        )
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
