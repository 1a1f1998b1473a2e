from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ringmesh.core.errors import RemoteProtocolError
from ringmesh.core.recipe import (
    DEFAULT_CHUNK,
    DIGEST_BYTES,
    MAX_CHUNKS,
    check_recipe,
    chunk_count,
    chunk_digest,
    chunk_size_for,
    chunk_span,
    file_digest,
)

TB = 1 << 40


@pytest.mark.parametrize(
    "size, expected",
    [
        (0, DEFAULT_CHUNK),
        (1, DEFAULT_CHUNK),
        (MAX_CHUNKS * DEFAULT_CHUNK, DEFAULT_CHUNK),
        (MAX_CHUNKS * DEFAULT_CHUNK + 1, 2 * DEFAULT_CHUNK),
        (5 * (1 << 30), DEFAULT_CHUNK),  # a 5 GiB npz: 1280 chunks of 4 MiB
        (90 * (1 << 30), 16 * DEFAULT_CHUNK),  # a 90 GiB game DB: 1440 chunks of 64 MiB
    ],
)
def test_chunk_size_for_examples(size, expected):
    assert chunk_size_for(size) == expected


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 50 * TB), st.sampled_from([DEFAULT_CHUNK, 1 << 20, 1000, 1]), st.integers(1, 3000))
def test_chunk_size_for_is_the_smallest_doubling_within_max_chunks(size, base, max_chunks):
    cs = chunk_size_for(size, base, max_chunks)
    assert cs % base == 0 and (cs // base) & (cs // base - 1) == 0  # base * 2**k
    assert chunk_count(size, cs) <= max_chunks
    if cs > base:
        assert chunk_count(size, cs // 2) > max_chunks


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 10 * TB))
def test_default_chunking_has_at_most_2000_chunks(size):
    assert chunk_count(size, chunk_size_for(size)) <= MAX_CHUNKS


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3000))
def test_chunk_spans_tile_the_file(size, chunk_size):
    n = chunk_count(size, chunk_size)
    spans = [chunk_span(i, size, chunk_size) for i in range(n)]
    assert spans[0][0] == 0
    for (o1, l1), (o2, _) in zip(spans, spans[1:]):
        assert o1 + l1 == o2 and l1 == chunk_size
    assert sum(length for _, length in spans) == size
    assert all(0 < length <= chunk_size for _, length in spans) or size == 0


def _recipe(data: bytes, chunk_size: int) -> tuple[str, list[bytes]]:
    n = chunk_count(len(data), chunk_size)
    digests = []
    for i in range(n):
        off, length = chunk_span(i, len(data), chunk_size)
        digests.append(chunk_digest(data[off : off + length]))
    return file_digest(digests), digests


def test_an_empty_file_has_one_empty_chunk():
    digest, digests = _recipe(b"", 4)
    assert len(digests) == 1 and len(digests[0]) == DIGEST_BYTES
    check_recipe(digest, 0, 4, digests)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_a_true_recipe_checks(data, chunk_size):
    digest, digests = _recipe(data, chunk_size)
    assert len(digest) == 32 and int(digest, 16) >= 0
    check_recipe(digest, len(data), chunk_size, digests)
    assert chunk_digest(memoryview(data)) == chunk_digest(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 64), st.data())
def test_a_tampered_recipe_is_rejected(data, chunk_size, draw):
    digest, digests = _recipe(data, chunk_size)
    size = len(data)
    how = draw.draw(st.sampled_from(["flip", "drop", "add", "swap", "short", "long", "size", "chunk_size"]))
    i = draw.draw(st.integers(0, len(digests) - 1))
    bad = list(digests)
    if how == "flip":
        bit = draw.draw(st.integers(0, DIGEST_BYTES * 8 - 1))
        d = bytearray(bad[i])
        d[bit // 8] ^= 1 << (bit % 8)
        bad[i] = bytes(d)
    elif how == "drop":
        del bad[i]
    elif how == "add":
        bad.insert(i, chunk_digest(b"intruder"))
    elif how == "swap":
        j = draw.draw(st.integers(0, len(digests) - 1))
        assume(bad[i] != bad[j])
        bad[i], bad[j] = bad[j], bad[i]
    elif how == "short":
        bad[i] = bad[i][:-1]
    elif how == "long":
        bad[i] = bad[i] + b"\0"
    elif how == "size":
        size = draw.draw(st.integers(0, 400).filter(lambda s: chunk_count(s, chunk_size) != len(digests)))
    else:
        chunk_size = draw.draw(st.integers(1, 80).filter(lambda c: chunk_count(size, c) != len(digests)))
    with pytest.raises(RemoteProtocolError):
        check_recipe(digest, size, chunk_size, bad)


def test_a_recipe_for_another_file_is_rejected():
    digest, _ = _recipe(b"the real file", 4)
    _, other = _recipe(b"another file!", 4)
    with pytest.raises(RemoteProtocolError):
        check_recipe(digest, 13, 4, other)
