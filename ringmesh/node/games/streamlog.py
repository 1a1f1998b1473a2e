"""The per-stream append-only game log (DESIGN.md, "Game streams").

A stream is ``(origin, config_key)``; its games are numbered ``seq = 1, 2, 3, ...`` by the
origin and never renumbered.  Blocking code: the daemon calls it from one worker thread (a
lock makes concurrent calls safe anyway, but nothing here is meant to be fast under
contention).

On disk::

    <root>/<origin>/<config_key>/<segno:010d>.seg   segment files, segno = 1, 2, 3, ...
    <root>/<origin>/<config_key>/floor              retention floor (decimal text), optional

A segment is a plain concatenation of records; the highest-numbered segment of a stream is
the active one, the others are sealed.  A record is a 28-byte little-endian header followed
by its body::

    offset size  field
    0      4     magic  b"RMG1"
    4      1     codec  0 = raw, 1 = zlib, 2 = zstd (read only if `zstandard` is importable)
    5      3     zero padding
    8      4     length of the body in bytes (u32)
    12     8     seq (u64, >= 1)
    20     8     checksum: xxh3-64 of header bytes [4:20] + body (u64)
    28     len   body: the payload (msgpack game record) compressed with `codec`

Records in a segment need not be in seq order (replicas receive games out of order).

Durability: `append`/`append_at` only write (page cache); `flush()` fdatasyncs each dirty
segment once and fsyncs each directory that gained an entry, so a caller appends many games
and acknowledges them all after one `flush()` (group commit).  Before a new segment is
created the previous one is synced, so a sealed segment is always complete and only the
unsynced part of the newest segment can be torn.  On open every segment is walked; at the
first record that is incomplete, has a bad magic/length or (in the active segment, or
everywhere with ``verify_all=True``) a bad checksum, the file is truncated and the loss is
reported in `StreamLog.recovered`.  Flushed records are never behind such a point, because a
flushed segment's synced bytes are a prefix of it.

The next seq of a stream is ``max(highest seq stored, floor) + 1``: the counter is persisted
with the games themselves, and the floor file keeps it after retention deleted them.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import xxhash

try:  # optional; the stdlib zlib is what we write
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

log = logging.getLogger(__name__)

MAGIC = b"RMG1"
HEADER = struct.Struct("<4sB3xIQQ")
HEADER_SIZE = HEADER.size  # 28
CODEC_RAW, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
MAX_BODY = (1 << 31) - 1
DEFAULT_SEGMENT_BYTES = 64 << 20
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SEG_RE = re.compile(r"([0-9]{10})\.seg")
FLOOR_FILE = "floor"


class StreamLogError(Exception):
    pass


class BadName(StreamLogError, ValueError):
    pass


class ConflictingDuplicate(StreamLogError):
    """`append_at` got a seq already stored with a different payload."""


class CorruptRecord(StreamLogError):
    """A stored record failed its checksum when read."""


@dataclass(frozen=True)
class Recovery:
    """A torn or damaged tail cut off a segment while opening."""

    path: str
    offset: int  # the file now ends here
    dropped_bytes: int
    reason: str


def check_name(name: str) -> str:
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise BadName(f"invalid stream name component: {name!r}")
    return name


def _checksum(head: bytes, body: bytes | memoryview) -> int:
    h = xxhash.xxh3_64()
    h.update(head[4:20])
    h.update(body)
    return h.intdigest()


def encode_record(seq: int, payload: bytes, level: int | None = 1) -> bytes:
    """One on-disk record for `payload`: zlib-compressed at `level` unless that does not
    help or `level` is None (stored raw)."""
    body, codec = payload, CODEC_RAW
    if level is not None:
        body, codec = zlib.compress(payload, level), CODEC_ZLIB
    if len(body) >= len(payload):
        body, codec = bytes(payload), CODEC_RAW
    if len(body) > MAX_BODY:
        raise StreamLogError(f"record too large: {len(body)} bytes")
    head = HEADER.pack(MAGIC, codec, len(body), seq, 0)
    return HEADER.pack(MAGIC, codec, len(body), seq, _checksum(head, body)) + body


def _decode_body(codec: int, body: bytes | memoryview) -> bytes:
    if codec == CODEC_RAW:
        return bytes(body)
    if codec == CODEC_ZLIB:
        return zlib.decompress(body)
    if codec == CODEC_ZSTD and _zstd is not None:
        return _zstd.ZstdDecompressor().decompress(body)
    raise CorruptRecord(f"unknown or unsupported codec {codec}")


@dataclass
class _Segment:
    segno: int
    path: Path
    size: int = 0
    seqs: set[int] = field(default_factory=set)
    lo: int = 0  # lowest seq held (0: none)

    def add(self, seq: int) -> None:
        self.seqs.add(seq)
        if not self.lo or seq < self.lo:
            self.lo = seq


@dataclass
class _Stream:
    dir: Path
    floor: int = 0
    hw: int = 0
    max_seq: int = 0
    index: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # seq -> (segno, off, total len)
    segments: dict[int, _Segment] = field(default_factory=dict)  # segno -> segment
    active_fd: int | None = None
    active_segno: int = 0

    def advance(self) -> None:
        if self.hw < self.floor:
            self.hw = self.floor
        while self.hw + 1 in self.index:
            self.hw += 1


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
        self._lock = threading.RLock()
        self._streams: dict[tuple[str, str], _Stream] = {}
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
                self._streams[(odir.name, cdir.name)] = self._load_stream(cdir, verify_all)

    def _load_stream(self, d: Path, verify_all: bool) -> _Stream:
        st = _Stream(dir=d)
        fp = d / FLOOR_FILE
        if fp.exists():
            try:
                st.floor = int(fp.read_text().strip() or 0)
            except ValueError:  # written by rename, so only real damage gets here; guessing
                # 0 could hand out seqs again, so refuse to open instead.
                raise StreamLogError(f"unreadable retention floor {fp}") from None
        segnos = sorted(int(m.group(1)) for p in d.iterdir() if (m := SEG_RE.fullmatch(p.name)))
        for i, segno in enumerate(segnos):
            last = i == len(segnos) - 1
            seg = _Segment(segno, d / f"{segno:010d}.seg")
            self._scan_segment(st, seg, verify=verify_all or last)
            st.segments[segno] = seg
        st.active_segno = segnos[-1] if segnos else 0
        self._apply_floor(st)
        st.max_seq = max(st.index, default=0)
        st.advance()
        return st

    def _scan_segment(self, st: _Stream, seg: _Segment, verify: bool) -> None:
        with open(seg.path, "rb") as f:
            data = f.read() if verify else None
            fsize = os.fstat(f.fileno()).st_size
            off, reason = 0, ""
            while off < fsize:
                if fsize - off < HEADER_SIZE:
                    reason = "partial header"
                    break
                if data is not None:
                    head = data[off : off + HEADER_SIZE]
                else:
                    f.seek(off)
                    head = f.read(HEADER_SIZE)
                magic, codec, length, seq, csum = HEADER.unpack(head)
                if magic != MAGIC or seq < 1 or codec > CODEC_ZSTD:
                    reason = "bad header"
                    break
                end = off + HEADER_SIZE + length
                if end > fsize:
                    reason = "partial record"
                    break
                if data is not None and _checksum(head, memoryview(data)[off + HEADER_SIZE : end]) != csum:
                    reason = "bad checksum"
                    break
                if seq not in st.index:
                    st.index[seq] = (seg.segno, off, end - off)
                    seg.add(seq)
                else:
                    log.warning("streamlog: %s holds seq %d twice; keeping the first", st.dir, seq)
                off = end
        seg.size = off
        if off < fsize:
            fd = os.open(seg.path, os.O_RDWR)
            try:
                os.ftruncate(fd, off)
                os.fsync(fd)
            finally:
                os.close(fd)
            rec = Recovery(str(seg.path), off, fsize - off, reason)
            self.recovered.append(rec)
            log.warning("streamlog: truncated %s at %d (%d bytes dropped: %s)", seg.path, off, fsize - off, reason)

    # ------------------------------------------------------------------ helpers

    @overload
    def _stream(self, origin: str, config_key: str, create: Literal[True]) -> _Stream: ...
    @overload
    def _stream(self, origin: str, config_key: str, create: Literal[False]) -> _Stream | None: ...
    def _stream(self, origin: str, config_key: str, create: bool) -> _Stream | None:
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
            st = self._streams[key] = _Stream(dir=d)
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

    def _read_record(self, st: _Stream, seq: int) -> bytes:
        segno, off, n = st.index[seq]
        path = st.segments[segno].path
        buf = os.pread(self._reader(path), n, off)
        if len(buf) != n:
            raise CorruptRecord(f"{path}: short read of seq {seq}")
        head = buf[:HEADER_SIZE]
        magic, codec, length, rseq, csum = HEADER.unpack(head)
        if magic != MAGIC or rseq != seq or length != n - HEADER_SIZE:
            raise CorruptRecord(f"{path}: bad header for seq {seq} at {off}")
        body = memoryview(buf)[HEADER_SIZE:]
        if _checksum(head, body) != csum:
            raise CorruptRecord(f"{path}: bad checksum for seq {seq} at {off}")
        try:
            return _decode_body(codec, body)
        except zlib.error as e:
            raise CorruptRecord(f"{path}: seq {seq}: {e}") from e

    def _sync_active(self, st: _Stream) -> None:
        if st.active_fd is not None and st.active_fd in self._dirty_files:
            os.fdatasync(st.active_fd)
            del self._dirty_files[st.active_fd]

    def _close_active(self, st: _Stream) -> None:
        if st.active_fd is not None:
            self._dirty_files.pop(st.active_fd, None)
            os.close(st.active_fd)
            st.active_fd = None

    def _new_segment(self, st: _Stream) -> _Segment:
        # The previous segment must be complete on disk before a later one can exist.
        self._sync_active(st)
        self._close_active(st)
        segno = max(st.segments, default=0) + 1
        seg = _Segment(segno, st.dir / f"{segno:010d}.seg")
        st.active_fd = os.open(seg.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        st.segments[segno] = seg
        st.active_segno = segno
        self._dirty_dirs.add(st.dir)
        return seg

    def _active_for(self, st: _Stream, nbytes: int) -> _Segment:
        seg = st.segments.get(st.active_segno)
        if seg is None or (seg.size > 0 and seg.size + nbytes > self.segment_bytes):
            return self._new_segment(st)
        if st.active_fd is None:
            st.active_fd = os.open(seg.path, os.O_WRONLY)
        return seg

    def _write(self, st: _Stream, records: list[tuple[int, bytes]]) -> None:
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

    def _apply_floor(self, st: _Stream) -> None:
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
                if self._read_record(st, seq) != payload:
                    raise ConflictingDuplicate(f"{origin}/{config_key} seq {seq}: different payload already stored")
                return False
            self._write(st, [(seq, encode_record(seq, payload, self.compress_level))])
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
            tmp = st.dir / (FLOOR_FILE + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, f"{seq}\n".encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, st.dir / FLOOR_FILE)
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
        (missing seqs are skipped; at most `limit` of them)."""
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
            return [(s, self._read_record(st, s)) for s in seqs]

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
