"""gRPC servicers: `Peer` (what other hosts call) and `Local` (what the CLI calls).

Every handler validates its input before it allocates; a peer's malformed message is answered
INVALID_ARGUMENT, counted, and the daemon goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from . import codec, reports
from .core import catalog, recipe
from .core.bandwidth import Priority
from .core.errors import LocalProtocolError, RemoteProtocolError
from .core.messages import FilePublished, ItemKey, MessageReceived, PrioritySet, SyncRequested
from .throttle import priority_from_metadata
from .transfer import frames
from .v1 import mesh_pb2_grpc

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("ringmesh.server")
MAX_INDICES = 1_000_000


class PeerService(mesh_pb2_grpc.PeerServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    async def Deliver(self, request, context):
        try:
            env = codec.decode_envelope(request)
        except RemoteProtocolError as e:
            self.d.count("rejected_messages")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if request.sender_address:
            try:
                self.d.learn_address(env.sender, request.sender_address)
            except Exception:
                self.d.count("rejected_addresses")
        self.d.submit_nowait(MessageReceived(envelope=env))
        return codec.Delivered()

    def _held(self, digest: str):
        return catalog.held_versions(self.d.peer.manifest, self.d.peer.me).get(digest)

    async def GetRecipe(self, request, context):
        held, pulling = self._held(request.digest), self.d.pulling.get(request.digest)
        if held:
            digests = await asyncio.to_thread(self.d.files.load_recipe, request.digest)
            _item, size, chunk_size = held
        elif pulling:
            v = pulling.partial.v
            digests, size, chunk_size = pulling.partial.digests, v.size, v.chunk_size
        else:
            digests = None
        if digests is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.digest[:40]!r} here")
        return codec.Recipe(digest=request.digest, size=size, chunk_size=chunk_size, chunk_digests=digests)

    async def FetchChunks(self, request, context):
        """Chunks of a version held whole, or verified so far by a pull under way."""
        held, pulling = self._held(request.digest), self.d.pulling.get(request.digest)
        if held is not None:
            item, size, chunk_size = held
        elif pulling is not None:
            v = pulling.partial.v
            item, size, chunk_size = v.item, v.size, v.chunk_size
        else:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.digest[:40]!r} here")
        n = recipe.chunk_count(size, chunk_size)
        if len(request.indices) > MAX_INDICES or any(i >= n for i in request.indices):
            self.d.count("rejected_messages")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk indices must be below {n}")
        cls = priority_from_metadata(context.invocation_metadata())
        if cls is None:  # a class this version does not know (a newer peer?): serve it as NORMAL
            self.d.count("unknown_priorities")
            cls = Priority.NORMAL
        for index in request.indices:
            try:
                if held is None and not pulling.complete:
                    if index not in pulling.partial.have:
                        await context.abort(grpc.StatusCode.NOT_FOUND, f"chunk {index} is not verified here yet")
                    data = await asyncio.to_thread(pulling.partial.read, index)
                else:
                    data = await asyncio.to_thread(self.d.files.read_chunk, item, index, size, chunk_size)
            except OSError as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read {item}: {e.strerror}")
            if self.d.corrupt_chunks and data:  # test hook: a lying holder
                data = bytes([data[0] ^ 0xFF]) + data[1:]
            for idx, off, part in frames(index, data):
                await self.d.egress.acquire(len(part), cls)
                yield codec.Chunk(index=idx, offset=off, data=part)
            self.d.count("bytes_served", len(data))

    async def WatchChunks(self, request, context):
        """The chunks of a version this host pulls, now and as it verifies them; `complete`
        once it holds the version whole."""
        if self._held(request.digest) is not None:
            yield codec.ChunkMap(complete=True)
            return
        pulling = self.d.pulling.get(request.digest)
        if pulling is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"not pulling {request.digest[:40]!r}")
        q = pulling.subscribe()
        try:
            yield codec.ChunkMap(indices=sorted(pulling.partial.have))
            while True:
                batch = [await q.get()]
                while not q.empty() and batch[-1] is not None:  # whatever else arrived meanwhile
                    batch.append(q.get_nowait())
                verified = [i for e in batch if e is not None and e[0] for i in [e[1]]]
                asked = [i for e in batch if e is not None and not e[0] for i in [e[1]]]
                if verified or asked:
                    yield codec.ChunkMap(indices=verified, fetching=asked)
                if batch[-1] is None:  # the pull ended
                    if pulling.complete:
                        yield codec.ChunkMap(complete=True)
                    return
        finally:
            pulling.unsubscribe(q)


class LocalService(mesh_pb2_grpc.LocalServicer):
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon

    async def Put(self, request, context):
        path = Path(request.path)
        try:
            item = catalog.check_item(ItemKey(request.type, request.name or path.name))
            if not path.is_absolute():
                raise LocalProtocolError(f"{path}: give an absolute path")
            hashed = await asyncio.to_thread(self.d.files.import_file, path, item)
        except LocalProtocolError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except OSError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{path}: {e.strerror}")
        await self.d.submit(FilePublished(item=item, digest=hashed.digest, size=hashed.size,
                                          chunk_size=hashed.chunk_size, attrs=dict(request.attrs)))
        v = catalog.newest_versions(self.d.peer.manifest).get(item)
        return codec.PutReply(type=item.type, name=item.name, digest=hashed.digest, size=hashed.size,
                              chunk_size=hashed.chunk_size, hlc=v.hlc if v else 0)

    async def PublishGames(self, request, context):
        try:
            key = codec.check_node_id(request.config_key)
        except RemoteProtocolError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad config_key {request.config_key[:40]!r}")
        if not request.games or len(request.games) > codec.MAX_GAMES or any(
                len(g) > codec.MAX_GAME_BYTES for g in request.games):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"1..{codec.MAX_GAMES} games of at most "
                                f"{codec.MAX_GAME_BYTES} bytes each")
        try:
            seqs = await self.d.publish_games(key, list(request.games))
        except OSError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot store the games: {e.strerror}")
        return codec.PublishGamesReply(seqs=seqs)

    async def WaitDurable(self, request, context):
        ok = await self.d.wait_durable(request.config_key, request.seq, min(max(request.timeout_s, 0.0), 3600.0))
        return codec.WaitDurableReply(durable=ok, durable_through=self.d.durable.get(request.config_key, 0))

    async def Get(self, request, context):
        readers = {
            "status": self.d.status, "ls": self.d.listing,
            "recommendations": lambda: reports.recommendations(self.d),
            "cluster": lambda: reports.cluster_data(self.d),
            "replication_targets": lambda: reports.targets_for(self.d, dict(request.args)),
        }
        if request.what not in readers:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown query {request.what!r}")
        try:
            doc = readers[request.what]()
        except LocalProtocolError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return codec.Document(json=json.dumps(doc, sort_keys=True))

    async def Control(self, request, context):
        args = dict(request.args)
        try:
            if request.what == "sync":
                await self.d.submit(SyncRequested())
            elif request.what == "priority":
                key = args.get("config_key", "")
                if not key:
                    raise LocalProtocolError("priority needs a config_key")
                prio = Priority.parse(args.get("priority", "high"))
                await self.d.submit(PrioritySet(config_key=key, priority=prio.label))
            else:
                raise LocalProtocolError(f"unknown order {request.what!r}")
        except LocalProtocolError as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        return codec.Document(json=json.dumps(reports.recommendations(self.d), sort_keys=True))
