"""Channels to other peers: where each host is, one gRPC channel per address, and the
deadlines and size limits every call carries."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import grpc

from ringmesh.v1 import mesh_pb2, mesh_pb2_grpc

if TYPE_CHECKING:
    from ringmesh.node.wire.relay import RelayedStub, RelayRouter
    from ringmesh.node.wire.tls import NodeCredentials

MAX_MESSAGE = 8 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # A peer that restarts must be reachable again within a second or two, not after gRPC's
    # default reconnect backoff (which grows to two minutes).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
# A channel no host resolves to any more (the host came back at another address) is closed this
# many seconds later: calls still under way on it may finish.
RETIRE_GRACE = 30.0
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE),
    ("grpc.max_receive_message_length", MAX_MESSAGE),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
]


class PeerStub(mesh_pb2_grpc.PeerStub):
    """The generated stub, but `FetchFrames` yields each frame as the bytes received (no parse)."""

    def __init__(self, channel) -> None:
        super().__init__(channel)
        self.FetchFrames = channel.unary_stream(
            "/ringmesh.v1.Peer/FetchFrames",
            request_serializer=mesh_pb2.ChunkRequest.SerializeToString,
            response_deserializer=None,
            _registered_method=True,
        )


@dataclass(frozen=True, slots=True)
class Deadlines:
    deliver: float = 5.0
    recipe: float = 10.0
    transfer_base: float = 60.0
    transfer_min_rate: float = 1 << 20  # bytes/s below which a transfer is given up

    def transfer(self, size: int) -> float:
        return self.transfer_base + size / self.transfer_min_rate


class Links:
    """Resolves a host to its address and keeps one channel per address (with TLS: per address
    and host, since the host's certificate must name the host dialled). When a host resolves to
    another address than before (a spot host replaced by a new instance), the channel to its old
    address is closed unless another host still resolves to it: channels do not pile up with
    address churn."""

    def __init__(self, resolve: Callable[[str], str | None], tls: NodeCredentials | None = None) -> None:
        self.relayed: RelayRouter | None = None  # hosts nobody can dial are reached through it
        self._resolve = resolve
        self._channels: dict[tuple[str, str | None], grpc.aio.Channel] = {}
        self._dialled: dict[str, tuple[str, str | None]] = {}  # host -> the channel key it last resolved to
        self._retiring: dict[asyncio.Task, grpc.aio.Channel] = {}  # closing within RETIRE_GRACE
        self.deadlines = Deadlines()
        self._tls = tls
        if tls is not None:
            from ringmesh.node.wire.tls import channel_credentials

            self._creds = channel_credentials(tls)

    def stub(self, node: str) -> PeerStub | RelayedStub | None:
        """How to call `node`: directly, or through a relay when nobody can dial it (relay.py)."""
        if self.relayed is not None and self.relayed.is_nat(node):
            return self.relayed.stub(node)
        return self.direct(node)

    def direct(self, node: str) -> PeerStub | None:
        """A stub that dials `node` itself (None: its address is not known)."""
        address = self._resolve(node)
        if address is None:
            return None
        key = (address, node if self._tls is not None else None)
        old = self._dialled.get(node)
        if old != key:
            self._dialled[node] = key
            if old is not None and old not in self._dialled.values():
                self._retire(old)
        ch = self._channels.get(key)
        if ch is None:
            if self._tls is None:
                ch = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
            else:
                from ringmesh.node.wire.tls import channel_options

                ch = grpc.aio.secure_channel(address, self._creds, options=CHANNEL_OPTIONS + channel_options(node))
            self._channels[key] = ch
        return PeerStub(ch)

    def _retire(self, key: tuple[str, str | None]) -> None:
        ch = self._channels.pop(key, None)
        if ch is not None:
            t = asyncio.get_running_loop().create_task(ch.close(grace=RETIRE_GRACE))
            self._retiring[t] = ch
            t.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        retiring, self._retiring = self._retiring, {}
        for t, ch in retiring.items():
            t.cancel()
            channels.append(ch)
        for ch in channels:
            await ch.close(grace=None)
