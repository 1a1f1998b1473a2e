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
`now` is passed in; `rng` is the caller's seeded random.Random.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

_NOTHING: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class PullConfig:
    """How a pull drives its `Swarm`: the daemon's (`ringmesh.node.files.transfer.pull`) and
    the simulator's model of it (`sim/flows.py`)."""

    per_peer: int = 4  # requests in flight per source
    endgame_after: float = 2.0  # seconds a chunk request may take before another source is asked too
    tick: float = 1.0  # a pull plans at least this often


PULL = PullConfig()


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

    def failed(self, peer: str, now: float, chunk: int | None = None) -> list[int]:
        """`peer` failed (a bad chunk, an error, a timeout): it loses every request it had."""
        self.banned_until[peer] = now + self.penalty
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
        load = {p: 0 for p in self.sources}
        for asked in self.in_flight.values():
            for peer in asked:
                load[peer] = load.get(peer, 0) + 1
        usable = [p for p in sorted(self.sources) if self.banned_until.get(p, float("-inf")) <= now]
        missing = [c for c in range(self.n_chunks) if c not in self.have]
        want = [c for c in missing if c not in self.in_flight]
        out: list[tuple[str, int]] = []

        def free(p: str) -> bool:
            return load.get(p, 0) < self.per_peer

        def pick(chunk: int, exclude: set[str]) -> str | None:
            able = [p for p in usable if free(p) and p not in exclude and self._has(p, chunk)]
            if not able:
                return None
            return max(able, key=lambda p: (self.rate.get(p, 0.0), -load.get(p, 0), p))

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
        for c in want:
            p = pick(c, set())
            if p is not None:
                out.append((p, c))
                self.in_flight.setdefault(c, set()).add(p)
                self.asked_at[c] = now
                load[p] = load.get(p, 0) + 1
        if not any(c not in self.in_flight for c in missing):  # endgame: everything is asked for
            for c in sorted(self.in_flight):
                asked = self.in_flight[c]
                if len(asked) < self.endgame_copies and now - self.asked_at.get(c, now) >= self.endgame_after:
                    p = pick(c, asked)
                    if p is not None:
                        out.append((p, c))
                        asked.add(p)
                        load[p] = load.get(p, 0) + 1
        return out
