"""Pulling one file version from several peers at once: recipe, chunks streamed from every
source in parallel, each verified before it is written, atomic install.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import AsyncIterator

import grpc

from . import codec
from .core import recipe
from .core.bandwidth import Priority
from .core.errors import RemoteProtocolError, RingmeshError
from .core.messages import FileVersion
from .core.swarm import Swarm
from .files import FileStore
from .links import Links
from .throttle import Throttle, priority_metadata

log = logging.getLogger("ringmesh.transfer")
FRAME = 1 << 20


class TransferError(RingmeshError):
    """No source could deliver the version."""


async def pull(v: FileVersion, sources: tuple[str, ...], links: Links, files: FileStore, *,
               priority: Priority = Priority.NORMAL, throttle: Throttle | None = None, per_peer: int = 2) -> str:
    """Fetch `v` from all its sources at once, chunk by chunk (`core/swarm.py` decides which
    chunk to ask whom for); returns the sources that delivered, comma-separated.

    Every chunk is verified against the recipe before it is written; a source whose chunk
    does not verify, or whose call fails, loses its requests and is left alone while the
    others finish. `priority` goes to each source in the call metadata (its egress limit) and
    to `throttle`, this host's ingress limit, which every frame received waits for.
    """
    errors: list[str] = []
    stubs = {}
    for src in sources:
        stub = links.stub(src)
        if stub is None:
            errors.append(f"{src}: address unknown")
        else:
            stubs[src] = stub
    digests = await _recipe(v, stubs, links, errors)
    swarm = Swarm(len(digests), random.Random(), per_peer=per_peer)
    for src in stubs:
        swarm.source(src, None)
    tasks: dict[asyncio.Task, tuple[str, int, float]] = {}
    delivered: set[str] = set()
    try:
        while not swarm.done:
            for peer, chunk in swarm.plan(time.monotonic()):
                task = asyncio.create_task(_fetch(stubs[peer], v, chunk, digests, links, files, priority, throttle))
                tasks[task] = (peer, chunk, time.monotonic())
            if not tasks:
                raise TransferError("; ".join(errors[-8:]) or "no source left to ask")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                peer, chunk, t0 = tasks.pop(task)
                if task.cancelled():
                    continue
                err = task.exception()
                if err is None:
                    delivered.add(peer)
                    for loser in swarm.received(peer, chunk, task.result(), time.monotonic() - t0):
                        for other, (p, c, _) in list(tasks.items()):
                            if (p, c) == (loser, chunk):
                                other.cancel()
                elif isinstance(err, (grpc.aio.AioRpcError, RemoteProtocolError, OSError)):
                    msg = err.details() if isinstance(err, grpc.aio.AioRpcError) else str(err)
                    code = err.code().name if isinstance(err, grpc.aio.AioRpcError) else type(err).__name__
                    errors.append(f"{peer}: {code} {msg}")
                    log.warning("pull %s %s: chunk %d from %s failed: %s %s", v.item, v.digest[:12], chunk, peer, code, msg)
                    swarm.failed(peer, time.monotonic(), chunk)
                else:
                    raise err
    except BaseException:
        await asyncio.to_thread(files.discard, v.digest)
        raise
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.to_thread(files.finish, v, digests)
    return ",".join(sorted(delivered))


async def _recipe(v: FileVersion, stubs: dict, links: Links, errors: list[str]) -> list[bytes]:
    """The chunk digests, from the first source whose recipe matches the published digest."""
    for src, stub in stubs.items():
        try:
            rec = await stub.GetRecipe(codec.RecipeRequest(digest=v.digest), timeout=links.deadlines.recipe)
            digests = codec.recipe_digests(rec)
            recipe.check_recipe(v.digest, v.size, v.chunk_size, digests)
            return digests
        except (grpc.aio.AioRpcError, RemoteProtocolError) as e:
            errors.append(f"{src}: recipe: {e.details() if isinstance(e, grpc.aio.AioRpcError) else e}")
    raise TransferError("; ".join(errors) or "no source")


async def _fetch(stub, v: FileVersion, chunk: int, digests: list[bytes], links: Links, files: FileStore,
                 priority: Priority, throttle: Throttle | None) -> int:
    """One chunk from one source: streamed, verified, written in place. Returns its size."""
    call = stub.FetchChunks(
        codec.ChunkRequest(digest=v.digest, indices=[chunk]),
        timeout=links.deadlines.transfer(v.chunk_size), metadata=priority_metadata(priority),
    )
    got = 0
    async for index, data in _assemble(call, v, priority, throttle):
        if index != chunk:
            raise RemoteProtocolError(f"chunk {index} arrived, asked for {chunk}")
        await asyncio.to_thread(files.write_chunk, v, digests, index, data)
        got += 1
    if got != 1:
        raise RemoteProtocolError(f"stream ended without chunk {chunk}")
    return recipe.chunk_span(chunk, v.size, v.chunk_size)[1]


async def _assemble(frames, v: FileVersion, priority: Priority = Priority.NORMAL,
                    throttle: Throttle | None = None) -> AsyncIterator[tuple[int, bytes]]:
    """Join 1 MiB frames into whole chunks, checking each frame's place; each frame received
    waits for the ingress throttle before the next is read."""
    buf, index, want = bytearray(), -1, 0
    async for fr in frames:
        if not buf:
            index = fr.index
            want = recipe.chunk_span(index, v.size, v.chunk_size)[1]
        if fr.index != index or fr.offset != len(buf) or len(buf) + len(fr.data) > want:
            raise RemoteProtocolError(f"frame out of place: chunk {fr.index} offset {fr.offset}")
        if throttle is not None:
            await throttle.acquire(len(fr.data), priority)
        buf += fr.data
        if len(buf) == want:
            yield index, bytes(buf)
            buf = bytearray()
    if buf:
        raise RemoteProtocolError(f"stream ended inside chunk {index}")


def frames(index: int, data: bytes) -> list[tuple[int, int, bytes]]:
    """How a server cuts one chunk into frames (an empty chunk is one empty frame)."""
    if not data:
        return [(index, 0, b"")]
    return [(index, off, data[off : off + FRAME]) for off in range(0, len(data), FRAME)]
