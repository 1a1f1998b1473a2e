"""The per-stream append-only game log: seqs, out-of-order replicas, group commit, crash
recovery of a torn tail, names, segment rolling, retention."""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from ringmesh.node.games.streamlog import (
    HEADER_SIZE,
    BadName,
    ConflictingDuplicate,
    StreamLog,
    StreamLogError,
)

O, K = "node1", "hex8_2p"  # noqa: E741  (O: the origin every test writes as)


def game(i: int, size: int = 200) -> bytes:
    rng = random.Random(i)
    return msgpack.packb(
        {"game_id": f"g{i}", "moves": [rng.randrange(64) for _ in range(size)], "noise": rng.randbytes(size // 4)}
    )


def segs(root: Path, origin: str = O, key: str = K) -> list[Path]:
    return sorted((root / origin / key).glob("*.seg"))


def offsets(f: Path) -> dict[int, int]:
    """seq -> offset of its (last) record in segment `f`."""
    data, off, out = f.read_bytes(), 0, {}
    while off < len(data):
        n = int.from_bytes(data[off + 8 : off + 12], "little")
        out[int.from_bytes(data[off + 12 : off + 20], "little")] = off
        off += HEADER_SIZE + n
    return out


def flip(f: Path, seq: int, at: int = 3) -> None:
    """Rot: flip a byte inside the body of `seq`'s record in `f`, keeping the size."""
    data = bytearray(f.read_bytes())
    data[offsets(f)[seq] + HEADER_SIZE + at] ^= 0xFF
    f.write_bytes(bytes(data))


def test_round_trip_and_reads(tmp_path):
    with StreamLog(tmp_path / "s") as sl:
        assert sl.append(O, K, [game(i) for i in range(1, 6)]) == [1, 2, 3, 4, 5]
        assert sl.append(O, K, []) == []
        assert sl.append(O, "sq8_4p", [b"x"]) == [1]
        assert sl.read(O, K, 1, 5) == [(i, game(i)) for i in range(1, 6)]  # readable before flush
        sl.flush()
        assert sl.read(O, K, 2, 3) == [(2, game(2)), (3, game(3))]
        assert sl.read(O, K, 4, 100) == [(4, game(4)), (5, game(5))]
        assert sl.read(O, K, 3, 2) == [] and sl.read("other", K, 1, 9) == []
        assert sl.high_water(O, K) == 5 and sl.high_water("nobody", K) == 0
        assert sl.has(O, K, 5) and not sl.has(O, K, 6) and not sl.has("nobody", K, 1)
        assert sl.streams() == {(O, K): 5, (O, "sq8_4p"): 1}
        sl.append(O, K, [b""])  # empty payloads are games too
        assert sl.read(O, K, 6, 6) == [(6, b"")]
    with StreamLog(tmp_path / "s") as sl:
        assert sl.recovered == []
        assert sl.read(O, K, 1, 6) == [(i, game(i)) for i in range(1, 6)] + [(6, b"")]
        assert sl.streams() == {(O, K): 6, (O, "sq8_4p"): 1}


def test_seq_assignment_continues_after_reopen(tmp_path):
    sl = StreamLog(tmp_path)
    sl.append(O, K, [b"a", b"b", b"c"])
    sl.close()
    sl = StreamLog(tmp_path)
    assert sl.append(O, K, [b"d"]) == [4]
    assert sl.max_seq(O, K) == 4
    sl.close()


def test_records_are_compressed(tmp_path):
    with StreamLog(tmp_path) as sl:
        big = msgpack.packb({"moves": list(range(64)) * 500})
        sl.append(O, K, [big])
    assert segs(tmp_path)[0].stat().st_size < len(big) // 4
    with StreamLog(tmp_path) as sl:
        assert sl.read(O, K, 1, 1) == [(1, big)]
        incompressible = os.urandom(5000)  # stored raw rather than grown
        sl.append(O, K, [incompressible])
        assert sl.read(O, K, 2, 2) == [(2, incompressible)]


def test_out_of_order_append_at_and_high_water(tmp_path):
    sl = StreamLog(tmp_path)
    assert sl.append_at("node2", K, 7, b"g7")
    assert sl.high_water("node2", K) == 0
    assert sl.append_at("node2", K, 5, b"g5") and sl.append_at("node2", K, 1, b"g1")
    assert sl.high_water("node2", K) == 1
    assert sl.missing("node2", K, 8) == [2, 3, 4, 6, 8]
    for s in (3, 2, 4):
        sl.append_at("node2", K, s, b"g%d" % s)
    assert sl.high_water("node2", K) == 5
    sl.append_at("node2", K, 6, b"g6")
    assert sl.high_water("node2", K) == 7
    assert [s for s, _ in sl.read("node2", K, 1, 10)] == [1, 2, 3, 4, 5, 6, 7]
    assert sl.read("node2", K, 1, 10) == [(s, b"g%d" % s) for s in range(1, 8)]
    sl.append_at("node2", K, 10, b"g10")
    sl.close()
    sl = StreamLog(tmp_path)
    assert sl.high_water("node2", K) == 7 and sl.has("node2", K, 10) and not sl.has("node2", K, 9)
    assert sl.read("node2", K, 7, 10) == [(7, b"g7"), (10, b"g10")]
    sl.close()


def test_duplicates(tmp_path):
    with StreamLog(tmp_path) as sl:
        assert sl.append_at("node2", K, 3, b"three")
        assert sl.append_at("node2", K, 3, b"three") is False
        with pytest.raises(ConflictingDuplicate):
            sl.append_at("node2", K, 3, b"THREE")
        sl.flush()
        size = segs(tmp_path, "node2")[0].stat().st_size
        assert sl.append_at("node2", K, 3, b"three") is False
        assert segs(tmp_path, "node2")[0].stat().st_size == size  # nothing written
        assert sl.read("node2", K, 3, 3) == [(3, b"three")]
        for bad in (0, -1, 1 << 64, True, 1.0):
            with pytest.raises(ValueError):
                sl.append_at("node2", K, bad, b"x")


@pytest.mark.parametrize(
    "bad", ["../x", "..", ".", "", "a/b", "/abs", ".hidden", "-x", "a b", "x\n", "é", "a" * 129, "a\x00b"]
)
def test_bad_names_rejected(tmp_path, bad):
    with StreamLog(tmp_path / "s") as sl:
        with pytest.raises(BadName):
            sl.append(bad, K, [b"x"])
        with pytest.raises(BadName):
            sl.append_at(O, bad, 1, b"x")
        with pytest.raises(BadName):
            sl.read(bad, K, 1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    assert [p.name for p in (tmp_path / "s").iterdir()] == [".lock"]


def test_good_names(tmp_path):
    with StreamLog(tmp_path) as sl:
        for name in ("a", "gpu-7.lambda_us", "A" * 128, "0..9"):
            assert sl.append(name, name, [b"x"]) == [1]
    assert len(StreamLog(tmp_path).streams()) == 4


def test_one_log_per_directory(tmp_path):
    sl = StreamLog(tmp_path)
    with pytest.raises(StreamLogError):
        StreamLog(tmp_path)
    sl.close()
    StreamLog(tmp_path).close()


def test_segment_rolling(tmp_path):
    payloads = [os.urandom(1000) for _ in range(50)]  # incompressible: ~1028 bytes a record
    with StreamLog(tmp_path, segment_bytes=4200) as sl:
        sl.append(O, K, payloads[:20])
        for p in payloads[20:]:
            sl.append(O, K, [p])
        files = segs(tmp_path)
        assert len(files) == 13 and [f.name for f in files][:2] == ["0000000001.seg", "0000000002.seg"]
        assert all(f.stat().st_size <= 4200 for f in files)
        assert sl.read(O, K, 1, 50) == list(enumerate(payloads, 1))
        sl.append(O, K, [os.urandom(10_000)])  # bigger than a segment: a segment of its own
        assert len(segs(tmp_path)) == 14
    with StreamLog(tmp_path, segment_bytes=4200) as sl:
        assert sl.read(O, K, 1, 50) == list(enumerate(payloads, 1))
        assert sl.append(O, K, [b"next"]) == [52]
        assert len(segs(tmp_path)) == 15


def test_retention(tmp_path):
    payloads = [os.urandom(1000) for _ in range(40)]
    sl = StreamLog(tmp_path, segment_bytes=4200)  # 4 records a segment
    sl.append(O, K, payloads)
    assert len(segs(tmp_path)) == 10
    assert sl.drop_through(O, K, 10) == 2  # segments 1-4, 5-8 go; 9-12 stays
    assert len(segs(tmp_path)) == 8
    assert sl.floor(O, K) == 10 and sl.high_water(O, K) == 40
    assert not sl.has(O, K, 9) and not sl.has(O, K, 10) and sl.has(O, K, 11)
    assert sl.read(O, K, 1, 12) == [(11, payloads[10]), (12, payloads[11])]
    assert sl.drop_through(O, K, 5) == 0 and sl.floor(O, K) == 10  # the floor never goes down
    sl.close()
    sl = StreamLog(tmp_path, segment_bytes=4200)
    assert sl.floor(O, K) == 10 and sl.high_water(O, K) == 40 and not sl.has(O, K, 10)
    assert sl.read(O, K, 11, 11) == [(11, payloads[10])]
    # Drop everything: the counter must not fall back.
    sl.drop_through(O, K, 40)
    assert segs(tmp_path) == [] and sl.high_water(O, K) == 40
    sl.close()
    sl = StreamLog(tmp_path, segment_bytes=4200)
    assert sl.high_water(O, K) == 40 and sl.append(O, K, [b"x"]) == [41] and sl.high_water(O, K) == 41
    sl.close()


def test_retention_floor_on_a_replica(tmp_path):
    with StreamLog(tmp_path) as sl:
        for s in (1, 2, 6, 7):
            sl.append_at("node2", K, s, b"%d" % s)
        assert sl.high_water("node2", K) == 2
        sl.drop_through("node2", K, 5)  # 3-5 are known to be durable elsewhere and not needed here
        assert sl.high_water("node2", K) == 7
        assert sl.append_at("node2", K, 4, b"4") is False  # below the floor: ignored
        assert sl.missing("node2", K, 9) == [8, 9]


def test_floor_left_behind_by_a_crash_is_applied_on_open(tmp_path):
    with StreamLog(tmp_path, segment_bytes=2100) as sl:
        sl.append(O, K, [os.urandom(1000) for _ in range(6)])  # 2 a segment
    (tmp_path / O / K / "floor").write_text("4\n")  # as if we crashed before the unlinks
    with StreamLog(tmp_path, segment_bytes=2100) as sl:
        assert [p.name for p in segs(tmp_path)] == ["0000000003.seg"]
        assert sl.high_water(O, K) == 6 and [s for s, _ in sl.read(O, K, 1, 9)] == [5, 6]


def test_torn_tail_is_truncated_and_reported(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [game(i) for i in range(1, 4)])
    f = segs(tmp_path)[0]
    good = f.stat().st_size
    with open(f, "ab") as fh:
        fh.write(b"RMG1\x01")  # a partial header
    with StreamLog(tmp_path) as sl:
        assert [(r.offset, r.dropped_bytes) for r in sl.recovered] == [(good, 5)]
        assert f.stat().st_size == good and sl.high_water(O, K) == 3
        assert sl.append(O, K, [b"four"]) == [4]


def test_bad_checksum_at_the_active_tail_cuts_it(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [game(i) for i in range(1, 6)])
    f = segs(tmp_path)[0]
    at = offsets(f)
    flip(f, 5)  # the last record: indistinguishable from a torn write
    with StreamLog(tmp_path) as sl:
        assert sl.recovered[0].reason == "bad checksum" and sl.recovered[0].offset == at[5]
        assert sl.high_water(O, K) == 4 and sl.append(O, K, [b"x"]) == [5]


def test_rot_in_the_middle_of_the_active_segment_is_skipped_not_cut(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [game(i) for i in range(1, 6)])
    flip(segs(tmp_path)[0], 4)
    with StreamLog(tmp_path) as sl:  # a whole good record follows: rot, and what follows is kept
        assert sl.recovered == [] and sl.take_found()[0] == [(O, K, 4)]
        assert sl.high_water(O, K) == 3 and sl.has(O, K, 5) and not sl.has(O, K, 4)
        assert [q for q, _ in sl.read(O, K, 1, 5)] == [1, 2, 3, 5]
        assert sl.append(O, K, [b"x"]) == [6]  # seq 4 is never handed out again


def test_corruption_in_a_sealed_segment_is_caught_on_read(tmp_path):
    with StreamLog(tmp_path, segment_bytes=1000) as sl:
        sl.append(O, K, [os.urandom(900), os.urandom(900)])
    f = segs(tmp_path)[0]
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with StreamLog(tmp_path, segment_bytes=1000) as sl:  # sealed: only the headers are walked on open
        assert sl.recovered == [] and sl.high_water(O, K) == 2
        assert sl.read(O, K, 1, 2)[0][0] == 2  # never the bad bytes, and no exception
        assert sl.take_found() == ([(O, K, 1)], []) and sl.high_water(O, K) == 0
        assert sl.read(O, K, 1, 1) == [] and sl.take_found() == ([], [])  # found once
    with StreamLog(tmp_path, segment_bytes=1000, verify_all=True) as sl:
        assert sl.recovered == [] and sl.take_found()[0] == [(O, K, 1)]  # a sealed segment is not cut
        assert sl.high_water(O, K) == 0 and sl.has(O, K, 2)


def test_read_limit(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [b"%d" % i for i in range(1, 11)])
        assert sl.read(O, K, 3, 100, limit=2) == [(3, b"3"), (4, b"4")]
        assert sl.read(O, K, 1, 10**12, limit=1) == [(1, b"1")]  # the sparse path


def test_failed_write_leaves_no_partial_record(tmp_path, monkeypatch):
    sl = StreamLog(tmp_path)
    sl.append(O, K, [b"one"])
    real = os.pwrite

    def half_then_enospc(fd, data, off):
        if len(data) > 10:
            real(fd, bytes(data[: len(data) // 2]), off)
            raise OSError(28, "No space left on device")
        return real(fd, data, off)

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(OSError):
        sl.append(O, K, [os.urandom(100)])
    monkeypatch.setattr(os, "pwrite", real)
    assert sl.high_water(O, K) == 1 and sl.append(O, K, [b"two"]) == [2]
    sl.close()
    with StreamLog(tmp_path) as sl:
        assert sl.recovered == [] and sl.read(O, K, 1, 5) == [(1, b"one"), (2, b"two")]


def test_stray_files_are_ignored(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [b"x"])
    (tmp_path / "README").write_text("hi")
    (tmp_path / ".trash").mkdir()
    (tmp_path / O / K / "notes.txt").write_text("hi")
    with StreamLog(tmp_path) as sl:
        assert sl.streams() == {(O, K): 1}


# ---------------------------------------------------------------- crash safety (property)

batches = hs.lists(
    hs.tuples(hs.lists(hs.binary(max_size=700), min_size=0, max_size=6), hs.booleans()), min_size=1, max_size=12
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=batches, cut=hs.floats(0, 1), garbage=hs.binary(max_size=300), stream2=hs.booleans())
def test_crash_keeps_every_flushed_record(batches, cut, garbage, stream2):
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        sl = StreamLog(root, segment_bytes=1500)
        written: dict[int, bytes] = {}
        flushed: dict[int, bytes] = {}
        flushed_sizes: dict[str, int] = {}
        for payloads, flush in batches:
            for s, p in zip(sl.append(O, K, payloads), payloads):
                written[s] = p
            if stream2:  # another stream interleaved: flush covers it too
                sl.append_at("node2", K, len(written) + 1, b"r")
            if flush:
                sl.flush()
                flushed = dict(written)
                flushed_sizes = {f.name: f.stat().st_size for f in segs(root)}
        sl.close(flush=False)
        # Crash: the unsynced part of the newest segment is torn at an arbitrary byte, and
        # whatever junk the disk had there may follow.
        files = segs(root)
        if files:
            last = files[-1]
            lo, hi = flushed_sizes.get(last.name, 0), last.stat().st_size
            assert lo <= hi
            os.truncate(last, lo + int(cut * (hi - lo)))
            with open(last, "ab") as fh:
                fh.write(garbage)
        sl = StreamLog(root, segment_bytes=1500)
        got = dict(sl.read(O, K, 1, 10_000))
        for s, p in flushed.items():
            assert got[s] == p
        for s, p in got.items():
            assert written[s] == p
        hw = sl.high_water(O, K)
        assert sorted(got) == list(range(1, hw + 1))  # no holes in the origin's own stream
        if files:
            assert last.stat().st_size <= lo + int(cut * (hi - lo))  # the torn tail is gone
        new = sl.append(O, K, [b"after"])
        assert new == [hw + 1]
        sl.flush()
        sl.close()
        sl = StreamLog(root, segment_bytes=1500)
        assert sl.recovered == []
        assert sl.read(O, K, hw + 1, hw + 1) == [(hw + 1, b"after")] and sl.high_water(O, K) == hw + 1
        sl.close()


# ---------------------------------------------------------------- throughput (reported, not asserted)


def measure(root: Path, n: int, every: int, size: int = 50_000, level: int | None = 1) -> tuple[float, float]:
    """appends/s and MB/s (of uncompressed payload) for `n` records of `size` bytes with a
    flush every `every` records."""
    rng = random.Random(1)
    payloads = []
    for i in range(min(n, 64)):  # game-like: move lists of small ints (compresses ~1.5x)
        rec = {"game_id": f"g{i:06d}", "moves": [rng.randrange(100) for _ in range(size - 40)]}
        while len(p := msgpack.packb(rec)) > size:
            rec["moves"].pop()
        payloads.append(p)
    with StreamLog(root, compress_level=level) as sl:
        t0 = time.perf_counter()
        total = 0
        for i in range(n):
            p = payloads[i % len(payloads)]
            sl.append(O, K, [p])
            total += len(p)
            if (i + 1) % every == 0:
                sl.flush()
        sl.flush()
        dt = time.perf_counter() - t0
    return n / dt, total / dt / 1e6


def test_throughput_report(tmp_path, capsys):
    lines = []
    for level in (1, None):
        for every, n in ((1, 100), (100, 500)):
            rate, mbs = measure(tmp_path / f"every{every}-{level}", n, every, level=level)
            lines.append(
                f"streamlog 50KB records, zlib level {level}, flush every {every}: {rate:.0f} appends/s, {mbs:.1f} MB/s"
            )
    with capsys.disabled():
        print("\n" + "\n".join(lines))


if __name__ == "__main__":  # python -m tests.shell.test_streamlog [n]: a longer measurement
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as d:
        for level in (1, 6, None):
            for every in (1, 100):
                rate, mbs = measure(Path(d) / f"e{every}-{level}", n, every, level=level)
                print(f"50KB records, zlib level {level}, flush every {every}: {rate:.0f} appends/s, {mbs:.1f} MB/s")


# -- rot: scrubbing, repair, lost seqs ------------------------------------------------------


def test_segments_lists_every_segment(tmp_path):
    with StreamLog(tmp_path, segment_bytes=1000) as sl:
        sl.append(O, K, [os.urandom(900), os.urandom(900)])
        sl.append_at("node2", K, 1, b"one")
        got = [(s.origin, s.config_key, s.segno, s.size) for s in sl.segments()]
        assert got == [("node1", K, 1, 928), ("node1", K, 2, 928), ("node2", K, 1, HEADER_SIZE + 3)]
        assert all(s.path.stat().st_size == s.size for s in sl.segments())


def test_verify_segment_finds_rot_and_the_mark_falls(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append(O, K, [game(i) for i in range(1, 8)])
        sl.flush()
        f = segs(tmp_path)[0]
        flip(f, 3)
        flip(f, 6)
        assert sl.high_water(O, K) == 7  # not noticed until verified
        assert sl.verify_segment(O, K, 1) == [3, 6]
        assert sl.high_water(O, K) == 2 and sl.corrupt(O, K) == [3, 6]
        assert [q for q, _ in sl.read(O, K, 1, 7)] == [1, 2, 4, 5, 7]
        assert sl.take_found() == ([(O, K, 3), (O, K, 6)], [])
        assert sl.verify_segment(O, K, 1) == []  # found once
        assert sl.verify_segment(O, K, 99) == [] and sl.missing(O, K, 7) == [3, 6]


@pytest.mark.parametrize("sealed", [False, True])
def test_a_good_copy_repairs_rot_and_survives_a_restart(tmp_path, sealed):
    payloads = [game(i) for i in range(1, 6)]
    with StreamLog(tmp_path) as sl:
        for q, p in enumerate(payloads, 1):
            sl.append_at(O, K, q, p)
        if sealed:
            sl.append_at("other", K, 1, b"x")  # unrelated
        sl.flush()
        flip(segs(tmp_path)[0], 2)
        assert sl.verify_segment(O, K, 1) == [2]
        assert sl.append_at(O, K, 2, payloads[1]) is True  # not a ConflictingDuplicate against the bad bytes
        assert sl.take_found() == ([(O, K, 2)], [(O, K, 2)])
        assert sl.read(O, K, 2, 2) == [(2, payloads[1])] and sl.high_water(O, K) == 5
        assert len(segs(tmp_path)) == 2  # the good copy is in a newer segment than the bad one
    for verify_all in (False, True):
        with StreamLog(tmp_path, verify_all=verify_all) as sl:
            assert sl.recovered == []
            assert sl.read(O, K, 1, 5) == list(enumerate(payloads, 1)) and sl.high_water(O, K) == 5
            assert sl.take_found() == ([], [])
            assert all(sl.verify_segment(O, K, s.segno) == [] for s in sl.segments())


def test_a_copy_bad_on_read_is_replaced_by_append_at(tmp_path):
    with StreamLog(tmp_path) as sl:
        sl.append_at(O, K, 1, game(1))
        sl.flush()
        flip(segs(tmp_path)[0], 1)
        assert sl.append_at(O, K, 1, game(1)) is True  # the compare found ours bad
        assert sl.take_found() == ([(O, K, 1)], [(O, K, 1)]) and sl.read(O, K, 1, 1) == [(1, game(1))]
        with pytest.raises(ConflictingDuplicate):  # a good copy is still defended
            sl.append_at(O, K, 1, game(2))


def test_lost_seqs_are_skipped_by_the_mark_and_persist(tmp_path):
    with StreamLog(tmp_path) as sl:
        for q in (1, 2, 4, 5):
            sl.append_at(O, K, q, game(q))
        assert sl.high_water(O, K) == 2
        assert sl.mark_lost(O, K, [3]) == 5 and sl.lost(O, K) == [3]
        assert [q for q, _ in sl.read(O, K, 1, 5)] == [1, 2, 4, 5]
    with StreamLog(tmp_path) as sl:
        assert sl.high_water(O, K) == 5 and sl.lost(O, K) == [3] and sl.missing(O, K, 6) == [6]
        assert sl.append_at(O, K, 3, game(3)) is True  # a copy that turns up is taken all the same
        assert sl.read(O, K, 3, 3) == [(3, game(3))]
    with StreamLog(tmp_path) as sl:
        assert sl.mark_lost(O, K, [7]) == 5 and sl.append(O, K, [b"next"]) == [8]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=hs.integers(3, 30),
    rotten=hs.sets(hs.integers(1, 30), max_size=8),
    restart=hs.booleans(),
)
def test_rot_is_found_never_served_and_repaired(tmp_path_factory, n, rotten, restart):
    """Law: whatever records rot (inside their bodies), a scrub finds exactly those, no read
    returns bad bytes, and once good copies are taken back everything reads right, also after
    a restart."""
    root = tmp_path_factory.mktemp("rot")
    rotten = {q for q in rotten if q <= n}
    payloads = {q: game(q, 50) for q in range(1, n + 1)}
    sl = StreamLog(root, segment_bytes=2000)
    for q in sorted(payloads, key=lambda q: (q * 7) % n):  # out of order, as a replica gets them
        sl.append_at(O, K, q, payloads[q])
    sl.flush()
    for f in segs(root):
        for q in set(offsets(f)) & rotten:
            flip(f, q, at=q % 5)
    found = {q for s in sl.segments() for q in sl.verify_segment(O, K, s.segno)}
    assert found == rotten and {q for _, _, q in sl.take_found()[0]} == rotten
    if restart:  # before the repair: the bad copies are still on disk
        sl.close()
        sl = StreamLog(root, segment_bytes=2000)
        assert {q for s in sl.segments() for q in sl.verify_segment(O, K, s.segno)} <= rotten
    assert all(payloads[q] == p for q, p in sl.read(O, K, 1, n)) and not {q for q, _ in sl.read(O, K, 1, n)} & rotten
    assert sl.high_water(O, K) == min(rotten | {n + 1}) - 1
    assert set(sl.missing(O, K, n)) == rotten  # what a replica pulls again
    for q in sorted(rotten):
        assert sl.append_at(O, K, q, payloads[q]) is True
    assert sl.high_water(O, K) == n
    sl.close()
    with StreamLog(root, segment_bytes=2000, verify_all=True) as sl:
        assert sl.read(O, K, 1, n) == sorted(payloads.items()) and sl.high_water(O, K) == n
