"""Pulling one file version from a peer: recipe, streamed chunks, verification, atomic install.

One source at a time, in the order the core gave; a source that fails or sends a chunk that
does not verify is dropped and the next one is tried. (The multi-source swarm replaces this.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator

import grpc

from . import codec
from .core import recipe
from .core.bandwidth import Priority
from .core.errors import RemoteProtocolError, RingmeshError
from .core.messages import FileVersion
from .files import FileStore
from .links import Links
from .throttle import Throttle, priority_metadata

log = logging.getLogger("ringmesh.transfer")
FRAME = 1 << 20


class TransferError(RingmeshError):
    """No source could deliver the version."""


async def pull(v: FileVersion, sources: tuple[str, ...], links: Links, files: FileStore, *,
               priority: Priority = Priority.NORMAL, throttle: Throttle | None = None) -> str:
    """Fetch `v` from the first source that can serve it; returns that source.

    `priority` is the transfer's class: it goes to the source in the call metadata (its egress
    limit) and to `throttle`, this host's ingress limit, which every frame received waits for.
    """
    errors = []
    for src in sources:
        stub = links.stub(src)
        if stub is None:
            errors.append(f"{src}: address unknown")
            continue
        try:
            await _pull_from(stub, v, links, files, priority, throttle)
            return src
        except (grpc.aio.AioRpcError, RemoteProtocolError, OSError) as e:
            msg = e.details() if isinstance(e, grpc.aio.AioRpcError) else str(e)
            code = e.code().name if isinstance(e, grpc.aio.AioRpcError) else type(e).__name__
            errors.append(f"{src}: {code} {msg}")
            log.warning("pull %s %s from %s failed: %s %s", v.item, v.digest[:12], src, code, msg)
            await asyncio.to_thread(files.discard, v.digest)
    raise TransferError("; ".join(errors) or "no source")


async def _pull_from(stub, v: FileVersion, links: Links, files: FileStore, priority: Priority,
                     throttle: Throttle | None) -> None:
    rec = await stub.GetRecipe(codec.RecipeRequest(digest=v.digest), timeout=links.deadlines.recipe)
    digests = codec.recipe_digests(rec)
    recipe.check_recipe(v.digest, v.size, v.chunk_size, digests)
    call = stub.FetchChunks(
        codec.ChunkRequest(digest=v.digest, indices=range(len(digests))),
        timeout=links.deadlines.transfer(v.size), metadata=priority_metadata(priority),
    )
    done = 0
    async for index, data in _assemble(call, v, priority, throttle):
        if index != done:
            raise RemoteProtocolError(f"chunk {index} arrived, expected {done}")
        await asyncio.to_thread(files.write_chunk, v, digests, index, data)
        done += 1
    if done != len(digests):
        raise RemoteProtocolError(f"stream ended after {done} of {len(digests)} chunks")
    await asyncio.to_thread(files.finish, v, digests)


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
