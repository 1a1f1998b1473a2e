"""Named files on disk: chunk hashing, recipes, partial files and atomic materialisation.

Layout under the data dir:
    files/<type>/<name>      the version this host holds (complete, verified)
    recipes/<digest>         its chunk digests, 16 bytes each
    tmp/<digest>.part        a version being assembled

All functions block; the daemon runs them in worker threads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .core import recipe
from .core.catalog import check_item
from .core.errors import LocalProtocolError, RemoteProtocolError
from .core.messages import FileVersion, ItemKey

READ_BLOCK = 1 << 20


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


class FileStore:
    def __init__(self, data_dir: str | Path) -> None:
        self.root = Path(data_dir)
        for d in ("files", "recipes", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        for stale in (self.root / "tmp").glob("*.part"):
            stale.unlink()  # resuming partial transfers comes with the swarm engine

    def path_of(self, item: ItemKey) -> Path:
        check_item(item)
        return self.root / "files" / item.type / item.name

    def part_path(self, digest: str) -> Path:
        return self.root / "tmp" / f"{_check_digest(digest)}.part"

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

    def import_file(self, source: str | Path, item: ItemKey, base_chunk: int = recipe.DEFAULT_CHUNK) -> Hashed:
        """Copy `source` into the store as `item`, hashing it on the way; atomic."""
        dest = self.path_of(item)
        src = Path(source)
        if not src.is_file():
            raise LocalProtocolError(f"{src}: not a regular file")
        size = src.stat().st_size
        cs = recipe.chunk_size_for(size, base_chunk)
        digests: list[bytes] = []
        tmp = self.root / "tmp" / f"import-{os.getpid()}-{item.type}-{item.name}.part"
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            for chunk in _chunks(fin, cs):
                digests.append(recipe.chunk_digest(chunk))
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        hashed = Hashed(recipe.file_digest(digests), size, cs, digests)
        self.save_recipe(hashed.digest, digests)
        self._install(tmp, dest)
        return hashed

    # -- serving ---------------------------------------------------------------------------

    def read_chunk(self, item: ItemKey, index: int, size: int, chunk_size: int) -> bytes:
        off, length = recipe.chunk_span(index, size, chunk_size)
        with open(self.path_of(item), "rb") as f:
            f.seek(off)
            return f.read(length)

    # -- assembling a transfer -------------------------------------------------------------

    def write_chunk(self, v: FileVersion, chunk_digests: list[bytes], index: int, data: bytes) -> None:
        """Verify one received chunk against the recipe and write it into the partial file."""
        if not 0 <= index < len(chunk_digests):
            raise RemoteProtocolError(f"chunk index {index} out of range")
        off, length = recipe.chunk_span(index, v.size, v.chunk_size)
        if len(data) != length or recipe.chunk_digest(data) != chunk_digests[index]:
            raise RemoteProtocolError(f"chunk {index} of {v.item} failed verification")
        fd = os.open(self.part_path(v.digest), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data, off)
        finally:
            os.close(fd)

    def finish(self, v: FileVersion, chunk_digests: list[bytes]) -> Path:
        """fsync the assembled file, keep its recipe, and rename it into place."""
        part = self.part_path(v.digest)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.ftruncate(fd, v.size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.save_recipe(v.digest, chunk_digests)
        dest = self.path_of(v.item)
        self._install(part, dest)
        return dest

    def discard(self, digest: str) -> None:
        self.part_path(digest).unlink(missing_ok=True)

    def _install(self, tmp: Path, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
        _fsync_dir(dest.parent)


def _check_digest(digest: str) -> str:
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise RemoteProtocolError(f"bad digest {digest[:40]!r}")
    return digest


def hash_file(path: str | Path, chunk_size: int) -> str:
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
