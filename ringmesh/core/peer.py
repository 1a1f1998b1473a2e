"""One ringmesh peer as a pure state machine: `handle(event, now) -> [effects]`.

The peer composes the protocol's parts around one `Manifest`:
  * gossip (`antientropy.py`): every `gossip_interval` (jittered) a `Syn`, a fingerprint and
    the entries changed lately, to `fanout` live peers (now and then a dead one, so that healed
    partitions find each other again), answered by `SynAck`, then `Ack`; deltas cut to `delta_budget`;
  * membership (`membership.py`): SWIM probes and claims that ride on gossip;
  * election (`election.py`): one leader per term among the voters, with a lease; the leader
    publishes a `leader` fact so that every host learns it through gossip too;
  * breakers (`breaker.py`): failed calls to a peer open its breaker;
  * transfers (`transfers.py`): newest file versions this host lacks, pulled from healthy holders;
  * broadcast (`broadcast.py`): the leader's term-fenced directives and orders for versions a
    publisher marked; a version under one is pulled at CRITICAL priority;
  * timers of their own: retention (an ephemeral host drops its own games once durable and
    `retention_seconds` old: `DropGames`) and the backup schedule (`backups.py`: the leader
    runs each external backup target when due: `RunBackup`, answered by `BackupFinished`).

`now` is seconds (wall time under the daemon, virtual time under the simulator). The peer
never reads a clock, never does I/O, and draws every random choice from `rng`.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Mapping

from . import antientropy as ae
from . import broadcast as bc
from . import catalog, keys
from . import election as el
from . import membership as mb
from .backups import BackupSchedule
from .bandwidth import Priority
from .breaker import OPEN, Breakers
from .errors import unknown
from .hlc import HybridClock
from .manifest import MAX_NUMBER, Delta, Manifest, OriginChange, OriginDigest
from .messages import (
    Ack,
    BackupFinished,
    BroadcastOrder,
    CancelTransfer,
    DiskMeasured,
    DrainRequested,
    Effect,
    Envelope,
    Event,
    FetchRequested,
    FileDamaged,
    FilePublished,
    FileStored,
    FileVersion,
    GamesAck,
    GamesBatch,
    GamesCorrupt,
    GamesHeld,
    GamesRead,
    GamesStored,
    HeartbeatAck,
    ItemKey,
    LeaderHeartbeat,
    LeaveRequested,
    LinksChanged,
    Message,
    MessageReceived,
    Outbox,
    Persist,
    Ping,
    PingAck,
    PingReq,
    PrioritySet,
    PullGames,
    PushGames,
    SchemaPublished,
    Send,
    SendFailed,
    SetTimer,
    StartTransfer,
    Syn,
    SynAck,
    SyncRequested,
    Timer,
    TimerFired,
    TransferFailed,
    VoteReply,
    VoteRequest,
)
from .peerconfig import PeerConfig
from .replication import Replication
from .router import ENOUGH_COPIES, EPHEMERAL, WRONG_ROLE, DataType, HostInfo, Placement, place
from .transfers import TransferPlanner

FILE_KEYS = (keys.VERSION, keys.HOLDING)  # fact keys the transfer planner reads
GET_OVERRIDES = (WRONG_ROLE, EPHEMERAL, ENOUGH_COPIES)  # what `ringmesh get` may override (FetchRequested)
DELIVERY_KEYS = (keys.VERSION, keys.HOLDING, keys.PULLING)  # fact keys a broadcasting leader reads
DISK_FIELDS = ("disk_used_percent", "disk_free_bytes")  # node record fields from DiskMeasured
GOSSIP_TO_THE_DEAD = 0.1  # chance, per round, that one gossip target is a host believed dead
GOSSIP_JITTER = 0.1  # each gossip interval is drawn from interval x [1 - this, 1 + this]
LOST_AFTER_ROUNDS = 10  # gossip rounds a bad game of ours stays uncovered by any mark before it counts as lost
HELD_LISTED = 256  # held seqs a gh/ fact lists per stream (the lowest; beyond, a host counts as behind from there)


class Peer:
    def __init__(
        self,
        me: str,
        *,
        incarnation: int,
        rng: random.Random,
        config: PeerConfig = PeerConfig(),
        seeds: Iterable[str] = (),
        voters: Iterable[str] = (),
        node_record: Mapping[str, object] | None = None,
        manifest: Manifest | None = None,
        hlc: int = 0,
        vote: tuple[int, str | None] = (0, None),
    ) -> None:
        self.me = me
        self.rng = rng
        self.config = config
        self.seeds = sorted(set(seeds) - {me})
        self.manifest = manifest if manifest is not None else Manifest(me, incarnation)
        self.clock = HybridClock(hlc)
        self.node_record = dict(node_record or {})
        self.rounds = 0
        self.membership = mb.Membership(me, self.manifest, self.clock, rng, config.membership)
        self.election = el.Election(
            me,
            list(voters),
            rng,
            config.election,
            term=vote[0],
            voted_for=vote[1],
            manifest=self.manifest,
            nat=config.nat,
        )
        self.breakers = Breakers(rng, config.breaker)
        self.priorities: dict[str, Priority] = {}  # config_key -> class (schedule_priority_sync)
        self.repairing: set[tuple[ItemKey, str]] = set()  # versions our copy of went bad, until stored again
        self.requested: set[ItemKey] = set()  # `ringmesh get`: items to hold here once, placed or not
        ephemeral = bool(self.node_record.get("ephemeral", me in config.ephemeral))
        self.replication = Replication(
            me,
            self.manifest,
            origin=f"{me}.{self.manifest.own.incarnation}",
            min_copies=config.min_copies,
            persistent=self._persistent,
            retention=config.retention_seconds if ephemeral else None,
            lost_after=LOST_AFTER_ROUNDS * config.gossip_interval,
        )
        self.replication.learn_lost(f for st in self.manifest.origins.values() for f in st.facts.values())
        self.backup_schedule = BackupSchedule(config.backup_schedules)
        self.transfers = TransferPlanner(
            me, rng, max_transfers=config.max_transfers, retry_base=config.retry_base, retry_cap=config.retry_cap
        )
        self.broadcast = bc.Broadcasts(me, self.manifest, reorder_interval=config.reorder_interval)
        self._known: tuple[int, list[str]] | None = None  # known_peers(), by the number of origins
        self._names: tuple[int, list[str]] | None = None
        self._hosts: tuple | None = None  # host_infos(): (names, what it was built from, the list)
        self._records = 0  # moves whenever some host's node record may have changed
        self.manifest.watch(self._observe_records)
        self._games_placed: tuple[list[HostInfo], Placement, list[str]] | None = None

    # -- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        # transfers of a past life are planned afresh below (their partial files resume)
        stale = [
            self.manifest.delete(k, self.clock.now(now))
            for k, f in list(self.manifest.own.facts.items())
            if k.startswith(keys.PULLING) and not f.tombstone
        ]
        if stale:
            out.append(self._persist([c for c in stale if c is not None], now))
        # The disk figures of our last life stand until the shell measures again: a host that
        # restarts with its disk above the cap must not start pulls before it knows (found by
        # the simulator's disk-full scenario: a restart erased them and pulls began at once).
        before = catalog.node_record(self.manifest, self.me) or {}
        for k in DISK_FIELDS:
            if k not in self.node_record and k in before:
                self.node_record[k] = before[k]
        record = catalog.pack(self.node_record)
        if self.manifest.get(self.me, keys.NODE) != record:
            out.append(self._persist([self.manifest.put(keys.NODE, record)], now))
        out += self._flush(self.membership.start(now), now)
        out += self._flush(self.election.start(now), now)
        out.append(SetTimer(name=Timer.GOSSIP, at=now + self.rng.uniform(0, self.config.gossip_interval)))
        self.backup_schedule.start(now)
        out += self._periodic(now)
        out += self._plan_transfers(now)
        return out

    def _periodic(self, now: float) -> list[Effect]:
        """The retention and backup timers (where this host has any)."""
        due = min(self.backup_schedule.next_run.values(), default=None)
        return self._retention_timer(now) + ([SetTimer(name=Timer.BACKUP, at=due)] if due is not None else [])

    def _retention_timer(self, now: float) -> list[Effect]:
        retention = self.replication.retention
        return [] if retention is None else [SetTimer(name=Timer.RETENTION, at=now + max(0.2, min(5.0, retention / 2)))]

    def recover(self, now: float) -> list[Effect]:
        """What keeps this host live after a step that raised (a bug: that step's effects are
        lost, the next timers of the loops it would have re-armed among them): our own facts
        persisted whole, in case a write of the lost step had not been, and every periodic
        timer set again — gossip, probes and suspicions, the election and the leader's
        heartbeat; the broadcast timer restarts with the next heartbeat (`_maybe_lead`)."""
        out: list[Effect] = [self._persist([self.manifest.snapshot(self.me)], now)]
        out.append(SetTimer(name=Timer.GOSSIP, at=now + self.rng.uniform(0, self.config.gossip_interval)))
        out += self._flush(self.membership.rearm(now), now)
        out += self._flush(self.election.rearm(now), now)
        out += self._periodic(now)
        self.broadcast.timer_at = None
        return out

    def handle(self, event: Event, now: float) -> list[Effect]:
        match event:
            case TimerFired():
                return self._on_timer(event.name, now)
            case MessageReceived():
                return self._on_message(event.envelope, now)
            case SendFailed():
                self.breakers.failure(event.peer, now)
                return []
            case FilePublished():
                return self._on_published(event, now)
            case FileStored():
                return self._on_stored(event, now)
            case FileDamaged():
                return self._on_damaged(event, now)
            case TransferFailed():
                self.transfers.failed(event.item, event.digest, now)
                return self._not_pulling(event.item, now) + self._plan_transfers(now)
            case LeaveRequested():
                return self._on_leave(now)
            case DiskMeasured():
                return self._on_disk(event, now)
            case LinksChanged():
                if event.relays:  # reached only through relays (the file may not say so): never lead
                    self.election.nat = self.election.nat | {self.me}
                if self.node_record.get("relays") == list(event.relays):
                    return []
                self.node_record["relays"] = list(event.relays)
                return self._changed([self.manifest.put(keys.NODE, catalog.pack(self.node_record))], now)
            case PrioritySet():
                self.priorities[event.config_key] = Priority.parse(event.priority)
                self.transfers.touch()
                return self._plan_transfers(now)
            case GamesStored():
                r = self.replication.stored(
                    event.origin,
                    event.config_key,
                    event.seqs,
                    event.hw,
                    event.games,
                    event.ack_to,
                    now,
                    self.push_targets(now),
                )
                return self._flush(r, now)
            case GamesCorrupt():
                r = self.replication.corrupt(event.origin, event.config_key, tuple(event.seqs), event.hw, now)
                return self._flush(r, now)
            case DrainRequested():
                persistent = [h for h in self.push_targets(now) if self._persistent(h)]
                return self._flush(self.replication.drain(now, persistent), now)
            case GamesRead():
                if not event.games:
                    return []
                msg = GamesBatch(origin=event.origin, config_key=event.config_key, games=event.games)
                return [self._send(event.reply_to, msg, now)]
            case BackupFinished():
                return self._on_backup(event, now)
            case SyncRequested():
                self.transfers.touch()
                return self._plan_transfers(now)
            case FetchRequested():
                catalog.check_item(event.item)
                self.requested.add(event.item)
                self.transfers.touch()
                return self._plan_transfers(now)
            case GamesHeld():
                return self._on_held(event, now)
            case SchemaPublished():
                key = keys.SCHEMA + event.fingerprint
                if any(self.manifest.get(o, key) is not None for o in self.manifest.origins):
                    return []  # some host published it already: one copy travels
                return self._changed([self.manifest.put(key, event.schema)], now)
            case _:
                unknown(event)

    def _on_held(self, event: GamesHeld, now: float) -> list[Effect]:
        key = keys.HELD + event.config_key
        held = {o: sorted(qs)[:HELD_LISTED] for o, qs in sorted(event.held.items()) if qs}
        self.replication.held(event.config_key, held.get(self.replication.origin))
        if not held:
            change = self.manifest.delete(key, self.clock.now(now))
            return self._changed([change], now) if change is not None else []
        value = catalog.pack({"s": held})
        return [] if self.manifest.get(self.me, key) == value else self._changed([self.manifest.put(key, value)], now)

    def _on_timer(self, name: Timer, now: float) -> list[Effect]:
        match name:
            case Timer.GOSSIP:
                return self._on_gossip_timer(now)
            case Timer.PROBE | Timer.PROBE_INDIRECT | Timer.SUSPICION:
                return self._flush(self.membership.on_timer(name, now, self._peers()), now)
            case Timer.ELECTION | Timer.LEADER_HEARTBEAT:
                self.election.members = self._peers()
                return self._flush(self.election.on_timer(name, now), now) + self._maybe_lead(now)
            case Timer.BROADCAST:
                self.broadcast.timer_at = None
                return self._lead(now)
            case Timer.RETENTION:
                return self._flush(self.replication.retain(now), now) + self._retention_timer(now)
            case Timer.BACKUP:
                term = self.election.term if self.election.is_leader(now) else None
                runs, due = self.backup_schedule.tick(now, term)
                return [*runs, SetTimer(name=Timer.BACKUP, at=due)] if due is not None else list(runs)
            case _:
                unknown(name)

    def _on_message(self, env: Envelope, now: float) -> list[Effect]:
        self.clock.observe(env.hlc, now)
        self.breakers.success(env.sender)
        body, sender = env.body, env.sender
        match body:
            case Ping() | PingAck() | PingReq():
                return self._flush(self.membership.on_message(sender, body, now), now)
            case PushGames():
                return self._flush(self.replication.on_push(sender, body), now)
            case GamesAck():
                return self._flush(self.replication.on_ack(sender, body), now)
            case PullGames():
                return self._flush(self.replication.on_pull(sender, body), now)
            case GamesBatch():
                return self._flush(self.replication.on_batch(sender, body), now)
            case VoteRequest() | VoteReply() | LeaderHeartbeat() | HeartbeatAck():
                self.election.members = self._peers()
                return self._flush(self.election.on_message(sender, body, now), now) + self._maybe_lead(now)
            case BroadcastOrder():
                return self._on_order(sender, body, now)
            case Syn():
                out = self._check_own_incarnation(body.digest, now)
                reply = ae.on_syn(self.manifest, body, self.config.delta_budget, self.config.recent_rounds)
                return out + [self._send(sender, reply, now)]
            case SynAck():
                out = self._check_own_incarnation(body.digest, now) + self._apply(body.delta, now)
                replies = ae.on_synack(self.manifest, body, self.config.delta_budget)
                return out + [self._send(sender, r, now) for r in replies]
            case Ack():
                return self._apply(body.delta, now)
            case _:
                unknown(body)

    # -- views -----------------------------------------------------------------------------

    def known_peers(self) -> list[str]:
        """Every other host we know of: the configured seeds and every origin in the manifest."""
        return list(self._peers())

    def _peers(self) -> list[str]:
        """`known_peers()` shared, not copied: read it, do not modify it (kept per origin count)."""
        n = len(self.manifest.origins)  # origins are added or replaced, never removed
        if self._known is None or self._known[0] != n:
            self._known = (n, sorted((set(self.seeds) | set(self.manifest.origins)) - {self.me}))
        return self._known[1]

    def healthy(self, peer: str, now: float) -> bool:
        """Fit to be a transfer source or a push target: alive and breaker closed."""
        return self.membership.view(peer) == mb.ALIVE and self.breakers.healthy(peer, now)

    def leader(self) -> tuple[str | None, int]:
        """The newest leader this host knows of, `(host, term)`, from the election or gossip."""
        best: tuple[int, str | None] = (self.election.term, self.election.leader)
        for origin in sorted(self.manifest.origins):  # one fact per origin: looked up, not scanned for
            t = (catalog.fact_value(self.manifest, origin, keys.LEADER) or {}).get("t")
            if isinstance(t, int) and (t > best[0] or (t == best[0] and best[1] is None)):
                best = (t, origin)
        term, host = best
        if host is not None and host != self.me and self.membership.view(host) in (mb.DEAD, mb.LEFT):
            return None, term
        if host == self.me and not self.election.role == el.LEADER:
            return None, term
        return host, term

    # -- gossip ----------------------------------------------------------------------------

    def _on_gossip_timer(self, now: float) -> list[Effect]:
        self.rounds += 1
        self.manifest.tick(keep=self.config.recent_rounds)
        out: list[Effect] = []
        if self.rounds % self.config.purge_every == 0:
            changes = self.manifest.purge_tombstones(self.clock.now(now), int(self.config.tombstone_grace * 1000))
            if changes:
                out.append(self._persist(changes, now))
        retired = self.broadcast.retire(lambda: self.leader()[1], lambda: self.clock.now(now))
        if retired:
            out += self._changed(retired, now)
        out += self._maybe_lead(now)
        syn, live = ae.syn(self.manifest, self.config.recent_rounds), (mb.ALIVE, mb.SUSPECT)
        for p in self._gossip_targets(now):  # to a host believed gone, the whole digest: a cut heals at once
            out.append(self._send(p, syn if self.membership.view(p) in live else ae.full_syn(self.manifest), now))
        out.append(
            SetTimer(
                name=Timer.GOSSIP,
                at=now + self.config.gossip_interval * self.rng.uniform(1 - GOSSIP_JITTER, 1 + GOSSIP_JITTER),
            )
        )
        game_hosts = set(self.game_placement().targets)
        out += self._flush(
            self.replication.tick(
                now,
                should_hold=lambda s: self.me in game_hosts,
                healthy=lambda h: self.healthy(h, now),
                targets=self.push_targets(now),
            ),
            now,
        )
        out += self._plan_transfers(now)
        return out

    def _gossip_targets(self, now: float) -> list[str]:
        """`fanout` live peers drawn at random (no walk over every member), and now and then
        one believed gone (dead, left, or its breaker open), so that a cut heals at once."""
        breakers = self.breakers
        targets = self.membership.sample_live(
            self._peers(), self.config.fanout, fit=lambda p: p not in breakers.tripped or breakers.state(p, now) != OPEN
        )
        for p in targets:
            breakers.allow(p, now)  # a half-open peer's one trial call is this one
        if not targets or self.rng.random() < GOSSIP_TO_THE_DEAD:
            gone = sorted(self.membership.gone() | set(breakers.blocked(now)))
            if gone:
                targets.append(self.rng.choice(gone))
        return targets

    def _apply(self, delta: Delta, now: float) -> list[Effect]:
        changes = self.manifest.apply(delta)
        if not changes:
            return []
        return self._changed(changes, now)

    def _changed(self, changes: list[OriginChange], now: float) -> list[Effect]:
        """Persist manifest changes and let the parts that read the manifest react."""
        mout = self.membership.on_manifest_changed(now)
        out: list[Effect] = [self._persist(changes + mout.changes, now)]
        out += self._flush(mout, now, persisted=True)
        written = {k for ch in changes for k in [f.key for f in ch.upserts] + list(ch.removed)}
        reset = any(ch.reset for ch in changes)

        def touched(prefixes) -> bool:
            return reset or any(k.startswith(prefixes) for k in written)

        if touched(keys.LOST):
            self.replication.learn_lost(f for ch in changes for f in ch.upserts)
        if touched(keys.HW):
            out += self._flush(self.replication.marks_changed(), now)
        directives = touched(keys.DIRECTIVE)
        if directives:  # a directive that came into force resets its backoff: pull it now
            for item, digest in self.broadcast.fresh(self._in_force()):
                self.transfers.retry_now(item, digest)
        if touched(DELIVERY_KEYS) and self.election.is_leader(now):
            out += self._lead(now)  # first: our own pull of a new version is planned under its directive
        if directives or touched(FILE_KEYS):
            self.transfers.touch()
            out += self._plan_transfers(now)
        return out

    def _check_own_incarnation(self, digest: Mapping[str, OriginDigest], now: float) -> list[Effect]:
        """Someone remembers a life of ours we do not: start a higher incarnation."""
        seen, own = digest.get(self.me), self.manifest.own
        if seen is None or seen.incarnation >= MAX_NUMBER:  # no incarnation is left above it
            return []
        if seen.incarnation > own.incarnation or (
            seen.incarnation == own.incarnation and seen.max_counter > own.max_counter
        ):
            return [self._persist([self.manifest.reincarnate(seen.incarnation + 1)], now)]
        return []

    def _on_disk(self, ev: DiskMeasured, now: float) -> list[Effect]:
        """Publish our disk figures in the node record when they moved enough to matter."""
        old_used, old_free = self.node_record.get("disk_used_percent"), self.node_record.get("disk_free_bytes")
        if (
            isinstance(old_used, (int, float))
            and isinstance(old_free, int)
            and abs(old_used - ev.used_percent) < 0.5
            and abs(old_free - ev.free_bytes) <= 0.01 * max(old_free, 1)
        ):
            return []
        self.node_record.update(disk_used_percent=round(ev.used_percent, 1), disk_free_bytes=int(ev.free_bytes))
        self.transfers.touch()  # a cap may have been crossed, one way or the other
        return self._changed([self.manifest.put(keys.NODE, catalog.pack(self.node_record))], now)

    # -- game streams ----------------------------------------------------------------------

    def _persistent(self, host: str) -> bool:
        rec = catalog.node_record(self.manifest, host) or {}
        return not bool(rec.get("ephemeral", host in self.config.ephemeral))

    def game_placement(self) -> Placement:
        return self._game_hosts()[0]

    def _game_hosts(self) -> tuple[Placement, list[str]]:
        """The games' placement and its targets persistent first, built again only when the
        host table is (`host_infos`)."""
        hosts = self.host_infos()
        if self._games_placed is None or self._games_placed[0] is not hosts:  # hosts unchanged: so is this
            placed = place(
                DataType.GAME,
                hosts,
                min_copies=self.config.min_copies,
                cap_percent=self.config.max_disk_usage_percent,
            )
            order = sorted(placed.targets, key=lambda h: not self._persistent(h))  # stable: router order kept
            self._games_placed = (hosts, placed, order)
        return self._games_placed[1], self._games_placed[2]

    def push_targets(self, now: float) -> list[str]:
        """Where new games go at once: game hosts (router) that are healthy, persistent first."""
        return [h for h in self._game_hosts()[1] if h != self.me and self.healthy(h, now)]

    def _on_backup(self, ev: BackupFinished, now: float) -> list[Effect]:
        """Record a backup run in the manifest, fenced by the term it ran under."""
        self.backup_schedule.finished(ev.index)
        if not (self.election.is_leader(now) and self.election.term == ev.term):
            return []  # we are no longer the leader that ran it: the result is not ours to record
        value = catalog.pack(
            {
                "term": ev.term,
                "ok": ev.ok,
                "bytes": ev.bytes,
                "target": ev.target,
                "started_at": ev.started_at,
                "seconds": ev.seconds,
                "detail": ev.detail[:500],
            }
        )
        return self._changed([self.manifest.put(f"{keys.BACKUP}{ev.index}", value)], now)

    def backups(self) -> dict[str, dict]:
        """The newest recorded run of each backup target (highest term, then latest start)."""
        best: dict[str, dict] = {}
        for origin, f in self.manifest.live_facts(keys.BACKUP):
            v = catalog.unpack(f.value)
            if v is None:
                continue
            v["leader"] = origin
            cur = best.get(f.key)
            if cur is None or (v.get("term", 0), v.get("started_at", 0)) > (
                cur.get("term", 0),
                cur.get("started_at", 0),
            ):
                best[f.key] = v
        return best

    def _on_leave(self, now: float) -> list[Effect]:
        """Announce a graceful leave: publish it and push it straight to a few peers."""
        before = self.manifest.own.digest()
        out = self._flush(self.membership.leave(now), now)
        theirs = dict(self.manifest.digest())
        theirs[self.me] = before
        delta = self.manifest.delta_for(theirs, self.config.delta_budget)
        out += [self._send(p, Ack(delta=delta), now) for p in self._gossip_targets(now)]
        return out

    # -- the parts' outputs as effects -----------------------------------------------------

    def _send(self, to: str, body: Message, now: float) -> Send:
        return Send(to=to, envelope=Envelope(sender=self.me, hlc=self.clock.now(now), body=body))

    def _persist(self, changes: list[OriginChange], now: float) -> Persist:
        return Persist(changes=tuple(changes), hlc=self.clock.now(now))

    def _flush(self, o: Outbox, now: float, persisted: bool = False) -> list[Effect]:
        """A part's outbox as effects, in the order of its fields (`persisted`: its changes
        are written, and reacted to, already)."""
        out = self._changed(o.changes, now) if o.changes and not persisted else []
        if o.writes:
            out.append(self._persist(o.writes, now))
        out += [self._send(to, msg, now) for to, msg in o.sends]
        out += [SetTimer(name=name, at=at) for name, at in o.timers]
        return out + o.effects

    # -- files -----------------------------------------------------------------------------

    def _on_published(self, ev: FilePublished, now: float) -> list[Effect]:
        catalog.check_item(ev.item)
        v = FileVersion(
            item=ev.item,
            digest=ev.digest,
            size=ev.size,
            chunk_size=ev.chunk_size,
            hlc=self.clock.now(now),
            origin=self.me,
            attrs=dict(ev.attrs),
        )
        changes = [
            self.manifest.put(catalog.version_key(ev.item), catalog.encode_version(v)),
            self.manifest.put(catalog.holding_key(ev.item), catalog.encode_holding(v)),
        ]
        self.transfers.touch()
        return [self._persist(changes, now)] + self._plan_transfers(now) + self._lead(now)

    def _on_stored(self, ev: FileStored, now: float) -> list[Effect]:
        self.repairing.discard((ev.item, ev.digest))
        self.requested.discard(ev.item)
        v = self.transfers.finished(ev.item, ev.digest)
        if v is None:
            v = next(
                (
                    x
                    for x in catalog.newest_versions(self.manifest).values()
                    if (x.item, x.digest) == (ev.item, ev.digest)
                ),
                None,
            )
        maybe = [self.manifest.delete(catalog.pulling_key(ev.item), self.clock.now(now))]
        if v is not None and catalog.holdings(self.manifest, self.me).get(ev.item) != ev.digest:
            maybe.append(self.manifest.put(catalog.holding_key(ev.item), catalog.encode_holding(v)))
        changes = [c for c in maybe if c is not None]
        return ([self._persist(changes, now)] if changes else []) + self._plan_transfers(now)

    def _on_damaged(self, ev: FileDamaged, now: float) -> list[Effect]:
        """Our copy of a version is bad: no longer a holder of it (nobody asks us for it, and
        durability counts one copy fewer); the planner pulls it again if it is placed here,
        CRITICAL while the good copies elsewhere are fewer than `min_copies` (`priority_of`)."""
        self.repairing.add((ev.item, ev.digest))
        self.transfers.retry_now(ev.item, ev.digest)
        maybe = []
        if catalog.holdings(self.manifest, self.me).get(ev.item) == ev.digest:
            maybe.append(self.manifest.delete(catalog.holding_key(ev.item), self.clock.now(now)))
        changes = [c for c in maybe if c is not None]
        return ([self._persist(changes, now)] if changes else []) + self._plan_transfers(now)

    def _not_pulling(self, item: ItemKey, now: float) -> list[Effect]:
        change = self.manifest.delete(catalog.pulling_key(item), self.clock.now(now))
        return [self._persist([change], now)] if change is not None else []

    def host_infos(self) -> list[HostInfo]:
        """What the router needs to know of every host: its record, our view of it, the config.

        The answer depends only on each host's node record and our view of it (the config
        aside), so it is built again only when one of those may have changed (a node record
        written, a member's facts moved: counters kept by watching the manifest, so no walk
        over every host to find out). The router asks several times a gossip round. The list
        is shared: do not modify it."""
        names = self._host_names()
        sig = (self._records, self.membership.version)
        if self._hosts is not None and self._hosts[0] is names and self._hosts[1] == sig:
            return self._hosts[2]
        out = self._build_host_infos(names)
        self._hosts = (names, sig, out)
        return out

    def _observe_records(self, ch: OriginChange) -> None:
        if ch.reset or any(f.key == keys.NODE for f in ch.upserts) or keys.NODE in ch.removed:
            self._records += 1

    def _host_names(self) -> list[str]:
        n = len(self.manifest.origins)
        if self._names is None or self._names[0] != n:
            self._names = (n, sorted(set(self.known_peers()) | {self.me}))
        return self._names[1]

    def _build_host_infos(self, names: list[str]) -> list[HostInfo]:
        out = []
        for name in names:
            rec = catalog.node_record(self.manifest, name) or {}
            used, free = rec.get("disk_used_percent"), rec.get("disk_free_bytes")
            role = rec.get("role", self.config.roles.get(name, "selfplay"))
            out.append(
                HostInfo(
                    name=name,
                    role=str(role),
                    ephemeral=bool(rec.get("ephemeral", name in self.config.ephemeral)),
                    # a suspected host still counts for placement (it most likely lives); it is not
                    # asked for data until it is alive again (see `healthy`)
                    excluded=name in self.config.excluded,
                    alive=self.membership.view(name) in (mb.ALIVE, mb.SUSPECT),
                    nfs_group=self.config.nfs_groups.get(name),
                    also_takes=self.config.also_takes.get(name, frozenset()),
                    disk_used_percent=float(used) if isinstance(used, (int, float)) else None,
                    disk_free_bytes=int(free) if isinstance(free, int) else None,
                )
            )
        return out

    def placer(self) -> Callable[[FileVersion], Placement]:
        """Placement of any version against one snapshot of the hosts and their holdings, both
        computed once (each is a pass over the manifest): use it for every version in a loop."""
        hosts, held = self.host_infos(), catalog.holders(self.manifest)

        def placement(v: FileVersion) -> Placement:
            return place(
                v.item.type,
                hosts,
                item_size=v.size,
                min_copies=self.config.min_copies,
                cap_percent=self.config.max_disk_usage_percent,
                holders=held.get((v.item, v.digest), []),
            )

        return placement

    def placement(self, v: FileVersion) -> Placement:
        return self.placer()(v)

    def wanted(self) -> list[FileVersion]:
        placement = self.placer()
        return self.transfers.wanted(self.manifest, lambda v: self._holds_here(v, placement(v)))

    def _holds_here(self, v: FileVersion, p: Placement) -> bool:
        """Placed here, or asked for here (`FetchRequested`) and left out for nothing but its
        role or enough copies elsewhere."""
        if self.me in p.targets:
            return True
        return v.item in self.requested and p.left_out.get(self.me) in GET_OVERRIDES

    def why_not_here(self, v: FileVersion) -> str | None:
        """Why `ringmesh get` cannot have `v` held here (an exclusion, the disk cap); None if it can."""
        p = self.placer()(v)
        why = p.left_out.get(self.me)
        return None if self.me in p.targets or why is None or why in GET_OVERRIDES else why

    def _plan_transfers(self, now: float) -> list[Effect]:
        placers: list[Callable[[FileVersion], Placement]] = []  # built only if something is wanted

        def should_hold(v: FileVersion) -> bool:
            if not placers:
                placers.append(self.placer())
            return self._holds_here(v, placers[0](v))

        effects = self.transfers.plan(self.manifest, now, lambda p: self.healthy(p, now), should_hold, self.priority_of)
        # announce what we pull, so that others pulling the same version ask us for the chunks
        # we have verified (DESIGN.md "Named files"); a finished, failed or cancelled pull retracts it
        maybe: list[OriginChange | None] = []
        for e in effects:
            if isinstance(e, StartTransfer):
                maybe.append(self.manifest.put(catalog.pulling_key(e.version.item), catalog.encode_holding(e.version)))
            elif isinstance(e, CancelTransfer):
                maybe.append(self.manifest.delete(catalog.pulling_key(e.item), self.clock.now(now)))
        changes = [c for c in maybe if c is not None]
        return ([self._persist(changes, now)] if changes else []) + effects

    def priority_of(self, v: FileVersion) -> Priority:
        key = (v.item, v.digest)
        if key in self._in_force():
            return Priority.CRITICAL  # a broadcast in force
        if key in self.repairing:
            good = [h for h in catalog.holders(self.manifest).get(key, []) if h != self.me]
            if len(good) < self.config.min_copies:
                return Priority.CRITICAL  # repairing a version with too few good copies left
        return self.priorities.get(catalog.config_key_of(v) or "", Priority.parse(self.config.pull_priority))

    # -- broadcast ---------------------------------------------------------------------------

    def _in_force(self) -> Mapping[tuple[ItemKey, str], tuple[int, str]]:
        """The broadcast directives and orders that count here now (see broadcast.py)."""
        return self.broadcast.in_force(self.manifest.digest(), self.election.term, lambda: self.leader()[1])

    def _maybe_lead(self, now: float) -> list[Effect]:
        """Lead the broadcasts at once when we hold a lease in a term we have not led in yet, or
        when our broadcast timer is not running (it runs for as long as we lead)."""
        e = self.election
        if e.is_leader(now) and (self.broadcast.term != e.term or self.broadcast.timer_at is None):
            return self._lead(now)
        return []

    def _lead(self, now: float) -> list[Effect]:
        if not self.election.is_leader(now):
            return []
        o, retry = self.broadcast.lead(
            now,
            self.election.term,
            lambda: self.clock.now(now),
            catalog.newest_versions(self.manifest),
            self.placer,
            lambda h: self.breakers.allow(h, now),
        )
        for item, digest in retry:
            self.transfers.retry_now(item, digest)
        out = self._changed(o.changes, now) if o.changes else []
        out += self._plan_transfers(now) if retry else []
        return out + self._flush(o, now, persisted=True)

    def _leader_of(self, term: int) -> str | None:
        """Who leads `term`, if this host knows (its election, or the leader's own fact)."""
        if self.election.term == term and self.election.leader is not None:
            return self.election.leader
        for origin, f in self.manifest.live_facts(keys.LEADER):
            if f.key == keys.LEADER and catalog.leader_term(self.manifest, origin) == term:
                return origin
        return None

    def _on_order(self, sender: str, order: BroadcastOrder, now: float) -> list[Effect]:
        if not self.broadcast.on_order(sender, order, self.leader()[1], self._leader_of(order.term)):
            return []  # a stale leader's (or a stranger's) order: counted, nothing else
        self.broadcast.fresh(self._in_force())
        self.transfers.retry_now(order.item, order.digest)  # every (re-)order means: now
        return self._plan_transfers(now)

    def broadcasts(self) -> list[dict]:
        """For status: each broadcast, its directive and term, delivery per eligible host, and
        the hosts left out with the reason."""
        return self.broadcast.report(
            self.leader()[1], catalog.newest_versions(self.manifest), self.placer(), self._in_force()
        )
