"""Self-play DB fixture + intake benchmark.

    python bench/gamedb_fixture.py generate OUT.db -n 500 --config hex8_2p --seed 0 [--active 5]
    python bench/gamedb_fixture.py bench WORKDIR -n 500 --config hex8_2p

``bench`` generates the games, then times intake (read_completed_games, in batches of
--limit) and consumption (append_games into a consumer DB), and prints the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack  # noqa: E402

from ringmesh.node.games.gamedb import append_games, open_consumer_db, read_completed_games  # noqa: E402
from ringmesh.ops.selfplay import generate_games


def _size(p: Path) -> int:
    return sum(os.path.getsize(f"{p}{s}") for s in ("", "-wal") if os.path.exists(f"{p}{s}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=("generate", "bench"))
    ap.add_argument("path")
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--config", default="hex8_2p")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--active", type=int, default=0)
    ap.add_argument("--moves", default="40,120")
    ap.add_argument("--limit", type=int, default=100)
    a = ap.parse_args(argv)
    lo, hi = (int(x) for x in a.moves.split(","))
    if a.cmd == "generate":
        t = time.perf_counter()
        ids = generate_games(a.path, a.n, config_key=a.config, seed=a.seed, moves=(lo, hi), active=a.active)
        print(
            f"{len(ids)} games in {time.perf_counter() - t:.1f}s, "
            f"{_size(Path(a.path)) / max(1, a.n + a.active) / 1e3:.0f} KB/game"
        )
        return 0
    work = Path(a.path)
    work.mkdir(parents=True, exist_ok=True)
    src, dst = work / f"selfplay_{a.config}.db", work / f"canonical_{a.config}.db"
    for p in (src, dst):
        for s in ("", "-wal", "-shm"):
            if os.path.exists(f"{p}{s}"):
                os.remove(f"{p}{s}")
    t = time.perf_counter()
    generate_games(src, a.n, config_key=a.config, seed=a.seed, moves=(lo, hi), active=a.active)
    gen = time.perf_counter() - t
    size = _size(src)
    t = time.perf_counter()
    cur, recs_all, wire = None, 0, 0
    consumer = open_consumer_db(dst)
    t_read = t_app = 0.0
    while True:
        t0 = time.perf_counter()
        recs, cur = read_completed_games(src, cur, limit=a.limit)
        packed = msgpack.packb(recs)
        t1 = time.perf_counter()
        t_read += t1 - t0
        if not recs:
            break
        recs_all += len(recs)
        wire += len(packed)
        append_games(consumer, msgpack.unpackb(packed))
        t_app += time.perf_counter() - t1
    total = time.perf_counter() - t
    ok = consumer.execute("PRAGMA integrity_check").fetchone()[0]
    print(f"config={a.config} games={a.n} generate={gen:.1f}s ({a.n / gen:.0f} games/s)")
    print(
        f"source db {size / 1e6:.1f} MB = {size / a.n / 1e3:.0f} KB/game on disk; "
        f"record (msgpack) {wire / max(1, recs_all) / 1e3:.0f} KB/game"
    )
    print(
        f"intake {recs_all} games in {t_read:.2f}s = {recs_all / t_read:.0f} games/s "
        f"({wire / t_read / 1e6:.0f} MB/s incl. msgpack)"
    )
    print(
        f"append {t_app:.2f}s = {recs_all / max(t_app, 1e-9):.0f} games/s; "
        f"end-to-end {recs_all / total:.0f} games/s; integrity={ok}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
