"""gRPC servicers: `Peer` (what other hosts call) and `Local` (what the CLI calls).

Every handler validates its input before it allocates; a peer's malformed message is answered
INVALID_ARGUMENT, counted, and the daemon goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import grpc

from ringmesh.core import catalog, recipe
from ringmesh.core.bandwidth import Priority
from ringmesh.core.errors import LocalProtocolError, RemoteProtocolError
from ringmesh.core.messages import (
    FetchRequested,
    FilePublished,
    ItemKey,
    MessageReceived,
    PrioritySet,
    SyncRequested,
)
from ringmesh.node.files.store import Damaged
from ringmesh.node.files.throttle import priority_from_metadata
from ringmesh.node.files.transfer import CALLER_METADATA, frames
from ringmesh.node.games import gameschema
from ringmesh.node.telemetry import IN, OUT
from ringmesh.node.wire import codec
from ringmesh.node.wire.tls import peer_identity
from ringmesh.ops import reports
from ringmesh.v1 import mesh_pb2_grpc

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon

log = logging.getLogger("ringmesh.node.wire.service")
MAX_INDICES = 1_000_000
MAX_LEARNED = 1024  # addresses learned from senders that neither the config nor the manifest places
MAX_PATH_BYTES = 4096
MAX_ATTRS, MAX_ATTR_KEY_BYTES, MAX_ATTR_VALUE_BYTES = 64, 64, 512  # packed, well below a fact's limit
MAX_ARGS, MAX_ARG_BYTES = 16, 1024
MAX_WAIT_S = 3600.0
INVALID, TOO_LARGE = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED


def register(server, servicer: PeerService | LocalService) -> None:
    """Add `servicer` to `server`, parsing each request ourselves: bytes that are no valid
    message are refused like any other malformed request (INVALID_ARGUMENT, counted), where
    gRPC's own parsing would answer UNKNOWN and log a traceback per message."""
    service, methods = codec.service_methods(servicer.SERVICE)
    handlers = {}
    for name, request, reply, client_streams, streams in methods:
        if client_streams:  # Link, Answer: their handlers check each frame
            make = grpc.stream_stream_rpc_method_handler if streams else grpc.stream_unary_rpc_method_handler
            handler = getattr(servicer, name)
        else:
            make = grpc.unary_stream_rpc_method_handler if streams else grpc.unary_unary_rpc_method_handler
            handler = _parsed(servicer, getattr(servicer, name), streams)
        handlers[name] = make(
            handler,
            request_deserializer=codec.request_parser(request),
            response_serializer=codec.serializer(reply),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


def _parsed(servicer, handler, streaming: bool):
    if streaming:

        async def stream(request, context):
            if isinstance(request, codec.Malformed):
                await servicer.refuse(context, INVALID, request.error)
            async for reply in handler(request, context):
                yield reply

        return stream

    async def unary(request, context):
        if isinstance(request, codec.Malformed):
            await servicer.refuse(context, INVALID, request.error)
        return await handler(request, context)

    return unary


class _Context(Protocol):
    """What the handlers use of a `grpc.aio.ServicerContext` (grpc has no type stubs here)."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        """Ends the call with `code`: raises, never returns."""

    def invocation_metadata(self) -> Any: ...

    def auth_context(self) -> Any: ...

    def peer(self) -> str: ...


class TooLarge(LocalProtocolError):
    """A request over a size or count limit: refused RESOURCE_EXHAUSTED."""


class _Refusing:
    SERVICE = ""
    COUNTERS: dict[grpc.StatusCode, str] = {}
    node: Daemon

    async def refuse(self, context: _Context, code: grpc.StatusCode, why: str) -> NoReturn:
        """Answer `code` (INVALID_ARGUMENT: malformed; RESOURCE_EXHAUSTED: too large) and count it."""
        self.node.count(self.COUNTERS[code])
        await context.abort(code, why[:500])

    async def refuse_error(self, context: _Context, e: LocalProtocolError | RemoteProtocolError) -> NoReturn:
        await self.refuse(context, TOO_LARGE if isinstance(e, TooLarge) else INVALID, str(e))


def _text(what: str, value: str, limit: int) -> str:
    """A bounded string without NUL or other control characters."""
    if len(value.encode()) > limit:
        raise TooLarge(f"{what} is over {limit} bytes")
    if any(c < " " or c == "\x7f" for c in value):
        raise LocalProtocolError(f"{what} {value[:60]!r} contains a control character")
    return value


def check_config_key(key: str) -> str:
    if not catalog.is_node_id(key):
        raise LocalProtocolError(f"bad config_key {key[:60]!r}: letters, digits, '.', '_', '-' (at most 128)")
    return key


def check_args(args) -> dict[str, str]:
    """The arguments of a query or an order: few, bounded, and the names in them confined."""
    if len(args) > MAX_ARGS:
        raise TooLarge(f"at most {MAX_ARGS} arguments")
    out = {
        _text("argument name", k, MAX_ARG_BYTES): _text(f"argument {k[:40]!r}", v, MAX_ARG_BYTES)
        for k, v in args.items()
    }
    if "config_key" in out:
        check_config_key(out["config_key"])
    if "item" in out:  # "name" or "type/name"
        catalog.check_name(out["item"].split("/", 1)[-1])
    if "min_copies" in out and not (out["min_copies"].isdigit() and 1 <= int(out["min_copies"][:6]) <= 1000):
        raise LocalProtocolError(f"min_copies must be 1..1000, not {out['min_copies'][:20]!r}")
    return out


def check_put(request) -> tuple[Path, ItemKey, dict[str, str]]:
    path = Path(_text("path", request.path, MAX_PATH_BYTES))
    if not path.is_absolute():
        raise LocalProtocolError(f"{path}: give an absolute path")
    item = catalog.check_item(ItemKey(request.type, request.name or path.name))
    if len(request.attrs) > MAX_ATTRS:
        raise TooLarge(f"at most {MAX_ATTRS} attributes")
    attrs = {
        _text("attribute name", k, MAX_ATTR_KEY_BYTES): _text(f"attribute {k[:40]!r}", v, MAX_ATTR_VALUE_BYTES)
        for k, v in request.attrs.items()
    }
    if not all(attrs):
        raise LocalProtocolError("an attribute without a name")
    if "config_key" in attrs:
        check_config_key(attrs["config_key"])
    return path, item, attrs


def _caller(context) -> str:
    """The host a plaintext caller says it is (`transfer.CALLER_METADATA`), for byte counts only."""
    for key, value in context.invocation_metadata() or ():
        if key == CALLER_METADATA and isinstance(value, str) and catalog.is_node_id(value):
            return value
    return "unknown"


class PeerService(_Refusing, mesh_pb2_grpc.PeerServicer):
    SERVICE = "Peer"
    COUNTERS = {INVALID: "rejected_messages", TOO_LARGE: "oversized_messages"}

    def __init__(self, node: Daemon) -> None:
        self.node = node
        self._logged: set[tuple[str, str]] = set()  # identity events logged once each

    def _log_once(self, key: tuple[str, str], msg: str, *args) -> None:
        if key not in self._logged and len(self._logged) < 10_000:
            self._logged.add(key)
            log.warning(msg, *args)

    async def _identity(self, context: _Context, claimed: str | None = None) -> str | None:
        """With TLS: the host the caller's verified certificate names (PERMISSION_DENIED when it
        names none, or another host than `claimed`). Plaintext: None, no check. A call relayed
        to this host (node/wire/relay.py) names the caller whose signature was checked."""
        if self.node.tls is None:
            return None
        relayed = getattr(context, "relayed_caller", None)
        who = relayed if isinstance(relayed, str) else peer_identity(context.auth_context())
        if who is None:
            self.node.count("rejected_identity")
            self._log_once(("?", context.peer()), "refused %s: its certificate names no host", context.peer())
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "the client certificate names no host")
        if claimed is not None and claimed != who:
            self.node.count("rejected_identity")
            self._log_once(
                (who, claimed), "refused a message from %s (certificate) claiming to come from %s", who, claimed
            )
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"the sender {claimed[:128]!r} is not the host of the client certificate {who!r}",
            )
        if who not in self.node.config.hosts and who not in self.node.peer.manifest.origins:
            self._log_once(
                (who, ""),
                "host %s is in neither the config nor the manifest; its certificate is from "
                "our CA, so it is let in (a new host?)",
                who,
            )
        return who

    async def Deliver(self, request, context):
        try:
            env = codec.decode_envelope(request)
        except RemoteProtocolError as e:
            await self.refuse_error(context, e)
        await self._identity(context, env.sender)
        if not isinstance(getattr(context, "relayed_caller", None), str):
            self.node.reachability.heard_directly()
        if request.sender_address and env.sender not in self.node.learned and len(self.node.learned) >= MAX_LEARNED:
            self.node.count("rejected_addresses")
        elif request.sender_address:
            try:
                self.node.learn_address(env.sender, request.sender_address)
            except Exception:
                self.node.count("rejected_addresses")
        self.node.telemetry.message(env.sender, IN, request, env.body, self.node.peer.manifest)
        self.node.submit_nowait(MessageReceived(envelope=env))
        return codec.Delivered()

    def _held(self, digest: str):
        """(item, size, chunk_size) of a version this host holds and serves; not one whose copy
        went bad (`integrity.py`), even before the holding's retraction has gone round."""
        if self.node.integrity.quarantined(digest):
            return None
        return catalog.held_versions(self.node.peer.manifest, self.node.peer.me).get(digest)

    async def Link(self, request_iterator, context):
        """A host nobody can dial keeps this stream open; calls for it go down it (relay.RelayHub)."""
        async for call in self.node.relay_hub.serve_link(request_iterator, context):
            yield call

    async def Relay(self, request, context):
        """Carry a call to a host linked to this one."""
        async for reply in self.node.relay_hub.relay(request, context):
            yield reply

    async def Answer(self, request_iterator, context):
        """A linked host's responses to one relayed call."""
        return await self.node.relay_hub.answer(request_iterator, context)

    async def _digest(self, context: _Context, digest: str) -> str:
        try:
            return codec.check_digest(digest)
        except RemoteProtocolError as e:
            await self.refuse_error(context, e)

    async def GetRecipe(self, request, context):
        await self._identity(context)
        await self._digest(context, request.digest)
        held, pulling = self._held(request.digest), self.node.transfers.pulling.get(request.digest)
        if held:
            digests = await asyncio.to_thread(self.node.transfers.files.load_recipe, request.digest)
            _item, size, chunk_size = held
        elif pulling:
            version = pulling.partial.v
            digests, size, chunk_size = pulling.partial.digests, version.size, version.chunk_size
        else:
            digests = None
        if digests is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.digest[:40]!r} here")
        return codec.Recipe(digest=request.digest, size=size, chunk_size=chunk_size, chunk_digests=digests)

    async def FetchChunks(self, request, context: _Context):
        """Chunks of a version held whole, or verified so far by a pull under way."""
        async for index, offset, part in self._frames(request, context):
            yield codec.Chunk(index=index, offset=offset, data=part)

    async def FetchFrames(self, request, context: _Context):
        """The same frames as FetchChunks, each as its bytes alone (`codec.RawFrame`)."""
        async for _index, _offset, part in self._frames(request, context):
            yield part

    async def _frames(self, request, context: _Context):
        """`(index, offset, bytes)` of each frame of the chunks asked for, each chunk verified
        before its first frame leaves, each frame let through by the egress limit."""
        caller = await self._identity(context) or _caller(context)  # TLS: the certificate's host
        await self._digest(context, request.digest)
        held, pulling = self._held(request.digest), self.node.transfers.pulling.get(request.digest)
        if held is not None:
            item, size, chunk_size = held
        elif pulling is not None:
            version = pulling.partial.v
            item, size, chunk_size = version.item, version.size, version.chunk_size
        else:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no version {request.digest[:40]!r} here")
        n = recipe.chunk_count(size, chunk_size)
        if len(request.indices) > min(n, MAX_INDICES):
            await self.refuse(context, TOO_LARGE, f"at most {n} chunk indices")
        if any(i >= n for i in request.indices) or len(set(request.indices)) < len(request.indices):
            await self.refuse(context, INVALID, f"chunk indices must be distinct and below {n}")
        cls = priority_from_metadata(context.invocation_metadata())
        if cls is None:  # a class this version does not know (a newer peer?): serve it as NORMAL
            self.node.count("unknown_priorities")
            cls = Priority.NORMAL
        files, egress = self.node.transfers.files, self.node.egress
        for index in request.indices:
            try:
                if pulling is not None and held is None and not pulling.complete:
                    if index not in pulling.partial.have:
                        await context.abort(grpc.StatusCode.NOT_FOUND, f"chunk {index} is not verified here yet")
                    data = await asyncio.to_thread(pulling.partial.read, index)
                else:
                    data = await asyncio.to_thread(files.read_verified, item, request.digest, index, size, chunk_size)
            except Damaged as e:  # checked before it leaves: a bad copy is never served
                self.node.count("chunks_refused_damaged")
                if held is not None:
                    self.node.integrity.report(e)
                await context.abort(grpc.StatusCode.DATA_LOSS, f"{e}; not served")
            except OSError as e:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"cannot read {item}: {e.strerror}")
            for idx, off, part in frames(index, data):
                await egress.acquire(len(part), cls)
                yield idx, off, part
            self.node.count("bytes_served", len(data))
            self.node.telemetry.chunks(caller, OUT, len(data))

    async def WatchChunks(self, request, context: _Context):
        """The chunks of a version this host pulls, now and as it verifies them; `complete`
        once it holds the version whole."""
        await self._identity(context)
        await self._digest(context, request.digest)
        if self._held(request.digest) is not None:
            yield codec.ChunkMap(complete=True)
            return
        pulling = self.node.transfers.pulling.get(request.digest)
        if pulling is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"not pulling {request.digest[:40]!r}")
        updates = pulling.subscribe()
        try:
            yield codec.ChunkMap(indices=sorted(pulling.partial.have))
            while True:
                batch = [await updates.get()]
                while not updates.empty() and batch[-1] is not None:  # whatever else arrived meanwhile
                    batch.append(updates.get_nowait())
                verified = [i for e in batch if e is not None and e[0] for i in [e[1]]]
                asked = [i for e in batch if e is not None and not e[0] for i in [e[1]]]
                if verified or asked:
                    yield codec.ChunkMap(indices=verified, fetching=asked)
                if batch[-1] is None:  # the pull ended
                    if pulling.complete:
                        yield codec.ChunkMap(complete=True)
                    return
        finally:
            pulling.unsubscribe(updates)


class LocalService(_Refusing, mesh_pb2_grpc.LocalServicer):
    SERVICE = "Local"
    COUNTERS = {INVALID: "rejected_requests", TOO_LARGE: "oversized_requests"}

    def __init__(self, node: Daemon) -> None:
        self.node = node

    async def Put(self, request, context):
        try:
            path, item, attrs = check_put(request)
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        try:
            files = self.node.transfers.files
            hashed = await asyncio.to_thread(files.import_file, path, item, link=bool(request.link))
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        except OSError as e:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{path}: {e.strerror}")
        await self.node.submit(
            FilePublished(item=item, digest=hashed.digest, size=hashed.size, chunk_size=hashed.chunk_size, attrs=attrs)
        )
        self.node.spawn(self.node.integrity.unshare(item, hashed.digest, hashed.chunk_size))  # if it was linked
        v = catalog.newest_versions(self.node.peer.manifest).get(item)
        return codec.PutReply(
            type=item.type,
            name=item.name,
            digest=hashed.digest,
            size=hashed.size,
            chunk_size=hashed.chunk_size,
            hlc=v.hlc if v else 0,
        )

    async def PublishGames(self, request, context):
        try:
            key = check_config_key(request.config_key)
            if not request.games:
                raise LocalProtocolError("no games")
            if len(request.games) > codec.MAX_GAMES or any(len(game) > codec.MAX_GAME_BYTES for game in request.games):
                raise TooLarge(f"1..{codec.MAX_GAMES} games of at most {codec.MAX_GAME_BYTES} bytes each")
            schemas = {}
            for fingerprint, raw in request.schemas.items():
                try:
                    schemas[fingerprint] = gameschema.Schema.decode(raw, fingerprint)
                except gameschema.SchemaError as e:
                    raise LocalProtocolError(f"schema {fingerprint[:32]!r}: {e}") from None
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        try:
            seqs = await self.node.games.publish(key, list(request.games), schemas)
        except OSError as e:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot store the games: {e.strerror}")
        return codec.PublishGamesReply(seqs=seqs)

    async def WaitDurable(self, request, context):
        try:
            check_config_key(request.config_key)
            if not math.isfinite(request.timeout_s):
                raise LocalProtocolError(f"timeout_s must be a number of seconds, not {request.timeout_s}")
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        ok = await self.node.games.wait_durable(
            request.config_key, request.seq, min(max(request.timeout_s, 0.0), MAX_WAIT_S)
        )
        return codec.WaitDurableReply(durable=ok, durable_through=self.node.games.durable.get(request.config_key, 0))

    async def Get(self, request, context):
        try:
            args = check_args(request.args)
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        readers = {
            "status": self.node.status,
            "ls": self.node.listing,
            "recommendations": lambda: reports.recommendations(self.node.view),
            "cluster": lambda: reports.cluster_data(self.node.view),
            "replication_targets": lambda: reports.targets_for(self.node.view, args),
            "scrub": self.node.scrubber.status,
        }
        if request.what == "games_held":
            return codec.Document(
                json=json.dumps(await self.node.games.held_games(args.get("config_key") or None), sort_keys=True)
            )
        if request.what not in readers:
            await self.refuse(context, INVALID, f"unknown query {request.what[:60]!r}")
        try:
            doc = readers[request.what]()
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        return codec.Document(json=json.dumps(doc, sort_keys=True))

    def _get(self, name: str) -> dict:
        """`ringmesh get`: the newest version of an item, pulled here if it is not."""
        kind, _, rest = name.partition("/")
        item = catalog.check_item(ItemKey(kind, rest))
        peer = self.node.peer
        v = catalog.newest_versions(peer.manifest).get(item)
        if v is None:
            raise LocalProtocolError(f"no item {item} in the manifest (ringmesh ls lists them)")
        doc = {
            "item": str(item),
            "digest": v.digest,
            "size_bytes": v.size,
            "path": str(self.node.transfers.files.path_of(item)),
            "held": catalog.holdings(peer.manifest, peer.me).get(item) == v.digest,
        }
        if not doc["held"]:
            if why := peer.why_not_here(v):
                raise LocalProtocolError(f"{item} cannot be held here: {why}")
            self.node.submit_nowait(FetchRequested(item=item))
        return doc

    async def Control(self, request, context):
        try:
            args = check_args(request.args)
            if request.what == "sync":
                await self.node.submit(SyncRequested())
            elif request.what == "games_retry":
                key = args.get("config_key") or None
                if key:
                    check_config_key(key)
                got = await self.node.games.retry(key)
                return codec.Document(json=json.dumps(got, sort_keys=True))
            elif request.what == "get":
                return codec.Document(json=json.dumps(self._get(args.get("item", "")), sort_keys=True))
            elif request.what == "scrub":
                items = [i for i in args.get("items", "").split("\n") if i]
                doc = await self.node.scrubber.request(items or None)
                return codec.Document(json=json.dumps(doc, sort_keys=True))
            elif request.what == "priority":
                key = args.get("config_key", "")
                if not key:
                    raise LocalProtocolError("priority needs a config_key")
                check_config_key(key)
                prio = Priority.parse(args.get("priority", "high"))
                await self.node.submit(PrioritySet(config_key=key, priority=prio.label))
            else:
                raise LocalProtocolError(f"unknown order {request.what[:60]!r}")
        except LocalProtocolError as e:
            await self.refuse_error(context, e)
        return codec.Document(json=json.dumps(reports.recommendations(self.node.view), sort_keys=True))
