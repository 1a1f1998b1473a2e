"""The standard gRPC health service and server reflection on the peer port.

Health (`grpc.health.v1.Health`) answers for the whole server ("") and for `ringmesh.v1.Peer`:
NOT_SERVING until the daemon has started, SERVING while it runs, NOT_SERVING again from the
moment it drains or stops (for good). Each `Check` answer also carries, in its trailing
metadata, the host's name and its wall clock (`ringmesh-node`, `ringmesh-unix-time`, seconds):
`ringmesh doctor` reads them to name who answered and to estimate clock skew, NTP-style, from
the call's round trip.

Reflection lists the peer service, health and reflection itself (`grpcurl -plaintext HOST:PORT list`).

Under systemd (`Type=notify`, deploy/ringmesh.service) the same moments are told to the service
manager: READY=1 once serving, STOPPING=1 when the drain begins.
"""

from __future__ import annotations

import os
import socket
import time

from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

PEER_SERVICE = "ringmesh.v1.Peer"  # proto/ringmesh/v1/mesh.proto
NODE_KEY = "ringmesh-node"
TIME_KEY = "ringmesh-unix-time"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Health(health.aio.HealthServicer):
    def __init__(self, me: str) -> None:
        super().__init__()
        self.me = me

    async def Check(self, request, context):
        context.set_trailing_metadata(((NODE_KEY, self.me), (TIME_KEY, f"{time.time():.6f}")))
        return await super().Check(request, context)


class Health:
    """Health and reflection on one gRPC aio server."""

    def __init__(self, server, me: str) -> None:
        self.servicer = _Health(me)
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        reflection.enable_server_reflection((PEER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        self.serving = False

    async def set_serving(self) -> None:
        for name in ("", PEER_SERVICE):
            await self.servicer.set(name, SERVING)
        self.serving = True
        sd_notify(f"READY=1\nSTATUS=serving as {self.servicer.me}\nMAINPID={os.getpid()}")

    async def set_not_serving(self) -> None:
        """Draining or stopping: NOT_SERVING for good."""
        if self.serving:
            sd_notify("STOPPING=1\nSTATUS=draining")
        self.serving = False
        await self.servicer.enter_graceful_shutdown()

    async def start_not_serving(self) -> None:
        for name in ("", PEER_SERVICE):
            await self.servicer.set(name, NOT_SERVING)


def sd_notify(state: str) -> bool:
    """Tell systemd (`$NOTIFY_SOCKET`) about our state; False when not run by it (or it is gone)."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # an abstract socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
        return True
    except OSError:
        return False
