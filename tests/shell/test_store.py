"""The manifest written to SQLite reads back as the same replica."""

from ringmesh.core.manifest import Manifest
from ringmesh.node.state import Store


def test_changes_read_back_after_reopen(tmp_path):
    a, b = Manifest("a", 2**63 + 7), Manifest("b", 5)
    store = Store(tmp_path)
    changes = [a.put("x", b"1"), a.put("y", b"2"), a.delete("x", 2**40), b.put("z", b"\xff")]
    store.apply(tuple(changes[:3]), hlc=2**64 - 1)
    changes += b.apply(a.delta_for(b.digest(), 1 << 20))
    store.apply(tuple(changes[3:]), hlc=2**64 - 1)
    changes = b.purge_tombstones(now_hlc=2**64 - 1, grace_ms=0)
    assert changes and changes[0].removed == ("x",)
    store.apply(tuple(changes), hlc=12)
    store.close()

    again = Store(tmp_path)
    states = again.load()
    assert again.meta("hlc") == 12
    restored = Manifest("b", states["b"].incarnation)
    for origin, st in states.items():
        restored.load(origin, st)
    assert restored.content() == b.content()
    assert restored.digest() == b.digest()


def test_a_reset_replaces_the_stored_origin(tmp_path):
    a, b = Manifest("a", 1), Manifest("b", 1)
    store = Store(tmp_path)
    a.put("old", b"1")
    store.apply(tuple(b.apply(a.delta_for(b.digest(), 1 << 20))), hlc=1)
    a2 = Manifest("a", 2)  # a lost its disk
    a2.put("new", b"2")
    store.apply(tuple(b.apply(a2.delta_for(b.digest(), 1 << 20))), hlc=2)
    assert set(store.load()["a"].facts) == {"new"}
