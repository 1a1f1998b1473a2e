"""Game streams, the pure part: high-water marks on gossip, durability, and what to pull.

A stream is `(origin, config_key)`; its games are numbered 1, 2, 3, ... by the origin. Every
host that holds games of a stream advertises, as a fact of its own origin,

    g/<origin>/<config_key> = {"hw": n}      it holds every game 1..n of that stream

so which hosts hold game g is `{h : hw[h][stream(g)] >= seq(g)}`: metadata grows with
streams, not with games (DESIGN.md "Game streams"). Pushes are acknowledged per game by the
receiver after its fsync, which tells the origin about copies before gossip does.

A game is *durable* once `min_copies` hosts hold it and at least one of them is persistent
(not ephemeral). A holder whose copy rots lowers its mark below it (`GamesCorrupt`), so a
mark may fall, and a game durable before may not be any more. Games lost on every holder are
listed by the host that found so (`x/<origin>/<config_key>`, `encode_lost`); marks skip
them, and durability passes over them. `Durability` answers that on the origin; `pull_plan` tells a host which
ranges it lacks and whom to ask. Nothing here does I/O; the stream log (`streamlog.py`) and
the daemon do.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from . import catalog, keys
from .manifest import Manifest, OriginChange

StreamKey = tuple[str, str]  # (origin, config_key)
#: Bounds on what acks from peers can make an origin keep: acks may come before our own fsync
#: of a game is reported, but not thousands of games ahead of it, and for a few dozen configs.
MAX_ACKS_AHEAD = 4096
MAX_STREAMS = 256


def hw_key(stream: StreamKey) -> str:
    return f"{keys.HW}{stream[0]}/{stream[1]}"


def parse_hw_key(key: str) -> StreamKey | None:
    parts = key[len(keys.HW) :].split("/")
    if not key.startswith(keys.HW) or len(parts) != 2 or not all(catalog.is_node_id(p) for p in parts):
        return None
    return parts[0], parts[1]


def encode_hw(hw: int, at: float | None = None, lo: int = 0) -> bytes:
    """A holder's mark; the origin adds `t`, when its newest game was stored (ms, its clock),
    and, once retention dropped some, `lo`: it no longer holds games 1..lo (readers that do
    not know `lo` take the fact as before)."""
    value = {"hw": int(hw)}
    if at is not None:
        value["t"] = int(at * 1000)
    if lo:
        value["lo"] = int(lo)
    return catalog.pack(value)


MAX_LOST_RANGES = 1024  # ranges one `x/` fact lists (older ones go first)


def lost_key(stream: StreamKey) -> str:
    return f"{keys.LOST}{stream[0]}/{stream[1]}"


def encode_lost(seqs: Iterable[int]) -> bytes:
    """Seqs as `{"r": [[first, last], ...]}`, ascending, the newest `MAX_LOST_RANGES` ranges."""
    ranges: list[list[int]] = []
    for q in sorted(set(seqs)):
        if ranges and ranges[-1][1] == q - 1:
            ranges[-1][1] = q
        else:
            ranges.append([q, q])
    return catalog.pack({"r": ranges[-MAX_LOST_RANGES:]})


def decode_lost(raw: bytes | None, limit: int = 1 << 20) -> set[int]:
    """The seqs an `x/` fact lists (at most `limit`: a hostile fact does not cost memory)."""
    v = catalog.unpack(raw) if raw is not None else None
    out: set[int] = set()
    for r in (v or {}).get("r") or ():
        if isinstance(r, (list, tuple)) and len(r) == 2 and all(type(x) is int for x in r) and 1 <= r[0] <= r[1]:
            out.update(range(r[0], min(r[1] + 1, r[0] + limit - len(out))))
            if len(out) >= limit:
                break
    return out


def floor_of(m: Manifest, stream: StreamKey, holder: str) -> int:
    """Through which seq `holder` dropped the stream's games (only an origin drops its own)."""
    if holder != host_of(stream[0]):
        return 0
    lo = (catalog.fact_value(m, holder, hw_key(stream)) or {}).get("lo")
    return lo if isinstance(lo, int) and not isinstance(lo, bool) and lo > 0 else 0


def host_of(stream_origin: str) -> str:
    """The host of a stream origin `<host>.<incarnation>`."""
    host, _, inc = stream_origin.rpartition(".")
    return host if host and inc.isdigit() else stream_origin


def freshness(m: Manifest, game_hosts: Iterable[str], now: float) -> dict[str, dict]:
    """Per config key: streams, games produced, the newest game's age, game hosts behind."""
    out: dict[str, dict] = {}
    hosts = set(game_hosts)
    for (origin, key), holders in sorted(marks(m).items()):
        host = host_of(origin)
        top = holders.get(host, max(holders.values()))
        raw = m.get(host, hw_key((origin, key)))
        t = (catalog.unpack(raw) or {}).get("t") if raw is not None else None
        c = out.setdefault(key, {"streams": 0, "games": 0, "newest_age_s": None, "hosts_behind": set()})
        c["streams"] += 1
        c["games"] += top
        if isinstance(t, int):
            age = round(max(0.0, now - t / 1000), 3)
            c["newest_age_s"] = age if c["newest_age_s"] is None else min(c["newest_age_s"], age)
        c["hosts_behind"].update(h for h in hosts if h != host and holders.get(h, 0) < top)
    for c in out.values():
        c["hosts_behind"] = sorted(c["hosts_behind"])
    return out


def materialised_through(m: Manifest, stream: StreamKey, hosts: Iterable[str]) -> int:
    """The highest seq up to which every one of `hosts` holds the stream's games *in its
    database*: its mark, lowered to below the first game of the stream it holds back (`gh/`)."""
    origin, key = stream
    holders = marks(m).get(stream, {})
    through = None
    for h in hosts:
        held = (catalog.fact_value(m, h, keys.HELD + key) or {}).get("s") or {}
        seqs = held.get(origin) if isinstance(held, dict) else None
        first = min((q for q in seqs if isinstance(q, int)), default=None) if isinstance(seqs, list) else None
        top = holders.get(h, 0) if first is None else min(holders.get(h, 0), first - 1)
        through = top if through is None else min(through, top)
    return through or 0


def marks(m: Manifest) -> dict[StreamKey, dict[str, int]]:
    """`{stream: {holder: high-water mark}}` as every holder advertised it.

    Kept current per manifest (`_MarksIndex`, which watches it): each change of a g/ fact is
    decoded once, when it is made, and nothing is walked per call. The answer is shared and
    changes with the manifest: read it, do not modify it, and do not keep it across a change."""
    ix = _INDEX.get(m)
    if ix is None:
        ix = _INDEX[m] = _MarksIndex(m)
    return ix.merged


def _hw_of(key: str, f) -> tuple[StreamKey | None, int | None]:
    """The stream a g/ fact is about and the mark it advertises (None where it says none)."""
    stream = parse_hw_key(key)
    if stream is None or f.tombstone:
        return stream, None
    v = catalog.unpack(f.value)
    hw = v.get("hw") if v else None
    return stream, hw if isinstance(hw, int) and not isinstance(hw, bool) and hw >= 0 else None


class _MarksIndex:
    """`marks(m)` of one manifest, kept current change by change: it watches the manifest
    (`Manifest.watch`), so every write, apply, reset, purge or load reaches it as it is made,
    and only the g/ facts a change carries are decoded. Walking every origin per call cost
    O(hosts) per gossip round and host (the simulator at N = 1,000), and decoding every g/
    fact of every origin at each change O(streams x holders) per game stored."""

    __slots__ = ("of", "merged")

    def __init__(self, m: Manifest) -> None:
        self.of: dict[str, dict[StreamKey, int]] = {}  # origin -> its marks
        self.merged: dict[StreamKey, dict[str, int]] = {}
        for o, st in m.origins.items():
            self._read(o, st.facts.items(), reset=True)
        m.watch(self._observe)

    def _observe(self, ch: OriginChange) -> None:
        if ch.reset:
            self._read(ch.origin, [(f.key, f) for f in ch.upserts], reset=True)
            return
        self._read(ch.origin, [(f.key, f) for f in ch.upserts if f.key.startswith(keys.HW)], reset=False)
        # a purged key was a tombstone, whose mark went when it was written

    def _read(self, origin: str, facts, reset: bool) -> None:
        new: dict[StreamKey, int | None] = {}
        for k, f in facts:
            if k.startswith(keys.HW):
                stream, hw = _hw_of(k, f)
                if stream is not None:
                    new[stream] = hw
        if reset:
            for stream in [s for s in self.of.get(origin, ()) if s not in new]:
                self._put(origin, stream, None)
        for stream, hw in sorted(new.items()):
            self._put(origin, stream, hw)

    def _put(self, origin: str, stream: StreamKey, hw: int | None) -> None:
        mine = self.of.setdefault(origin, {})
        if hw is None:
            if mine.pop(stream, None) is not None:
                holders = self.merged[stream]
                del holders[origin]
                if not holders:
                    del self.merged[stream]
        else:
            mine[stream] = hw
            self.merged.setdefault(stream, {})[origin] = hw
        if not mine:
            del self.of[origin]


_INDEX: "weakref.WeakKeyDictionary[Manifest, _MarksIndex]" = weakref.WeakKeyDictionary()


@dataclass
class _Stream:
    stored: int = 0  # highest seq the origin made durable locally (contiguous)
    acks: dict[int, set[str]] = field(default_factory=dict)  # seq -> hosts that acked it
    marks: dict[str, int] = field(default_factory=dict)  # holder -> advertised high-water mark
    durable: int = 0  # every seq <= durable is durable (or lost)
    bad: set[int] = field(default_factory=set)  # seqs our own copy of rotted, until stored again
    lost: set[int] = field(default_factory=set)  # seqs lost on every holder: passed over


class Durability:
    """The origin's view of its own games' copies. Marks may fall (a holder's copy rotted):
    `durable` falls with them to below the first game with too few copies left."""

    def __init__(self, me: str, min_copies: int, persistent: Callable[[str], bool]) -> None:
        if min_copies < 1:
            raise ValueError("min_copies must be at least 1")
        self.me, self.min_copies, self.persistent = me, min_copies, persistent
        self.streams: dict[str, _Stream] = {}  # config_key -> state (our own streams only)

    def _s(self, config_key: str) -> _Stream:
        return self.streams.setdefault(config_key, _Stream())

    def stored(self, config_key: str, through: int, seqs: Iterable[int] = ()) -> list[int]:
        """Games 1..through are fsynced here (`seqs` among them again, if they had rotted);
        returns seqs that became durable."""
        s = self._s(config_key)
        s.stored = max(s.stored, through)
        s.bad.difference_update(q for q in seqs)
        s.bad = {q for q in s.bad if q > through}
        return self._advance(config_key)

    def corrupt(self, config_key: str, seqs: Iterable[int]) -> None:
        """Our own copies of `seqs` rotted: they count no more until stored again."""
        s = self._s(config_key)
        fresh = {q for q in seqs if 0 < q <= s.stored} - s.bad
        if fresh:
            s.bad |= fresh
            self._recheck(config_key, min(fresh))

    def lost(self, config_key: str, seqs: Iterable[int]) -> list[int]:
        """Seqs lost on every holder: passed over from now on; returns seqs that became durable."""
        s = self._s(config_key)
        s.lost.update(q for q in seqs if q > 0)
        return self._advance(config_key)

    def acked(self, config_key: str, holder: str, seqs: Iterable[int]) -> list[int]:
        if config_key not in self.streams and len(self.streams) >= MAX_STREAMS:
            return []  # a confused (or hostile) peer's acks for configs we never made games of
        s = self._s(config_key)
        for q in seqs:
            if s.durable < q <= s.stored + MAX_ACKS_AHEAD:
                s.acks.setdefault(q, set()).add(holder)
        return self._advance(config_key)

    def observe(self, config_key: str, holder_marks: Mapping[str, int]) -> list[int]:
        """Gossip told us these holders' high-water marks for our stream (a mark that fell
        lowers `durable` where that leaves too few copies)."""
        s = self._s(config_key)
        fell = None
        for h, hw in holder_marks.items():
            if h != self.me:
                if hw < s.marks.get(h, 0):  # its copies above went bad: its acks of them too
                    fell = hw if fell is None else min(fell, hw)
                    for q, hs in s.acks.items():
                        if q > hw:
                            hs.discard(h)
                s.marks[h] = hw
        if fell is not None:
            self._recheck(config_key, fell + 1)
        return self._advance(config_key)

    def holders(self, config_key: str, seq: int) -> set[str]:
        s = self._s(config_key)
        out = {h for h, hw in s.marks.items() if hw >= seq} | s.acks.get(seq, set())
        if s.stored >= seq and seq not in s.bad:
            out.add(self.me)
        return out

    def is_durable(self, config_key: str, seq: int) -> bool:
        s = self._s(config_key)
        return seq not in s.lost and (seq <= s.durable or self._ok(self.holders(config_key, seq)))

    def durable_through(self, config_key: str) -> int:
        return self._s(config_key).durable

    def pending(self, config_key: str) -> list[int]:
        """Stored here but not yet durable, oldest first (what a spot host must drain)."""
        s = self._s(config_key)
        return [
            q
            for q in range(s.durable + 1, s.stored + 1)
            if q not in s.lost and not self._ok(self.holders(config_key, q))
        ]

    def _ok(self, hosts: set[str]) -> bool:
        return len(hosts) >= self.min_copies and any(self.persistent(h) for h in hosts)

    def _recheck(self, config_key: str, first: int) -> None:
        """Copies of seqs >= `first` went away: `durable` falls below the first left short."""
        s = self._s(config_key)
        for q in range(max(first, 1), s.durable + 1):
            if q not in s.lost and not self._ok(self.holders(config_key, q)):
                s.durable = q - 1
                break

    def _advance(self, config_key: str) -> list[int]:
        s = self._s(config_key)
        done = []
        while s.durable < s.stored and (s.durable + 1 in s.lost or self._ok(self.holders(config_key, s.durable + 1))):
            s.durable += 1
            s.acks.pop(s.durable, None)
            if s.durable not in s.lost:
                done.append(s.durable)
        return done


@dataclass(frozen=True, slots=True)
class PullRequest:
    stream: StreamKey
    source: str
    first: int
    last: int


def pull_plan(
    me: str,
    stream_marks: Mapping[StreamKey, Mapping[str, int]],
    mine: Mapping[StreamKey, int],
    *,
    should_hold: Callable[[StreamKey], bool],
    healthy: Callable[[str], bool],
    busy: Iterable[StreamKey] = (),
    batch: int = 256,
    max_sources: int = 3,
    floor: Callable[[StreamKey, str], int] = lambda stream, holder: 0,
) -> list[PullRequest]:
    """Ranges this host lacks, split over up to `max_sources` healthy holders that have them
    (`floor`: through which seq a holder dropped them; one that dropped what we lack next is
    not asked).

    For each stream it should hold, the backlog `mine+1 .. best advertised mark` is cut into
    consecutive ranges of at most `batch` games; each range goes to a holder whose mark covers
    it, the holders taken in turn so that a long backlog comes from several at once.
    """
    out: list[PullRequest] = []
    skip = set(busy)
    for stream in sorted(stream_marks):
        if stream in skip or not should_hold(stream):
            continue
        have = mine.get(stream, 0)
        holders = sorted(
            (
                (hw, h)
                for h, hw in stream_marks[stream].items()
                if h != me and hw > have and healthy(h) and floor(stream, h) <= have
            ),
            key=lambda x: (-x[0], x[1]),
        )[:max_sources]
        if not holders:
            continue
        first, top = have + 1, holders[0][0]
        load = {h: 0 for _, h in holders}
        for _ in range(4 * max_sources):  # enough requests in flight per stream at a time
            if first > top:
                break
            # the least-loaded holder that has the range; among equals the one with the lowest
            # mark, since it can serve only the early ranges
            hw, source = min(((hw, h) for hw, h in holders if hw >= first), key=lambda x: (load[x[1]], x[0], x[1]))
            last = min(first + batch - 1, hw)
            out.append(PullRequest(stream, source, first, last))
            load[source] += 1
            first = last + 1
    return out


def retention_floor(
    durable_through: int,
    stored_at: Mapping[int, float],
    now: float,
    retention: float,
    dropped_through: int = 0,
    held_from: int | None = None,
) -> int:
    """How far an ephemeral origin may drop its own games: the highest seq that is durable
    elsewhere *and* was stored at least `retention` seconds ago, with every seq below it so
    too (a seq whose time is unknown counts as just stored). Never more than that, and never
    a game this host holds back from its own database (`held_from`: the lowest such seq), so
    that `games retry` finds it. Seqs up to `dropped_through` are gone already."""
    floor = dropped_through
    top = durable_through if held_from is None else min(durable_through, held_from - 1)
    for q in range(dropped_through + 1, top + 1):
        if q not in stored_at or now - stored_at[q] < retention:
            break
        floor = q
    return floor
