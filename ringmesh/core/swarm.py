"""Which chunk to ask whom for: the multi-source chunk scheduler of one file version (pure).

Sources are complete holders and peers in the middle of the same version (they serve the
chunks they verified and announce new ones). The policy is BitTorrent's:
  * rarest first: the chunk the fewest sources have or are fetching (peers in the middle
    announce what they ask for, `expect`), so that rare chunks multiply and two pullers do not
    ask the publisher for the same chunk; ties are broken by this host's own random order, so
    a fresh swarm (every chunk equally rare) starts at random places and spreads out at once;
  * at most `per_peer` requests in flight per source, faster sources (by measured
    throughput) preferred among those that have the chunk;
  * endgame: once every missing chunk is requested, the ones outstanding for `endgame_after`
    seconds or more are asked again from other sources (at most `endgame_copies` in all); the
    first copy to arrive wins and the others are cancelled (a small file is not fetched twice
    just because it is one chunk);
  * a source that fails or sends a chunk that does not verify loses its requests and is not
    asked again for `penalty` seconds.
Requests of "any of these" (`plan_asks`, `Ask`): a receiver names the chunks it would take
from a source, rarest first, and the source (`Seeding`) picks which to send: its least-served
chunk first, so that a publisher sends each chunk once before any twice; among the requesters
waiting for an upload slot it serves the one holding the fewest chunks first.
`now` is passed in; `rng` is the caller's seeded random.Random.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Container, Iterable

_NOTHING: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class PullConfig:
    """How a pull drives its `Swarm`: the daemon's (`ringmesh.node.files.transfer.pull`) and
    the simulator's model of it (`sim/flows.py`)."""

    per_peer: int = 4  # requests in flight per source
    endgame_after: float = 2.0  # seconds a chunk request may take before another source is asked too
    tick: float = 1.0  # a pull plans at least this often
    asks_per_peer: int = 1  # "any of these" requests open per source (`Swarm.plan_asks`)
    ask_width: int = 32  # chunks named in one such request
    ask_limit: int = 12  # such requests open and chunks in flight, in all
    uploads: int = 4  # chunks a source sends at once (`Seeding.may_start`) ...
    extra_uploads: int = 2  # ... and up to this many more while its uplink is not full


PULL = PullConfig()


@dataclass(frozen=True, slots=True)
class Ask:
    """A request to `peer` for any one of `chunks` (best first), from a host holding `held`
    chunks. `id` -1: a request for exactly `chunks[0]`, counted in flight when planned (the
    endgame's copies); otherwise the chunk is in flight once the source says which (`started`).
    `renew`: new chunks for open request `id` (none: withdrawn), ignored if it is served already."""

    peer: str
    chunks: tuple[int, ...]
    held: int
    id: int = -1
    renew: bool = False


@dataclass(slots=True)
class Swarm:
    n_chunks: int
    rng: random.Random
    per_peer: int = 4
    endgame_copies: int = 2
    penalty: float = 30.0
    endgame_after: float = 0.0
    have: set[int] = field(default_factory=set)
    sources: dict[str, set[int] | None] = field(default_factory=dict)  # None: the whole file
    in_flight: dict[int, set[str]] = field(default_factory=dict)  # chunk -> peers asked
    asked_at: dict[int, float] = field(default_factory=dict)  # chunk -> when it was first asked for
    rate: dict[str, float] = field(default_factory=dict)  # peer -> bytes/s, measured
    banned_until: dict[str, float] = field(default_factory=dict)
    expected: dict[str, dict[int, float]] = field(default_factory=dict)  # peer -> chunk it fetches -> since
    expect_ttl: float = 10.0  # a fetch announced this long ago and not finished no longer counts
    _order: list[int] = field(default_factory=list)  # chunk -> this host's random rank
    asks: dict[int, Ask] = field(default_factory=dict)  # open "any of" requests, by id
    _next_ask: int = 0
    ask_limit: int = PULL.ask_limit  # plan_asks: requests open and in flight, in all

    # -- what the sources say ---------------------------------------------------------------

    def source(self, peer: str, chunks: set[int] | None) -> None:
        """`peer` holds the whole version (None) or these chunks of it."""
        self.sources[peer] = None if chunks is None else set(chunks)

    def announce(self, peer: str, chunk: int) -> None:
        """A peer in the middle of the version verified one more chunk."""
        held = self.sources.setdefault(peer, set())
        if held is not None:
            held.add(chunk)
        self.expected.get(peer, {}).pop(chunk, None)

    def expect(self, peer: str, chunk: int, now: float) -> None:
        """A peer in the middle of the version asked a source for `chunk`: it will have it soon."""
        if not self._has(peer, chunk):
            self.expected.setdefault(peer, {})[chunk] = now

    def _has(self, peer: str, chunk: int) -> bool:
        held = self.sources.get(peer, _NOTHING)
        return held is None or chunk in held

    # -- outcomes ----------------------------------------------------------------------------

    def received(self, peer: str, chunk: int, nbytes: int, seconds: float) -> list[str]:
        """A verified chunk from `peer`; returns the other peers whose copies to cancel."""
        self.have.add(chunk)
        if seconds > 0:
            r = nbytes / seconds
            self.rate[peer] = r if peer not in self.rate else 0.7 * self.rate[peer] + 0.3 * r
        asked = self.in_flight.pop(chunk, set())
        self.asked_at.pop(chunk, None)
        return sorted(asked - {peer})

    def started(self, ask: int, chunk: int, now: float) -> bool:
        """The source of open request `ask` sends `chunk`. False: not wanted (held, or in flight
        from another source): cancel it."""
        a = self.asks.pop(ask, None)
        if a is None or chunk in self.have:
            return False
        if chunk in self.in_flight:
            return a.peer in self.in_flight[chunk]  # already asked of it by name: one copy
        self.in_flight[chunk] = {a.peer}
        self.asked_at[chunk] = now
        return True

    def failed(self, peer: str, now: float, chunk: int | None = None) -> list[int]:
        """`peer` failed (a bad chunk, an error, a timeout): it loses every request it had."""
        self.banned_until[peer] = now + self.penalty
        for i in [i for i, a in self.asks.items() if a.peer == peer]:
            del self.asks[i]
        lost = []
        for c, asked in list(self.in_flight.items()):
            if peer in asked:
                asked.discard(peer)
                lost.append(c)
                if not asked:
                    del self.in_flight[c]
                    self.asked_at.pop(c, None)
        return sorted(lost)

    @property
    def done(self) -> bool:
        return len(self.have) >= self.n_chunks

    # -- the plan ----------------------------------------------------------------------------

    def plan(self, now: float) -> list[tuple[str, int]]:
        """New requests `(peer, chunk)` to send now."""
        load, usable, want = self._state(now)
        out: list[tuple[str, int]] = []
        for c in want:
            p = self._pick(c, set(), usable, load)
            if p is not None:
                out.append((p, c))
                self._ask(p, c, now, load)
        return out + [(a.peer, a.chunks[0]) for a in self._endgame(now, usable, load)]

    def plan_asks(self, now: float, per_peer: int = PULL.asks_per_peer, width: int = PULL.ask_width) -> list[Ask]:
        """New "any of these" requests to send now: to each usable source with fewer than
        `per_peer` open and fewer than `self.per_peer` requests in all (open and in flight), the
        `width` rarest chunks it holds or fetches that are neither held nor in flight here (those
        no other open request names first), while `ask_limit` allows; open requests naming a
        chunk held or in flight since are renewed (`renew`); then the endgame's copies (`id` -1)."""
        load, usable, want = self._state(now)
        out: list[Ask] = []
        for a in list(self.asks.values()):  # open requests naming a chunk held or in flight: renewed
            if any(c in self.have or c in self.in_flight for c in a.chunks):
                del self.asks[a.id]  # (chunks in flight: they were not, when it was sent)
                load[a.peer] -= 1
                named = {c for b in self.asks.values() for c in b.chunks}
                chunks = self._candidates(a.peer, want, named, width)
                out.append(Ask(a.peer, chunks, len(self.have), a.id, renew=True))
                if chunks:
                    self.asks[a.id] = out[-1]
                    load[a.peer] += 1
        opened = {p: 0 for p in usable}
        for a in self.asks.values():
            opened[a.peer] = opened.get(a.peer, 0) + 1
        total = len(self.in_flight) + len(self.asks)
        for p in usable:
            if opened[p] >= per_peer or load.get(p, 0) >= self.per_peer:
                continue
            if total >= self.ask_limit:
                break
            named = {c for b in self.asks.values() for c in b.chunks}
            if chunks := self._candidates(p, want, named, width):
                a = Ask(p, chunks, len(self.have), self._next_ask)
                self._next_ask += 1
                self.asks[a.id] = a
                load[p] = load.get(p, 0) + 1
                out.append(a)
                total += 1
        return out + self._endgame(now, usable, load)

    def _candidates(self, peer: str, want: list[int], named: set[int], width: int) -> tuple[int, ...]:
        """The first `width` of `want` that `peer` holds or fetches, those not in `named` first."""
        coming = self.expected.get(peer, {})
        held = [c for c in want if self._has(peer, c) or c in coming]
        return tuple(
            itertools.islice(
                itertools.chain((c for c in held if c not in named), (c for c in held if c in named)), width
            )
        )

    def stale(self) -> bool:
        """Some open request names a chunk held or in flight (`plan_asks` renews it)."""
        return any(c in self.have or c in self.in_flight for a in self.asks.values() for c in a.chunks)

    def _state(self, now: float) -> tuple[dict[str, int], list[str], list[int]]:
        """Requests per source (in flight and open), the sources not banned, the chunks neither
        held nor in flight, rarest first (ties: this host's random order)."""
        load = {p: 0 for p in self.sources}
        for asked in self.in_flight.values():
            for peer in asked:
                load[peer] = load.get(peer, 0) + 1
        for a in self.asks.values():
            load[a.peer] = load.get(a.peer, 0) + 1
        usable = [p for p in sorted(self.sources) if self.banned_until.get(p, float("-inf")) <= now]
        want = [c for c in range(self.n_chunks) if c not in self.have and c not in self.in_flight]
        if len(self._order) != self.n_chunks:
            self._order = list(range(self.n_chunks))
            self.rng.shuffle(self._order)
        coming: dict[int, int] = {}
        for chunks in self.expected.values():
            for c, since in chunks.items():
                if now - since < self.expect_ttl:
                    coming[c] = coming.get(c, 0) + 1
        rarity = {c: sum(1 for p in usable if self._has(p, c)) + coming.get(c, 0) for c in want}
        want.sort(key=lambda c: (rarity[c], self._order[c]))
        return load, usable, want

    def _pick(self, chunk: int, exclude: set[str], usable: list[str], load: dict[str, int]) -> str | None:
        able = [p for p in usable if load.get(p, 0) < self.per_peer and p not in exclude and self._has(p, chunk)]
        if not able:
            return None
        return max(able, key=lambda p: (self.rate.get(p, 0.0), -load.get(p, 0), p))

    def _ask(self, peer: str, chunk: int, now: float, load: dict[str, int]) -> None:
        self.in_flight.setdefault(chunk, set()).add(peer)
        self.asked_at.setdefault(chunk, now)
        load[peer] = load.get(peer, 0) + 1

    def _endgame(self, now: float, usable: list[str], load: dict[str, int]) -> list[Ask]:
        """Once every missing chunk is in flight: a copy of each late one from another source."""
        if len(self.have) + len(self.in_flight) < self.n_chunks:
            return []
        out = []
        for c in sorted(self.in_flight):
            asked = self.in_flight[c]
            if len(asked) < self.endgame_copies and now - self.asked_at.get(c, now) >= self.endgame_after:
                p = self._pick(c, asked, usable, load)
                if p is not None:
                    out.append(Ask(p, (c,), len(self.have)))
                    self._ask(p, c, now, load)
        return out


@dataclass(slots=True)
class Seeding:
    """A source's side of "any of these" requests: which chunk to send (`choose`: the one it
    has sent least often, ties in the requester's order), whom to serve next when an upload
    slot frees (`next`: the requester holding the fewest chunks, ties first come first served)
    and when a slot is free (`may_start`). A request naming only chunks the source is still
    fetching waits until it has one."""

    n_chunks: int
    served: list[int] = field(default_factory=list)  # chunk -> copies sent (started)
    uploads: int = PULL.uploads
    extra_uploads: int = PULL.extra_uploads

    def may_start(self, sending: int, uplink_full: bool) -> bool:
        """Another chunk may start while `sending` are under way: below `uploads`, or below
        `uploads + extra_uploads` while the uplink is not full (the others are slowed elsewhere)."""
        return sending < self.uploads or (not uplink_full and sending < self.uploads + self.extra_uploads)

    def __post_init__(self) -> None:
        if len(self.served) != self.n_chunks:
            self.served = [0] * self.n_chunks

    def choose(self, chunks: Iterable[int], have: Container[int] | None = None) -> int | None:
        """The chunk to send for a request naming `chunks`, of those in `have` (None: all), counted
        as served; None if it holds none of them yet."""
        able = [c for c in chunks if have is None or c in have]
        if not able:
            return None
        best = min(able, key=lambda c: self.served[c])  # min keeps the first of equals
        self.served[best] += 1
        return best

    def unsent(self, chunk: int) -> None:
        """A copy `choose` counted was cancelled before it was whole."""
        self.served[chunk] = max(0, self.served[chunk] - 1)

    @staticmethod
    def next(waiting: list[Ask], have: Container[int] | None = None) -> int | None:
        """Index in `waiting` (in arrival order) of the request to serve next, of those naming a
        chunk in `have` (None: all); None if there is none."""
        able = [i for i, a in enumerate(waiting) if have is None or any(c in have for c in a.chunks)]
        return min(able, key=lambda i: waiting[i].held) if able else None
