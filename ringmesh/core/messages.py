"""What goes in and out of the core: wire messages, input events and output effects.

All are frozen, keyword-only dataclasses. Events are named as facts that happened
(`MessageReceived`), effects as orders to the interpreter (`Send`). The gRPC daemon and the
simulator are the two interpreters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Mapping, Union, dataclass_transform

from .manifest import Delta, OriginChange, OriginDigest


@dataclass_transform(frozen_default=True, kw_only_default=True)
def _frozen(cls):
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


# -- gossip (Scuttlebutt push-pull: Syn -> SynAck -> Ack; see antientropy.py) ---------------


@_frozen
class Syn:
    digest: Mapping[str, OriginDigest]  # whole when `scope` is FULL (0), else some entries
    fingerprint: int = 0  # the sender's `Manifest.vector_hash()`
    scope: int = 0  # antientropy.FULL, RECENT or TARGETED


@_frozen
class SynAck:
    digest: Mapping[str, OriginDigest]  # whole when `scope` is FULL, else some entries
    delta: Delta
    fingerprint: int = 0
    scope: int = 0  # the Syn's
    mismatch: bool = False  # the vectors differ outside the entries the Syn listed


@_frozen
class Ack:
    delta: Delta


# -- membership: SWIM probes ---------------------------------------------------------------


@_frozen
class Ping:
    seq: int


@_frozen
class PingAck:
    seq: int


@_frozen
class PingReq:
    """Ping `target` for me and pass its ack back."""

    seq: int
    target: str


MembershipMessage = Union[Ping, PingAck, PingReq]


# -- leader election -------------------------------------------------------------------------


@_frozen
class VoteRequest:
    term: int
    pre: bool


@_frozen
class VoteReply:
    term: int
    granted: bool
    pre: bool


@_frozen
class LeaderHeartbeat:
    term: int
    seq: int


@_frozen
class HeartbeatAck:
    term: int
    seq: int


ElectionMessage = Union[VoteRequest, VoteReply, LeaderHeartbeat, HeartbeatAck]


# -- game streams ----------------------------------------------------------------------------

Games = tuple[tuple[int, bytes], ...]  # (seq, game record bytes), seq order


@_frozen
class PushGames:
    """The origin's new games, sent at once to a few peers; each acks after its fsync."""

    origin: str
    config_key: str
    games: Games


@_frozen
class GamesAck:
    origin: str
    config_key: str
    seqs: tuple[int, ...]


@_frozen
class PullGames:
    origin: str
    config_key: str
    first: int
    last: int


@_frozen
class GamesBatch:
    origin: str
    config_key: str
    games: Games


StreamMessage = Union[PushGames, GamesAck, PullGames, GamesBatch]


@_frozen
class BroadcastOrder:
    """The leader of `term` tells a host to pull this version now, at CRITICAL priority."""

    type: str
    name: str
    digest: str
    term: int

    @property
    def item(self) -> ItemKey:
        return ItemKey(self.type, self.name)


Message = Union[Syn, SynAck, Ack, MembershipMessage, ElectionMessage, StreamMessage, BroadcastOrder]


@_frozen
class Envelope:
    sender: str
    hlc: int
    body: Message


# -- named files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ItemKey:
    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.type}/{self.name}"


@_frozen
class FileVersion:
    """One published version of a named file; the newest by (hlc, origin) wins."""

    item: ItemKey
    digest: str  # hex xxh3-128 of the chunk digests
    size: int
    chunk_size: int
    hlc: int
    origin: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def order(self) -> tuple[int, str]:
        return (self.hlc, self.origin)


# -- input events ----------------------------------------------------------------------------


class Timer(StrEnum):
    """Every timer the core sets; the value is what drivers and reports name it by."""

    GOSSIP = "gossip"
    PROBE = "probe"
    PROBE_INDIRECT = "probe-indirect"
    SUSPICION = "suspicion"
    ELECTION = "election"
    LEADER_HEARTBEAT = "leader-heartbeat"
    BROADCAST = "broadcast"
    RETENTION = "retention"  # an ephemeral host's: drop its own games durable and old enough
    BACKUP = "backup"  # the next slot of a scheduled backup (every host keeps the schedule; the leader runs it)


@_frozen
class TimerFired:
    name: Timer


@_frozen
class MessageReceived:
    envelope: Envelope


@_frozen
class SendFailed:
    peer: str
    reason: str


@_frozen
class FilePublished:
    """A local command: this host stored a new version of a file and offers it."""

    item: ItemKey
    digest: str
    size: int
    chunk_size: int
    attrs: Mapping[str, str] = field(default_factory=dict)


@_frozen
class FileStored:
    """A transfer finished: the file is verified and in place."""

    item: ItemKey
    digest: str


@_frozen
class FileDamaged:
    """This host's copy of a version is no longer that version: a chunk failed verification
    (scrub, or a read to serve it) or the file changed behind our back. The core retracts the
    holding at once; the planner pulls the version again if the router still places it here."""

    item: ItemKey
    digest: str


@_frozen
class TransferFailed:
    item: ItemKey
    digest: str
    reason: str


@_frozen
class DiskMeasured:
    """The shell measured the data dir's file system (it does, now and then)."""

    used_percent: float
    free_bytes: int


@_frozen
class LinksChanged:
    """The shell of a host nobody can dial: the relays its dial-out links are up to now, in the
    order a caller should try them (core/reach.py chose them). Published in its node record."""

    relays: tuple[str, ...]


@_frozen
class PrioritySet:
    """A local command: transfers of items of `config_key` go at `priority` and go first."""

    config_key: str
    priority: str  # critical | high | normal | low | background


@_frozen
class SyncRequested:
    """A local command: plan transfers now rather than at the next tick."""


@_frozen
class FetchRequested:
    """A local command (`ringmesh get`): hold the newest version of `item` here although the
    router does not place it here (for its role, or enough copies elsewhere), once; never past
    this host's disk cap or an exclusion."""

    item: ItemKey


@_frozen
class GamesHeld:
    """This game host holds games of `config_key` back from its database (refused, or waiting
    for their schema): `held` maps each stream's origin to the seqs held (empty: none). It is
    published (`gh/<config_key>`), so that "materialised on every game host" can be told apart
    from "durable" anywhere."""

    config_key: str
    held: Mapping[str, tuple[int, ...]]


@_frozen
class SchemaPublished:
    """This host took in games of a game schema: publish its statements once, by fingerprint
    (`gs/<fingerprint>`), so that every consumer can adapt its database to them."""

    fingerprint: str
    schema: bytes  # gameschema.Schema.encode()


@_frozen
class BackupFinished:
    """The shell ran scheduled backup `index` as leader of `term` (recorded only if still so)."""

    index: int
    term: int
    ok: bool
    bytes: int
    target: str
    started_at: float
    seconds: float
    detail: str = ""


@_frozen
class GamesStored:
    """The shell appended and fsynced games of a stream; `hw` is the stream's high-water mark
    here now. For our own stream `games` carries them (to push); `ack_to` is who to ack."""

    origin: str
    config_key: str
    seqs: tuple[int, ...]
    hw: int
    games: Games = ()
    ack_to: str | None = None


@_frozen
class GamesCorrupt:
    """The shell found stored games of a stream corrupt (a scrub, or a read to serve them):
    `seqs` are no longer held here and `hw` is the stream's high-water mark here now. The
    core lowers our mark (so the range is pulled again from a holder whose mark covers it)
    and, where no holder's does for long, records the games as lost (`x/` facts)."""

    origin: str
    config_key: str
    seqs: tuple[int, ...]
    hw: int


@_frozen
class GamesRead:
    """The shell read games a peer asked for."""

    origin: str
    config_key: str
    games: Games
    reply_to: str


@_frozen
class DrainRequested:
    """A local command: this host is going away (SIGTERM on a spot host): push every game
    that is not durable yet to persistent peers now."""


@_frozen
class LeaveRequested:
    """A local command: this host is shutting down and says so before it goes."""


Event = Union[
    TimerFired,
    MessageReceived,
    SendFailed,
    FilePublished,
    FileStored,
    FileDamaged,
    TransferFailed,
    DiskMeasured,
    LinksChanged,
    PrioritySet,
    SyncRequested,
    FetchRequested,
    BackupFinished,
    GamesStored,
    GamesCorrupt,
    GamesRead,
    DrainRequested,
    LeaveRequested,
    SchemaPublished,
    GamesHeld,
]


# -- output effects --------------------------------------------------------------------------


@_frozen
class Send:
    to: str
    envelope: Envelope


@_frozen
class SetTimer:
    name: Timer
    at: float


@_frozen
class Persist:
    """Write these manifest changes (and the clock) durably before relying on them."""

    changes: tuple[OriginChange, ...]
    hlc: int


@_frozen
class SaveVote:
    """Write the election's `(term, voted_for)` durably before sending anything else."""

    term: int
    voted_for: str | None


@_frozen
class StoreGames:
    """Append these games of a stream to the log and fsync; answer with `GamesStored`."""

    origin: str
    config_key: str
    games: Games
    ack_to: str | None = None


@_frozen
class ReadGames:
    """Read games `first..last` of a stream (those held); answer with `GamesRead`."""

    origin: str
    config_key: str
    first: int
    last: int
    reply_to: str


@_frozen
class GamesDurable:
    """Our games of `config_key` numbered up to `through` are durable (min_copies holders)."""

    config_key: str
    through: int


@_frozen
class DropGames:
    """Retention: drop our own games of `config_key` numbered up to `through` (durable
    elsewhere and older than `retention_seconds`; an ephemeral host's)."""

    config_key: str
    through: int


@_frozen
class GamesLost:
    """Games of a stream lost on every holder (an `x/` fact says so): the shell's stream log
    skips them in its mark from now on, and the shell reports the mark it then has."""

    origin: str
    config_key: str
    seqs: tuple[int, ...]


@_frozen
class RunBackup:
    """Run scheduled backup `index` (the config's `allowed_external_storage[index]`) as the
    leader of `term`, for the slot due at `due` (seconds); answer with `BackupFinished`."""

    index: int
    term: int
    due: float


@_frozen
class Emit:
    """Something an operator wants to read in the log: a member suspected or declared dead,
    a new leader. Interpreters log it; it changes nothing."""

    kind: str  # suspected | declared-dead | leader
    subject: str
    detail: str = ""


@_frozen
class StartTransfer:
    version: FileVersion
    sources: tuple[str, ...]
    priority: str = "normal"


@_frozen
class CancelTransfer:
    item: ItemKey
    digest: str


Effect = Union[
    Send,
    SetTimer,
    Persist,
    SaveVote,
    StartTransfer,
    CancelTransfer,
    StoreGames,
    ReadGames,
    GamesDurable,
    DropGames,
    GamesLost,
    RunBackup,
    Emit,
]


@dataclass(slots=True)
class Outbox:
    """What one step of a part of the core (membership, election, replication, broadcast) asks
    for. The peer makes effects of it in the order of these fields; that order is part of the
    protocol (each write and send reads the clock)."""

    changes: list[OriginChange] = field(default_factory=list)  # fact writes, persisted; the other parts react
    writes: list[OriginChange] = field(default_factory=list)  # fact writes, persisted only (the leader fact)
    sends: list[tuple[str, Message]] = field(default_factory=list)
    timers: list[tuple[Timer, float]] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)  # the rest, as they are
