"""The per-stream append-only game log (DESIGN.md, "Game streams").

A stream is ``(origin, config_key)``; its games are numbered ``seq = 1, 2, 3, ...`` by the
origin and never renumbered.  Blocking code: the daemon calls it from one worker thread (a
lock makes concurrent calls safe anyway, but nothing here is meant to be fast under
contention).

On disk::

    <root>/<origin>/<config_key>/<segno:010d>.seg   segment files, segno = 1, 2, 3, ...
    <root>/<origin>/<config_key>/floor              retention floor (decimal text), optional
    <root>/<origin>/<config_key>/lost               seqs lost on every holder (one a line), optional

A segment is a plain concatenation of records (their format: `segment.py`); the
highest-numbered segment of a stream is the active one, the others are sealed.

Records in a segment need not be in seq order (replicas receive games out of order).

Durability: `append`/`append_at` only write (page cache); `flush()` fdatasyncs each dirty
segment once and fsyncs each directory that gained an entry, so a caller appends many games
and acknowledges them all after one `flush()` (group commit).  Before a new segment is
created the previous one is synced, so a sealed segment is always complete and only the
unsynced part of the newest segment can be torn.  On open every segment is walked; at the
first record that is incomplete, has a bad magic/length or (in the active segment, with no
whole good record after it) a bad checksum, the file is truncated and the loss is reported
in `StreamLog.recovered`; ``verify_all=True`` checks the sealed segments' checksums too.
Flushed records are never behind such a point, because a flushed segment's synced bytes are
a prefix of it.

Rot: a record whose checksum fails later (`verify_segment`, the scrubber's; or a read) is
dropped from the index (never served), remembered as corrupt, and the stream's high-water
mark falls below it; `take_found()` hands the shell what was found and repaired. A good copy
from a peer (`append_at`) is written to a newer segment than the bad one (the active segment
is sealed first if it holds it); on open a sealed segment's bad record, or one of the active
segment's that a whole good record follows, is skipped rather than cut, and of two copies of
a seq the one that verifies is kept. Seqs lost on every holder (`mark_lost`) are skipped by
the mark. Limits, on open: rot of the active segment's newest record is taken for a torn
write (cut; the scrubber, which never cuts, finds it while running), and rot of a record's
header cuts its segment there (the records after it are pulled again).

The next seq of a stream is ``max(highest seq stored, floor) + 1``: the counter is persisted
with the games themselves, and the floor file keeps it after retention deleted them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from pathlib import Path
from typing import Literal, overload

from ringmesh.node.games.segment import (
    FLOOR_FILE,
    HEADER,
    HEADER_SIZE,
    LOST_FILE,
    NAME_RE,
    BadName,
    ConflictingDuplicate,
    CorruptRecord,
    Recovery,
    Segment,
    SegmentInfo,
    Stream,
    StreamLogError,
    check_name,
    decode_body,
    decode_record,
    encode_record,
    load_stream,
    record_ok,
    write_file,
)

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_BYTES = 64 << 20
Where = tuple[str, str, int]  # (origin, config_key, seq)

__all__ = [
    "HEADER_SIZE",
    "BadName",
    "ConflictingDuplicate",
    "CorruptRecord",
    "Recovery",
    "SegmentInfo",
    "StreamLog",
    "StreamLogError",
    "encode_record",
]


class StreamLog:
    """Append-only per-stream game logs under `root_dir`. See the module docstring."""

    def __init__(
        self,
        root_dir: str | os.PathLike,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        compress_level: int | None = 1,
        verify_all: bool = False,
        max_open_readers: int = 64,
    ) -> None:
        self.root = Path(root_dir)
        self.segment_bytes = int(segment_bytes)
        self.compress_level = compress_level
        self.max_open_readers = max_open_readers
        self.max_open_writers = max_open_readers
        self.recovered: list[Recovery] = []
        self._found: list[Where] = []  # corrupt records found since `take_found`
        self._repaired: list[Where] = []  # corrupt records a good copy replaced since `take_found`
        self._lock = threading.RLock()
        self._streams: dict[tuple[str, str], Stream] = {}
        self._dirty_files: dict[int, int] = {}  # fd -> fd (insertion-ordered set)
        self._dirty_dirs: set[Path] = set()
        self._readers: dict[Path, int] = {}  # path -> read fd (LRU by insertion order)
        self._closed = False
        new_root = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        if new_root:
            self._dirty_dirs.add(self.root.parent)
        # One StreamLog per directory at a time (two writers would interleave records).
        self._lock_fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise StreamLogError(f"{self.root} is in use by another StreamLog") from None
        try:
            self._load(verify_all)
        except BaseException:
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------------ opening

    def _load(self, verify_all: bool) -> None:
        for odir in sorted(self.root.iterdir()):
            if not odir.is_dir() or NAME_RE.fullmatch(odir.name) is None:
                continue
            for cdir in sorted(odir.iterdir()):
                if not cdir.is_dir() or NAME_RE.fullmatch(cdir.name) is None:
                    continue
                st = self._streams[(odir.name, cdir.name)] = load_stream(cdir, verify_all, self.recovered)
                self._found += [(odir.name, cdir.name, seq) for seq in sorted(st.corrupt)]
                self._apply_floor(st)
                st.max_seq = max(max(st.index, default=0), max(st.corrupt, default=0))
                st.advance()

    # ------------------------------------------------------------------ helpers

    @overload
    def _stream(self, origin: str, config_key: str, create: Literal[True]) -> Stream: ...
    @overload
    def _stream(self, origin: str, config_key: str, create: Literal[False]) -> Stream | None: ...
    def _stream(self, origin: str, config_key: str, create: bool) -> Stream | None:
        if self._closed:
            raise StreamLogError("StreamLog is closed")
        key = (check_name(origin), check_name(config_key))
        st = self._streams.get(key)
        if st is None and create:
            odir = self.root / key[0]
            if not odir.exists():
                odir.mkdir()
                self._dirty_dirs.add(self.root)
            d = odir / key[1]
            if not d.exists():
                d.mkdir()
                self._dirty_dirs.add(odir)
            st = self._streams[key] = Stream(dir=d)
        return st

    def _reader(self, path: Path) -> int:
        fd = self._readers.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
            while len(self._readers) >= self.max_open_readers:
                os.close(self._readers.pop(next(iter(self._readers))))
        self._readers[path] = fd
        return fd

    def _drop_reader(self, path: Path) -> None:
        fd = self._readers.pop(path, None)
        if fd is not None:
            os.close(fd)

    def _read_record(self, st: Stream, seq: int) -> bytes:
        segno, off, n = st.index[seq]
        path = st.segments[segno].path
        try:
            buf = os.pread(self._reader(path), n, off)
        except OSError as e:  # the disk failed to give it back: as bad as rot
            raise CorruptRecord(f"{path}: seq {seq}: {e}") from e
        return decode_record(buf, seq, f"{path} at {off}")

    def _mark_corrupt(self, key: tuple[str, str], st: Stream, seq: int) -> None:
        """`seq`'s stored copy is bad: never served again; the mark falls below it."""
        loc = st.index.pop(seq)
        st.segments[loc[0]].seqs.discard(seq)
        st.corrupt[seq] = loc
        st.lower(seq)
        self._found.append((key[0], key[1], seq))
        log.warning("streamlog: %s/%s seq %d is corrupt on disk (segment %d at %d)", *key, seq, loc[0], loc[1])

    def _sync_active(self, st: Stream) -> None:
        if st.active_fd is not None and st.active_fd in self._dirty_files:
            os.fdatasync(st.active_fd)
            del self._dirty_files[st.active_fd]

    def _close_active(self, st: Stream) -> None:
        if st.active_fd is not None:
            self._dirty_files.pop(st.active_fd, None)
            os.close(st.active_fd)
            st.active_fd = None

    def _new_segment(self, st: Stream) -> Segment:
        # The previous segment must be complete on disk before a later one can exist.
        self._sync_active(st)
        self._close_active(st)
        segno = max(st.segments, default=0) + 1
        seg = Segment(segno, st.dir / f"{segno:010d}.seg")
        st.active_fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        st.segments[segno] = seg
        st.active_segno = segno
        self._dirty_dirs.add(st.dir)
        return seg

    def _active_for(self, st: Stream, nbytes: int) -> Segment:
        seg = st.segments.get(st.active_segno)
        if seg is None or (seg.size > 0 and seg.size + nbytes > self.segment_bytes):
            return self._new_segment(st)
        if st.active_fd is None:
            st.active_fd = os.open(seg.path, os.O_WRONLY)
        return seg

    def _write(self, st: Stream, records: list[tuple[int, bytes]]) -> None:
        """Write encoded records, rolling segments at `segment_bytes`, and index them."""
        i = 0
        while i < len(records):
            seg = self._active_for(st, len(records[i][1]))
            # Take as many records as fit into this segment (at least one).
            batch: list[tuple[int, bytes]] = []
            size = seg.size
            while i < len(records) and (not batch or size + len(records[i][1]) <= self.segment_bytes):
                batch.append(records[i])
                size += len(records[i][1])
                i += 1
                if size >= self.segment_bytes:
                    break
            blob = b"".join(r for _, r in batch)
            mv, done = memoryview(blob), 0
            fd = st.active_fd
            assert fd is not None  # _active_for opened it
            self._dirty_files[fd] = fd
            try:
                while done < len(blob):
                    done += os.pwrite(fd, mv[done:], seg.size + done)
            except OSError:  # e.g. disk full: leave no partial record behind
                try:
                    os.ftruncate(fd, seg.size)
                except OSError:
                    pass  # the next open truncates it
                raise
            off = seg.size
            for seq, rec in batch:
                st.index[seq] = (seg.segno, off, len(rec))
                seg.add(seq)
                off += len(rec)
                if seq > st.max_seq:
                    st.max_seq = seq
            seg.size = off
        st.advance()

    def _apply_floor(self, st: Stream) -> None:
        """Forget seqs <= floor and delete segments holding nothing above it."""
        for seg in st.segments.values():
            if seg.lo and seg.lo <= st.floor:  # only segments reaching down to the floor
                gone = {s for s in seg.seqs if s <= st.floor}
                seg.seqs -= gone
                for seq in gone:
                    if st.index.get(seq, (0,))[0] == seg.segno:
                        del st.index[seq]
                seg.lo = min(seg.seqs, default=0)
        for segno, seg in list(st.segments.items()):
            if seg.seqs or seg.size == 0 and segno == st.active_segno:
                continue
            if segno == st.active_segno:
                self._close_active(st)
                st.active_segno = 0
            self._drop_reader(seg.path)
            try:
                seg.path.unlink()
            except FileNotFoundError:
                pass
            del st.segments[segno]
            self._dirty_dirs.add(st.dir)

    # ------------------------------------------------------------------ writes

    def append(self, origin: str, config_key: str, payloads: list[bytes]) -> list[int]:
        """Number `payloads` with the stream's next seqs and write them (not yet durable:
        call `flush()` before acknowledging them)."""
        with self._lock:
            st = self._stream(origin, config_key, create=True)
            if not payloads:
                return []
            first = max(st.max_seq, st.floor) + 1
            seqs = list(range(first, first + len(payloads)))
            recs = [(s, encode_record(s, p, self.compress_level)) for s, p in zip(seqs, payloads)]
            self._write(st, recs)
            return seqs

    def append_at(self, origin: str, config_key: str, seq: int, payload: bytes) -> bool:
        """Store another origin's game at a given seq (any order). Returns False if it was
        already stored identically or lies at/below the retention floor; raises
        ConflictingDuplicate if that seq is stored with a different payload."""
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq < 1 << 64:
            raise ValueError(f"bad seq {seq!r}")
        with self._lock:
            st = self._stream(origin, config_key, create=True)
            if seq <= st.floor:
                return False
            if seq in st.index:
                try:
                    same = self._read_record(st, seq) == payload
                except CorruptRecord:  # ours went bad: take this copy instead
                    self._mark_corrupt((origin, config_key), st, seq)
                else:
                    if not same:
                        raise ConflictingDuplicate(f"{origin}/{config_key} seq {seq}: different payload already stored")
                    return False
            bad = st.corrupt.get(seq)
            if bad is not None and bad[0] == st.active_segno:
                self._new_segment(st)  # the good copy goes to a newer segment than the bad one
            self._write(st, [(seq, encode_record(seq, payload, self.compress_level))])
            if st.corrupt.pop(seq, None) is not None:
                self._repaired.append((origin, config_key, seq))
            return True

    def flush(self) -> None:
        """Make everything written so far durable: one fdatasync per dirty segment, one
        fsync per directory that gained or lost an entry."""
        with self._lock:
            for fd in list(self._dirty_files):
                os.fdatasync(fd)
                del self._dirty_files[fd]
            # every segment is synced: close the oldest streams' files beyond the bound (peers
            # may send many streams; a closed one is reopened by its next append)
            writing = [st for st in self._streams.values() if st.active_fd is not None]
            for st in writing[: max(0, len(writing) - self.max_open_writers)]:
                self._close_active(st)
            for d in sorted(self._dirty_dirs, key=lambda p: len(p.parts), reverse=True):
                dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            self._dirty_dirs.clear()

    def drop_through(self, origin: str, config_key: str, seq: int) -> int:
        """Raise the stream's retention floor to `seq` (games <= seq are forgotten; the caller
        knows they are durable elsewhere) and delete segments holding nothing above it.
        Durable on return. Returns the number of segment files deleted."""
        with self._lock:
            st = self._stream(origin, config_key, create=True)
            if seq <= st.floor:
                return 0
            # Everything at or below the floor must be synced before the floor says so
            # (the counter must never fall back), then the floor, then the deletions.
            self.flush()
            write_file(st.dir / FLOOR_FILE, f"{seq}\n")
            self._dirty_dirs.add(st.dir)
            st.floor = seq
            before = len(st.segments)
            self._apply_floor(st)
            st.advance()
            self.flush()
            return before - len(st.segments)

    # ------------------------------------------------------------------ reads

    def read(
        self, origin: str, config_key: str, from_seq: int, to_seq: int, limit: int | None = None
    ) -> list[tuple[int, bytes]]:
        """The stored games with from_seq <= seq <= to_seq, in seq order, decompressed
        (missing seqs are skipped; at most `limit` of them). A record that fails its checksum
        is skipped and dropped as corrupt (`take_found`)."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            if st is None or to_seq < from_seq:
                return []
            if to_seq - from_seq < 2 * len(st.index):
                seqs = [s for s in range(from_seq, to_seq + 1) if s in st.index]
            else:
                seqs = sorted(s for s in st.index if from_seq <= s <= to_seq)
            if limit is not None:
                seqs = seqs[:limit]
            out = []
            for s in seqs:
                try:
                    out.append((s, self._read_record(st, s)))
                except CorruptRecord:  # never served: counted, and repaired from a peer
                    self._mark_corrupt((origin, config_key), st, s)
            return out

    def high_water(self, origin: str, config_key: str) -> int:
        """Highest seq such that every game from the floor + 1 up to it is held."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return st.hw if st else 0

    def floor(self, origin: str, config_key: str) -> int:
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return st.floor if st else 0

    def max_seq(self, origin: str, config_key: str) -> int:
        """The highest seq ever used in the stream (stored or dropped)."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return max(st.max_seq, st.floor) if st else 0

    def streams(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return {k: st.hw for k, st in self._streams.items()}

    def has(self, origin: str, config_key: str, seq: int) -> bool:
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return st is not None and seq in st.index

    def missing(self, origin: str, config_key: str, upto: int) -> list[int]:
        """Seqs above the floor and <= upto that are not held (what a replica should pull)."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            lo = (st.hw if st else 0) + 1
            return [s for s in range(lo, upto + 1) if st is None or s not in st.index]

    # ------------------------------------------------------------------ rot

    def segments(self) -> list[SegmentInfo]:
        """Every segment of every stream, in (origin, config_key, segno) order."""
        with self._lock:
            return [
                SegmentInfo(o, k, segno, seg.path, seg.size)
                for (o, k), st in sorted(self._streams.items())
                for segno, seg in sorted(st.segments.items())
            ]

    def verify_segment(self, origin: str, config_key: str, segno: int) -> list[int]:
        """Re-read one segment and check every record indexed in it; returns the seqs found
        corrupt now (dropped: never served, the mark falls below the first)."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            seg = st.segments.get(segno) if st else None
            if st is None or seg is None:
                return []
            try:
                with open(seg.path, "rb") as f:
                    data = f.read(seg.size)
            except OSError as e:
                log.warning("streamlog: cannot read %s: %s", seg.path, e)
                data = b""
            bad = []
            for seq in sorted(seg.seqs):
                sn, off, n = st.index[seq]
                if sn == segno and not record_ok(memoryview(data)[off : off + n], seq):
                    bad.append(seq)
            for seq in bad:
                self._mark_corrupt((origin, config_key), st, seq)
            return bad

    def take_found(self) -> tuple[list[Where], list[Where]]:
        """The corrupt records found, and those a good copy replaced, since the last call."""
        with self._lock:
            found, repaired = self._found, self._repaired
            self._found, self._repaired = [], []
            return found, repaired

    def corrupt(self, origin: str, config_key: str) -> list[int]:
        """Seqs whose copy here is bad and not replaced yet."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return sorted(st.corrupt) if st else []

    def lost(self, origin: str, config_key: str) -> list[int]:
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            return sorted(st.lost) if st else []

    def bad_copy(self, origin: str, config_key: str, seq: int) -> bytes | None:
        """The payload of a corrupt record, if it still decompresses (its metadata may be
        readable even so); None if not."""
        with self._lock:
            st = self._stream(origin, config_key, create=False)
            loc = st.corrupt.get(seq) if st else None
            if st is None or loc is None:
                return None
            try:
                buf = os.pread(self._reader(st.segments[loc[0]].path), loc[2], loc[1])
                return decode_body(HEADER.unpack(buf[:HEADER_SIZE])[1], memoryview(buf)[HEADER_SIZE:])
            except Exception:
                return None

    def mark_lost(self, origin: str, config_key: str, seqs) -> int:
        """Seqs lost on every holder: the mark skips them from now on (durable on return; a
        copy that turns up is still taken). Returns the stream's mark."""
        with self._lock:
            st = self._stream(origin, config_key, create=True)
            new = {int(q) for q in seqs if q > st.floor} - st.lost
            if new:
                st.lost |= new
                st.max_seq = max(st.max_seq, *new)
                write_file(st.dir / LOST_FILE, "".join(f"{q}\n" for q in sorted(st.lost)))
                self._dirty_dirs.add(st.dir)
                self.flush()
                st.advance()
            return st.hw

    # ------------------------------------------------------------------ closing

    def close(self, flush: bool = True) -> None:
        with self._lock:
            if self._closed:
                return
            if flush:
                self.flush()
            for st in self._streams.values():
                self._close_active(st)
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()
            self._dirty_files.clear()
            os.close(self._lock_fd)
            self._closed = True

    def __enter__(self) -> StreamLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
