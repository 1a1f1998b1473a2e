"""Files on disk: import, chunk verification, confinement, atomic install."""

import os

import pytest

from ringmesh.core import recipe
from ringmesh.core.errors import LocalProtocolError, RemoteProtocolError
from ringmesh.core.messages import FileVersion, ItemKey
from ringmesh.files import FileStore, hash_file


@pytest.mark.parametrize("size", [0, 1, 1000, 4096, 3 * 4096 + 5])
def test_import_then_reassemble_chunk_by_chunk(tmp_path, size):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    a, b = FileStore(tmp_path / "a"), FileStore(tmp_path / "b")
    item = ItemKey("model", "m.pth")
    h = a.import_file(src, item, base_chunk=4096)
    assert h.digest == hash_file(src, 4096) and h.size == size
    assert len(h.chunk_digests) == recipe.chunk_count(size, 4096)
    v = FileVersion(item=item, digest=h.digest, size=size, chunk_size=h.chunk_size, hlc=1, origin="a")
    digests = a.load_recipe(h.digest)
    recipe.check_recipe(v.digest, v.size, v.chunk_size, digests)
    for i in reversed(range(len(digests))):  # any order
        b.write_chunk(v, digests, i, a.read_chunk(item, i, size, h.chunk_size))
    dest = b.finish(v, digests)
    assert dest.read_bytes() == src.read_bytes()
    assert not list((tmp_path / "b" / "tmp").iterdir()), "no partial file left behind"


def test_a_corrupt_chunk_is_refused_and_nothing_is_installed(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(10_000))
    a, b = FileStore(tmp_path / "a"), FileStore(tmp_path / "b")
    item = ItemKey("npz", "d.npz")
    h = a.import_file(src, item, base_chunk=4096)
    v = FileVersion(item=item, digest=h.digest, size=h.size, chunk_size=h.chunk_size, hlc=1, origin="a")
    good = a.read_chunk(item, 0, h.size, h.chunk_size)
    with pytest.raises(RemoteProtocolError, match="failed verification"):
        b.write_chunk(v, h.chunk_digests, 0, bytes([good[0] ^ 1]) + good[1:])
    with pytest.raises(RemoteProtocolError, match="out of range"):
        b.write_chunk(v, h.chunk_digests, 7, good)
    assert not b.path_of(item).exists()


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "a/b", "..", ".x", "x\0y", ""])
def test_names_are_confined(tmp_path, name):
    with pytest.raises(LocalProtocolError):
        FileStore(tmp_path).path_of(ItemKey("model", name))


def test_bad_digests_are_refused(tmp_path):
    fs = FileStore(tmp_path)
    for d in ["../" * 11, "X" * 32, "0" * 31]:
        with pytest.raises(RemoteProtocolError):
            fs.part_path(d)
        with pytest.raises(RemoteProtocolError):
            fs.load_recipe(d)
