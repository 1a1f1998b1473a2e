"""Files on disk: import, chunk verification, confinement, atomic install."""

import os
import subprocess

import pytest

from ringmesh.core import recipe
from ringmesh.core.errors import LocalProtocolError, RemoteProtocolError
from ringmesh.core.messages import FileVersion, ItemKey
from ringmesh.node.files import diskio, store
from ringmesh.node.files.store import FileStore, disk_full, hash_file


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
    part = b.open_partial(v, digests)
    for i in reversed(range(len(digests))):  # any order
        part.write(i, a.read_chunk(item, i, size, h.chunk_size))
    dest = b.finish(part)
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
    part = b.open_partial(v, h.chunk_digests)
    with pytest.raises(RemoteProtocolError, match="failed verification"):
        part.write(0, bytes([good[0] ^ 1]) + good[1:])
    with pytest.raises(RemoteProtocolError, match="out of range"):
        part.write(7, good)
    assert part.have == set()
    with pytest.raises(LocalProtocolError, match="missing"):
        b.finish(part)
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


def _published(tmp_path, size=10 * 4096 + 7, type_="model"):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    a = FileStore(tmp_path / "a")
    item = ItemKey(type_, "m.pth")
    h = a.import_file(src, item, base_chunk=4096)
    v = FileVersion(item=item, digest=h.digest, size=h.size, chunk_size=h.chunk_size, hlc=1, origin="a")
    return src, a, v, h.chunk_digests


@pytest.mark.parametrize("direct", [True, False])
def test_aligned_chunks_go_direct_the_tail_through_the_page_cache_and_the_file_is_whole(tmp_path, monkeypatch, direct):
    src, a, v, digests = _published(tmp_path)  # 10 aligned chunks of 4096 and a tail of 7 bytes
    if not direct:  # a file system without O_DIRECT (tmpfs on older kernels, some FUSE)
        monkeypatch.setattr(diskio, "open_direct", lambda path: -1)
    b = FileStore(tmp_path / "b")
    part = b.open_partial(v, digests)
    direct_writes = []
    real = diskio.pwrite_all
    monkeypatch.setattr(
        diskio, "pwrite_all", lambda fd, data, off: (direct_writes.append(fd == part._direct_fd), real(fd, data, off))
    )
    for i in range(len(digests)):
        part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
    assert direct_writes == [direct] * 10 + [False], "the 7-byte tail is not block-aligned"
    assert b.finish(part).read_bytes() == src.read_bytes()


def test_o_direct_refused_at_write_time_falls_back_for_good(tmp_path, monkeypatch):
    src, a, v, digests = _published(tmp_path)
    b = FileStore(tmp_path / "b")
    part = b.open_partial(v, digests)
    real, refused = diskio.pwrite_all, []

    def pwrite(fd, data, off):
        if fd == part._direct_fd:
            refused.append(off)
            raise OSError(22, "Invalid argument")  # EINVAL: a block size above 4096, say
        real(fd, data, off)

    monkeypatch.setattr(diskio, "pwrite_all", pwrite)
    for i in range(len(digests)):
        part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
    assert refused == [0], "tried once, then buffered writes only"
    assert b.finish(part).read_bytes() == src.read_bytes()


def test_finish_checks_the_whole_by_the_recipe_without_reading_the_file_again(tmp_path, monkeypatch):
    src, a, v, digests = _published(tmp_path)
    b = FileStore(tmp_path / "b")
    part = b.open_partial(v, digests)
    for i in range(len(digests)):
        part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))

    def no_hashing(*args):
        raise AssertionError("finish hashed chunk bytes again")

    monkeypatch.setattr(recipe, "chunk_digest", no_hashing)
    monkeypatch.setattr(store, "hash_file", no_hashing)
    fsynced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsynced.append(fd), real_fsync(fd)))
    dest = b.finish(part)
    assert fsynced, "fsynced before the rename"
    assert dest.read_bytes() == src.read_bytes()
    bad = FileVersion(item=v.item, digest="0" * 32, size=v.size, chunk_size=v.chunk_size, hlc=2, origin="a")
    part = FileStore(tmp_path / "c").open_partial(bad, digests)
    part.have = set(range(len(digests)))
    with pytest.raises(RemoteProtocolError, match="recipe does not match"):
        FileStore(tmp_path / "c").finish(part)


def test_a_restarted_pull_keeps_the_chunks_that_still_verify_and_only_those(tmp_path):
    src, a, v, digests = _published(tmp_path)
    b = FileStore(tmp_path / "b")
    part = b.open_partial(v, digests)
    for i in (0, 3, 4, 10):
        part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
    # the bytes of chunk 4 rot on disk while the daemon is down
    with open(b.part_path(v.digest), "r+b") as f:
        f.seek(4 * 4096 + 100)
        f.write(b"\xff\x00\xff")
    b = FileStore(tmp_path / "b")  # a new daemon on the same data dir
    again = b.open_partial(v, digests)
    assert again.have == {0, 3, 10}
    assert again.resumed_bytes == 2 * 4096 + 7  # chunk 10 is the short last one
    for i in set(range(len(digests))) - again.have:
        again.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
    assert b.finish(again).read_bytes() == src.read_bytes()
    assert not list((tmp_path / "b" / "tmp").iterdir()), "partial file and its chunk list are gone"


def test_partials_serve_only_verified_chunks(tmp_path):
    _src, a, v, digests = _published(tmp_path)
    part = FileStore(tmp_path / "b").open_partial(v, digests)
    chunk = a.read_chunk(v.item, 2, v.size, v.chunk_size)
    part.write(2, chunk)
    assert part.read(2) == chunk
    with pytest.raises(LocalProtocolError, match="not verified"):
        part.read(1)


def test_a_type_with_a_configured_directory_lands_there_and_replaces_the_old_version_atomically(tmp_path):
    src, a, v, digests = _published(tmp_path)
    models = tmp_path / "data" / "models"
    b = FileStore(tmp_path / "b", paths={"model": models})
    assert b.path_of(v.item) == models / "m.pth"
    (models / "m.pth").write_bytes(b"the previous version")
    part = b.open_partial(v, digests)
    for i in range(len(digests) - 1):
        part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
    assert (models / "m.pth").read_bytes() == b"the previous version"  # until the new one is whole
    part.write(len(digests) - 1, a.read_chunk(v.item, len(digests) - 1, v.size, v.chunk_size))
    b.finish(part)
    assert (models / "m.pth").read_bytes() == src.read_bytes()
    assert sorted(p.name for p in models.iterdir()) == ["m.pth"]


def _mount_tmpfs(path, size):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")


def test_a_destination_on_another_file_system_gets_a_copy_then_an_atomic_rename(tmp_path):
    src, a, v, digests = _published(tmp_path)
    other = tmp_path / "other"
    _mount_tmpfs(other, "4M")
    try:
        b = FileStore(tmp_path / "b", paths={"model": other})
        part = b.open_partial(v, digests)
        for i in range(len(digests)):
            part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
        assert b.finish(part).read_bytes() == src.read_bytes()
        assert sorted(p.name for p in other.iterdir()) == ["m.pth"], "no staging file left"
    finally:
        assert subprocess.run(["umount", str(other)]).returncode == 0, "nothing left open on it"


def test_a_full_disk_raises_ENOSPC_and_leaves_the_installed_version_alone(tmp_path):
    src, a, v, digests = _published(tmp_path, size=64 * 4096)
    small = tmp_path / "small"
    _mount_tmpfs(small, "128k")
    try:
        b = FileStore(small, paths={"model": small / "models"})
        (small / "models" / "m.pth").write_bytes(b"old")
        part = b.open_partial(v, digests)
        with pytest.raises(OSError) as e:
            for i in range(len(digests)):
                part.write(i, a.read_chunk(v.item, i, v.size, v.chunk_size))
        assert disk_full(e.value)
        assert (small / "models" / "m.pth").read_bytes() == b"old"
        part.close()  # as the pull does when it ends: the part file is held open while it runs
        b.discard(v.digest)
        assert b.partials() == []
    finally:
        assert subprocess.run(["umount", str(small)]).returncode == 0, "nothing left open on it"
