"""Data at rest, the store's part: serve-time verification, what ringmesh wrote where, files
changed behind its back, the manifest store's scrub and rewrite. No daemon here."""

from __future__ import annotations

import os
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringmesh.core import recipe
from ringmesh.core.manifest import Manifest
from ringmesh.core.messages import FileVersion, ItemKey
from ringmesh.node.files.store import Damaged, FileStore
from ringmesh.node.state import Store

ITEM = ItemKey("model", "canonical_hex8_2p.pth")
CS = 64 * 1024  # small chunks: many of them in a small file


def published(tmp_path, data: bytes, root="d"):
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    fs = FileStore(tmp_path / root)
    return fs, fs.import_file(src, ITEM, base_chunk=CS)


def rot(path, offset: int, n: int = 4096) -> None:
    """Flip `n` bytes at `offset`, keeping the file's size and mtime (a failing disk)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        old = f.read(n)
        f.seek(offset)
        f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def read_all(fs: FileStore, h) -> None:
    for i in range(recipe.chunk_count(h.size, h.chunk_size)):
        fs.read_verified(ITEM, h.digest, i, h.size, h.chunk_size)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 5 * CS), where=st.floats(0, 1, exclude_max=True), n=st.integers(1, 5000))
def test_a_rotten_range_fails_exactly_the_chunks_it_touches(tmp_path_factory, size, where, n):
    tmp = tmp_path_factory.mktemp("rot")
    fs, h = published(tmp, os.urandom(size))
    off = int(where * size)
    n = min(n, size - off)
    rot(fs.path_of(ITEM), off, n)
    bad = set(range(off // h.chunk_size, (off + n - 1) // h.chunk_size + 1))
    for i in range(recipe.chunk_count(h.size, h.chunk_size)):
        if i in bad:
            with pytest.raises(Damaged) as e:
                fs.read_verified(ITEM, h.digest, i, h.size, h.chunk_size)
            assert (e.value.kind, e.value.chunk) == ("corrupt", i)
        else:
            fs.read_verified(ITEM, h.digest, i, h.size, h.chunk_size)


def test_a_good_copy_reads_back_verified(tmp_path):
    data = os.urandom(3 * CS + 5)
    fs, h = published(tmp_path, data)
    got = b"".join(
        fs.read_verified(ITEM, h.digest, i, h.size, h.chunk_size)
        for i in range(recipe.chunk_count(h.size, h.chunk_size))
    )
    assert got == data


@pytest.mark.parametrize(
    "change, why",
    [
        (lambda p: p.write_bytes(p.read_bytes() + b"x"), "size"),
        (lambda p: os.utime(p, ns=(0, os.stat(p).st_mtime_ns + 10**9)), "modified"),
        (lambda p: (p.unlink(), p.write_bytes(b"\0" * 10)), "size"),
        (lambda p: p.unlink(), "removed"),
    ],
)
def test_a_file_changed_behind_our_back_is_not_served_as_the_version(tmp_path, change, why):
    fs, h = published(tmp_path, os.urandom(2 * CS))
    assert fs.changed(ITEM, h.digest) is None
    change(fs.path_of(ITEM))
    assert why in (fs.changed(ITEM, h.digest) or "")
    with pytest.raises(Damaged) as e:
        fs.read_verified(ITEM, h.digest, 0, h.size, h.chunk_size)
    assert e.value.kind == "changed" and why in e.value.detail


def test_a_same_size_same_mtime_replacement_is_told_by_its_inode(tmp_path):
    fs, h = published(tmp_path, os.urandom(CS))
    p = fs.path_of(ITEM)
    st0 = os.stat(p)
    other = tmp_path / "other"
    other.write_bytes(os.urandom(CS))
    os.utime(other, ns=(st0.st_atime_ns, st0.st_mtime_ns))
    os.replace(other, p)
    assert "replaced" in (fs.changed(ITEM, h.digest) or "")


def test_what_was_written_where_survives_a_restart(tmp_path):
    fs, h = published(tmp_path, os.urandom(CS))
    os.utime(fs.path_of(ITEM), ns=(0, 1))
    again = FileStore(tmp_path / "d")
    assert again.installed(ITEM) is not None and again.installed(ITEM).digest == h.digest
    assert "modified" in (again.changed(ITEM, h.digest) or "")


def test_a_file_with_no_record_is_trusted_once_and_then_watched(tmp_path):
    fs, h = published(tmp_path, os.urandom(CS))
    (tmp_path / "d" / "installed.msgpack").unlink()  # written by an older ringmesh
    fresh = FileStore(tmp_path / "d")
    assert fresh.installed(ITEM) is None
    assert fresh.changed(ITEM, h.digest) is None  # recorded now
    assert fresh.installed(ITEM).digest == h.digest
    fresh.path_of(ITEM).write_bytes(b"edited")
    assert fresh.changed(ITEM, h.digest) is not None


def test_an_install_over_a_changed_file_moves_it_aside_untouched(tmp_path):
    fs, h = published(tmp_path, os.urandom(CS))
    p = fs.path_of(ITEM)
    p.write_bytes(b"the operator's own bytes")
    src = tmp_path / "v2"
    src.write_bytes(os.urandom(CS))
    h2 = fs.import_file(src, ITEM, base_chunk=CS)
    assert p.read_bytes() == src.read_bytes()
    (aside,) = p.parent.glob(p.name + ".changed-*")
    assert aside.read_bytes() == b"the operator's own bytes"
    assert fs.installed(ITEM).digest == h2.digest and fs.changed(ITEM, h2.digest) is None


def test_an_install_over_our_own_unchanged_file_replaces_it(tmp_path):
    fs, _ = published(tmp_path, os.urandom(CS))
    src = tmp_path / "v2"
    src.write_bytes(os.urandom(CS))
    fs.import_file(src, ITEM, base_chunk=CS)
    assert not list(fs.path_of(ITEM).parent.glob("*.changed-*"))


def test_a_changed_file_is_hashed_in_place_as_a_new_version(tmp_path):
    fs, h = published(tmp_path, os.urandom(CS))
    new = os.urandom(3 * CS)
    fs.path_of(ITEM).write_bytes(new)
    h2 = fs.hash_in_place(ITEM, base_chunk=CS)
    assert h2.digest != h.digest and h2.size == len(new)
    assert h2.digest == recipe.file_digest([recipe.chunk_digest(new[i : i + CS]) for i in range(0, len(new), CS)])
    assert fs.load_recipe(h2.digest) == h2.chunk_digests and fs.changed(ITEM, h2.digest) is None
    read_all(fs, h2)


def test_a_rotten_partial_chunk_is_not_served_to_a_peer(tmp_path):
    data = os.urandom(2 * CS)
    _, h = published(tmp_path, data, root="src")
    fs = FileStore(tmp_path / "d")
    v = FileVersion(item=ITEM, digest=h.digest, size=h.size, chunk_size=h.chunk_size, origin="a", hlc=1)
    p = fs.open_partial(v, h.chunk_digests)
    p.write(0, data[:CS])
    assert p.read(0) == data[:CS]
    rot(p.part, 100, 10)
    with pytest.raises(Damaged):
        p.read(0)
    assert 0 not in p.have  # fetched again


# -- the manifest store ------------------------------------------------------------------------


def manifest_store(tmp_path):
    m = Manifest("a", 7)
    changes = [m.put(f"v/model/m{i}.pth", os.urandom(40)) for i in range(30)]
    store = Store(tmp_path)
    store.apply(tuple(c for c in changes if c is not None), 123)
    return m, store


def test_a_sound_store_scrubs_clean_even_when_memory_is_ahead(tmp_path):
    m, store = manifest_store(tmp_path)
    assert store.scrub(m.origins) == []
    m.put("v/model/later.pth", b"not written yet")  # the store thread has not caught up: not damage
    assert store.scrub(m.origins) == []


def test_a_rotten_fact_is_found_and_the_store_rewritten_from_memory(tmp_path):
    m, store = manifest_store(tmp_path)
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE facts SET value = ? WHERE key = ?", (b"rot", "v/model/m3.pth"))
    db.commit()
    db.close()
    problems = store.scrub(m.origins)
    assert problems and "v/model/m3.pth" in problems[0]
    aside = store.rewrite(m.origins, 456, (3, "b"))
    assert store.scrub(m.origins) == []
    assert store.load()["a"].facts == m.origins["a"].facts
    assert store.meta("hlc") == 456 and store.vote() == (3, "b")
    assert (
        aside.exists()
        and sqlite3.connect(aside).execute("SELECT value FROM facts WHERE key='v/model/m3.pth'").fetchone()[0] == b"rot"
    )
    store.close()
    assert Store(tmp_path).load()["a"].facts == m.origins["a"].facts  # what a restart reads


def test_a_store_sqlite_finds_broken_is_reported(tmp_path):
    m, store = manifest_store(tmp_path)
    store.close()
    path = tmp_path / "state.db"
    raw = bytearray(path.read_bytes())
    page = 4096
    for i in range(page + 16, min(len(raw), 3 * page)):  # the pages after the header
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    (tmp_path / "state.db-wal").unlink(missing_ok=True)
    try:
        damaged = Store(tmp_path)
    except sqlite3.DatabaseError:
        return  # refused at open: also loud, and the daemon does not start on it
    assert damaged.scrub(m.origins)


# -- put by hard link --------------------------------------------------------------------------


def test_a_linked_put_shares_the_inode_until_unshared_then_the_source_is_its_own(tmp_path):
    data = os.urandom(3 * CS + 1)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    fs = FileStore(tmp_path / "d")
    h = fs.import_file(src, ITEM, base_chunk=CS, link=True)
    dest = fs.path_of(ITEM)
    assert os.stat(dest).st_ino == os.stat(src).st_ino and fs.shared() == [(ITEM, h.digest)]
    read_all(fs, h)  # served from the shared inode meanwhile
    assert fs.unshare(ITEM, h.digest, h.chunk_size)
    assert os.stat(dest).st_ino != os.stat(src).st_ino and fs.shared() == []
    assert not fs.unshare(ITEM, h.digest, h.chunk_size)  # nothing left to do
    with open(src, "r+b") as f:  # the source written in place: the store's copy is its own now
        f.write(b"next epoch")
    assert dest.read_bytes() == data and fs.changed(ITEM, h.digest) is None
    read_all(fs, h)
    assert FileStore(tmp_path / "d").shared() == []  # and remembered so


def test_a_source_written_in_place_before_its_copy_is_never_served_as_the_version(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(2 * CS))
    fs = FileStore(tmp_path / "d")
    h = fs.import_file(src, ITEM, base_chunk=CS, link=True)
    assert FileStore(tmp_path / "d").shared() == [(ITEM, h.digest)]  # a restart resumes the copy
    with open(src, "r+b") as f:
        f.write(b"torch.save over it")
    os.utime(src, ns=(0, os.stat(src).st_mtime_ns + 10**9))
    with pytest.raises(Damaged) as e:
        fs.read_verified(ITEM, h.digest, 0, h.size, h.chunk_size)
    assert e.value.kind == "changed"
    with pytest.raises(Damaged):
        fs.unshare(ITEM, h.digest, h.chunk_size)
    assert not list((tmp_path / "d" / "tmp").glob("unshare-*"))


def test_a_put_without_link_copies(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(CS))
    fs = FileStore(tmp_path / "d")
    h = fs.import_file(src, ITEM, base_chunk=CS)
    assert os.stat(fs.path_of(ITEM)).st_ino != os.stat(src).st_ino and fs.shared() == []
    read_all(fs, h)


# -- the report --------------------------------------------------------------------------------


def scrub_doc(**over):
    doc = {
        "interval_seconds": 86400.0,
        "rate_bytes_per_s": 4_000_000,
        "full_pass_s": 100.0,
        "last_full_scrub": 1000.0,
        "bytes_verified": {"files": 5, "games": 0, "manifest": 1},
        "current": None,
        "found": {"files": 1, "games": 0, "manifest": 0},
        "repaired": {"files": 1, "games": 0, "manifest": 0},
        "unrepaired": [],
        "below_min_copies": [],
    }
    return {**doc, **over}


def test_the_report_names_open_damage_and_a_schedule_that_cannot_keep_up():
    from ringmesh.ops.statusview import scrub_lines

    calm = scrub_lines(scrub_doc(), now=1060.0)
    assert "damage found/repaired: files 1/1, games 0/0, manifest 0/0" in calm
    assert not any("DAMAGED" in line or "raise ringmesh.scrub_rate" in line for line in calm)
    bad = {"what": "files", "name": "model/x.pth", "digest": "ab" * 16, "kind": "corrupt", "detail": "chunk 3"}
    worried = scrub_lines(scrub_doc(full_pass_s=3 * 86400.0, unrepaired=[bad], below_min_copies=["model/x.pth"]))
    assert any(line.startswith("DAMAGED files model/x.pth abababababab: corrupt, chunk 3") for line in worried)
    assert any("raise ringmesh.scrub_rate" in line for line in worried)
    assert any("fewer good copies than min_copies: model/x.pth" in line for line in worried)
