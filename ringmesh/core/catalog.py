"""What the manifest's facts mean: node records, file versions and holdings.

Fact keys of an origin:
    node              its node record (address, role, provider, ...)
    leader            (a leader) the term it was elected in: {t: term}
    v/<type>/<name>   a version of a named file it published
    h/<type>/<name>   the version of that file it holds, complete and verified
    p/<type>/<name>   the version of that file it is pulling (it serves the chunks it verified)
    b/<type>/<name>   (a leader) its broadcast directive for that file (see broadcast.py)

Values are msgpack maps. A value a peer got wrong is skipped when read, never fatal.
"""

from __future__ import annotations

import re
import unicodedata
import weakref
from typing import Any, Mapping

import msgpack

from . import keys
from .errors import LocalProtocolError
from .manifest import Manifest
from .messages import FileVersion, ItemKey

FILE_TYPES = ("model", "npz", "checkpoint", "gamedb")
MAX_NAME_BYTES = 200
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,127}")


def is_node_id(node: object) -> bool:
    """Host names as the config spells them: letters, digits, '.', '_', '-'; at most 128."""
    return isinstance(node, str) and _NODE_ID.fullmatch(node) is not None


_CONFIG_KEY = re.compile(r"(square8|square19|hex8|hexagonal)_([234])p")


def config_key_of(v: FileVersion) -> str | None:
    """`{board}_{players}p` of a file version: its `config_key` attribute, else from its name."""
    key = v.attrs.get("config_key")
    if key:
        return key
    m = _CONFIG_KEY.search(v.item.name)
    return f"{m[1]}_{m[2]}p" if m else None


def check_name(name: str) -> str:
    """A file name confined to its type's folder: one path component, printable, bounded."""
    if not isinstance(name, str) or not name:
        raise LocalProtocolError(f"item name must be 1..{MAX_NAME_BYTES} bytes")
    # C0, DEL and C1 controls; lone surrogates, which cannot even be encoded
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise LocalProtocolError(f"item name {name!r} contains a control character")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise LocalProtocolError(f"item name must be 1..{MAX_NAME_BYTES} bytes")
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise LocalProtocolError(f"item name {name!r} must be a plain file name (no '/', no leading '.')")
    return name


def check_item(item: ItemKey) -> ItemKey:
    if item.type not in FILE_TYPES:
        raise LocalProtocolError(f"unknown file type {item.type!r}; expected one of {', '.join(FILE_TYPES)}")
    check_name(item.name)
    return item


def check_fact_key(key: str) -> str:
    """A fact key as a peer may send it: no control characters, and a key that names an item
    names a confined one (the type a plain word, so that newer types pass; the name as
    `check_name` allows)."""
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in key):
        raise LocalProtocolError(f"fact key {key[:60]!r} contains a control character")
    if key.startswith(keys.ITEM_PREFIXES):
        type_, _, name = key[2:].partition("/")
        if not is_node_id(type_):
            raise LocalProtocolError(f"fact key {key[:60]!r} names no item type")
        check_name(name)
    return key


def version_key(item: ItemKey) -> str:
    return f"{keys.VERSION}{item}"


def holding_key(item: ItemKey) -> str:
    return f"{keys.HOLDING}{item}"


def pulling_key(item: ItemKey) -> str:
    return f"{keys.PULLING}{item}"


def pack(value: Mapping[str, Any]) -> bytes:
    return msgpack.packb(dict(value), use_bin_type=True)


#: How deep maps and arrays may nest in a fact value (ours nest two deep).
MAX_VALUE_DEPTH = 8


def _sane(v: Any, depth: int = 0) -> bool:
    if isinstance(v, (dict, list)):
        if depth >= MAX_VALUE_DEPTH:
            return False
        items = [x for kv in v.items() for x in kv] if isinstance(v, dict) else v
        return all(_sane(x, depth + 1) for x in items)
    return True


def unpack(raw: bytes) -> dict[str, Any] | None:
    """A fact value as a map, or None if it is not a well-formed, bounded one."""
    try:
        v = msgpack.unpackb(
            raw, raw=False, max_bin_len=1 << 16, max_str_len=1 << 16, max_map_len=256, max_array_len=256, max_ext_len=0
        )
    except Exception:
        return None
    return v if isinstance(v, dict) and _sane(v) else None


def encode_version(v: FileVersion) -> bytes:
    return pack({"d": v.digest, "s": v.size, "c": v.chunk_size, "t": v.hlc, "a": dict(v.attrs)})


def encode_holding(v: FileVersion) -> bytes:
    """What a holder announces: the digest it holds, with the size and chunk size to serve it."""
    return pack({"d": v.digest, "s": v.size, "c": v.chunk_size})


def held_versions(m: Manifest, origin: str) -> dict[str, tuple[ItemKey, int, int]]:
    """`{digest: (item, size, chunk_size)}` of what `origin` holds (to serve it)."""
    st = m.origins.get(origin)
    out: dict[str, tuple[ItemKey, int, int]] = {}
    for key, f in st.facts.items() if st else ():
        if f.tombstone or not key.startswith(keys.HOLDING):
            continue
        item, v = item_of(key, keys.HOLDING), unpack(f.value)
        try:
            if item is not None and v is not None:
                out[str(v["d"])] = (item, int(v["s"]), int(v["c"]))
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
            continue
    return out


def item_of(key: str, prefix: str) -> ItemKey | None:
    """The item a fact key names after `prefix` (`v/`, `h/`, ...), or None if it names none."""
    parts = key[len(prefix) :].split("/", 1)
    if len(parts) != 2:
        return None
    try:
        return check_item(ItemKey(parts[0], parts[1]))
    except LocalProtocolError:
        return None


def decode_version(origin: str, key: str, raw: bytes) -> FileVersion | None:
    item, v = item_of(key, keys.VERSION), unpack(raw)
    if item is None or v is None:
        return None
    try:
        d, s, c, t = str(v["d"]), int(v["s"]), int(v["c"]), int(v["t"])
        attrs = {str(k): str(x) for k, x in dict(v.get("a") or {}).items()}
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return None
    if s < 0 or c <= 0 or len(d) != 32 or d.strip("0123456789abcdef"):
        return None
    return FileVersion(item=item, digest=d, size=s, chunk_size=c, hlc=t, origin=origin, attrs=attrs)


def newest_versions(m: Manifest) -> dict[ItemKey, FileVersion]:
    """The winning version of every named file: newest by (hlc, origin), the same on every host."""
    best: dict[ItemKey, FileVersion] = {}
    for origin, f in m.live_facts(keys.VERSION):
        v = decode_version(origin, f.key, f.value)
        if v is not None and (v.item not in best or v.order > best[v.item].order):
            best[v.item] = v
    return best


def holdings(m: Manifest, origin: str, prefix: str = keys.HOLDING) -> dict[ItemKey, str]:
    """The digest `origin` holds of each item, as it announced (with `keys.PULLING`: the digest it
    is in the middle of)."""
    st = m.origins.get(origin)
    out: dict[ItemKey, str] = {}
    if st is None:
        return out
    for key, f in st.facts.items():
        if f.tombstone or not key.startswith(prefix):
            continue
        item, v = item_of(key, prefix), unpack(f.value)
        if item is not None and v is not None and isinstance(v.get("d"), str):
            out[item] = v["d"]
    return out


def holders(m: Manifest, prefix: str = keys.HOLDING) -> dict[tuple[ItemKey, str], list[str]]:
    """`{(item, digest): [hosts holding it]}` (with `keys.PULLING`: hosts pulling it), sorted by name."""
    out: dict[tuple[ItemKey, str], list[str]] = {}
    for origin in sorted(m.origins):
        for item, digest in holdings(m, origin, prefix).items():
            out.setdefault((item, digest), []).append(origin)
    return out


def node_record(m: Manifest, origin: str) -> dict[str, Any] | None:
    """`origin`'s node record (a fresh dict)."""
    v = fact_value(m, origin, keys.NODE)
    return dict(v) if v is not None else None


def relays_of(m: Manifest, origin: str) -> list[str]:
    """The relays a host nobody can dial says its links are up to (its node record), valid names only."""
    v = fact_value(m, origin, keys.NODE)
    relays = v.get("relays") if v is not None else None
    return [r for r in relays if isinstance(r, str) and is_node_id(r)] if isinstance(relays, list) else []


def fact_value(m: Manifest, origin: str, key: str) -> dict[str, Any] | None:
    """The decoded value of `origin`'s live fact `key` (None: no such fact, or not a map),
    decoded once per fact and shared: read it, do not modify it. The router and the leader
    lookup ask for every host's record or leader fact several times a gossip round, and
    decoding each was most of a simulated cluster's time."""
    st = m.origins.get(origin)
    f = st.facts.get(key) if st is not None else None
    if f is None or f.tombstone:
        return None
    cache = _DECODED.get(m)
    if cache is None:
        cache = _DECODED[m] = {}
    hit = cache.get((origin, key))
    if hit is None or hit[0] is not f:
        hit = cache[(origin, key)] = (f, unpack(f.value))
    return hit[1]


_DECODED: "weakref.WeakKeyDictionary[Manifest, dict[tuple[str, str], tuple[Any, dict[str, Any] | None]]]" = (
    weakref.WeakKeyDictionary()
)


def leader_term(m: Manifest, origin: str) -> int | None:
    """The term `origin` last announced it leads (its `leader` fact), if any."""
    t = (fact_value(m, origin, keys.LEADER) or {}).get("t")
    return t if isinstance(t, int) and not isinstance(t, bool) else None
