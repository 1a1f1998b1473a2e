"""A live peer answers malformed or hostile calls with an error status and goes on serving.

The tests share one 3-peer cluster (each looks at the counters it moved, not at totals)."""

import os

import grpc
import msgpack
import pytest

from ringmesh.node.runtime import socket_path
from ringmesh.node.wire import codec
from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.v1 import mesh_pb2_grpc

from .conftest import serving

INVALID, TOO_LARGE = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED
# names that must never become a path, a stream, a config or a fact key
HOSTILE_NAMES = ["../../etc/passwd", "/etc/passwd", "a\x00b", "n" * 10_240, "..", ".hidden"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(
        tmp_path_factory.mktemp("hostile") / "cluster",
        3,
        gossip_interval=0.2,
        roles={f"node{i}": "training" for i in (1, 2, 3)},
    )
    with serving(c):
        yield c


@pytest.fixture(scope="module")
def stub(cluster):
    ch = grpc.insecure_channel(cluster.nodes["node1"].address)
    yield mesh_pb2_grpc.PeerStub(ch), ch
    ch.close()


def _counters(cluster):
    return cluster.nodes["node1"].query("status")["counters"]


@pytest.fixture(scope="module")
def local(cluster):
    ch = grpc.insecure_channel(f"unix:{socket_path(cluster.nodes['node1'].data_dir)}")
    yield mesh_pb2_grpc.LocalStub(ch)
    ch.close()


def _code(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_malformed_gossip_is_refused(cluster, stub):
    s, ch = stub
    before = _counters(cluster).get("rejected_messages", 0)
    bad = codec.EnvelopePB(sender="../evil", hlc=1)
    bad.syn.SetInParent()
    assert _code(lambda: s.Deliver(bad, timeout=5)) == INVALID
    empty = codec.EnvelopePB(sender="x", hlc=1)
    assert _code(lambda: s.Deliver(empty, timeout=5)) == INVALID
    raw = ch.unary_unary("/ringmesh.v1.Peer/Deliver", request_serializer=None, response_deserializer=None)
    assert _code(lambda: raw(b"\xff\xff\xff\xff garbage", timeout=5)) == INVALID, "not gRPC's UNKNOWN"
    assert _counters(cluster)["rejected_messages"] - before == 3
    wait_for(cluster.converged, 20, what="gossip to go on")


def test_oversized_messages_are_refused_by_grpc(cluster, stub, local):
    """Beyond the message limit (8 MiB, peers and local API) gRPC refuses before any handler runs."""
    _, ch = stub
    before = _counters(cluster).get("oversized_requests", 0)
    raw = ch.unary_unary("/ringmesh.v1.Peer/Deliver", request_serializer=None, response_deserializer=None)
    assert _code(lambda: raw(b"\x0a" + b"\xff" * (9 << 20), timeout=20)) == TOO_LARGE
    big = codec.PublishGamesRequest(config_key="hex8_2p", games=[b"x" * (9 << 20)])
    assert _code(lambda: local.PublishGames(big, timeout=20)) == TOO_LARGE
    # within the limit but over ours: refused by the handler, and counted
    many = codec.PublishGamesRequest(config_key="hex8_2p", games=[b"x"] * (codec.MAX_GAMES + 1))
    assert _code(lambda: local.PublishGames(many, timeout=20)) == TOO_LARGE
    assert _counters(cluster)["oversized_requests"] - before == 1
    wait_for(cluster.converged, 20, what="gossip to go on")


def test_chunk_requests_are_checked(cluster, stub, tmp_path):
    s, _ = stub
    f = tmp_path / "m.pth"
    f.write_bytes(os.urandom(5000))
    with cluster.nodes["node1"].client() as c:
        put = c.put(f, "model")
    unknown = "0" * 32
    assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest=unknown), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest="../../etc"), timeout=5)) == INVALID

    def fetch(*indices):
        return list(s.FetchChunks(codec.ChunkRequest(digest=put["digest"], indices=indices), timeout=5))

    assert _code(lambda: fetch(1)) == INVALID
    assert _code(lambda: fetch(0, 0)) == TOO_LARGE, "more indices than the version has chunks"
    chunks = fetch(0)
    assert b"".join(c.data for c in chunks) == f.read_bytes()


def _all_files(root):
    return {os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files}


def test_hostile_names_are_refused_at_every_entry_point(cluster, stub, local, tmp_path):
    """`../../etc/passwd`, `/etc/passwd`, NUL, 10 KB, `..`, `.hidden`: as an item name or type,
    a path, a config key, a query argument, a fact key, a broadcast order, a stream or a digest,
    each is refused, counted, and creates nothing."""
    s, _ = stub
    good = tmp_path / "good.pth"
    good.write_bytes(b"g" * 100)
    before = _all_files(cluster.root)
    passwd = os.stat("/etc/passwd")
    n1 = cluster.nodes["node1"]

    def published():
        return {(i["type"], i["name"], i["digest"]) for i in n1.query("ls")["items"]}

    items, counted = published(), _counters(cluster)
    refused = {"local": 0, "peer": 0}

    def refuse(kind, call):
        code = _code(call)
        assert code in (INVALID, TOO_LARGE), code
        refused[kind] += 1

    def deliver(**body):
        return lambda: s.Deliver(codec.EnvelopePB(sender="node2", hlc=1, **body), timeout=5)

    def facts(key):
        delta = codec.pb.OriginDelta(
            origin="node2",
            incarnation=1,
            from_counter=0,
            max_counter=1,
            facts=[codec.pb.Fact(key=key, value=b"\x80", counter=1)],
        )
        return deliver(ack=codec.pb.Ack(delta=[delta]))

    for bad in HOSTILE_NAMES:
        # local API: item names and types, paths, config keys, query and order arguments
        refuse("local", lambda: local.Put(codec.PutRequest(path=str(good), type="model", name=bad), timeout=5))
        refuse("local", lambda: local.Put(codec.PutRequest(path=str(good), type=bad, name="x"), timeout=5))
        if bad != "/etc/passwd":  # an absolute path to a readable file is a file to publish (as `passwd`)
            refuse("local", lambda: local.Put(codec.PutRequest(path=bad, type="model"), timeout=5))
        refuse(
            "local",
            lambda: local.Put(codec.PutRequest(path=str(good), type="model", attrs={"config_key": bad}), timeout=5),
        )
        refuse("local", lambda: local.Get(codec.Query(what="replication_targets", args={"item": bad}), timeout=5))
        refuse("local", lambda: local.Get(codec.Query(what="status", args={"config_key": bad}), timeout=5))
        refuse("local", lambda: local.Control(codec.Query(what="priority", args={"config_key": bad}), timeout=5))
        refuse(
            "local", lambda: local.PublishGames(codec.PublishGamesRequest(config_key=bad, games=[b"\x80"]), timeout=5)
        )
        refuse("local", lambda: local.WaitDurable(codec.WaitDurableRequest(config_key=bad, seq=1), timeout=5))
        # peers: item fact keys, broadcast orders, streams, digests
        for prefix in ("v/", "h/", "p/", "b/"):
            refuse("peer", facts(f"{prefix}model/{bad}"))
            refuse("peer", facts(f"{prefix}{bad}/x"))
        order = codec.pb.BroadcastOrder(type="model", name=bad, digest="0" * 32, term=1)
        refuse("peer", deliver(broadcast_order=order))
        refuse(
            "peer",
            deliver(
                push_games=codec.pb.PushGames(
                    origin=bad, config_key="hex8_2p", games=[codec.pb.GameEntry(seq=1, data=b"\x80")]
                )
            ),
        )
        refuse(
            "peer",
            deliver(
                push_games=codec.pb.PushGames(
                    origin="node2.1", config_key=bad, games=[codec.pb.GameEntry(seq=1, data=b"\x80")]
                )
            ),
        )
        refuse(
            "peer",
            deliver(
                games_batch=codec.pb.GamesBatch(
                    origin="node2.1", config_key=bad, games=[codec.pb.GameEntry(seq=1, data=b"\x80")]
                )
            ),
        )
        refuse("peer", deliver(pull_games=codec.pb.PullGames(origin=bad, config_key="hex8_2p", first=1, last=2)))
        refuse("peer", deliver(games_ack=codec.pb.GamesAck(origin="node1.1", config_key=bad, seqs=[1])))
        refuse("peer", deliver(ping_req=codec.pb.PingReq(seq=1, target=bad)))
        refuse("peer", lambda: s.Deliver(codec.EnvelopePB(sender=bad, hlc=1, ping=codec.pb.Ping(seq=1)), timeout=5))
        refuse("peer", lambda: s.GetRecipe(codec.RecipeRequest(digest=bad), timeout=5))
        refuse("peer", lambda: list(s.FetchChunks(codec.ChunkRequest(digest=bad, indices=[0]), timeout=5)))
        refuse("peer", lambda: list(s.WatchChunks(codec.RecipeRequest(digest=bad), timeout=5)))

    counters = _counters(cluster)

    def delta(*keys):
        return sum(counters.get(k, 0) - counted.get(k, 0) for k in keys)

    assert delta("rejected_requests", "oversized_requests") == refused["local"]
    assert delta("rejected_messages", "oversized_messages") == refused["peer"]
    created = _all_files(cluster.root) - before
    hostile = [p for p in created if any(w in p for w in ("passwd", "hidden", "\x00", "n" * 200))]
    assert not hostile, hostile
    outside = [
        p
        for p in created
        if not any(
            p.startswith(str(nd.data_dir) + os.sep) or p.startswith(str(nd.log_path)) for nd in cluster.nodes.values()
        )
    ]
    assert not outside, outside
    assert os.stat("/etc/passwd").st_mtime_ns == passwd.st_mtime_ns
    assert published() == items, "nothing was published"
    wait_for(cluster.converged, 20, what="gossip to go on")


# -- regressions: one hostile message used to break a peer for good ----------------------------


def test_numbers_at_the_limits_break_nothing(cluster, stub):
    """Once: a Syn naming node1 at incarnation 2^64-1 made it reincarnate to 2^64, which no
    message can carry (every gossip send failed from then on); a heartbeat at term 2^64-1 did
    the same to elections; a claim "node1 is dead" at incarnation 2^64-1 made the core fail
    (its refutation, 2^64, does not pack)."""
    s, _ = stub
    n1, n2 = cluster.nodes["node1"], cluster.nodes["node2"]
    inc = n1.query("status")["incarnation"]
    top = 2**64 - 1

    def syn(i):
        return codec.EnvelopePB(
            sender="node2",
            hlc=1,
            syn=codec.pb.Syn(digest=[codec.pb.OriginDigest(origin="node1", incarnation=i, max_counter=1)]),
        )

    assert _code(lambda: s.Deliver(syn(top), timeout=5)) == INVALID
    s.Deliver(syn(codec.MAX_NUMBER), timeout=5)  # within the wire's limit, but no incarnation is left above it
    heartbeat = codec.EnvelopePB(sender="node2", hlc=1, leader_heartbeat=codec.pb.LeaderHeartbeat(term=top, seq=1))
    assert _code(lambda: s.Deliver(heartbeat, timeout=5)) == INVALID

    def claim(origin, i):
        value = msgpack.packb({"s": "dead", "i": i})
        delta = codec.pb.OriginDelta(
            origin=origin,
            incarnation=1,
            max_counter=1,
            reset=True,
            facts=[codec.pb.Fact(key="m/node1", value=value, counter=1)],
        )
        s.Deliver(codec.EnvelopePB(sender=origin, hlc=1, ack=codec.pb.Ack(delta=[delta])), timeout=5)

    claim("fz-a", top)  # beyond any refutation: not a claim
    claim("fz-b", codec.MAX_NUMBER - 1)  # refuted at MAX_NUMBER
    wait_for(cluster.converged, 20, what="gossip to go on")
    st1 = n1.query("status")
    assert st1["incarnation"] == inc, "node1 did not reincarnate"
    assert "internal_errors" not in st1["counters"]

    def node1_seen_by_node2():
        return {m["name"]: m for m in n2.query("status")["members"]}["node1"]

    wait_for(lambda: node1_seen_by_node2()["alive_incarnation"] == codec.MAX_NUMBER, 20, what="node1 to refute")
    assert node1_seen_by_node2()["state"] == "alive"


def test_games_and_waits_that_used_to_fail_or_hang(cluster, local, tmp_path):
    """Once: a game record without `columns` made the whole batch fail with a KeyError (UNKNOWN,
    and the games already fsynced were never announced); WaitDurable with a NaN timeout waited
    forever; a Put with oversized attributes failed after copying the file in."""
    n1 = cluster.nodes["node1"]
    odd = msgpack.packb({"game_id": "odd", "tables": {"games": [[1]]}})
    reply = local.PublishGames(codec.PublishGamesRequest(config_key="hex8_2p", games=[odd, b"\xc1"]), timeout=10)
    assert list(reply.seqs) == [1, 2]
    assert local.WaitDurable(codec.WaitDurableRequest(config_key="hex8_2p", seq=2, timeout_s=30), timeout=40).durable
    games = n1.query("status")["games"]
    assert games["rejected"] >= 1 and games["undecodable"] >= 1
    nan = codec.WaitDurableRequest(config_key="hex8_2p", seq=10**9, timeout_s=float("nan"))
    assert _code(lambda: local.WaitDurable(nan, timeout=5)) == INVALID
    f = tmp_path / "a.pth"
    f.write_bytes(b"a" * 10)
    put = codec.PutRequest(path=str(f), type="model", attrs={f"k{i}": "v" * 500 for i in range(100)})
    assert _code(lambda: local.Put(put, timeout=5)) == TOO_LARGE
    assert not list(n1.data_dir.rglob("a.pth")), "refused before the file was copied in"


def test_a_broadcast_order_is_not_a_version_vector(cluster, stub):
    """Once: the observability counters read a BroadcastOrder's digest as a version vector
    (UNKNOWN, and a traceback per message)."""
    s, _ = stub
    order = codec.pb.BroadcastOrder(type="model", name="x.pth", digest="0" * 32, term=1)
    s.Deliver(codec.EnvelopePB(sender="node2", hlc=1, broadcast_order=order), timeout=5)


def test_what_peers_can_make_a_host_keep_is_bounded(tmp_path):
    from ringmesh.core.streams import MAX_ACKS_AHEAD, MAX_STREAMS, Durability
    from ringmesh.node.games.games import unpack_record
    from ringmesh.node.games.streamlog import StreamLog

    # acks for games we never made, or for configs we never had, are kept nowhere
    d = Durability("a", 2, lambda h: True)
    d.stored("k", 3)
    d.acked("k", "b", range(1, 100_000))
    assert max(d.streams["k"].acks) <= 3 + MAX_ACKS_AHEAD
    for i in range(MAX_STREAMS + 100):
        d.acked(f"c{i}", "b", [1])
    assert len(d.streams) == MAX_STREAMS
    # streams peers push keep a bounded number of files open
    log = StreamLog(tmp_path / "streams", max_open_readers=8)
    for i in range(50):
        log.append_at("o.1", f"c{i}", 1, b"game")
        log.flush()
    assert sum(st.active_fd is not None for st in log._streams.values()) <= 8
    assert log.read("o.1", "c0", 1, 1) == [(1, b"game")] and log.append_at("o.1", "c0", 2, b"more")
    log.close()
    # a game record cannot be 50 times its size in memory
    assert unpack_record(b"\xdc\xff\xff" + b"\x90" * 65_535) is None
    assert unpack_record(b"\x91" * 100_000 + b"\xc0") is None
    assert unpack_record(msgpack.packb({"game_id": "g", "tables": {"games": [[1, 2]]}})) is not None
