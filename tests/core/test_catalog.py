from __future__ import annotations

import unicodedata

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core import catalog, keys
from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.messages import FileVersion, ItemKey

from ._world import HUGE, World

DIGEST = "0123456789abcdef0123456789abcdef"


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "canonical_hex8_2p.pth",
        "hex8_2p.npz",
        "checkpoint_epoch_50.pth",
        "selfplay_square8_2p.db",
        "a",
        "x" * 200,
        "é" * 100,
        "with space.pth",
        "a..b",
        "trailing.",
    ],
)
def test_check_name_accepts_plain_file_names(name):
    assert catalog.check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "a/b",
        "/abs",
        "a\\b",
        "..\\x",
        "",
        ".",
        "..",
        ".hidden",
        "a\0b",
        "\0",
        "a\nb",
        "tab\there",
        "\x1b[31m",
        "del\x7f",
        "c1\x85control",
        "c1\x9b",
        "x" * 201,
        "é" * 101,
        "\ud800",
        "lone\udfffsurrogate",
    ],
)
def test_check_name_rejects(name):
    with pytest.raises(LocalProtocolError):
        catalog.check_name(name)


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=220))
def test_check_name_accepts_only_safe_names_and_fails_only_with_a_local_error(name):
    """Any string: either a LocalProtocolError, or a name that is one safe path component."""
    try:
        out = catalog.check_name(name)
    except LocalProtocolError:
        return
    assert out == name
    assert 1 <= len(name.encode("utf-8")) <= catalog.MAX_NAME_BYTES
    assert "/" not in name and "\\" not in name and not name.startswith(".")
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in name)


def test_check_name_rejects_non_strings():
    for bad in (None, b"bytes", 3):
        with pytest.raises(LocalProtocolError):
            catalog.check_name(bad)  # type: ignore[arg-type]


def test_check_item():
    for t in catalog.FILE_TYPES:
        assert catalog.check_item(ItemKey(t, "x.bin")) == ItemKey(t, "x.bin")
    for bad in (ItemKey("movie", "x"), ItemKey("model", "../x"), ItemKey("", "x")):
        with pytest.raises(LocalProtocolError):
            catalog.check_item(bad)


# -- versions ---------------------------------------------------------------------------------------


def test_keys():
    item = ItemKey("model", "canonical_hex8_2p.pth")
    assert catalog.version_key(item) == "v/model/canonical_hex8_2p.pth"
    assert catalog.holding_key(item) == "h/model/canonical_hex8_2p.pth"


NAMES = st.sampled_from(["canonical_hex8_2p.pth", "hex8_2p.npz", "ckpt.pth", "m"])
ITEMS = st.builds(ItemKey, st.sampled_from(catalog.FILE_TYPES), NAMES)
VERSIONS = st.builds(
    FileVersion,
    item=ITEMS,
    digest=st.text("0123456789abcdef", min_size=32, max_size=32),
    size=st.integers(0, 1 << 44),
    chunk_size=st.integers(1, 1 << 30),
    hlc=st.integers(0, (1 << 64) - 1),
    origin=st.sampled_from(["a", "b", "c"]),
    attrs=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(VERSIONS)
def test_a_version_round_trips(v):
    raw = catalog.encode_version(v)
    assert catalog.decode_version(v.origin, catalog.version_key(v.item), raw) == v


@pytest.mark.parametrize(
    "key, value",
    [
        ("v/model/x", {"d": "short", "s": 1, "c": 1, "t": 1}),
        ("v/model/x", {"d": DIGEST, "s": -1, "c": 1, "t": 1}),
        ("v/model/x", {"d": DIGEST, "s": 1, "c": 0, "t": 1}),
        ("v/model/x", {"d": DIGEST, "s": 1, "c": 1}),
        ("v/model/x", {"d": DIGEST, "s": "many", "c": 1, "t": 1}),
        ("v/model/x", {"d": DIGEST, "s": 1, "c": 1, "t": 1, "a": 7}),
        ("v/model/../x", {"d": DIGEST, "s": 1, "c": 1, "t": 1}),
        ("v/model/.x", {"d": DIGEST, "s": 1, "c": 1, "t": 1}),
        ("v/video/x", {"d": DIGEST, "s": 1, "c": 1, "t": 1}),
        ("v/model", {"d": DIGEST, "s": 1, "c": 1, "t": 1}),
        ("v/model/x", {"d": DIGEST, "s": float("inf"), "c": 1, "t": 1}),  # regression: OverflowError
        ("v/model/x", {"d": DIGEST, "s": 1, "c": float("nan"), "t": 1}),
    ],
)
def test_a_malformed_version_is_skipped(key, value):
    assert catalog.decode_version("a", key, catalog.pack(value)) is None


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=80),
        st.dictionaries(
            st.sampled_from(["d", "s", "c", "t", "a", "x"]),
            st.recursive(
                st.sampled_from([float("inf"), float("-inf"), float("nan"), -1, 0, 2**64 - 1, "12", DIGEST, None])
                | st.booleans()
                | st.integers(-(2**63), 2**64 - 1)
                | st.floats()
                | st.text(max_size=40)
                | st.binary(max_size=8),
                lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                max_leaves=6,
            ),
        ).map(lambda d: msgpack.packb(d, use_bin_type=True)),
    )
)
def test_decoding_a_peers_garbage_never_raises(raw):
    catalog.decode_version("a", "v/model/x", raw)
    catalog.unpack(raw)
    m = World(["me", "a"])
    m.put("a", "v/model/x", raw)
    m.put("a", "h/model/x", raw)
    m.put("a", keys.NODE, raw)
    m.exchange("a", "me", HUGE)
    catalog.newest_versions(m.hosts["me"])
    catalog.holders(m.hosts["me"])
    catalog.held_versions(m.hosts["me"], "a")
    catalog.node_record(m.hosts["me"], "a")


def _publish(w: World, v: FileVersion) -> None:
    w.put(v.origin, catalog.version_key(v.item), catalog.encode_version(v))


@settings(max_examples=300, deadline=None)
@given(st.lists(VERSIONS, max_size=12))
def test_newest_versions_picks_the_max_by_hlc_then_origin(versions):
    w = World(["a", "b", "c", "me"])
    for v in versions:
        _publish(w, v)
    w.settle(HUGE)
    expect: dict[ItemKey, FileVersion] = {}
    latest: dict[tuple[str, ItemKey], FileVersion] = {}
    for v in versions:  # an origin's later publish of an item overwrites its earlier one
        latest[(v.origin, v.item)] = v
    for v in latest.values():
        if v.item not in expect or v.order > expect[v.item].order:
            expect[v.item] = v
    for m in w.hosts.values():  # the same answer on every host
        assert catalog.newest_versions(m) == expect


def test_newest_versions_breaks_hlc_ties_by_origin_and_ignores_deleted_versions():
    w = World(["a", "b", "me"])
    item = ItemKey("model", "m.pth")
    _publish(w, FileVersion(item=item, digest=DIGEST, size=1, chunk_size=1, hlc=5, origin="a"))
    _publish(w, FileVersion(item=item, digest=DIGEST[::-1], size=1, chunk_size=1, hlc=5, origin="b"))
    w.settle(HUGE)
    assert catalog.newest_versions(w.hosts["me"])[item].origin == "b"
    w.delete("b", catalog.version_key(item))
    w.settle(HUGE)
    assert catalog.newest_versions(w.hosts["me"])[item].origin == "a"


# -- holdings and node records ----------------------------------------------------------------------


def test_holdings_and_holders():
    w = World(["a", "b", "c", "me"])
    item, other = ItemKey("model", "m.pth"), ItemKey("npz", "hex8_2p.npz")
    for h in ("c", "a"):
        w.put(h, catalog.holding_key(item), catalog.pack({"d": DIGEST}))
    w.put("b", catalog.holding_key(item), catalog.pack({"d": "old"}))
    w.put("b", catalog.holding_key(other), catalog.pack({"d": DIGEST}))
    w.put("b", "h/model/../etc", catalog.pack({"d": DIGEST}))  # a peer's bad key: skipped
    w.put("c", catalog.holding_key(other), b"\xc1not msgpack")  # a peer's bad value: skipped
    w.put("a", catalog.holding_key(other), catalog.pack({"d": 7}))
    w.put("a", "h/npz/gone.npz", catalog.pack({"d": DIGEST}))
    w.delete("a", "h/npz/gone.npz")
    w.settle(HUGE)
    m = w.hosts["me"]
    assert catalog.holdings(m, "b") == {item: "old", other: DIGEST}
    assert catalog.holdings(m, "a") == {item: DIGEST}
    assert catalog.holdings(m, "nobody") == {}
    assert catalog.holders(m) == {(item, DIGEST): ["a", "c"], (item, "old"): ["b"], (other, DIGEST): ["b"]}


def test_held_versions_round_trip_and_skip_what_a_peer_got_wrong():
    w = World(["a", "me"])
    v = FileVersion(item=ItemKey("model", "m.pth"), digest=DIGEST, size=10, chunk_size=4, hlc=1, origin="a")
    w.put("a", catalog.holding_key(v.item), catalog.encode_holding(v))
    w.put("a", "h/npz/x.npz", catalog.pack({"d": "e" * 32, "s": float("inf"), "c": 1}))  # regression
    w.put("a", "h/npz/y.npz", catalog.pack({"d": "f" * 32, "s": 1}))
    w.settle(HUGE)
    assert catalog.held_versions(w.hosts["me"], "a") == {DIGEST: (v.item, 10, 4)}
    assert catalog.holdings(w.hosts["me"], "a")[v.item] == DIGEST
    assert catalog.held_versions(w.hosts["me"], "nobody") == {}


def test_node_record():
    w = World(["a", "me"])
    w.put("a", keys.NODE, catalog.pack({"addr": "10.0.0.1:7070", "role": "selfplay", "ephemeral": True}))
    w.settle(HUGE)
    assert catalog.node_record(w.hosts["me"], "a") == {"addr": "10.0.0.1:7070", "role": "selfplay", "ephemeral": True}
    assert catalog.node_record(w.hosts["me"], "nobody") is None
    assert catalog.unpack(msgpack.packb([1, 2])) is None
