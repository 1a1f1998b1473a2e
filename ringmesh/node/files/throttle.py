"""Throttled transfers: the asyncio side of `core.bandwidth`.

A daemon has two `Throttle`s, egress (the server awaits one before it yields each frame of
`FetchFrames`/`FetchChunks`) and ingress (a pull awaits one per frame received); every transfer of that
direction shares it. The only clock is the event loop's; a waiting request is woken by
`loop.call_at` at the time the limiter names — nothing polls or sleeps in a loop.

The priority of a transfer travels to the serving peer in gRPC call metadata
(`ringmesh-priority: critical`), since `ChunkRequest` has no field for it.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Hashable, Iterable, Mapping

from ringmesh.config import ConfigError
from ringmesh.core.bandwidth import WEIGHTS, Limiter, Priority, default_burst
from ringmesh.core.errors import LocalProtocolError

METADATA_KEY = "ringmesh-priority"
EGRESS_ENV = "RINGMESH_EGRESS_BYTES_PER_S"
INGRESS_ENV = "RINGMESH_INGRESS_BYTES_PER_S"


def rate_setting(env_name: str, configured: int | None, env: Mapping[str, str] | None = None) -> int | None:
    """The rate of one direction in bytes/s, None for no limit.

    The environment variable wins (an operator's or a test's override; 0 = no limit), then
    the host's configured rate (`HostConfig.egress_bytes_per_s` / `ingress_bytes_per_s`, which
    the config resolves: host > provider default > global default).
    """
    env = os.environ if env is None else env
    raw = env.get(env_name)
    if raw is not None:
        try:
            value = int(raw.strip())
        except ValueError:
            value = -1
        if value < 0:
            raise ConfigError(
                f"environment: {env_name}: expected a whole number of bytes/s >= 0 (0: no limit), got {raw!r}"
            )
        return value or None
    return configured or None


def priority_metadata(cls: Priority) -> tuple[tuple[str, str], ...]:
    return ((METADATA_KEY, cls.label),)


def priority_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> Priority | None:
    """The class a caller asked for; NORMAL if it asked for none, None if it named an unknown one."""
    for key, value in metadata or ():
        if key == METADATA_KEY:
            try:
                return Priority.parse(value)
            except LocalProtocolError:
                return None
    return Priority.NORMAL


class Throttle:
    """One direction of one host's byte budget. `rate_bytes_per_s` None (or 0): no limit, only counted."""

    def __init__(
        self, rate_bytes_per_s: int | None, burst_bytes: int | None = None, weights: Mapping[Priority, int] = WEIGHTS
    ) -> None:
        self.rate = rate_bytes_per_s or None
        self.burst: int | None = None
        self._limiter: Limiter | None = None
        if self.rate:
            self.burst = burst_bytes or default_burst(self.rate)
            self._limiter = Limiter(self.rate, self.burst, weights)
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._wake_at: float | None = None
        self.granted: Counter[Priority] = Counter()  # bytes let through, per class

    async def acquire(self, nbytes: int, cls: Priority = Priority.NORMAL, flow: Hashable | None = None) -> None:
        """Wait until `nbytes` may pass for a transfer of class `cls`.

        `flow` names the transfer for round-robin within its class (default: the current task).
        A request above the burst is taken in burst-sized pieces, each waiting its turn.
        """
        if nbytes < 0:
            raise LocalProtocolError(f"cannot acquire {nbytes} bytes")
        cls = Priority.parse(cls)
        limiter = self._limiter
        if limiter is None or nbytes == 0:
            self.granted[cls] += nbytes
            return
        loop = asyncio.get_running_loop()
        flow = asyncio.current_task() if flow is None else flow
        while nbytes > 0:
            piece = min(nbytes, limiter.burst)
            request_id = limiter.submit(flow, cls, piece, loop.time())
            grant = self._waiters[request_id] = loop.create_future()
            self._pump()
            try:
                await grant
            except asyncio.CancelledError:
                if self._waiters.pop(request_id, None) is not None:  # still queued: withdraw it
                    limiter.cancel(request_id)
                    self._pump()
                raise
            self.granted[cls] += piece
            nbytes -= piece

    def _pump(self) -> None:
        """Grant what may go now and arm one timer for the next grant."""
        if self._limiter is None:  # no limit: nothing ever waits, so no timer is armed
            return
        loop = asyncio.get_running_loop()
        poll = self._limiter.poll(loop.time())
        for request_id in poll.granted:
            grant = self._waiters.pop(request_id, None)
            if grant is not None and not grant.done():
                grant.set_result(None)
        if poll.wake_at == self._wake_at and self._timer is not None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._wake_at = poll.wake_at
        self._timer = None if poll.wake_at is None else loop.call_at(poll.wake_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._wake_at = None
        self._pump()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def report(self) -> dict:
        return {
            "rate_bytes_per_s": self.rate,
            "burst_bytes": self.burst,
            "waiting": self.waiting,
            "granted_bytes": {priority.label: self.granted[priority] for priority in sorted(Priority, reverse=True)},
        }

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._wake_at = None
