"""Core messages survive the protobuf round trip; malformed input is a RemoteProtocolError."""

import pytest
from hypothesis import given, settings, strategies as st

from ringmesh import codec
from ringmesh.core import Ack, Delta, Envelope, Fact, OriginDelta, OriginDigest, RemoteProtocolError, Syn, SynAck
from ringmesh.core.election import HeartbeatAck, LeaderHeartbeat, VoteReply, VoteRequest
from ringmesh.core.membership import Ping, PingAck, PingReq
from ringmesh.core.messages import GamesAck, GamesBatch, PullGames, PushGames

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,19}", fullmatch=True)
u64 = st.integers(0, 2**64 - 1)
digests = st.dictionaries(names, st.builds(OriginDigest, u64, u64, u64, u64), max_size=5)


@st.composite
def origin_deltas(draw):
    start = draw(st.integers(0, 1000))
    counters = sorted(draw(st.sets(st.integers(start + 1, start + 1000), max_size=5)))
    facts = tuple(Fact(draw(names), draw(st.binary(max_size=50)), c, draw(st.sampled_from([0, 1, 2**63 + 5]))) for c in counters)
    reset = draw(st.booleans())
    return OriginDelta(draw(names), draw(u64), draw(u64), draw(u64), reset, 0 if reset else start,
                       (counters[-1] if counters else start) + draw(st.integers(0, 3)), facts)


games = st.lists(st.tuples(st.integers(1, 2**64 - 1), st.binary(max_size=40)), max_size=4).map(tuple)
deltas = st.builds(Delta, st.lists(origin_deltas(), max_size=4).map(tuple))
bodies = st.one_of(
    st.builds(Syn, digest=digests), st.builds(SynAck, digest=digests, delta=deltas), st.builds(Ack, delta=deltas),
    st.builds(Ping, seq=u64), st.builds(PingAck, seq=u64), st.builds(PingReq, seq=u64, target=names),
    st.builds(VoteRequest, term=u64, pre=st.booleans()),
    st.builds(VoteReply, term=u64, granted=st.booleans(), pre=st.booleans()),
    st.builds(LeaderHeartbeat, term=u64, seq=u64), st.builds(HeartbeatAck, term=u64, seq=u64),
    st.builds(PushGames, origin=names, config_key=names, games=games),
    st.builds(GamesBatch, origin=names, config_key=names, games=games),
    st.builds(GamesAck, origin=names, config_key=names, seqs=st.lists(u64, max_size=5).map(tuple)),
    st.builds(PullGames, origin=names, config_key=names, first=u64, last=u64),
)


@settings(max_examples=200, deadline=None)
@given(names, u64, bodies)
def test_round_trip(sender, hlc, body):
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


@pytest.mark.parametrize("mutate, message", [
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
])
def test_malformed_envelopes_are_rejected(mutate, message):
    env = _env()
    env.ack.delta.add(origin="b", incarnation=1, from_counter=5, max_counter=9)
    mutate(env)
    with pytest.raises(RemoteProtocolError, match=message):
        codec.parse_envelope(env.SerializeToString())
