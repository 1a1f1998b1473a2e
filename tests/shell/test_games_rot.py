"""Games that rot on a real peer's disk (issue 18, part 5): found by a scrub or on opening the
log, never served, pulled again from a good copy that survives a restart; a game bad on every
holder is reported lost, counted, and the stream goes on.

node1 runs in this process (its `games.scrub_segment` is what the scrubber calls); node2 and
node3 are real `ringmesh serve` processes. Waits are bounded polls, never sleeps.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from ringmesh.config import load_config
from ringmesh.node.games import gamedb
from ringmesh.node.games.segment import HEADER_SIZE
from ringmesh.node.runtime import Daemon
from ringmesh.ops import selfplay, statusreport
from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.ops.metrics import _families

from .conftest import serving, until

K = "hex8_2p"
ROLES = {"node1": "training", "node2": "backup", "node3": "selfplay"}


def _rot(seg: Path, seq: int) -> None:
    """Flip bytes inside the body of `seq`'s record in segment `seg`, in place (same size)."""
    data, off = seg.read_bytes(), 0
    while off < len(data):
        n = int.from_bytes(data[off + 8 : off + 12], "little")
        if int.from_bytes(data[off + 12 : off + 20], "little") == seq:
            with open(seg, "r+b") as f:
                f.seek(off + HEADER_SIZE + n // 2)
                f.write(bytes(b ^ 0xFF for b in data[off + HEADER_SIZE + n // 2 : off + HEADER_SIZE + n // 2 + 4]))
            return
        off += HEADER_SIZE + n
    raise AssertionError(f"seq {seq} not in {seg}")


def _publish(c: LocalCluster, tmp: Path, n: int, seed: int) -> list[dict]:
    source = tmp / f"selfplay_{seed}.db"
    selfplay.generate_games(source, n, config_key=K, seed=seed, moves=(20, 30), active=0)
    records, _ = gamedb.read_completed_games(source)
    with c.nodes["node3"].client() as cl:
        seqs = cl.publish_games(K, records)
        assert cl.wait_durable(K, seqs[-1], timeout=30)
    return records


def _origin(c: LocalCluster) -> str:
    streams = wait_for(lambda: (c.nodes["node3"].query("status") or {}).get("games", {}).get("streams"), 20)
    (key,) = streams
    return key.rsplit("/", 1)[0]


def _stream_hw(c: LocalCluster, node: str, origin: str) -> int:
    return ((c.nodes[node].query("status") or {}).get("games", {}).get("streams") or {}).get(f"{origin}/{K}", 0)


def _segments(data_dir: Path, origin: str) -> list[Path]:
    return sorted((data_dir / "streams" / origin / K).glob("*.seg"))


async def _repair(c: LocalCluster, origin: str) -> None:
    d = Daemon(load_config(str(c.config_path)), "node1", c.nodes["node1"].data_dir)
    await d.start()
    try:
        sl = d.games.games.log
        await until(lambda: sl.high_water(origin, K) == 4, 30, "node1 to hold games 1..4")
        good = sl.read(origin, K, 2, 2)
        (seg,) = [s for s in await d.games.segments() if s.origin == origin]
        _rot(seg.path, 2)  # rot under a running peer: nothing notices until it is verified
        assert sl.high_water(origin, K) == 4
        assert await d.games.scrub_segment(origin, K, seg.segno) == seg.size
        assert d.counters["corrupt_games_found"] == 1
        await until(lambda: d.counters["corrupt_games_repaired"] == 1, 30, "seq 2 pulled again from a peer")
        await until(lambda: sl.high_water(origin, K) == 4, 30, "node1's mark back at 4")
        assert sl.read(origin, K, 2, 2) == good
        assert all(sl.verify_segment(s.origin, s.config_key, s.segno) == [] for s in sl.segments())
        st = statusreport.status(d.view)
        assert st["counters"]["corrupt_games_found"] == 1 and st["counters"]["corrupt_games_repaired"] == 1
        assert st["games"]["lost"] == [] and "games_lost" not in st["counters"]
        sc = st["scrub"]  # the at-rest report counts it too, repaired, nothing open
        assert (sc["found"]["games"], sc["repaired"]["games"], sc["unrepaired"]) == (1, 1, [])
        events = {
            s.labels["event"]: s.value for f in _families(d.view) if f.name == "ringmesh_events" for s in f.samples
        }
        assert events.get("corrupt_games_found") == 1 and events.get("corrupt_games_repaired") == 1
    finally:
        await d.close()
    d = Daemon(load_config(str(c.config_path)), "node1", c.nodes["node1"].data_dir)  # the repair survives it
    await d.start()
    try:
        sl = d.games.games.log
        assert sl.high_water(origin, K) == 4 and sl.read(origin, K, 2, 2) == good
        assert all(sl.verify_segment(s.origin, s.config_key, s.segno) == [] for s in sl.segments())
        assert d.counters["corrupt_games_found"] == 0
    finally:
        await d.close()


def test_a_game_rotten_on_one_holder_is_pulled_again_and_survives_a_restart(tmp_path):
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=ROLES)
    with serving(c):
        wait_for(c.converged, 30, what="a settled cluster")
        _publish(c, tmp_path, 4, seed=3)
        origin = _origin(c)
        wait_for(lambda: all(_stream_hw(c, n, origin) == 4 for n in ("node1", "node2")), 30, what="games replicated")
        c.signal("node1", signal.SIGTERM)  # node1 runs in this process instead
        c.nodes["node1"].exits.clear()
        asyncio.run(_repair(c, origin))


async def _lost(c: LocalCluster, tmp: Path, origin: str) -> None:
    d = Daemon(load_config(str(c.config_path)), "node1", c.nodes["node1"].data_dir)
    await d.start()  # seq 2 is found bad while opening the log, here as on the other two
    try:
        await until(lambda: d.counters["games_lost"] == 1, 60, "seq 2 reported lost")
        st = statusreport.status(d.view)
        (lost,) = st["games"]["lost"]
        assert (lost["origin"], lost["config_key"], lost["seq"]) == (origin, K, 2)
        assert lost["game_id"] is None or isinstance(lost["game_id"], str)  # by id if its bytes still decode
        assert st["counters"]["corrupt_games_found"] == 1 and "corrupt_games_repaired" not in st["counters"]
        sl = d.games.games.log
        await until(lambda: sl.high_water(origin, K) == 4, 30, "node1's mark past the lost game")
        assert [q for q, _ in sl.read(origin, K, 1, 4)] == [1, 3, 4]  # the bad bytes are never served
        more = await asyncio.to_thread(_publish, c, tmp, 2, 11)  # the stream goes on
        assert len(more) == 2
        await until(lambda: sl.high_water(origin, K) == 6, 30, "later games replicated past the hole")
        await until(lambda: _stream_hw(c, "node2", origin) == 6, 30, "node2 past the hole too")
    finally:
        await d.close()


def test_a_game_rotten_on_every_holder_is_reported_lost_and_the_stream_goes_on(tmp_path):
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.2, roles=ROLES)
    with serving(c):
        wait_for(c.converged, 30, what="a settled cluster")
        _publish(c, tmp_path, 4, seed=5)
        origin = _origin(c)
        wait_for(lambda: all(_stream_hw(c, n, origin) == 4 for n in ("node1", "node2")), 30, what="games replicated")
        for n in ("node1", "node2", "node3"):
            c.signal(n, signal.SIGTERM)
            c.nodes[n].exits.clear()
            (seg,) = _segments(c.nodes[n].data_dir, origin)
            _rot(seg, 2)
        for n in ("node2", "node3"):
            c.start(n)
            c.wait_ready(n)
        asyncio.run(_lost(c, tmp_path, origin))
        for n in ("node2", "node3"):
            st = c.nodes[n].query("status")
            assert [(g["seq"]) for g in st["games"]["lost"]] == [2], (n, st["games"]["lost"])
            assert st["counters"]["corrupt_games_found"] == 1 and st["counters"]["games_lost"] == 1
            sc = st["scrub"]  # closed as lost, not repaired; doctor warns of it, does not fail on it
            assert (sc["found"]["games"], sc["repaired"]["games"], sc["lost"], sc["unrepaired"]) == (1, 0, 1, [])


def test_a_lost_game_is_listed_by_its_game_id_while_its_bad_copy_still_decodes(tmp_path):
    import os

    from ringmesh.node.games.games import Games, pack_record

    g = Games(tmp_path, consume=False)
    o = "node3.1"
    raw = pack_record({"game_id": "g-raw", "tables": {}, "noise": os.urandom(600)})  # stored uncompressed
    packed = pack_record({"game_id": "g-zip", "tables": {}, "moves": [1] * 600})  # stored zlib-compressed
    g.log.append_at(o, K, 1, raw)
    g.log.append_at(o, K, 2, packed)
    g.log.append_at(o, K, 3, packed.replace(b"g-zip", b"g-3ok"))
    g.log.flush()
    (seg,) = _segments(tmp_path, o)
    data = bytearray(seg.read_bytes())
    data[len(raw) - 10 + HEADER_SIZE] ^= 0xFF  # inside seq 1's noise: its metadata still reads
    seg.write_bytes(bytes(data))
    _rot(seg, 2)
    assert g.log.verify_segment(o, K, 1) == [1, 2]
    assert g.mark_lost(o, K, [1, 2]) == (2, 3) and g.mark_lost(o, K, [2]) == (0, 3)  # listed once
    assert [(x["seq"], x["game_id"]) for x in g.lost] == [(1, "g-raw"), (2, None)]  # else by seq
    g.close()
    g = Games(tmp_path, consume=False)  # the seqs stay listed across a restart (the ids do not)
    assert [(x["seq"], x["game_id"]) for x in g.lost] == [(1, None), (2, None)]
    assert g.log.high_water(o, K) == 3
    g.close()
