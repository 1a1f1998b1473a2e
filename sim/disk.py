"""A simulated disk: what a node made durable (manifest changes, its vote, its clock, its
stream log, the files it installed) and how full it is.

A crash keeps exactly this; a restarted peer is rebuilt from it, as the daemon rebuilds
itself from SQLite. `wipe` (a lost disk) replaces it with a blank one of the same size.
Usage is `base` (everything that is not ringmesh's) + `filler` (a disk filling up) + the
files and games held; `capacity` 0 means the size is not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ringmesh.core import ItemKey, Manifest, OriginState, Persist


@dataclass
class Disk:
    states: dict[str, OriginState] = field(default_factory=dict)
    vote: tuple[int, str | None] = (0, None)
    hlc: int = 0
    games: dict[tuple[str, str], dict[int, bytes]] = field(default_factory=dict)  # the stream log
    files: dict[ItemKey, tuple[str, int]] = field(default_factory=dict)  # installed: item -> (digest, size)
    capacity: int = 0
    base: int = 0
    filler: int = 0
    game_bytes: int = 0
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # retention: stream -> dropped through
    lost: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # GamesLost: seqs the mark skips
    rotten: dict[tuple[str, str], set[int]] = field(default_factory=dict)  # bad copies, not found yet

    def blank(self) -> "Disk":
        """A new, empty disk of the same size (the old one was lost)."""
        return Disk(capacity=self.capacity, base=self.base)

    @property
    def used(self) -> int:
        return self.base + self.filler + self.game_bytes + sum(size for _, size in self.files.values())

    def used_percent(self) -> float:
        return 100.0 * self.used / self.capacity if self.capacity else 0.0

    def free(self) -> int:
        return max(0, self.capacity - self.used)

    def install(self, item: ItemKey, digest: str, size: int) -> None:
        """A verified file renamed into place (replacing the older version)."""
        self.files[item] = (digest, size)

    def store_games(self, origin: str, key: str, games) -> tuple[tuple[int, ...], int]:
        """Append (fsynced at once, in the simulation); returns (new seqs, high-water mark)."""
        log = self.games.setdefault((origin, key), {})
        new = tuple(q for q, g in games if q not in log)
        for q, g in games:
            if q not in log:
                log[q] = g
                self.game_bytes += len(g)
        return new, self.high_water(origin, key)

    def holds(self, stream: tuple[str, str], q: int) -> bool:
        """A copy of game `q` that verifies (rot that nobody found yet does not)."""
        return q in self.games.get(stream, {}) and q not in self.rotten.get(stream, ())

    def rot(self, stream: tuple[str, str], seqs) -> None:
        """These stored games go bad silently: the log still lists them until a scrub or read."""
        log = self.games.get(stream, {})
        self.rotten.setdefault(stream, set()).update(q for q in seqs if q in log)

    def take_rotten(self, stream: tuple[str, str] | None = None) -> dict[tuple[str, str], tuple[int, ...]]:
        """A scrub (or a read, of one stream): the bad copies found are dropped from the log."""
        out = {}
        for st in sorted(self.rotten) if stream is None else [stream]:
            seqs = tuple(sorted(self.rotten.pop(st, ())))
            log = self.games.get(st, {})
            for q in seqs:
                self.game_bytes -= len(log.pop(q, b""))
            if seqs:
                out[st] = seqs
        return out

    def high_water(self, origin: str, key: str) -> int:
        log, lost = self.games.get((origin, key), {}), self.lost.get((origin, key), set())
        hw = self.dropped.get((origin, key), 0)
        while hw + 1 in log or hw + 1 in lost:
            hw += 1
        return hw

    def mark_lost(self, origin: str, key: str, seqs) -> int:
        """Seqs lost on every holder: the mark skips them (kept on this disk); returns the mark."""
        self.lost.setdefault((origin, key), set()).update(seqs)
        return self.high_water(origin, key)

    def append_own(self, origin: str, key: str, payloads: list[bytes]) -> tuple[tuple[tuple[int, bytes], ...], int]:
        """The origin's intake: the next seqs, never reused (the max survives a crash)."""
        log = self.games.setdefault((origin, key), {})
        start = max(
            max(log, default=0), max(self.lost.get((origin, key), ()), default=0), self.dropped.get((origin, key), 0)
        )
        games = tuple((start + i + 1, p) for i, p in enumerate(payloads))
        return games, self.store_games(origin, key, games)[1]

    def drop_games(self, origin: str, key: str, through: int) -> None:
        """Retention: games 1..through of a stream forgotten (the stream keeps its numbers)."""
        log = self.games.get((origin, key), {})
        for q in [q for q in log if q <= through]:
            self.game_bytes -= len(log.pop(q))
        self.dropped[(origin, key)] = max(self.dropped.get((origin, key), 0), through)

    def persist(self, eff: Persist) -> None:
        for ch in eff.changes:
            st = self.states.get(ch.origin)
            if st is None or ch.reset:
                st = self.states[ch.origin] = OriginState(ch.incarnation)
            st.incarnation, st.heartbeat, st.max_counter, st.floor = (
                ch.incarnation,
                ch.heartbeat,
                ch.max_counter,
                ch.floor,
            )
            for f in ch.upserts:
                st.facts[f.key] = f
            for k in ch.removed:
                st.facts.pop(k, None)
        self.hlc = max(self.hlc, eff.hlc)

    @property
    def empty(self) -> bool:
        return not self.states

    def manifest(self, me: str, incarnation: int) -> Manifest:
        """The replica a restarted process reads back (a copy: the disk stays as it is)."""
        own = self.states.get(me)
        m = Manifest(me, own.incarnation if own else incarnation)
        for origin, st in sorted(self.states.items()):
            m.load(origin, replace(st, facts=dict(st.facts)))
        return m
