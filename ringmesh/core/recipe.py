"""Chunking arithmetic: chunk sizes, chunk digests and the file digest (xxh3-128).

A file is cut into chunks of `chunk_size` bytes (the last may be shorter). Each chunk is
hashed with xxh3-128; the file digest is the xxh3-128 of the concatenated chunk digests, so a
recipe (the list of chunk digests) fetched from any peer can be checked against the digest
the owner published.
"""

from __future__ import annotations

import xxhash

from .errors import LocalProtocolError, RemoteProtocolError

DEFAULT_CHUNK = 4 * 1024 * 1024
MAX_CHUNKS = 2000
DIGEST_BYTES = 16


def chunk_size_for(size: int, base: int = DEFAULT_CHUNK, max_chunks: int = MAX_CHUNKS) -> int:
    """`base`, doubled until the file has at most `max_chunks` chunks."""
    if base <= 0 or max_chunks <= 0:
        raise LocalProtocolError("chunk size and chunk count must be positive")
    cs = base
    while -(-size // cs) > max_chunks:
        cs *= 2
    return cs


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def chunk_span(index: int, size: int, chunk_size: int) -> tuple[int, int]:
    """(offset, length) of chunk `index`."""
    off = index * chunk_size
    return off, max(0, min(chunk_size, size - off))


def chunk_digest(data: bytes | memoryview) -> bytes:
    return xxhash.xxh3_128_digest(data)


def file_digest(chunk_digests: list[bytes]) -> str:
    return xxhash.xxh3_128_hexdigest(b"".join(chunk_digests))


def check_recipe(digest: str, size: int, chunk_size: int, chunk_digests: list[bytes]) -> None:
    """Raise `RemoteProtocolError` unless the recipe matches the published version."""
    if len(chunk_digests) != chunk_count(size, chunk_size):
        raise RemoteProtocolError(f"recipe has {len(chunk_digests)} chunks, expected {chunk_count(size, chunk_size)}")
    if any(len(d) != DIGEST_BYTES for d in chunk_digests):
        raise RemoteProtocolError("recipe chunk digest of the wrong length")
    if file_digest(chunk_digests) != digest:
        raise RemoteProtocolError("recipe does not match the file digest")
