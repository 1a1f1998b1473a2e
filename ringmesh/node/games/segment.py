"""A stream's files for the stream log (`streamlog.py`): the record format, segments, the
`floor` and `lost` files, and opening them (the scan that cuts torn tails and skips rot).

A segment is a plain concatenation of records; a record is a 28-byte little-endian header
followed by its body::

    offset size  field
    0      4     magic  b"RMG1"
    4      1     codec  0 = raw, 1 = zlib, 2 = zstd (read only if `zstandard` is importable)
    5      3     zero padding
    8      4     length of the body in bytes (u32)
    12     8     seq (u64, >= 1)
    20     8     checksum: xxh3-64 of header bytes [4:20] + body (u64)
    28     len   body: the payload (msgpack game record) compressed with `codec`
"""

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import xxhash

try:  # optional; the stdlib zlib is what we write
    import zstandard as _zstd
except ImportError:  # pragma: no cover - depends on the environment
    _zstd = None

log = logging.getLogger("ringmesh.node.games.streamlog")

MAGIC = b"RMG1"
HEADER = struct.Struct("<4sB3xIQQ")
HEADER_SIZE = HEADER.size  # 28
CODEC_RAW, CODEC_ZLIB, CODEC_ZSTD = 0, 1, 2
MAX_BODY = (1 << 31) - 1
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SEG_RE = re.compile(r"([0-9]{10})\.seg")
FLOOR_FILE = "floor"
LOST_FILE = "lost"
Loc = tuple[int, int, int]  # (segno, offset, total length) of a record


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


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file of a stream (what a scrubber walks)."""

    origin: str
    config_key: str
    segno: int
    path: Path
    size: int


def check_name(name: str) -> str:
    if not isinstance(name, str) or NAME_RE.fullmatch(name) is None:
        raise BadName(f"invalid stream name component: {name!r}")
    return name


def checksum(head: bytes, body: bytes | memoryview) -> int:
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
    return HEADER.pack(MAGIC, codec, len(body), seq, checksum(head, body)) + body


def decode_body(codec: int, body: bytes | memoryview) -> bytes:
    if codec == CODEC_RAW:
        return bytes(body)
    if codec == CODEC_ZLIB:
        return zlib.decompress(body)
    if codec == CODEC_ZSTD and _zstd is not None:
        return _zstd.ZstdDecompressor().decompress(body)
    raise CorruptRecord(f"unknown or unsupported codec {codec}")


def record_ok(buf: bytes | memoryview, seq: int | None = None) -> bool:
    """Whether `buf` is exactly one whole record (of `seq`, if given) whose checksum verifies."""
    if len(buf) < HEADER_SIZE:
        return False
    head = bytes(buf[:HEADER_SIZE])
    magic, codec, length, rseq, csum = HEADER.unpack(head)
    if magic != MAGIC or rseq < 1 or codec > CODEC_ZSTD or length != len(buf) - HEADER_SIZE:
        return False
    return (seq is None or rseq == seq) and checksum(head, memoryview(buf)[HEADER_SIZE:]) == csum


def decode_record(buf: bytes, seq: int, where: str) -> bytes:
    """The payload of the whole record `buf` of `seq`; CorruptRecord if it does not verify."""
    if not record_ok(buf, seq):
        raise CorruptRecord(f"{where}: bad record for seq {seq}")
    try:
        return decode_body(HEADER.unpack(buf[:HEADER_SIZE])[1], memoryview(buf)[HEADER_SIZE:])
    except zlib.error as e:
        raise CorruptRecord(f"{where}: seq {seq}: {e}") from e


def good_record_follows(data: bytes, off: int) -> bool:
    """Whether a whole record that verifies starts at `off` of `data` (a segment read whole) or
    after well-formed records that do not: then what lies at `off` is rot, not a torn tail."""
    while len(data) - off >= HEADER_SIZE:
        magic, codec, length, seq, _ = HEADER.unpack_from(data, off)
        end = off + HEADER_SIZE + length
        if magic != MAGIC or seq < 1 or codec > CODEC_ZSTD or end > len(data):
            return False
        if record_ok(memoryview(data)[off:end]):
            return True
        off = end
    return False


@dataclass
class Segment:
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
class Stream:
    """One stream's state in memory: its segments, which record holds each seq, its mark."""

    dir: Path
    floor: int = 0
    hw: int = 0
    max_seq: int = 0
    index: dict[int, Loc] = field(default_factory=dict)  # seq -> where its good copy is
    segments: dict[int, Segment] = field(default_factory=dict)  # segno -> segment
    active_fd: int | None = None
    active_segno: int = 0
    corrupt: dict[int, Loc] = field(default_factory=dict)  # seq -> its bad copy, until a good one
    lost: set[int] = field(default_factory=set)  # seqs lost on every holder: the mark skips them

    def advance(self) -> None:
        if self.hw < self.floor:
            self.hw = self.floor
        while self.hw + 1 in self.index or self.hw + 1 in self.lost:
            self.hw += 1

    def lower(self, seq: int) -> None:
        """`seq` is not held (any more): the mark falls below it."""
        self.hw = min(self.hw, seq - 1)
        self.advance()

    def loc_ok(self, loc: Loc, seq: int) -> bool:
        """Whether the record at `loc` verifies (read afresh: for duplicates while opening)."""
        segno, off, n = loc
        try:
            with open(self.segments[segno].path, "rb") as f:
                f.seek(off)
                return record_ok(f.read(n), seq)
        except OSError:
            return False


def load_stream(d: Path, verify_all: bool, recovered: list[Recovery]) -> Stream:
    """Scan a stream's directory (the floor is not applied yet; `max_seq`, `hw` unset)."""
    st = Stream(dir=d)
    st.lost = read_lost(d / LOST_FILE)
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
        seg = Segment(segno, d / f"{segno:010d}.seg")
        st.segments[segno] = seg
        rec = _scan_segment(st, seg, verify=verify_all or last, sealed=not last)
        if rec is not None:
            recovered.append(rec)
    st.active_segno = segnos[-1] if segnos else 0
    return st


def _scan_segment(st: Stream, seg: Segment, verify: bool, sealed: bool) -> Recovery | None:
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
            loc = (seg.segno, off, end - off)
            if data is not None and checksum(head, memoryview(data)[off + HEADER_SIZE : end]) != csum:
                if not (sealed or good_record_follows(data, end)):
                    reason = "bad checksum"  # torn (or rot of the newest record): cut
                    break
                if seq not in st.index:  # rot, not a torn tail: skip the record, keep what follows
                    st.corrupt.setdefault(seq, loc)
            elif seq not in st.index:
                st.index[seq] = loc
                seg.add(seq)
                st.corrupt.pop(seq, None)
            elif not st.loc_ok(st.index[seq], seq) and (data is not None or st.loc_ok(loc, seq)):
                log.warning("streamlog: %s holds seq %d twice; keeping the second (the first is bad)", st.dir, seq)
                st.segments[st.index[seq][0]].seqs.discard(seq)
                st.index[seq] = loc
                seg.add(seq)
            else:
                log.warning("streamlog: %s holds seq %d twice; keeping the first", st.dir, seq)
            off = end
    seg.size = off
    if off >= fsize:
        return None
    fd = os.open(seg.path, os.O_RDWR)
    try:
        os.ftruncate(fd, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    log.warning("streamlog: truncated %s at %d (%d bytes dropped: %s)", seg.path, off, fsize - off, reason)
    return Recovery(str(seg.path), off, fsize - off, reason)


def read_lost(path: Path) -> set[int]:
    """The seqs a `lost` file lists (none if it is missing or unreadable: then the stream
    waits at the hole until the core says it is lost again)."""
    try:
        return {int(line) for line in path.read_text().split() if line.isdigit() and int(line) > 0}
    except (OSError, ValueError):
        return set()


def write_file(path: Path, text: str) -> None:
    """Replace `path` by `text` atomically, synced (the caller syncs the directory)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
