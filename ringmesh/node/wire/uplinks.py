"""The side of a host nobody can dial (`nat_blocked`): its dial-out links, and the calls that come
down them to its own `PeerService` (how calls reach it and why: `relay.py`).

A NAT'd host keeps links to the relays `core/reach.py` chooses among the hosts it does not believe
dead (any of them while no link is up: with none it hears nothing), replaces a lost one at once and
keeps the others. Each call that comes down a link is checked (with TLS: the caller's signature,
the target, the time window, the nonce) and run by the host's own handler; its responses go back on
an `Answer` stream of its own. A host the file does not mark finds out by `Reachability`'s rule.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import grpc

from ringmesh.core import catalog, reach
from ringmesh.core.membership import ALIVE, SUSPECT
from ringmesh.core.messages import LinksChanged
from ringmesh.node.wire import codec
from ringmesh.node.wire.relay import (
    LINK_DEAD,
    PERMISSION_DENIED,
    REPLY_BUFFER,
    UNAVAILABLE,
    end,
    relayed_methods,
    rpc_error,
    signed_bytes,
)
from ringmesh.node.wire.tls import CallVerifier, TlsError

if TYPE_CHECKING:
    from ringmesh.node.runtime import Daemon
    from ringmesh.node.wire.service import PeerService

log = logging.getLogger("ringmesh.node.wire.uplinks")

REDIAL_BACKOFF = (1.0, 30.0)  # a relay that could not be linked waits 1, 2, 4 ... 30 s before the next try
KEEP_SECONDS = 1.0  # how often the NAT'd host reconsiders its relays
MAX_SKEW_S = 120.0  # a signed call issued further than this from our clock is refused


def _forget(serving: dict[int, asyncio.Task], call_id: int, _task: asyncio.Task) -> None:
    serving.pop(call_id, None)


# -- the NAT'd host's side: its links, and the calls that come down them ---------------------------


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code, self.details = code, details


class RelayedContext:
    """What a `PeerService` handler sees of a call that came down a link: the caller's verified
    name (`relayed_caller`), the call's metadata, and an `abort` that ends the relayed call."""

    def __init__(self, caller: str, relay: str, metadata: dict[str, str]) -> None:
        self.relayed_caller, self.relay = caller, relay
        self._metadata = tuple(metadata.items())

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Aborted(code, details)

    def invocation_metadata(self) -> Any:
        return self._metadata

    def auth_context(self) -> Any:
        return {}

    def peer(self) -> str:
        return f"{self.relayed_caller} via {self.relay}"


class Reachability:
    """How a host the file does not mark `nat_blocked` finds out that nobody can dial it.

    The rule: no peer's call has reached it directly for `after` seconds (since it started, or
    since the last one), while at least two peers answered its own calls in that window. Its
    calls going out prove the network is up; in a cluster of several hosts that gossip and probe
    every second, some peer calls every host many times a window, so silence means the calls are
    dropped on the way in (NAT, a firewall). It then keeps links like a NAT'd host and publishes
    them (its peers call it through them from then on) and never stands for leader. It stays so
    until it restarts: once its peers call it through relays, nothing more tells it it could be
    dialled again. Set `nat_blocked: true` in the file to skip the wait."""

    def __init__(self, after: float) -> None:
        self.after = after
        self.heard = time.monotonic()  # the last direct call from a peer (start: none yet)
        self.answers: dict[str, float] = {}  # peer -> when it last answered one of our calls

    def heard_directly(self) -> None:
        self.heard = time.monotonic()

    def answered(self, peer: str) -> None:
        self.answers[peer] = time.monotonic()

    def unreachable(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if now - self.heard < self.after:
            return False
        return sum(1 for at in self.answers.values() if now - at < self.after) >= 2


class Uplinks:
    """A NAT'd host's links: kept to the relays `reach.choose_relays` picks among the hosts it
    believes alive, reachable and persistent; a relay lost is replaced at once, the others kept."""

    def __init__(self, node: Daemon, service: PeerService, direct: Callable[[str], Any]) -> None:
        self.node, self.service, self.direct = node, service, direct
        self.methods = relayed_methods()
        self.verifier = CallVerifier(node.tls.ca_pem) if node.tls is not None else None
        self.tasks: dict[str, asyncio.Task] = {}
        self.up: dict[str, float] = {}  # relay -> since (wall clock)
        self.failed: dict[str, tuple[float, str, int]] = {}  # relay -> (monotonic time, why, failures in a row)
        self.nonces: dict[bytes, float] = {}  # of signed calls seen, until they are too old to replay
        self._wake = asyncio.Event()
        self._published: tuple[str, ...] | None = None

    def candidates(self) -> dict[str, str]:
        """Hosts of the file that can be dialled and stay, not failing now, and not believed dead.
        Our view counts only while a link is up: without one nothing reaches us, and we would think
        everyone dead (the simulator's nat sweep found a host that never linked again that way)."""
        me, cfg = self.node.peer.me, self.node.peer.config
        now = time.monotonic()
        view = self.node.peer.membership.view
        return {
            name: host.provider
            for name, host in self.node.config.members().items()
            if name != me
            and not host.nat_blocked
            and name not in cfg.nat
            and not host.ephemeral
            and not catalog.relays_of(self.node.peer.manifest, name)
            and (not self.up or view(name) in (ALIVE, SUSPECT))
            and not self._backing_off(name, now)
        }

    def possible(self) -> int:
        """Hosts of the file that could relay for us at all (reachable and persistent)."""
        me, cfg = self.node.peer.me, self.node.peer.config
        return sum(
            1
            for name, host in self.node.config.members().items()
            if name != me and not host.nat_blocked and name not in cfg.nat and not host.ephemeral
        )

    def _backing_off(self, relay: str, now: float) -> bool:
        failed = self.failed.get(relay)
        if failed is None:
            return False
        base, cap = REDIAL_BACKOFF
        return now - failed[0] < min(cap, base * 2 ** (failed[2] - 1))

    async def run(self) -> None:
        while True:
            chosen = reach.choose_relays(self.node.peer.me, self.candidates(), keep=[*self.up, *self.tasks])
            for relay in chosen:
                if relay not in self.tasks:
                    self.tasks[relay] = asyncio.create_task(self._link(relay))
            for relay in [r for r in self.tasks if r not in chosen and r not in self.up]:
                self.tasks.pop(relay).cancel()  # still dialling one that is no longer chosen
            self._publish()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), KEEP_SECONDS)
            except TimeoutError:
                pass

    def _publish(self) -> None:
        relays = tuple(sorted(self.up, key=lambda r: self.up[r]))
        if relays != self._published:
            self._published = relays
            log.info("links up to %s", ", ".join(relays) or "no relay")
            self.node.submit_nowait(LinksChanged(relays=relays))

    async def _link(self, relay: str) -> None:
        out: asyncio.Queue = asyncio.Queue(REPLY_BUFFER)
        serving: dict[int, asyncio.Task] = {}
        why = "closed"
        try:
            stub = self.direct(relay)
            if stub is None:
                raise rpc_error(UNAVAILABLE, "address unknown")

            # written by a task of ours, not from an async generator: gRPC aio closing a request
            # generator of a failed call can race it (grpc/grpc#29518)
            rpc = stub.Link()
            await rpc.write(codec.LinkFrame(node=self.node.peer.me))

            async def write() -> None:
                try:
                    while True:
                        await rpc.write(await out.get())
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                    rpc.cancel()  # the read below ends too

            writer = asyncio.create_task(write())
            try:
                while True:
                    call = await asyncio.wait_for(rpc.read(), LINK_DEAD)
                    if call is grpc.aio.EOF:
                        break
                    if relay not in self.up:
                        self.up[relay] = time.time()
                        self.failed.pop(relay, None)
                        self._publish()
                    if call.cancel:
                        task = serving.pop(call.id, None)
                        if task is not None:
                            task.cancel()
                    elif not call.method:  # a ping
                        await out.put(codec.LinkFrame(reply=end(0)))
                    else:
                        task = asyncio.create_task(self._serve(call, relay, stub))
                        serving[call.id] = task
                        task.add_done_callback(partial(_forget, serving, call.id))
            finally:
                writer.cancel()
                rpc.cancel()
        except TimeoutError:
            why = f"silent for {LINK_DEAD:.0f} s"
        except (asyncio.InvalidStateError, grpc.aio.UsageError) as e:
            why = f"{type(e).__name__} {e}"
        except grpc.aio.AioRpcError as e:
            why = f"{e.code().name} {e.details()}"
        finally:
            for task in serving.values():
                task.cancel()
            was_up = self.up.pop(relay, None) is not None
            if self.tasks.get(relay) is asyncio.current_task():
                del self.tasks[relay]
            streak = 1 if was_up else self.failed.get(relay, (0.0, "", 0))[2] + 1
            self.failed[relay] = (time.monotonic(), why, streak)
            if was_up:
                log.warning("link to %s lost (%s): linking to another relay", relay, why)
                self.node.count("links_lost")
            else:
                log.info("cannot link to %s (%s)", relay, why)
            self._publish()
            self._wake.set()

    def _verify(self, call) -> str:
        """The caller of a relayed call, proven (TLS) or as given (plaintext); TlsError otherwise."""
        me = self.node.peer.me
        if call.target != me:
            raise TlsError(f"a call for {call.target[:128]!r} arrived at {me}")
        if self.verifier is None:
            return call.caller
        now = time.time()
        if abs(call.issued_ms / 1000 - now) > MAX_SKEW_S:
            raise TlsError(f"a call issued {call.issued_ms / 1000 - now:+.0f} s from our clock (replayed? clock skew?)")
        if len(call.nonce) < 8 or call.nonce in self.nonces:
            raise TlsError("a call seen before (replayed)")
        who = self.verifier.caller(call.certificate, call.signature, signed_bytes(call))
        if who != call.caller:
            raise TlsError(f"a call signed by {who} naming {call.caller[:128]!r} as its caller")
        if len(self.nonces) > 100_000 or (self.nonces and next(iter(self.nonces.values())) < now):
            self.nonces = {n: t for n, t in self.nonces.items() if t >= now}
        self.nonces[call.nonce] = now + 2 * MAX_SKEW_S
        return who

    async def _serve(self, call, relay: str, stub) -> None:
        """One call that came down the link to `relay`: run by our own PeerService handler, its
        responses sent back on an `Answer` stream of its own."""
        answer = stub.Answer()
        first = True

        async def put(reply) -> None:
            nonlocal first
            if first:
                reply.node, first = self.node.peer.me, False
            await answer.write(reply)

        try:
            try:
                caller = self._verify(call)
            except TlsError as e:
                self.node.count("rejected_identity")
                log.warning("refused a call relayed by %s: %s", relay, e)
                await put(end(call.id, PERMISSION_DENIED, str(e)))
                return
            if call.method not in self.methods:
                raise _Aborted(grpc.StatusCode.UNIMPLEMENTED, f"{call.method[:60]!r} is not relayed")
            request_type, _reply, streaming = self.methods[call.method]
            request = codec.request_parser(request_type)(call.request)
            context = RelayedContext(caller, relay, dict(call.metadata))
            if isinstance(request, codec.Malformed):
                await self.service.refuse(context, grpc.StatusCode.INVALID_ARGUMENT, request.error)
            self.node.count("calls_via_links")
            handler = getattr(self.service, call.method)
            async with asyncio.timeout(min(call.timeout_s, 3600.0) if call.timeout_s > 0 else None):
                if streaming:
                    async for response in handler(request, context):
                        await self._reply(put, call.id, response)
                else:
                    await self._reply(put, call.id, await handler(request, context))
            await put(end(call.id))
        except _Aborted as e:
            await self._final(put, end(call.id, e.code, e.details))
        except TimeoutError:
            await self._final(put, end(call.id, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            return  # the relay or the caller is gone: nobody to answer
        except asyncio.CancelledError:
            answer.cancel()
            raise
        except Exception as e:  # a bug of ours: the caller gets INTERNAL, this host goes on
            log.exception("relayed %s from %s failed", call.method, call.caller)
            await self._final(put, end(call.id, grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"))
        finally:
            if not answer.done():
                try:
                    await answer.done_writing()
                    await asyncio.wait_for(answer, LINK_DEAD)
                except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError, TimeoutError):
                    answer.cancel()

    @staticmethod
    async def _final(put, reply) -> None:
        try:
            await put(reply)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass

    async def _reply(self, put, call_id: int, response) -> None:
        data = codec.reply_bytes(response)
        self.node.count("bytes_via_links", len(data))
        await put(codec.RelayedReply(id=call_id, response=data))

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        return {
            "up": sorted(self.up, key=lambda r: self.up[r]),
            "since": {r: round(t, 3) for r, t in self.up.items()},
            "wanted": min(reach.RELAYS, self.possible()),
            "dialling": sorted(r for r in self.tasks if r not in self.up),
            "failed": {
                r: {"ago_s": round(now - t, 1), "why": why, "in_a_row": streak}
                for r, (t, why, streak) in sorted(self.failed.items())
            },
            "calls": self.node.counters.get("calls_via_links", 0),
            "bytes": self.node.counters.get("bytes_via_links", 0),
        }
