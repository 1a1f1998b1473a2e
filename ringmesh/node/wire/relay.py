"""Hosts nobody can dial (`nat_blocked`): the links they dial out, and calls relayed over them.

A NAT'd host N can open connections, and nothing can connect to it. So N dials `Link` on up to
three reachable persistent peers (`core/reach.py` chooses them, spread over providers) and keeps
those streams open; it tells its core which links are up (`LinksChanged`), and the core publishes
them in N's node record. Any peer can be a relay: it is the same `ringmesh serve`, on the same port.

A call for N (a gossip message, a probe, a vote, a game push's ack, a recipe, chunks) then goes
caller -> `Relay` on one of N's relays -> down N's link -> N's own `PeerService` handler, in the
process, with the caller's verified name. N sends the responses back to the relay on an `Answer`
stream of that call's own, one `RelayedReply` per response message, then one that ends the call
with its status; the relay hands them to the caller. One stream per call keeps HTTP/2's flow
control per call: a caller that reads slowly (its ingress limit, a slow disk) slows only its own
call, never the link, its pings or the probes of N that share it. A relay that holds N's link
itself skips the first hop. Everything N sends goes out directly (it can dial), and
N reaching another NAT'd host M goes through one of M's relays. The caller tries N's relays in the
order N published them, skipping those it believes dead, and moves on to the next when a relay
cannot be reached or holds no link from N (a call that already got an answer is never retried).

Liveness of a link: the relay sends a ping down every link every `LINK_PING` seconds and N answers
it; either side drops a link that has been silent for `LINK_DEAD` seconds (a relay that vanished
without closing its connection, a cut path), and N dials another relay at once. A relay killed
outright closes its connections, so N notices at the next read.

End to end identity (mTLS): the relay only vouches for itself. With TLS every relayed call is
signed by its caller (ECDSA P-256 with its TLS key, its certificate sent along; `tls.CallSigner`),
over the caller, the target, the method, the request bytes, the metadata, the time and a nonce
(`signed_bytes`). N checks the certificate against the cluster CA, the signature, that the call is
for N, not older or newer than `MAX_SKEW_S` by N's clock, and that the nonce is new (node/wire/uplinks.py): a relay can
neither forge a call, nor alter one, nor send a call meant for another host, nor replay one.
Responses are not signed: what a caller acts on in them is checked by content (a recipe against
the published version digest, chunks against their xxh3-128 digests), and a `Delivered` carries
nothing. Plaintext clusters have no identities to prove: the caller's name is taken as given, as it
is on direct calls.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

import grpc
import msgpack

from ringmesh.core import catalog
from ringmesh.core.errors import RemoteProtocolError
from ringmesh.core.membership import ALIVE
from ringmesh.node.wire import codec
from ringmesh.node.wire.tls import CallSigner, peer_identity
from ringmesh.v1 import mesh_pb2_grpc

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon
    from ringmesh.node.wire.service import _Context

log = logging.getLogger("ringmesh.node.wire.relay")

LINK_PING = 2.0  # seconds between a relay's pings down an idle link
LINK_DEAD = 3 * LINK_PING  # a link silent this long is dropped by either side
MAX_LINKS = 1024  # hosts linked to one relay
MAX_CALLS_PER_LINK = 256  # calls in flight down one link; more are refused RESOURCE_EXHAUSTED
REPLY_BUFFER = 8  # responses of one call buffered on a relay (chunks: 8 x 4 MiB at most)
UNAVAILABLE, PERMISSION_DENIED = grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.PERMISSION_DENIED
_CODES = {c.value[0]: c for c in grpc.StatusCode}


def relayed_methods() -> dict[str, tuple[Any, Any, bool]]:
    """The Peer methods a relay carries: name -> (request class, reply class, server streaming).
    Not `Link` or `Relay` themselves: a relayed call is never relayed again."""
    _, methods = codec.service_methods("Peer")
    return {name: (req, rep, streams) for name, req, rep, client, streams in methods if not client and name != "Relay"}


def signed_bytes(call) -> bytes:
    """What a caller signs of a relayed call (everything but the relay's `id` and the signature)."""
    return msgpack.packb(
        [
            call.caller,
            call.target,
            call.method,
            call.request,
            sorted(call.metadata.items()),
            round(call.timeout_s * 1000),
            call.issued_ms,
            call.nonce,
        ],
        use_bin_type=True,
    )


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """The error a relayed call raises: the same type and codes as a direct call's."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def end(call_id: int, code: grpc.StatusCode = grpc.StatusCode.OK, details: str = ""):
    return codec.RelayedReply(id=call_id, end=True, code=code.value[0], details=details[:500])


# -- the relay's side: links held, calls carried -------------------------------------------------


@dataclass(eq=False)
class LinkSession:
    """The link a NAT'd host keeps to this host: calls go down `out`, replies come back by id."""

    node: str
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    pending: dict[int, asyncio.Queue] = field(default_factory=dict)
    opened: float = field(default_factory=time.time)
    heard: float = field(default_factory=time.monotonic)
    calls: int = 0
    bytes: int = 0
    closed: bool = False
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def open_call(self, call) -> tuple[int, asyncio.Queue]:
        if self.closed:
            raise rpc_error(UNAVAILABLE, f"the link from {self.node} closed")
        if len(self.pending) >= MAX_CALLS_PER_LINK:
            raise rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{MAX_CALLS_PER_LINK} calls to {self.node} in flight")
        call_id = next(self._ids)
        queue: asyncio.Queue = asyncio.Queue(REPLY_BUFFER)
        self.pending[call_id] = queue
        down = codec.RelayedCall()
        down.CopyFrom(call)
        down.id = call_id
        self.out.put_nowait(down)
        self.calls += 1
        return call_id, queue

    def forget(self, call_id: int, cancel: bool) -> None:
        queue = self.pending.pop(call_id, None)
        if queue is None:
            return
        while not queue.empty():  # an Answer stream blocked on a full queue sees the call is gone
            queue.get_nowait()
        if cancel and not self.closed:
            self.out.put_nowait(codec.RelayedCall(id=call_id, cancel=True))

    async def replies(self, call, timeout: float | None) -> AsyncIterator[Any]:
        """Carry `call` down this link; its replies, up to and including the one that ends it."""
        call_id, queue = self.open_call(call)
        ended = False
        try:
            async with asyncio.timeout(timeout):
                while True:
                    reply = await queue.get()
                    if reply is None:
                        raise rpc_error(UNAVAILABLE, f"the link from {self.node} closed during the call")
                    self.bytes += len(reply.response)
                    ended = reply.end
                    yield reply
                    if ended:
                        return
        except TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer from {self.node} over its link") from None
        finally:
            self.forget(call_id, cancel=not ended)

    async def deliver(self, reply) -> bool:
        """Hand one response to the caller waiting for it; False once that caller is gone."""
        queue = self.pending.get(reply.id)
        if queue is None:
            return False
        await queue.put(reply)  # a slow caller slows its own Answer stream only
        if reply.end:
            self.pending.pop(reply.id, None)
        return reply.id in self.pending

    def close(self) -> None:
        self.closed = True
        for queue in self.pending.values():
            try:
                queue.put_nowait(None)
            except asyncio.QueueFull:  # the caller is behind: it finds the link closed at its next read
                queue.get_nowait()
                queue.put_nowait(None)
        self.pending.clear()


class RelayHub:
    """Every peer's relay side: the links NAT'd hosts keep to it, and `Relay` calls carried over them."""

    def __init__(self, node: Daemon) -> None:
        self.node = node
        self.sessions: dict[str, LinkSession] = {}

    async def serve_link(self, frames, context: _Context) -> AsyncIterator[Any]:
        """`Link`: the first frame names the host (with TLS it must be the certificate's host);
        then calls go down as they come and pings keep the link known alive."""
        try:
            first = await _next_frame(frames)
        except RemoteProtocolError as e:
            self.node.count("rejected_messages")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)[:500])
        who = first.node if first is not None else ""
        if self.node.tls is not None:
            certified = peer_identity(context.auth_context())
            if certified is None or certified != who:
                self.node.count("rejected_identity")
                await context.abort(PERMISSION_DENIED, f"a link from {certified!r} naming itself {who[:128]!r}")
        if not catalog.is_node_id(who):
            self.node.count("rejected_messages")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"a link must name its host first, not {who[:60]!r}")
        if who not in self.sessions and len(self.sessions) >= MAX_LINKS:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{MAX_LINKS} hosts are linked here already")
        session = LinkSession(who)
        old = self.sessions.get(who)
        if old is not None:
            old.close()
        self.sessions[who] = session
        self.node.count("links_accepted")
        log.info("%s linked to this host (it cannot be dialled; calls for it go over this link)", who)
        reader = asyncio.create_task(self._read(session, frames))
        getter: asyncio.Future | None = None
        try:
            yield codec.RelayedCall(id=0)  # a ping at once: the link is up for both sides
            while True:
                getter = getter or asyncio.ensure_future(session.out.get())
                done, _ = await asyncio.wait({getter, reader}, timeout=LINK_PING, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    call, getter = getter.result(), None
                elif reader in done:  # the host closed its side
                    return
                elif time.monotonic() - session.heard > LINK_DEAD:
                    log.warning("the link from %s went silent for %.0f s: dropped", who, LINK_DEAD)
                    return
                else:
                    call = codec.RelayedCall(id=0)
                yield call
        finally:
            if getter is not None:
                getter.cancel()
            reader.cancel()
            session.close()
            if self.sessions.get(who) is session:
                del self.sessions[who]

    async def _read(self, session: LinkSession, frames) -> None:
        """What comes up a link: answers to the relay's pings (responses come on Answer streams)."""
        try:
            while await _next_frame(frames) is not None:
                session.heard = time.monotonic()
        except (grpc.aio.AioRpcError, RemoteProtocolError, asyncio.CancelledError):
            return

    async def answer(self, frames, context: _Context) -> Any:
        """`Answer`: a linked host's responses to one call, handed to the caller as they come."""
        try:
            frame = await _next_frame(frames)
        except RemoteProtocolError as e:
            self.node.count("rejected_messages")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)[:500])
        if frame is None:
            return codec.Delivered()
        who = frame.node
        if self.node.tls is not None and peer_identity(context.auth_context()) != who:
            self.node.count("rejected_identity")
            await context.abort(PERMISSION_DENIED, f"answers for {who[:128]!r} from another host")
        session = self.sessions.get(who)
        if session is None:
            await context.abort(UNAVAILABLE, f"no link from {who[:128]!r} here")
        call_id = frame.id
        try:
            while await session.deliver(frame):
                frame = await _next_frame(frames)
                if frame is None:
                    await session.deliver(end(call_id, UNAVAILABLE, f"{who} stopped answering"))
                    break
                if frame.id != call_id:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "one call's answers per stream")
        except RemoteProtocolError as e:
            await session.deliver(end(call_id, UNAVAILABLE, f"{who} answered malformed: {e}"))
            self.node.count("rejected_messages")
        return codec.Delivered()

    async def relay(self, call, context: _Context) -> AsyncIterator[Any]:
        """`Relay`: carry `call` to its target over the target's link to this host."""
        if self.node.tls is not None:
            certified = peer_identity(context.auth_context())
            if certified != call.caller:
                self.node.count("rejected_identity")
                await context.abort(PERMISSION_DENIED, f"{certified!r} relaying a call as {call.caller[:128]!r}")
        session = self.sessions.get(call.target)
        if session is None:
            self.node.count("relay_no_link")
            await context.abort(UNAVAILABLE, f"no link from {call.target[:128]!r} here")
        self.node.count("relayed_calls")
        try:
            async for reply in session.replies(call, call.timeout_s or None):
                self.node.count("relayed_bytes", len(reply.response))
                yield reply
        except grpc.aio.AioRpcError as e:
            await context.abort(e.code(), e.details() or "")

    def linked(self) -> list[str]:
        return sorted(self.sessions)

    def status(self) -> dict[str, Any]:
        return {
            n: {"since": round(s.opened, 3), "calls": s.calls, "bytes": s.bytes, "in_flight": len(s.pending)}
            for n, s in sorted(self.sessions.items())
        }


async def _next_frame(frames) -> Any:
    """The next frame a NAT'd host sent up its link (None at its end); a malformed one ends the link."""
    try:
        frame = await frames.__anext__()
    except StopAsyncIteration:
        return None
    if isinstance(frame, codec.Malformed):
        raise RemoteProtocolError(frame.error)
    return frame


# -- the caller's side ---------------------------------------------------------------------------


class RelayedStub:
    """What `Links.stub` gives for a host nobody can dial: the methods of a `PeerStub`, each call
    carried by one of the host's relays (or by its link to us)."""

    def __init__(self, router: RelayRouter, target: str) -> None:
        self.router, self.target = router, target

    async def Deliver(self, request, timeout: float | None = None, metadata=None):
        """A protocol message goes through two relays at once (the first answer wins): a relay
        whose link went silent, and that nobody knows to be bad yet, must not make a probe of the
        host fail. Protocol messages are small, and the core takes duplicates in its stride; each
        copy is signed on its own (a copy is no replay)."""
        routes = self.router.routes(self.target)
        if len(routes) < 2:
            return await self._unary("Deliver", request, timeout, metadata)
        tasks = [
            asyncio.ensure_future(self._unary("Deliver", request, timeout, metadata, routes=[route]))
            for route in routes[:2]
        ]
        try:
            for first in asyncio.as_completed(tasks):
                try:
                    return await first
                except (grpc.aio.AioRpcError, RemoteProtocolError) as e:
                    error = e
            raise error
        finally:
            for task in tasks:
                task.cancel()

    async def GetRecipe(self, request, timeout: float | None = None, metadata=None):
        return await self._unary("GetRecipe", request, timeout, metadata)

    def FetchChunks(self, request, timeout: float | None = None, metadata=None):
        return self._responses("FetchChunks", request, timeout, metadata)

    def FetchFrames(self, request, timeout: float | None = None, metadata=None):
        return self._responses("FetchFrames", request, timeout, metadata)

    def WatchChunks(self, request, timeout: float | None = None, metadata=None):
        return self._responses("WatchChunks", request, timeout, metadata)

    async def _unary(self, method: str, request, timeout, metadata, routes: list[str] | None = None):
        got = [r async for r in self._responses(method, request, timeout, metadata, routes)]
        if len(got) != 1:
            raise RemoteProtocolError(f"{self.target}: {len(got)} responses to a relayed {method}")
        return got[0]

    async def _responses(
        self, method: str, request, timeout, metadata, routes: list[str] | None = None
    ) -> AsyncIterator[Any]:
        parse = codec.reply_parser(self.router.methods[method][1])
        call = self.router.call(self.target, method, request, timeout, metadata)
        tried: list[str] = []
        for via in self.router.routes(self.target) if routes is None else routes:
            answered = False
            try:
                async for reply in self.router.carry(via, call, timeout):
                    if reply.end:
                        if reply.code:
                            answered = True
                            raise rpc_error(_CODES.get(reply.code, grpc.StatusCode.UNKNOWN), reply.details)
                        return
                    answered = True
                    try:
                        message = parse(reply.response)
                    except Exception as e:  # protobuf's DecodeError and its kin
                        raise RemoteProtocolError(f"{self.target}: undecodable relayed {method}: {e}") from None
                    yield message
                raise rpc_error(UNAVAILABLE, f"the relay {via} ended the call without its status")
            except grpc.aio.AioRpcError as e:
                if answered or e.code() != UNAVAILABLE:
                    raise
                tried.append(f"{via}: {e.details()}")
                self.router.node.count("relay_retries")
        raise rpc_error(UNAVAILABLE, f"{self.target} cannot be dialled and no relay reached it ({'; '.join(tried)})")


class RelayRouter:
    """How this host reaches hosts nobody can dial: through their relays (the relays their node
    records name), or over their link to us. Builds and signs the relayed calls."""

    def __init__(self, node: Daemon, direct: Callable[[str], mesh_pb2_grpc.PeerStub | None]) -> None:
        self.node = node
        self.direct = direct  # the stub of a host we dial ourselves
        self.methods = relayed_methods()
        self.signer = CallSigner(node.tls) if node.tls is not None else None

    def is_nat(self, host: str) -> bool:
        """Whether nobody can dial `host`: the file says so, its node record names relays, or it
        keeps a link to us (a host that found out on its own, before its record reached us)."""
        return (
            host in self.node.peer.config.nat
            or host in self.node.relay_hub.sessions
            or bool(catalog.relays_of(self.node.peer.manifest, host))
        )

    def stub(self, host: str) -> RelayedStub | None:
        """None when no route is known yet (its node record has not arrived): as 'address unknown'."""
        if host in self.node.relay_hub.sessions or catalog.relays_of(self.node.peer.manifest, host):
            return RelayedStub(self, host)
        return None

    def routes(self, host: str) -> list[str]:
        """ "link" (it is linked to us) or the relays to try, in its order, the ones we think dead last."""
        out = ["link"] if host in self.node.relay_hub.sessions else []
        relays = [r for r in catalog.relays_of(self.node.peer.manifest, host) if r not in (self.node.peer.me, host)]
        view = self.node.peer.membership.view
        return out + sorted(relays, key=lambda r: view(r) != ALIVE)

    def call(self, target: str, method: str, request, timeout: float | None, metadata) -> Any:
        me = self.node.peer.me
        call = codec.RelayedCall(
            caller=me,
            target=target,
            method=method,
            request=request.SerializeToString(),
            metadata=dict(metadata or ()),
            timeout_s=round(timeout or 0.0, 3),
            issued_ms=int(time.time() * 1000),
            nonce=os.urandom(12),
        )
        if self.signer is not None:
            call.certificate = self.signer.certificate
            call.signature = self.signer.sign(signed_bytes(call))
        return call

    async def carry(self, via: str, call, timeout: float | None) -> AsyncIterator[Any]:
        self.node.count("calls_via_relays")
        if via == "link":
            session = self.node.relay_hub.sessions.get(call.target)
            if session is None:
                raise rpc_error(UNAVAILABLE, f"the link from {call.target} closed")
            async for reply in session.replies(call, timeout):
                yield reply
            return
        stub = self.direct(via)
        if stub is None:
            raise rpc_error(UNAVAILABLE, "address unknown")
        rpc = stub.Relay(call, timeout=timeout)
        try:
            async for reply in rpc:
                yield reply
        finally:
            rpc.cancel()
