"""Named files on disk: chunk hashing, recipes, partial files and atomic materialisation.

Layout under the data dir:
    files/<type>/<name>      the version this host holds (complete, verified), unless the
                             config gives the type a directory of its own (`paths:`)
    recipes/<digest>         its chunk digests, 16 bytes each
    installed.msgpack        what ringmesh wrote at each item's path: digest, size, mtime, inode
    tmp/<digest>.part        a version being assembled, chunks written in place
    tmp/<digest>.have        the chunks of it verified so far, 4-byte indices, appended

A pull that stops (a crash, a restart, a failed source) keeps its partial file: the next pull of
the same version re-reads the chunks the `.have` list names, keeps those that still verify, and
fetches only the rest. Nothing is trusted without verification, so the list needs no fsync.

Serving re-checks: `read_verified` hashes every chunk it reads against the recipe, and a file
whose size, mtime or inode differ from what ringmesh wrote there is not served as that version
(`Damaged`). An install over such a changed file moves it aside first (`<name>.changed-<time>`),
so that an operator's or a training job's bytes are never overwritten unseen.

All functions block; the daemon runs them in worker threads.
"""

from __future__ import annotations

import asyncio
import errno
import glob
import mmap
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import msgpack

from ringmesh.core import recipe
from ringmesh.core.catalog import check_item
from ringmesh.core.errors import LocalProtocolError, RemoteProtocolError
from ringmesh.core.messages import FileVersion, ItemKey
from ringmesh.node.files import diskio

READ_BLOCK = 1 << 20
STALE_PARTIAL = 7 * 24 * 3600.0  # partial files untouched this long are removed at start


class BadChunk(RemoteProtocolError):
    """A chunk a peer sent does not match the recipe."""


class Damaged(LocalProtocolError):
    """This host's copy of a version is not that version any more: `kind` "corrupt" (a chunk
    failed verification: `chunk`) or "changed" (the file at its path is not what ringmesh wrote)."""

    def __init__(self, item: ItemKey, digest: str, kind: str, detail: str, chunk: int | None = None) -> None:
        super().__init__(f"{item} {digest[:12]}: {detail}")
        self.item, self.digest, self.kind, self.detail, self.chunk = item, digest, kind, detail, chunk


@dataclass(frozen=True, slots=True)
class Installed:
    """What ringmesh wrote at an item's path, to tell later whether the file is still it."""

    digest: str
    size: int
    mtime_ns: int
    ino: int
    shared: bool = False  # hard-linked from the source `put` named, not yet copied (`unshare`)

    @classmethod
    def of(cls, digest: str, st: os.stat_result, shared: bool = False) -> Installed:
        return cls(digest, st.st_size, st.st_mtime_ns, st.st_ino, shared)

    def differs(self, st: os.stat_result) -> str | None:
        """Why a file with this stat is not what was written; None if it still looks the same."""
        if st.st_size != self.size:
            return f"size {self.size} -> {st.st_size}"
        if st.st_ino != self.ino:
            return "replaced by another file"
        if st.st_mtime_ns != self.mtime_ns:
            return "modified " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime_ns / 1e9))
        return None


@dataclass(frozen=True, slots=True)
class Hashed:
    digest: str
    size: int
    chunk_size: int
    chunk_digests: list[bytes]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


@dataclass(slots=True)
class Partial:
    """A version being assembled: its recipe and the chunks verified so far. The part file
    stays open while the pull runs (`close` when it ends)."""

    v: FileVersion
    digests: list[bytes]
    part: Path
    have_path: Path
    have: set[int] = field(default_factory=set)
    resumed_bytes: int = 0  # verified bytes found on disk when the pull (re)started
    _fd: int = -1
    _direct_fd: int = -1  # the part file opened O_DIRECT, -1 where the file system refuses it
    _have_fd: int = -1
    _aligned: mmap.mmap | None = None  # one chunk's page-aligned buffer for O_DIRECT writes, reused
    _lock: threading.Lock = field(default_factory=threading.Lock)  # one write at a time; `close`

    @property
    def n_chunks(self) -> int:
        return len(self.digests)

    def write(self, index: int, data: bytes) -> None:
        """Verify one received chunk against the recipe, write it in place, record it.

        A chunk at block-aligned offset and length goes to disk with O_DIRECT from a reused
        aligned buffer: no copy into new page-cache pages, which costs more CPU than the whole
        receive on a VM (`bench/RESULTS.md`). Others (a file's tail) are written through the page
        cache, their writeback started at once. `finish`'s fsync makes it all durable."""
        if not 0 <= index < len(self.digests):
            raise RemoteProtocolError(f"chunk index {index} out of range")
        off, length = recipe.chunk_span(index, self.v.size, self.v.chunk_size)
        if len(data) != length or recipe.chunk_digest(data) != self.digests[index]:
            raise BadChunk(f"chunk {index} of {self.v.item} failed verification")
        with self._lock:
            if self._fd < 0:
                self._fd = os.open(self.part, os.O_WRONLY | os.O_CREAT, 0o644)
                self._have_fd = os.open(self.have_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                self._direct_fd = diskio.open_direct(self.part)
            if not (
                length
                and off % diskio.DIRECT_ALIGN == 0
                and length % diskio.DIRECT_ALIGN == 0
                and self._write_direct(data, off)
            ):
                diskio.pwrite_all(self._fd, data, off)
                diskio.start_writeback(self._fd, off, length)
            os.write(self._have_fd, struct.pack("<I", index))
            self.have.add(index)

    def _write_direct(self, data: bytes, off: int) -> bool:
        """False where O_DIRECT is not to be had (then never tried again for this file)."""
        if self._direct_fd < 0:
            return False
        if self._aligned is None or len(self._aligned) < len(data):
            self._aligned = mmap.mmap(-1, max(len(data), self.v.chunk_size))
        view = memoryview(self._aligned)[: len(data)]
        try:
            view[:] = data
            diskio.pwrite_all(self._direct_fd, view, off)
            return True
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: alignment this file system does not take
                raise
            os.close(self._direct_fd)
            self._direct_fd = -1
            return False
        finally:
            view.release()

    async def write_async(self, index: int, data: bytes) -> None:
        await asyncio.to_thread(self.write, index, data)

    def close(self) -> None:
        """Close the files; a write under way in another thread finishes first."""
        with self._lock:
            for fd in (self._fd, self._direct_fd, self._have_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._direct_fd = self._have_fd = -1
            if self._aligned is not None:
                try:
                    self._aligned.close()
                except BufferError:  # a view of it still referenced (a traceback's frame): freed with it
                    pass
                self._aligned = None

    def read(self, index: int) -> bytes:
        """A chunk verified earlier (to serve it to peers pulling the same version)."""
        if index not in self.have:
            raise LocalProtocolError(f"chunk {index} is not verified here yet")
        off, length = recipe.chunk_span(index, self.v.size, self.v.chunk_size)
        with open(self.part, "rb") as f:
            f.seek(off)
            data = f.read(length)
        if len(data) != length or recipe.chunk_digest(data) != self.digests[index]:
            self.have.discard(index)  # fetched again; the `.have` list is re-verified on resume anyway
            raise Damaged(self.v.item, self.v.digest, "corrupt", f"partial chunk {index} failed verification", index)
        return data


class FileStore:
    def __init__(self, data_dir: str | Path, paths: Mapping[str, str | Path] | None = None) -> None:
        self.root = Path(data_dir)
        self.paths = {t: Path(d) for t, d in (paths or {}).items()}
        for d in ("files", "recipes", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for typed_dir in self.paths.values():
            typed_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # installs and records come from several worker threads
        self._recipes: dict[str, list[bytes]] = {}  # digest -> chunk digests, of what we serve
        self._installed = self._load_installed()
        cutoff = time.time() - STALE_PARTIAL
        for stale in (self.root / "tmp").iterdir():
            if stale.name.startswith("import-") or stale.stat().st_mtime < cutoff:
                stale.unlink(missing_ok=True)  # an interrupted import, or a pull nobody resumed

    def path_of(self, item: ItemKey) -> Path:
        """Where `item` lives: the directory its type is configured to (`paths:`), else
        `files/<type>/` in the data dir."""
        check_item(item)
        if item.type in self.paths:
            return self.paths[item.type] / item.name
        return self.root / "files" / item.type / item.name

    def part_path(self, digest: str) -> Path:
        return self.root / "tmp" / f"{_check_digest(digest)}.part"

    def have_path(self, digest: str) -> Path:
        return self.root / "tmp" / f"{_check_digest(digest)}.have"

    # -- recipes ---------------------------------------------------------------------------

    def save_recipe(self, digest: str, chunk_digests: list[bytes]) -> None:
        tmp = self.root / "recipes" / f".{_check_digest(digest)}.tmp"
        tmp.write_bytes(b"".join(chunk_digests))
        os.replace(tmp, self.root / "recipes" / digest)

    def load_recipe(self, digest: str) -> list[bytes] | None:
        try:
            raw = (self.root / "recipes" / _check_digest(digest)).read_bytes()
        except FileNotFoundError:
            return None
        n = recipe.DIGEST_BYTES
        return [raw[i : i + n] for i in range(0, len(raw), n)]

    # -- publishing a local file -----------------------------------------------------------

    def import_file(
        self, source: str | Path, item: ItemKey, base_chunk: int = recipe.DEFAULT_CHUNK, link: bool = False
    ) -> Hashed:
        """Take `source` into the store as `item`; atomic. Where the file system can clone
        (reflink: btrfs, XFS), the copy is a clone and only hashed; otherwise the bytes are copied
        and hashed on the way. With `link` (same file system), the source is hard-linked and
        hashed, one read at page-cache speed: the store's name shares the source's inode until
        `unshare` gives it a copy of its own (the daemon starts that at once; a write to the
        source meanwhile is a change behind our back, seen and never served)."""
        dest = self.path_of(item)
        src = Path(source)
        if not src.is_file():
            raise LocalProtocolError(f"{src}: not a regular file")
        size = src.stat().st_size
        cs = recipe.chunk_size_for(size, base_chunk)
        tmp = import_part(self.root, item, os.getpid())
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        shared = link and os.stat(src).st_dev == os.stat(tmp.parent).st_dev == os.stat(dest.parent).st_dev
        if shared:
            try:
                os.link(src, tmp)
            except OSError:  # no hard links here (EPERM, EMLINK, some FUSE file systems): copy
                shared = False
        if shared or _clone(src, tmp):
            with open(tmp, "rb") as f:
                before = os.fstat(f.fileno())
                digests = [recipe.chunk_digest(c) for c in _chunks(f, cs)]
                os.fsync(f.fileno())  # acknowledged means on disk, as for a copy
                if before.st_size != size or Installed.of("", before) != Installed.of("", os.fstat(f.fileno())):
                    tmp.unlink()
                    raise LocalProtocolError(f"{src}: changed while it was read; put it again once it is written")
        else:
            digests = []
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                for chunk in _chunks(fin, cs):
                    digests.append(recipe.chunk_digest(chunk))
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
        hashed = Hashed(recipe.file_digest(digests), size, cs, digests)
        self.save_recipe(hashed.digest, digests)
        self._install(tmp, dest, item, hashed.digest, shared=shared)
        return hashed

    def unshare(self, item: ItemKey, digest: str, chunk_size: int) -> bool:
        """Give a version imported by hard link a copy of its own, verified chunk by chunk as it
        is copied, so that later writes to the source stay the source's. False if there was
        nothing to do; `Damaged` if the shared file is no longer the version."""
        rec = self._installed.get(str(item))
        if rec is None or rec.digest != digest or not rec.shared:
            return False
        dest = self.path_of(item)
        digests = self._recipes.get(digest) or self.load_recipe(digest) or []
        tmp = self.root / "tmp" / f"unshare-{digest}.part"
        try:
            with open(dest, "rb") as fin, open(tmp, "wb") as fout:
                if why := rec.differs(os.fstat(fin.fileno())):
                    raise Damaged(
                        item, digest, "changed", f"{dest}: {why} (its source was changed before it was copied)"
                    )
                for i, chunk in enumerate(_chunks(fin, chunk_size)):
                    if i >= len(digests) or recipe.chunk_digest(chunk) != digests[i]:
                        raise Damaged(item, digest, "corrupt", f"chunk {i} failed verification while copied", chunk=i)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
                st = os.fstat(fout.fileno())
                if why := rec.differs(os.fstat(fin.fileno())):
                    raise Damaged(item, digest, "changed", f"{dest}: {why} (its source changed while it was copied)")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        with self._lock:
            if self._installed.get(str(item)) != rec:  # a newer version went in meanwhile
                tmp.unlink()
                return False
            os.replace(tmp, dest)
            _fsync_dir(dest.parent)
            self._record(item, Installed.of(digest, st))
        return True

    def shared(self) -> list[tuple[ItemKey, str]]:
        """Versions whose file still shares its inode with the source it was put from."""
        return [(_item(k), r.digest) for k, r in self._installed.items() if r.shared]

    # -- serving ---------------------------------------------------------------------------

    def read_chunk(self, item: ItemKey, index: int, size: int, chunk_size: int) -> bytes:
        off, length = recipe.chunk_span(index, size, chunk_size)
        with open(self.path_of(item), "rb") as f:
            f.seek(off)
            return f.read(length)

    def read_verified(self, item: ItemKey, digest: str, index: int, size: int, chunk_size: int) -> bytes:
        """A chunk of the version held at `item`'s path, checked before it leaves: the file must
        still be what ringmesh wrote there, and the chunk must match the recipe (`Damaged`)."""
        digests = self._recipes.get(digest) or self.load_recipe(digest)
        if digests is None or not 0 <= index < len(digests):
            raise Damaged(item, digest, "corrupt", "its recipe is missing")
        self._recipes[digest] = digests
        off, length = recipe.chunk_span(index, size, chunk_size)
        path = self.path_of(item)
        for again in (True, False):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                raise Damaged(item, digest, "changed", f"{path}: removed") from None
            with f:
                rec = self._installed.get(str(item))
                if rec is not None and rec.digest == digest and (why := rec.differs(os.fstat(f.fileno()))):
                    if again and rec.differs(os.stat(path)) is None:
                        continue  # our own copy replaced it while it was opened (`unshare`)
                    raise Damaged(item, digest, "changed", f"{path}: {why}")
                data = os.pread(f.fileno(), length, off)
                break
        if len(data) != length or recipe.chunk_digest(data) != digests[index]:
            raise Damaged(item, digest, "corrupt", f"chunk {index} failed verification", chunk=index)
        return data

    def hash_in_place(self, item: ItemKey, base_chunk: int = recipe.DEFAULT_CHUNK) -> Hashed:
        """Take the file now at `item`'s path as a new version (`changed_files: adopt`): hash it
        where it is, save its recipe, record it. A file that changes while it is read is refused."""
        path = self.path_of(item)
        with open(path, "rb") as f:
            before = os.fstat(f.fileno())
            cs = recipe.chunk_size_for(before.st_size, base_chunk)
            digests = [recipe.chunk_digest(c) for c in _chunks(f, cs)]
            after = os.fstat(f.fileno())
        if Installed.of("", before) != Installed.of("", after) or os.stat(path).st_ino != before.st_ino:
            raise LocalProtocolError(f"{path}: changed while it was read; not adopted yet")
        hashed = Hashed(recipe.file_digest(digests), before.st_size, cs, digests)
        self.save_recipe(hashed.digest, digests)
        self.record(item, hashed.digest, before)
        return hashed

    # -- what ringmesh wrote where -------------------------------------------------------

    def _load_installed(self) -> dict[str, Installed]:
        try:
            raw = msgpack.unpackb((self.root / "installed.msgpack").read_bytes())
            return {k: Installed(*v) for k, v in raw.items()}
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, msgpack.UnpackException) as e:  # rotten: every file is re-learnt
            raise LocalProtocolError(f"{self.root / 'installed.msgpack'}: unreadable ({e}); remove it") from e

    def installed(self, item: ItemKey) -> Installed | None:
        return self._installed.get(str(item))

    def record(self, item: ItemKey, digest: str, st: os.stat_result | None = None, shared: bool = False) -> None:
        """Remember the file now at `item`'s path as ringmesh's copy of `digest` (persisted)."""
        rec = Installed.of(digest, st or os.stat(self.path_of(item)), shared)
        with self._lock:
            self._record(item, rec)

    def _record(self, item: ItemKey, rec: Installed) -> None:
        self._installed[str(item)] = rec
        blob = msgpack.packb({k: [v.digest, v.size, v.mtime_ns, v.ino, v.shared] for k, v in self._installed.items()})
        tmp = self.root / ".installed.msgpack.tmp"
        tmp.write_bytes(blob)
        os.replace(tmp, self.root / "installed.msgpack")

    def changed(self, item: ItemKey, digest: str) -> str | None:
        """Why the file at `item`'s path is not ringmesh's copy of `digest` any more, or None.
        A file ringmesh has no record of (written before records were kept) is recorded now."""
        path = self.path_of(item)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path}: removed"
        rec = self._installed.get(str(item))
        if rec is None or rec.digest != digest:
            self.record(item, digest, st)
            return None
        why = rec.differs(st)
        return f"{path}: {why}" if why else None

    # -- assembling a transfer -------------------------------------------------------------

    def open_partial(self, v: FileVersion, chunk_digests: list[bytes]) -> Partial:
        """Start or resume assembling `v`: the chunks a previous pull verified and that still
        verify on disk are kept; the list of them is rewritten to exactly those."""
        self.save_recipe(v.digest, chunk_digests)
        p = Partial(v, chunk_digests, self.part_path(v.digest), self.have_path(v.digest))
        try:
            raw = p.have_path.read_bytes()
        except FileNotFoundError:
            raw = b""
        claimed = {i for (i,) in struct.iter_unpack("<I", raw[: len(raw) // 4 * 4])}
        if claimed and p.part.exists():
            with open(p.part, "rb") as f:
                for i in sorted(claimed):
                    if i >= len(chunk_digests):
                        continue
                    off, length = recipe.chunk_span(i, v.size, v.chunk_size)
                    f.seek(off)
                    data = f.read(length)
                    if len(data) == length and recipe.chunk_digest(data) == chunk_digests[i]:
                        p.have.add(i)
                        p.resumed_bytes += length
        tmp = p.have_path.with_suffix(".have.tmp")
        tmp.write_bytes(b"".join(struct.pack("<I", i) for i in sorted(p.have)))
        os.replace(tmp, p.have_path)
        return p

    def finish(self, p: Partial) -> Path:
        """fsync the assembled file and rename it into place; the version it replaces stays
        readable until the rename. The file is not read again: every chunk was verified against
        the recipe before it was written, and the recipe against the version's digest (the file
        digest is a function of the chunk digests), so the whole is checked by the recipe. The
        fsync comes before the rename, so a crash leaves either the old file or the whole new one."""
        if len(p.have) != p.n_chunks:
            raise LocalProtocolError(f"{p.v.item}: {p.n_chunks - len(p.have)} chunk(s) still missing")
        recipe.check_recipe(p.v.digest, p.v.size, p.v.chunk_size, p.digests)
        p.close()
        fd = os.open(p.part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size != p.v.size:
                os.ftruncate(fd, p.v.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        dest = self.path_of(p.v.item)
        self._install(p.part, dest, p.v.item, p.v.digest)
        p.have_path.unlink(missing_ok=True)
        return dest

    def discard(self, digest: str) -> None:
        self.part_path(digest).unlink(missing_ok=True)
        self.have_path(digest).unlink(missing_ok=True)

    def partials(self) -> list[str]:
        """Digests of the versions with a partial file here."""
        return sorted(f.stem for f in (self.root / "tmp").glob("*.part") if len(f.stem) == 32)

    def _install(self, tmp: Path, dest: Path, item: ItemKey, digest: str, shared: bool = False) -> None:
        """Rename `tmp` over `dest`, atomically, and record it. A destination on another file
        system gets a copy beside it first (fsynced), so the rename there is atomic too. A file
        at `dest` that is not what ringmesh last wrote there is moved aside, never overwritten."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.keep_aside(item, dest)
        if os.stat(tmp).st_dev != os.stat(dest.parent).st_dev:
            staged = dest.parent / f".{dest.name}.ringmesh-tmp"
            try:
                with open(tmp, "rb") as fin, open(staged, "wb") as fout:
                    while block := fin.read(READ_BLOCK * 8):
                        fout.write(block)
                    fout.flush()
                    os.fsync(fout.fileno())
            except BaseException:
                staged.unlink(missing_ok=True)
                raise
            os.unlink(tmp)
            tmp = staged
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)
        self.record(item, digest, shared=shared)

    def keep_aside(self, item: ItemKey, dest: Path) -> Path | None:
        """Move a changed file at `dest` (not what ringmesh wrote there) to
        `<name>.changed-<unix time>` beside it; returns where it went, None if nothing moved."""
        rec = self._installed.get(str(item))
        try:
            st = os.stat(dest)
        except FileNotFoundError:
            return None
        if rec is None or rec.differs(st) is None:
            return None
        aside = dest.with_name(f"{dest.name}.changed-{int(time.time())}")
        os.rename(dest, aside)
        return aside


FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def _clone(src: Path, dest: Path) -> bool:
    """Make `dest` a copy-on-write clone of `src` (reflink); False where the file system cannot."""
    import fcntl

    try:
        with open(src, "rb") as fin, open(dest, "xb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
            except OSError:
                ok = False
            else:
                ok = True
    except OSError:
        ok = False
    if not ok:
        dest.unlink(missing_ok=True)
    return ok


def _item(key: str) -> ItemKey:
    kind, _, name = key.partition("/")
    return ItemKey(kind, name)


def _check_digest(digest: str) -> str:
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise RemoteProtocolError(f"bad digest {digest[:40]!r}")
    return digest


def import_part(data_dir: str | Path, item: ItemKey, pid: int | str = "*") -> Path:
    """The temporary file an import of `item` is copied and hashed into (pid "*": a glob for
    any daemon's), which grows as the import goes: what `ringmesh put` shows progress of."""
    return Path(data_dir) / "tmp" / f"import-{pid}-{item.type}-{item.name}.part"


def import_progress(data_dir: str | Path, item: ItemKey) -> int | None:
    """Bytes an import of `item` under way has copied and hashed so far; None if none is seen."""
    tmp = Path(data_dir) / "tmp"
    sizes = []
    for p in tmp.glob(f"import-*-{glob.escape(item.type)}-{glob.escape(item.name)}.part"):
        try:
            sizes.append(p.stat().st_size)
        except OSError:
            pass
    return max(sizes) if sizes else None


def hash_file(path: str | os.PathLike, chunk_size: int) -> str:
    """The ringmesh digest of a file on disk (used to verify copies)."""
    with open(path, "rb") as f:
        return recipe.file_digest([recipe.chunk_digest(c) for c in _chunks(f, chunk_size)])


def _chunks(f, chunk_size: int):
    """The file's chunks; an empty file is one empty chunk."""
    chunk = f.read(chunk_size)
    yield chunk
    while len(chunk) == chunk_size:
        chunk = f.read(chunk_size)
        if not chunk:
            return
        yield chunk
