"""Core messages survive the protobuf round trip; malformed input is a RemoteProtocolError."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core import Ack, Delta, Envelope, Fact, OriginDelta, OriginDigest, RemoteProtocolError, Syn, SynAck
from ringmesh.core.election import HeartbeatAck, LeaderHeartbeat, VoteReply, VoteRequest
from ringmesh.core.manifest import MAX_NUMBER
from ringmesh.core.membership import Ping, PingAck, PingReq
from ringmesh.core.messages import GamesAck, GamesBatch, PullGames, PushGames
from ringmesh.node.wire import codec

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,19}", fullmatch=True)
u64 = st.integers(0, 2**64 - 1)  # HLC fields
counts = st.integers(0, MAX_NUMBER)  # counters, incarnations, terms, seqs
digests = st.dictionaries(names, st.builds(OriginDigest, counts, counts, counts, counts), max_size=5)


@st.composite
def origin_deltas(draw):
    start = draw(st.integers(0, 1000))
    counters = sorted(draw(st.sets(st.integers(start + 1, start + 1000), max_size=5)))
    facts = tuple(
        Fact(draw(names), draw(st.binary(max_size=50)), c, draw(st.sampled_from([0, 1, 2**63 + 5]))) for c in counters
    )
    reset = draw(st.booleans())
    return OriginDelta(
        draw(names),
        draw(counts),
        draw(counts),
        draw(counts),
        reset,
        0 if reset else start,
        (counters[-1] if counters else start) + draw(st.integers(0, 3)),
        facts,
    )


games = st.lists(st.tuples(st.integers(1, MAX_NUMBER), st.binary(max_size=40)), max_size=4).map(tuple)
deltas = st.builds(Delta, st.lists(origin_deltas(), max_size=4).map(tuple))
bodies = st.one_of(
    st.builds(Syn, digest=digests),
    st.builds(SynAck, digest=digests, delta=deltas),
    st.builds(Ack, delta=deltas),
    st.builds(Ping, seq=counts),
    st.builds(PingAck, seq=counts),
    st.builds(PingReq, seq=counts, target=names),
    st.builds(VoteRequest, term=counts, pre=st.booleans()),
    st.builds(VoteReply, term=counts, granted=st.booleans(), pre=st.booleans()),
    st.builds(LeaderHeartbeat, term=counts, seq=counts),
    st.builds(HeartbeatAck, term=counts, seq=counts),
    st.builds(PushGames, origin=st.just("0.1"), config_key=names, games=games),  # a host pushes its own streams
    st.builds(GamesBatch, origin=names, config_key=names, games=games),
    st.builds(GamesAck, origin=names, config_key=names, seqs=st.lists(counts, max_size=5).map(tuple)),
    st.builds(PullGames, origin=names, config_key=names, first=counts, last=counts),
)


@settings(max_examples=200, deadline=None)
@given(names, u64, bodies)
def test_round_trip(sender, hlc, body):
    if isinstance(body, PushGames):
        sender = "0"
    env = Envelope(sender=sender, hlc=hlc, body=body)
    raw = codec.encode_envelope(env, "127.0.0.1:1").SerializeToString()
    assert codec.parse_envelope(raw) == env


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_is_a_remote_error_or_a_valid_envelope(raw):
    try:
        env = codec.parse_envelope(raw)
    except RemoteProtocolError:
        return
    assert isinstance(env, Envelope)


def _env(**kw):
    return codec.EnvelopePB(sender="a", hlc=1, **kw)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda e: e.ClearField("sender"), "bad node id"),
        (lambda e: setattr(e, "sender", "../x y"), "bad node id"),
        (lambda e: e.ClearField("ack"), "without a body"),
        (lambda e: e.ack.delta[0].facts.add(key="k", value=b"", counter=1), "outside its range"),
        (lambda e: e.ack.delta[0].facts.add(key="k", value=b"", counter=0), "counter 0"),
        (lambda e: e.ack.delta[0].facts.add(key="k" * 600, value=b"", counter=6), "out of bounds"),
        (lambda e: [e.ack.delta[0].facts.add(key="k", value=b"", counter=c) for c in (7, 6)], "counter order"),
        (lambda e: setattr(e.ack.delta[0], "reset", True), "start at counter 0"),
        (lambda e: setattr(e.ack.delta[0], "origin", ""), "bad node id"),
        (lambda e: e.ping_req.MergeFrom(codec.pb.PingReq(seq=1, target="../x")), "bad node id"),
        # numbers that would overflow when counted up from (the wire and SQLite hold 64 bits)
        (lambda e: setattr(e.ack.delta[0], "incarnation", MAX_NUMBER + 1), "out of range"),
        (lambda e: e.vote_request.MergeFrom(codec.pb.VoteRequest(term=2**64 - 1)), "out of range"),
        (lambda e: e.syn.digest.add(origin="c", incarnation=2**64 - 1), "out of range"),
        (
            lambda e: e.games_ack.MergeFrom(codec.pb.GamesAck(origin="c", config_key="k", seqs=[1, 2**63])),
            "out of range",
        ),
        # fact keys that name an item name a confined one
        (lambda e: e.ack.delta[0].facts.add(key="v/model/../../etc/passwd", value=b"", counter=6), "plain file name"),
        (lambda e: e.ack.delta[0].facts.add(key="h/model//etc/passwd", value=b"", counter=6), "plain file name"),
        (lambda e: e.ack.delta[0].facts.add(key="p/model/.hidden", value=b"", counter=6), "plain file name"),
        (lambda e: e.ack.delta[0].facts.add(key="b/../x", value=b"", counter=6), "names no item type"),
        (lambda e: e.ack.delta[0].facts.add(key="v/model/" + "n" * 300, value=b"", counter=6), "1..200 bytes"),
        (lambda e: e.ack.delta[0].facts.add(key="m/a\x00b", value=b"", counter=6), "control character"),
        (lambda e: e.push_games.MergeFrom(codec.pb.PushGames(origin="b.1", config_key="k")), "another host's stream"),
        (
            lambda e: e.broadcast_order.MergeFrom(
                codec.pb.BroadcastOrder(type="model", name="../../etc/passwd", digest="0" * 32, term=1)
            ),
            "plain file name",
        ),
    ],
)
def test_malformed_envelopes_are_rejected(mutate, message):
    env = _env()
    env.ack.delta.add(origin="b", incarnation=1, from_counter=5, max_counter=9)
    mutate(env)
    with pytest.raises(RemoteProtocolError, match=message):
        codec.parse_envelope(env.SerializeToString())


def test_raw_frames_travel_as_their_own_bytes():
    frame = b"\x0a\x03abc" + bytes(range(256))  # bytes that would parse as a message, or not
    assert codec.serializer(codec.RawFrame) is None, "identity: gRPC sends the bytes as given"
    assert codec.reply_parser(codec.RawFrame)(frame) is frame, "no parse, no copy"
    assert codec.reply_bytes(frame) is frame
    chunk = codec.Chunk(index=1, data=b"x")
    assert codec.reply_parser(codec.Chunk)(codec.reply_bytes(chunk)) == chunk
    assert codec.serializer(codec.Chunk) == codec.Chunk.SerializeToString


def test_unparseable_requests_reach_the_servers_as_malformed():
    parse = codec.request_parser(codec.EnvelopePB)
    assert isinstance(parse(b"\xff\xff\xff\xff garbage"), codec.Malformed)
    assert isinstance(parse(b"\x0a\x02\xff\xfe"), codec.Malformed), "a string field that is not UTF-8"
    ok = codec.EnvelopePB(sender="a", hlc=1)
    assert parse(ok.SerializeToString()) == ok
    name, methods = codec.service_methods("Peer")
    assert name == "ringmesh.v1.Peer" and {m[0] for m in methods} == {
        "Deliver",
        "GetRecipe",
        "FetchChunks",
        "FetchFrames",
        "WatchChunks",
        "Link",
        "Relay",
        "Answer",
    }
