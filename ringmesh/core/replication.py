"""Game stream replication: push new games to a few peers at once, pull the rest by range.

    origin: GamesStored(own stream, games)  -> publish its mark, PushGames to `push_copies`
                                               healthy persistent game hosts
    peer:   PushGames                       -> StoreGames(ack_to=origin)
            GamesStored(ack_to=origin)      -> publish its mark, GamesAck to the origin
    origin: GamesAck / marks on gossip      -> Durability; GamesDurable when a prefix is durable
    game hosts, every tick:                 -> pull_plan over the advertised marks: PullGames
    ephemeral origin, every retention tick: -> DropGames of its games durable and old enough;
                                               its mark says `lo` from then on (not asked for them)
    holder: PullGames                       -> ReadGames -> GamesRead -> GamesBatch
    puller: GamesBatch                      -> StoreGames(ack_to=None) -> GamesStored
    holder: GamesCorrupt (scrub, read)      -> its mark falls below the bad games; they are
                                               pulled again (also by their origin) from a
                                               holder whose mark covers them
    every tick, a game no mark covers for   -> lost: an `x/` fact lists it; every host told
    `lost_after` seconds                       (GamesLost) skips it in its mark

A push that is not acknowledged is not retried by itself: the game hosts pull what the
origin's mark advertises, and the origin pushes its pending games again every
`repush_after` seconds until they are durable (ephemeral hosts: the 5 s deadline).
"""

from __future__ import annotations

from typing import Callable, Iterable

from . import catalog, keys
from .manifest import Fact, Manifest
from .messages import (
    DropGames,
    GamesAck,
    GamesBatch,
    GamesDurable,
    GamesLost,
    Outbox,
    PullGames,
    PushGames,
    ReadGames,
    StoreGames,
)
from .streams import (
    Durability,
    StreamKey,
    decode_lost,
    encode_hw,
    encode_lost,
    floor_of,
    hw_key,
    lost_key,
    marks,
    parse_hw_key,
    pull_plan,
    retention_floor,
)


class Replication:
    def __init__(
        self,
        me: str,
        manifest: Manifest,
        *,
        origin: str,
        min_copies: int,
        persistent: Callable[[str], bool],
        push_copies: int = 2,
        pull_timeout: float = 10.0,
        repush_after: float = 5.0,
        batch: int = 64,
        retention: float | None = None,
        lost_after: float = 10.0,
    ) -> None:
        # `origin` names our own streams: the host and its incarnation, so that a host back
        # with a wiped disk (seq counter gone) starts new streams instead of reusing numbers
        self.me, self.m, self.origin = me, manifest, origin
        self.durability = Durability(me, min_copies, persistent)
        self.push_copies, self.pull_timeout, self.repush_after, self.batch = (
            push_copies,
            pull_timeout,
            repush_after,
            batch,
        )
        self.pulling: dict[StreamKey, float] = {}  # stream -> deadline of the request under way
        self.recent: dict[str, dict[int, bytes]] = {}  # our own games not yet durable: config_key -> seq -> bytes
        self.pushed_at: dict[str, float] = {}
        # retention (an ephemeral origin's: `retention` seconds; None: we keep our games)
        self.retention = retention
        self.stored_at: dict[str, dict[int, float]] = {}  # our games not dropped yet: seq -> when stored
        self.dropped: dict[str, int] = {}  # config_key -> our games dropped through
        self.held_from: dict[str, int] = {}  # config_key -> our lowest game held back from our database
        # rot: our copies found bad (seq -> since when no other mark covers it, or when found),
        # the seqs known lost on every holder, and those the shell was told of (GamesLost)
        self.lost_after = lost_after
        self.repairing: dict[StreamKey, dict[int, float]] = {}
        self.lost: dict[StreamKey, set[int]] = {}
        self.told_lost: dict[StreamKey, set[int]] = {}

    def hw(self, stream: StreamKey) -> int:
        return marks(self.m).get(stream, {}).get(self.me, 0)

    # -- the local log answered ----------------------------------------------------------

    def stored(
        self,
        origin: str,
        key: str,
        seqs: tuple[int, ...],
        hw: int,
        games,
        ack_to: str | None,
        now: float,
        targets: list[str],
    ) -> Outbox:
        out = Outbox()
        if self.hw((origin, key)) != hw:
            at = now if origin == self.origin else None
            lo = self.dropped.get(key, 0) if origin == self.origin else 0
            out.changes.append(self.m.put(hw_key((origin, key)), encode_hw(hw, at, lo)))
        bad = self.repairing.get((origin, key))
        if bad:
            for q in [q for q in bad if q <= hw or q in seqs]:
                del bad[q]
            if not bad:
                del self.repairing[(origin, key)]
        if origin == self.origin:
            if self.retention is not None:
                self.stored_at.setdefault(key, {}).update((q, now) for q in seqs)
            self.recent.setdefault(key, {}).update(games)
            self._durable(out, key, self.durability.stored(key, hw, seqs))
            if games:
                self._push(out, key, tuple(games), targets, now)
            else:
                self.pulling.pop((origin, key), None)  # our own games pulled back after rot
        else:
            self.pulling.pop((origin, key), None)
            if ack_to is not None and seqs:
                out.sends.append((ack_to, GamesAck(origin=origin, config_key=key, seqs=tuple(seqs))))
        return out

    def corrupt(self, origin: str, key: str, seqs: tuple[int, ...], hw: int, now: float) -> Outbox:
        """Our copies of `seqs` rotted (`GamesCorrupt`): our mark falls to `hw`, they are pulled
        again (`tick`), and our own stream's durability counts us no more for them."""
        out = Outbox()
        stream = (origin, key)
        if self.hw(stream) != hw:
            v = dict(catalog.fact_value(self.m, self.me, hw_key(stream)) or {})
            out.changes.append(self.m.put(hw_key(stream), catalog.pack({**v, "hw": int(hw)})))
        bad = self.repairing.setdefault(stream, {})
        for q in seqs:
            bad.setdefault(q, now)
        if origin == self.origin:
            self.durability.corrupt(key, seqs)
        return out

    def learn_lost(self, facts: Iterable[Fact]) -> None:
        """`x/` facts that reached the manifest: the seqs they list are lost (for good)."""
        for f in facts:
            if f.key.startswith(keys.LOST) and not f.tombstone:
                stream = parse_hw_key(keys.HW + f.key[len(keys.LOST) :])
                if stream is not None:
                    self.lost.setdefault(stream, set()).update(decode_lost(f.value))

    def _may_hold(self, stream: StreamKey, q: int, healthy: Callable[[str], bool]) -> bool:
        """Whether another host may hold game `q` of `stream`: its mark covers it, or it is
        healthy and its mark stops at a hole below `q` (once the hole is filled or skipped as
        lost, its mark shows whether it holds `q`). Marks only say "1..n, no gap"."""
        for h, hw in marks(self.m).get(stream, {}).items():
            if h == self.me or floor_of(self.m, stream, h) >= q:
                continue
            if hw >= q or (hw + 1 < q and healthy(h)):
                return True
        return False

    def _check_lost(
        self, out: Outbox, now: float, should_hold: Callable[[StreamKey], bool], healthy: Callable[[str], bool]
    ) -> None:
        """Our bad games that no other host may hold for `lost_after` seconds are lost (an `x/`
        fact of ours says so); every lost game we hold or should hold is told to the shell once."""
        for stream, bad in sorted(self.repairing.items()):
            known = self.lost.get(stream, set())
            lost = []
            for q in sorted(bad):
                if q in known:
                    del bad[q]
                elif self._may_hold(stream, q, healthy):
                    bad[q] = now
                elif now - bad[q] >= self.lost_after:
                    lost.append(q)
                    del bad[q]
            if lost:
                mine = decode_lost(self.m.get(self.me, lost_key(stream)))
                self.lost.setdefault(stream, set()).update(lost)
                out.changes.append(self.m.put(lost_key(stream), encode_lost(mine | set(lost))))
        for stream in [s for s, b in self.repairing.items() if not b]:
            del self.repairing[stream]
        all_marks = marks(self.m)
        for stream, seqs in sorted(self.lost.items()):
            told = self.told_lost.setdefault(stream, set())
            new = seqs - told
            if not new:
                continue
            if stream[0] == self.origin or self.me in all_marks.get(stream, {}) or should_hold(stream):
                told |= new
                out.effects.append(GamesLost(origin=stream[0], config_key=stream[1], seqs=tuple(sorted(new))))
                if stream[0] == self.origin:
                    self._durable(out, stream[1], self.durability.lost(stream[1], new))

    # -- messages ------------------------------------------------------------------------

    def on_push(self, sender: str, msg: PushGames) -> Outbox:
        out = Outbox()
        if msg.origin != self.origin and msg.games:
            out.effects.append(StoreGames(origin=msg.origin, config_key=msg.config_key, games=msg.games, ack_to=sender))
        return out

    def on_ack(self, sender: str, msg: GamesAck) -> Outbox:
        out = Outbox()
        if msg.origin == self.origin:
            self._durable(out, msg.config_key, self.durability.acked(msg.config_key, sender, msg.seqs))
        return out

    def on_pull(self, sender: str, msg: PullGames) -> Outbox:
        out = Outbox()
        if 0 < msg.first <= msg.last and msg.last - msg.first < 4096:
            out.effects.append(
                ReadGames(origin=msg.origin, config_key=msg.config_key, first=msg.first, last=msg.last, reply_to=sender)
            )
        return out

    def on_batch(self, sender: str, msg: GamesBatch) -> Outbox:
        out = Outbox()
        # only the games we asked for: an unasked batch would make us store (and advertise) any stream
        stream = (msg.origin, msg.config_key)
        ours = msg.origin == self.origin and stream not in self.repairing  # our own, not pulled back after rot
        if not ours and msg.games and stream in self.pulling:
            out.effects.append(StoreGames(origin=msg.origin, config_key=msg.config_key, games=msg.games))
        else:
            self.pulling.pop((msg.origin, msg.config_key), None)
        return out

    # -- gossip and ticks ----------------------------------------------------------------

    def marks_changed(self) -> Outbox:
        """Gossip moved some high-water marks: our own streams may have become durable."""
        out = Outbox()
        all_marks = marks(self.m)
        for key in list(self.durability.streams):
            self._durable(out, key, self.durability.observe(key, all_marks.get((self.origin, key), {})))
        return out

    def tick(
        self,
        now: float,
        *,
        should_hold: Callable[[StreamKey], bool],
        healthy: Callable[[str], bool],
        targets: list[str],
    ) -> Outbox:
        out = Outbox()
        for stream, deadline in list(self.pulling.items()):
            if now >= deadline:
                del self.pulling[stream]
        self._check_lost(out, now, should_hold, healthy)
        all_marks = marks(self.m)
        mine = {s: hs.get(self.me, 0) for s, hs in all_marks.items()}
        for req in pull_plan(
            self.me,
            all_marks,
            mine,
            should_hold=lambda s: should_hold(s) or s in self.repairing,
            healthy=healthy,
            busy=self.pulling,
            batch=self.batch,
            max_sources=1,
            floor=self._floor,
        ):
            out.sends.append(
                (req.source, PullGames(origin=req.stream[0], config_key=req.stream[1], first=req.first, last=req.last))
            )
            self.pulling[req.stream] = now + self.pull_timeout
        for key in sorted(self.recent):
            pending = self.durability.pending(key)
            if pending and now - self.pushed_at.get(key, 0.0) >= self.repush_after:
                games = tuple((q, self.recent[key][q]) for q in pending if q in self.recent[key])
                if games:
                    self._push(out, key, games, targets, now)
        return out

    def drain(self, now: float, targets: list[str]) -> Outbox:
        """Push every game not yet durable to the given (persistent) peers, now."""
        out = Outbox()
        for key in sorted(self.recent):
            games = tuple((q, self.recent[key][q]) for q in self.durability.pending(key) if q in self.recent[key])
            if games:
                self._push(out, key, games, targets, now)
        return out

    def retain(self, now: float) -> Outbox:
        """Retention: our games durable elsewhere and stored `retention` seconds ago or more
        are dropped (never one held back from our own database: `games retry` needs it)."""
        out = Outbox()
        if self.retention is None:
            return out
        for key, times in sorted(self.stored_at.items()):
            done = self.dropped.get(key, 0)
            through = self.durability.durable_through(key)
            floor = retention_floor(through, times, now, self.retention, done, held_from=self.held_from.get(key))
            if floor > done:
                self.dropped[key] = floor
                for q in [q for q in times if q <= floor]:
                    del times[q]
                out.effects.append(DropGames(config_key=key, through=floor))
                stream = (self.origin, key)
                v = dict(catalog.fact_value(self.m, self.me, hw_key(stream)) or {"hw": self.hw(stream)})
                out.changes.append(self.m.put(hw_key(stream), catalog.pack({**v, "lo": floor})))
        return out

    def _floor(self, stream: StreamKey, holder: str) -> int:
        return floor_of(self.m, stream, holder)

    def held(self, key: str, seqs) -> None:
        """Our own games of `key` this host holds back from its database (`GamesHeld`)."""
        if seqs:
            self.held_from[key] = min(seqs)
        else:
            self.held_from.pop(key, None)

    def undurable(self) -> int:
        return sum(len(self.durability.pending(k)) for k in self.durability.streams)

    def _push(self, out: Outbox, key: str, games, targets: list[str], now: float) -> None:
        self.pushed_at[key] = now
        for t in targets[: self.push_copies]:
            out.sends.append((t, PushGames(origin=self.origin, config_key=key, games=games)))

    def _durable(self, out: Outbox, key: str, newly: list[int]) -> None:
        if newly:
            through = self.durability.durable_through(key)
            out.effects.append(GamesDurable(config_key=key, through=through))
            recent = self.recent.get(key, {})
            for q in [q for q in recent if q <= through]:
                del recent[q]
