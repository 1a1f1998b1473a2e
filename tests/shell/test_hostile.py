"""A live peer answers malformed or hostile calls with an error status and goes on serving."""

import grpc
import pytest

from ringmesh import codec
from ringmesh.localcluster import wait_for
from ringmesh.v1 import mesh_pb2_grpc


@pytest.fixture
def stub(cluster):
    ch = grpc.insecure_channel(cluster.nodes["node1"].address)
    yield mesh_pb2_grpc.PeerStub(ch), ch
    ch.close()


def _code(call):
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def test_malformed_gossip_is_refused(cluster, stub):
    s, ch = stub
    bad = codec.EnvelopePB(sender="../evil", hlc=1)
    bad.syn.SetInParent()
    assert _code(lambda: s.Deliver(bad, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    empty = codec.EnvelopePB(sender="x", hlc=1)
    assert _code(lambda: s.Deliver(empty, timeout=5)) == grpc.StatusCode.INVALID_ARGUMENT
    raw = ch.unary_unary("/ringmesh.v1.Peer/Deliver", request_serializer=None, response_deserializer=None)
    assert _code(lambda: raw(b"\xff\xff\xff\xff garbage", timeout=5)) != grpc.StatusCode.OK
    status = cluster.nodes["node1"].query("status")
    assert status["counters"]["rejected_messages"] == 2
    wait_for(cluster.converged, 20, what="gossip to go on")


def test_chunk_requests_are_checked(cluster, stub, tmp_path):
    s, _ = stub
    f = tmp_path / "m.pth"
    f.write_bytes(b"x" * 5000)
    with cluster.nodes["node1"].client() as c:
        put = c.put(f, "model")
    unknown = "0" * 32
    assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest=unknown), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest="../../etc"), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert _code(lambda: list(s.FetchChunks(codec.ChunkRequest(digest=put["digest"], indices=[1]), timeout=5))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    chunks = list(s.FetchChunks(codec.ChunkRequest(digest=put["digest"], indices=[0]), timeout=5))
    assert b"".join(c.data for c in chunks) == f.read_bytes()
