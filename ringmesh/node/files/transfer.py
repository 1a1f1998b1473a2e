"""Pulling one file version from several peers at once: recipe, chunks streamed from every
source in parallel (complete holders and peers in the middle of the same version), each
verified before it is written and announced at once to the peers watching this pull;
progress kept on disk so that a restart resumes; atomic install.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import grpc

from ringmesh.core import recipe
from ringmesh.core.bandwidth import Priority
from ringmesh.core.errors import RemoteProtocolError, RingmeshError
from ringmesh.core.messages import FileVersion
from ringmesh.core.swarm import PULL, Swarm
from ringmesh.node.files.store import BadChunk, FileStore, Partial, disk_full
from ringmesh.node.files.throttle import Throttle, priority_metadata
from ringmesh.node.wire import codec
from ringmesh.node.wire.links import Links
from ringmesh.ops.logs import about

log = logging.getLogger("ringmesh.node.files.transfer")
FRAME = 4 << 20  # gRPC messages are capped at 8 MiB (links.MAX_MESSAGE)
CALLER_METADATA = "ringmesh-caller"  # the host asking for chunks, as it says (TLS: its certificate says)


class TransferError(RingmeshError):
    """No source could deliver the version."""


class DiskFull(TransferError):
    """This host's disk filled while a version was written; the partial file is dropped."""


class Progress:
    """A pull under way as other peers see it: the chunks verified so far (`partial.have`),
    and the WatchChunks streams that want to hear of each new one at once."""

    def __init__(self, partial: Partial) -> None:
        self.partial = partial
        self.complete = False
        self._watchers: set[asyncio.Queue[tuple[bool, int] | None]] = set()

    def subscribe(self) -> asyncio.Queue[tuple[bool, int] | None]:
        """A queue of `(verified, index)`: True for a chunk verified, False for one asked for."""
        queue: asyncio.Queue[tuple[bool, int] | None] = asyncio.Queue()
        self._watchers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._watchers.discard(queue)

    def verified(self, index: int) -> None:
        for queue in self._watchers:
            queue.put_nowait((True, index))

    def fetching(self, index: int) -> None:
        for queue in self._watchers:
            queue.put_nowait((False, index))

    def close(self, complete: bool) -> None:
        """The pull ended: watchers hear `None` (then `complete` says how)."""
        self.complete = complete
        for queue in self._watchers:
            queue.put_nowait(None)


@dataclass(slots=True)
class Pulled:
    sources: list[str]  # who delivered chunks
    fetched_bytes: int  # chunk bytes received and verified in this pull
    resumed_bytes: int  # verified bytes a previous pull had left on disk


Sources = Callable[[], tuple[list[str], list[str]]]  # -> (complete holders, peers pulling it)


async def pull(
    v: FileVersion,
    sources: Sources,
    links: Links,
    files: FileStore,
    registry: dict[str, Progress],
    *,
    stored: Callable[[], Awaitable[None]],
    priority: Priority | Callable[[], Priority] = Priority.NORMAL,
    throttle: Throttle | None = None,
    per_peer: int = PULL.per_peer,
    stall: float = 60.0,
    me: str | None = None,
    received: Callable[[str, int], None] | None = None,
    distrust: Callable[[str], None] | None = None,
) -> Pulled:
    """Fetch `v` from every source at once, chunk by chunk (`core/swarm.py` decides which chunk
    to ask whom for), resuming from the chunks a previous pull verified.

    `sources()` is asked again every second: complete holders are asked for any chunk; peers in
    the middle of the same version are watched (WatchChunks) and asked only for the chunks they
    announced. Every chunk is verified against the recipe before it is written, and announced
    at once to whoever watches this pull (`registry[v.digest]`). A source whose chunk does not
    verify, or whose call fails, loses its requests and is left alone while the others finish.
    `priority` (a class, or a function asked for each chunk request, so that a pull can turn
    CRITICAL mid-way) goes to each source in the call metadata (its egress limit) and to
    `throttle`, this host's ingress limit. Once the file is whole, checked and renamed into place,
    `stored()` is awaited (it records the holding) before the pull stops serving as a partial.

    On failure the partial file stays for the next pull, unless the disk filled (`DiskFull`).

    `me` names this host to the sources (call metadata, for their per-peer byte counts);
    `received(peer, nbytes)` hears of every verified chunk and who sent it; `distrust(peer)` of
    a source whose chunk failed verification or who said its copy is bad (DATA_LOSS): `sources()`
    should leave it out from then on, and a source it leaves out is asked for nothing more.
    """
    errors: list[str] = []
    complete, pulling = sources()
    digests = await _own_recipe(v, files) or await _recipe(v, complete + pulling, links, errors)
    partial = await asyncio.to_thread(files.open_partial, v, digests)
    if partial.have:
        log.info(
            "resuming %s %s: %d of %d chunks verified on disk",
            v.item,
            v.digest[:12],
            len(partial.have),
            partial.n_chunks,
        )
    progress = registry[v.digest] = Progress(partial)
    swarm = Swarm(len(digests), random.Random(), per_peer=per_peer, endgame_after=PULL.endgame_after)
    swarm.have |= partial.have
    kick = asyncio.Event()  # set by watchers when a peer announces a chunk
    kicked = asyncio.ensure_future(kick.wait())
    watchers: dict[str, asyncio.Task] = {}
    tasks: dict[asyncio.Task, tuple[str, int, float]] = {}
    delivered: set[str] = set()
    fetched, refreshed, last_progress = 0, float("-inf"), time.monotonic()
    ok = False
    try:
        while not swarm.done:
            now = time.monotonic()
            if now - refreshed >= 1.0:
                refreshed = now
                complete, pulling = sources()
                offered = set(complete) | set(pulling)
                for src in [s for s in swarm.sources if s not in offered]:
                    del swarm.sources[src]  # no longer offered (distrusted, dead, retracted)
                    if (gone := watchers.pop(src, None)) is not None:
                        gone.cancel()
                for src in complete:
                    if swarm.sources.get(src, ()) is not None and links.stub(src) is not None:
                        swarm.source(src, None)
                for src in pulling:
                    watcher = watchers.get(src)
                    if (
                        src not in complete
                        and (watcher is None or watcher.done())
                        and (stub := links.stub(src)) is not None
                    ):
                        watchers[src] = asyncio.create_task(_watch(src, stub, v, swarm, kick, links))
            for peer, chunk in swarm.plan(now):
                stub = links.stub(peer)
                if stub is None:
                    swarm.failed(peer, now, chunk)
                    continue
                cls = priority() if callable(priority) else priority
                task = asyncio.create_task(_fetch(stub, v, chunk, partial, links, cls, throttle, me))
                tasks[task] = (peer, chunk, now)
                progress.fetching(chunk)
            if not tasks and not any(not watcher.done() for watcher in watchers.values()):
                raise TransferError("; ".join(errors[-8:]) or "no source left to ask")
            if now - last_progress > stall:
                raise TransferError(f"no chunk arrived in {stall:.0f} s; " + "; ".join(errors[-4:]))
            done, _ = await asyncio.wait([*tasks, kicked], timeout=PULL.tick, return_when=asyncio.FIRST_COMPLETED)
            if kicked.done():
                kick.clear()
                kicked = asyncio.ensure_future(kick.wait())
            for task in done:
                if task is kicked or task not in tasks:
                    continue
                peer, chunk, asked_at = tasks.pop(task)
                if task.cancelled():
                    continue
                err = task.exception()
                if err is None:
                    size = task.result()
                    delivered.add(peer)
                    if chunk in swarm.have:  # an endgame copy that lost the race by a hair
                        continue
                    fetched += size
                    if received is not None:
                        received(peer, size)
                    last_progress = time.monotonic()
                    progress.verified(chunk)
                    for loser in swarm.received(peer, chunk, size, time.monotonic() - asked_at):
                        for other, (source, pending_chunk, _) in list(tasks.items()):
                            if (source, pending_chunk) == (loser, chunk):
                                other.cancel()
                elif isinstance(err, (grpc.aio.AioRpcError, RemoteProtocolError)):
                    msg = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                    code = err.code().name if isinstance(err, grpc.aio.AioRpcError) else type(err).__name__
                    errors.append(f"{peer}: {code} {msg}")
                    log.warning(
                        "pull %s %s: chunk %d from %s failed: %s %s",
                        v.item,
                        v.digest[:12],
                        chunk,
                        peer,
                        code,
                        msg,
                        extra=about(peer=peer, item=str(v.item), digest=v.digest),
                    )
                    swarm.failed(peer, time.monotonic(), chunk)
                    bad = isinstance(err, BadChunk) or (
                        isinstance(err, grpc.aio.AioRpcError) and err.code() == grpc.StatusCode.DATA_LOSS
                    )
                    if bad and distrust is not None:
                        distrust(peer)
                elif disk_full(err):
                    raise DiskFull(f"disk full writing {v.item}: {err}") from err
                else:
                    raise err
        for pending in [*tasks, *watchers.values(), kicked]:
            pending.cancel()
        try:
            await asyncio.to_thread(files.finish, partial)
        except OSError as e:
            if disk_full(e):
                raise DiskFull(f"disk full installing {v.item}: {e}") from e
            raise
        progress.complete = True
        await stored()
        ok = True
        return Pulled(sorted(delivered), fetched, partial.resumed_bytes)
    except DiskFull:
        await asyncio.to_thread(files.discard, v.digest)  # give the space back; retried later
        raise
    finally:
        for pending in [*tasks, *watchers.values(), kicked]:
            pending.cancel()
        await asyncio.gather(*tasks, *watchers.values(), kicked, return_exceptions=True)
        await asyncio.to_thread(partial.close)  # after any write still running in a thread
        progress.close(ok)
        if registry.get(v.digest) is progress:
            del registry[v.digest]


async def _own_recipe(v: FileVersion, files: FileStore) -> list[bytes] | None:
    """The recipe a previous pull of `v` saved, if it still checks."""
    digests = await asyncio.to_thread(files.load_recipe, v.digest)
    if digests is None:
        return None
    try:
        recipe.check_recipe(v.digest, v.size, v.chunk_size, digests)
    except RingmeshError:
        return None
    return digests


async def _recipe(v: FileVersion, sources: list[str], links: Links, errors: list[str]) -> list[bytes]:
    """The chunk digests, from the first source whose recipe matches the published digest."""
    for src in sources:
        stub = links.stub(src)
        if stub is None:
            errors.append(f"{src}: address unknown")
            continue
        try:
            rec = await stub.GetRecipe(codec.RecipeRequest(digest=v.digest), timeout=links.deadlines.recipe)
            digests = codec.recipe_digests(rec)
            recipe.check_recipe(v.digest, v.size, v.chunk_size, digests)
            return digests
        except (grpc.aio.AioRpcError, RemoteProtocolError) as e:
            errors.append(f"{src}: recipe: {e.details() if isinstance(e, grpc.aio.AioRpcError) else e}")
    raise TransferError("; ".join(errors) or "no source")


async def _watch(peer: str, stub, v: FileVersion, swarm: Swarm, kick: asyncio.Event, links: Links) -> None:
    """Follow a peer in the middle of `v`: every chunk it verifies becomes askable of it."""
    n = swarm.n_chunks
    try:
        call = stub.WatchChunks(codec.RecipeRequest(digest=v.digest), timeout=links.deadlines.transfer(v.size))
        async for chunk_map in call:
            if chunk_map.complete:
                swarm.source(peer, None)
            else:
                for index in chunk_map.indices:
                    if index < n:
                        swarm.announce(peer, index)
                now = time.monotonic()
                for index in chunk_map.fetching:
                    if index < n:
                        swarm.expect(peer, index, now)
            kick.set()
            if chunk_map.complete:
                return
    except grpc.aio.AioRpcError as e:  # not (or no longer) pulling it: asked again at the next refresh
        log.debug("watching %s for %s: %s", peer, v.digest[:12], e.code().name)


async def _fetch(
    stub,
    v: FileVersion,
    chunk: int,
    partial: Partial,
    links: Links,
    priority: Priority,
    throttle: Throttle | None,
    me: str | None = None,
) -> int:
    """One chunk from one source: streamed as raw frames, verified, written in place. Returns its size."""
    metadata = priority_metadata(priority) + (((CALLER_METADATA, me),) if me else ())
    call = stub.FetchFrames(
        codec.ChunkRequest(digest=v.digest, indices=[chunk]),
        timeout=links.deadlines.transfer(v.chunk_size),
        metadata=metadata,
    )
    got = 0
    async for index, data in _assemble(call, v, [chunk], priority, throttle):
        await partial.write_async(index, data)
        got += 1
    if got != 1:
        raise RemoteProtocolError(f"stream ended without chunk {chunk}")
    return recipe.chunk_span(chunk, v.size, v.chunk_size)[1]


async def _assemble(
    frames,
    v: FileVersion,
    indices: list[int],
    priority: Priority = Priority.NORMAL,
    throttle: Throttle | None = None,
) -> AsyncIterator[tuple[int, bytes]]:
    """Join raw frames (FetchFrames) into the chunks asked for, in the order asked: each chunk
    arrives as pieces of `FRAME` bytes (the last one shorter), so every frame's size is known
    from the recipe and checked. Each frame received waits for the ingress throttle before the
    next is read. A chunk that comes as one frame (chunks of up to 4 MiB) is passed on as
    received, without a copy."""
    it = aiter(frames)
    for index in indices:
        want = recipe.chunk_span(index, v.size, v.chunk_size)[1]
        buf: bytearray | None = None
        filled = 0
        while True:
            try:
                data = await anext(it)
            except StopAsyncIteration:
                raise RemoteProtocolError(f"stream ended inside chunk {index}") from None
            if len(data) != min(FRAME, want - filled):
                raise RemoteProtocolError(f"frame of {len(data)} bytes at chunk {index} offset {filled}")
            if throttle is not None:
                await throttle.acquire(len(data), priority)
            if filled == 0 and len(data) == want:
                yield index, data
                break
            if buf is None:
                buf = bytearray(want)
            buf[filled : filled + len(data)] = data
            filled += len(data)
            if filled == want:
                yield index, bytes(buf)
                break
    async for data in it:
        raise RemoteProtocolError(f"{len(data)} bytes past the chunks asked for")


def frames(index: int, data: bytes) -> list[tuple[int, int, bytes]]:
    """How a server cuts one chunk into frames: one frame up to `FRAME` (no copy), else
    `FRAME`-sized pieces (an empty chunk is one empty frame)."""
    if len(data) <= FRAME:
        return [(index, 0, data)]
    return [(index, off, data[off : off + FRAME]) for off in range(0, len(data), FRAME)]
