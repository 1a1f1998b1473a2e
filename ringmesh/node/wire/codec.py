"""Core messages <-> protobuf. The only module that imports the generated `*_pb2` code.

Decoding validates everything a peer could get wrong (lengths, counts, ranges) and raises
`RemoteProtocolError`; the servicer turns that into INVALID_ARGUMENT and goes on.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from ringmesh.core.antientropy import FULL, RECENT, TARGETED
from ringmesh.core.catalog import check_fact_key, check_item, is_node_id
from ringmesh.core.errors import LocalProtocolError, RemoteProtocolError
from ringmesh.core.manifest import MAX_KEY_BYTES, MAX_NUMBER, MAX_VALUE_BYTES, Delta, Fact, OriginDelta, OriginDigest
from ringmesh.core.messages import (
    Ack,
    BroadcastOrder,
    Envelope,
    GamesAck,
    GamesBatch,
    HeartbeatAck,
    LeaderHeartbeat,
    Message,
    Ping,
    PingAck,
    PingReq,
    PullGames,
    PushGames,
    Syn,
    SynAck,
    VoteReply,
    VoteRequest,
)
from ringmesh.core.recipe import DIGEST_BYTES
from ringmesh.core.streams import host_of
from ringmesh.v1 import mesh_pb2 as pb

MAX_ORIGINS = 100_000
U64 = (1 << 64) - 1

# Re-exported so the shell builds messages without importing mesh_pb2 itself.
Delivered = pb.Delivered
RecipeRequest = pb.RecipeRequest
Recipe = pb.Recipe
ChunkRequest = pb.ChunkRequest
Chunk = pb.Chunk
ChunkMap = pb.ChunkMap
PutRequest = pb.PutRequest
PublishGamesRequest = pb.PublishGamesRequest
PublishGamesReply = pb.PublishGamesReply
WaitDurableRequest = pb.WaitDurableRequest
WaitDurableReply = pb.WaitDurableReply
MAX_GAMES = 4096
MAX_GAME_BYTES = 6 * 1024 * 1024
PutReply = pb.PutReply
Query = pb.Query
Document = pb.Document
EnvelopePB = pb.Envelope
RelayedCall = pb.RelayedCall
RelayedReply = pb.RelayedReply
LinkFrame = pb.LinkFrame
RawFrame = pb.RawFrame  # FetchFrames' placeholder reply: its responses are `bytes` (raw_reply)


def check_digest(digest: str) -> str:
    """A file digest as the wire carries it: 32 lowercase hex digits (xxh3-128)."""
    if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
        raise RemoteProtocolError(f"bad digest {digest[:40]!r}")
    return digest


def check_node_id(node: str) -> str:
    if not is_node_id(node):
        raise RemoteProtocolError(f"bad node id {node[:40]!r}")
    return node


def check_number(*values: int) -> None:
    """Counts, terms and seqs of a peer's message: at most `MAX_NUMBER` (HLC fields, `hlc` and
    `deleted_at`, are times, not counts, and may use the whole u64 range)."""
    if any(v > MAX_NUMBER for v in values):
        raise RemoteProtocolError(f"number out of range (limit 2^62): {max(values)}")


class Malformed:
    """A request whose bytes do not parse as its message type. The servicers receive it in
    place of the message and answer INVALID_ARGUMENT (gRPC itself would answer UNKNOWN and
    log a traceback per message)."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


def request_parser(cls):
    """`bytes -> message`, or `Malformed` for bytes that are not one (for the servers)."""

    def parse(raw: bytes):
        try:
            return cls.FromString(raw)
        except (DecodeError, RuntimeWarning, ValueError, RecursionError) as e:
            return Malformed(f"undecodable {cls.DESCRIPTOR.name}: {e}")

    return parse


def service_methods(service: str) -> tuple[str, list[tuple[str, type[Any], type[Any], bool, bool]]]:
    """The full name of `service` ("Peer", "Local") and `(method, request class, reply class,
    client streaming, server streaming)` of each of its methods."""
    desc = pb.DESCRIPTOR.services_by_name[service]
    return desc.full_name, [
        (
            m.name,
            getattr(pb, m.input_type.name),
            getattr(pb, m.output_type.name),
            m.client_streaming,
            m.server_streaming,
        )
        for m in desc.methods
    ]


def serializer(reply_type):
    """How a server (or a relay's target) turns a reply into bytes: identity for raw frames."""
    return None if reply_type is RawFrame else reply_type.SerializeToString


def reply_bytes(reply) -> bytes:
    """A reply as its bytes on the wire: raw frames are their own bytes."""
    return reply if isinstance(reply, bytes) else reply.SerializeToString()


def reply_parser(reply_type):
    """`bytes -> reply` for a caller: raw frames stay bytes (no copy)."""
    return (lambda raw: raw) if reply_type is RawFrame else reply_type.FromString


# Small messages whose fields map one to one: core type -> (oneof field, field names).
_SIMPLE: dict[type[Message], tuple[str, tuple[str, ...]]] = {
    Ping: ("ping", ("seq",)),
    PingAck: ("ping_ack", ("seq",)),
    PingReq: ("ping_req", ("seq", "target")),
    VoteRequest: ("vote_request", ("term", "pre")),
    VoteReply: ("vote_reply", ("term", "granted", "pre")),
    LeaderHeartbeat: ("leader_heartbeat", ("term", "seq")),
    HeartbeatAck: ("heartbeat_ack", ("term", "seq")),
    BroadcastOrder: ("broadcast_order", ("type", "name", "digest", "term")),
}
_SIMPLE_BY_FIELD = {name: (cls, fields) for cls, (name, fields) in _SIMPLE.items()}

# -- encoding ----------------------------------------------------------------------------


def _digest_pb(digest) -> list[pb.OriginDigest]:
    return [
        pb.OriginDigest(
            origin=o, incarnation=d.incarnation, heartbeat=d.heartbeat, max_counter=d.max_counter, floor=d.floor
        )
        for o, d in sorted(digest.items())
    ]


def _delta_pb(delta: Delta) -> list[pb.OriginDelta]:
    return [
        pb.OriginDelta(
            origin=od.origin,
            incarnation=od.incarnation,
            heartbeat=od.heartbeat,
            floor=od.floor,
            reset=od.reset,
            from_counter=od.from_counter,
            max_counter=od.max_counter,
            facts=[pb.Fact(key=f.key, value=f.value, counter=f.counter, deleted_at=f.deleted_at) for f in od.facts],
        )
        for od in delta.origins
    ]


def encode_envelope(env: Envelope, sender_address: str) -> pb.Envelope:
    out = pb.Envelope(sender=env.sender, sender_address=sender_address, hlc=env.hlc)
    body = env.body
    if isinstance(body, Syn):
        out.syn.digest.extend(_digest_pb(body.digest))
        out.syn.fingerprint, out.syn.scope = body.fingerprint, body.scope
    elif isinstance(body, SynAck):
        out.syn_ack.digest.extend(_digest_pb(body.digest))
        out.syn_ack.delta.extend(_delta_pb(body.delta))
        out.syn_ack.fingerprint, out.syn_ack.scope, out.syn_ack.mismatch = body.fingerprint, body.scope, body.mismatch
    elif isinstance(body, Ack):
        out.ack.delta.extend(_delta_pb(body.delta))
    elif isinstance(body, (PushGames, GamesBatch)):
        part = out.push_games if isinstance(body, PushGames) else out.games_batch
        part.origin, part.config_key = body.origin, body.config_key
        part.games.extend(pb.GameEntry(seq=q, data=g) for q, g in body.games)
    elif isinstance(body, GamesAck):
        out.games_ack.MergeFrom(pb.GamesAck(origin=body.origin, config_key=body.config_key, seqs=body.seqs))
    elif isinstance(body, PullGames):
        out.pull_games.MergeFrom(
            pb.PullGames(origin=body.origin, config_key=body.config_key, first=body.first, last=body.last)
        )
    elif type(body) in _SIMPLE:
        name, fields = _SIMPLE[type(body)]
        getattr(out, name).MergeFrom(getattr(pb, type(body).__name__)(**{f: getattr(body, f) for f in fields}))
    else:  # pragma: no cover - the core makes no other
        raise TypeError(f"not a wire message: {body!r}")
    return out


# -- decoding ----------------------------------------------------------------------------


def _digest(entries) -> dict[str, OriginDigest]:
    if len(entries) > MAX_ORIGINS:
        raise RemoteProtocolError(f"digest has {len(entries)} origins (limit {MAX_ORIGINS})")
    out = {}
    for e in entries:
        check_number(e.incarnation, e.heartbeat, e.max_counter, e.floor)
        out[check_node_id(e.origin)] = OriginDigest(e.incarnation, e.heartbeat, e.max_counter, e.floor)
    return out


def _fact(f: pb.Fact) -> Fact:
    if not f.key or len(f.key.encode()) > MAX_KEY_BYTES or len(f.value) > MAX_VALUE_BYTES:
        raise RemoteProtocolError("fact key or value out of bounds")
    if f.counter == 0:
        raise RemoteProtocolError("fact counter 0")
    check_number(f.counter)
    try:
        check_fact_key(f.key)
    except LocalProtocolError as e:
        raise RemoteProtocolError(str(e)) from None
    return Fact(f.key, f.value, f.counter, f.deleted_at)


def _delta(entries) -> Delta:
    if len(entries) > MAX_ORIGINS:
        raise RemoteProtocolError(f"delta has {len(entries)} origins (limit {MAX_ORIGINS})")
    out = []
    for od in entries:
        check_number(od.incarnation, od.heartbeat, od.floor, od.from_counter, od.max_counter)
        facts = tuple(_fact(f) for f in od.facts)
        counters = [f.counter for f in facts]
        if counters != sorted(counters) or len(set(counters)) != len(counters):
            raise RemoteProtocolError(f"delta of {od.origin!r} not in counter order")
        if facts and (facts[0].counter <= od.from_counter or facts[-1].counter > od.max_counter):
            raise RemoteProtocolError(f"delta of {od.origin!r} has facts outside its range")
        if od.reset and od.from_counter != 0:
            raise RemoteProtocolError("reset delta must start at counter 0")
        if od.from_counter > od.max_counter:
            raise RemoteProtocolError("delta range inverted")
        out.append(
            OriginDelta(
                check_node_id(od.origin),
                od.incarnation,
                od.heartbeat,
                od.floor,
                od.reset,
                od.from_counter,
                od.max_counter,
                facts,
            )
        )
    return Delta(tuple(out))


def _scope(scope: int) -> int:
    if scope not in (FULL, RECENT, TARGETED):
        raise RemoteProtocolError(f"unknown digest scope {scope}")
    return scope


def decode_envelope(msg: pb.Envelope) -> Envelope:
    sender = check_node_id(msg.sender)
    which = msg.WhichOneof("body")
    body: Message
    if which == "syn":
        s = msg.syn
        body = Syn(digest=_digest(s.digest), fingerprint=s.fingerprint, scope=_scope(s.scope))
    elif which == "syn_ack":
        a = msg.syn_ack
        body = SynAck(
            digest=_digest(a.digest),
            delta=_delta(a.delta),
            fingerprint=a.fingerprint,
            scope=_scope(a.scope),
            mismatch=a.mismatch,
        )
    elif which == "ack":
        body = Ack(delta=_delta(msg.ack.delta))
    elif which in ("push_games", "games_batch"):
        part = getattr(msg, which)
        if len(part.games) > MAX_GAMES or any(
            len(g.data) > MAX_GAME_BYTES or not 0 < g.seq <= MAX_NUMBER for g in part.games
        ):
            raise RemoteProtocolError("games out of bounds")
        cls = PushGames if which == "push_games" else GamesBatch
        if cls is PushGames and host_of(part.origin) != sender:
            raise RemoteProtocolError(f"{sender} pushes games of another host's stream {part.origin[:40]!r}")
        body = cls(
            origin=check_node_id(part.origin),
            config_key=check_node_id(part.config_key),
            games=tuple((g.seq, g.data) for g in part.games),
        )
    elif which == "games_ack":
        part = msg.games_ack
        if len(part.seqs) > MAX_GAMES:
            raise RemoteProtocolError("too many seqs")
        check_number(*part.seqs)
        body = GamesAck(
            origin=check_node_id(part.origin), config_key=check_node_id(part.config_key), seqs=tuple(part.seqs)
        )
    elif which == "pull_games":
        part = msg.pull_games
        check_number(part.first, part.last)
        body = PullGames(
            origin=check_node_id(part.origin),
            config_key=check_node_id(part.config_key),
            first=part.first,
            last=part.last,
        )
    elif which in _SIMPLE_BY_FIELD:
        simple, fields = _SIMPLE_BY_FIELD[which]
        part = getattr(msg, which)
        body = simple(**{f: getattr(part, f) for f in fields})
        check_number(*(getattr(part, f) for f in ("seq", "term") if f in fields))
        if isinstance(body, PingReq):
            check_node_id(body.target)
        elif isinstance(body, BroadcastOrder):
            check_digest(body.digest)
            try:
                check_item(body.item)
            except LocalProtocolError as e:
                raise RemoteProtocolError(str(e)) from None
    else:
        raise RemoteProtocolError("envelope without a body")
    return Envelope(sender=sender, hlc=msg.hlc, body=body)


def parse_envelope(raw: bytes) -> Envelope:
    """Bytes straight off the wire -> a core envelope (used by tests and fuzzers)."""
    msg = pb.Envelope()
    try:
        msg.ParseFromString(raw)
    except DecodeError as e:
        raise RemoteProtocolError(f"undecodable envelope: {e}") from None
    return decode_envelope(msg)


def recipe_digests(r: pb.Recipe) -> list[bytes]:
    if any(len(d) != DIGEST_BYTES for d in r.chunk_digests):
        raise RemoteProtocolError("recipe chunk digest of the wrong length")
    return list(r.chunk_digests)
