"""`NodeView`: what the operator side (`ringmesh.ops`, the local API) reads of a running node.

Read-only and read on the event loop (a status document, a metrics scrape), so every figure
comes from one moment of the node. The operator side never sees `Daemon` itself: its
executors, tasks and stores stay private to `ringmesh.node`, and what is here is the whole of
what a report may depend on.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from ringmesh.config import ClusterConfig, HostConfig
    from ringmesh.core.manifest import Manifest
    from ringmesh.core.messages import FileVersion
    from ringmesh.core.peer import Peer
    from ringmesh.node.files.throttle import Throttle
    from ringmesh.node.files.transfer import Progress
    from ringmesh.node.games.games import Games
    from ringmesh.node.runtime import Daemon
    from ringmesh.node.telemetry import Telemetry


class NodeView:
    def __init__(self, node: Daemon) -> None:
        self._node = node

    # this host and its configuration
    @property
    def name(self) -> str:
        return self._node.peer.me

    @property
    def address(self) -> str | None:
        return self._node.address

    @property
    def host(self) -> HostConfig:
        return self._node.host

    @property
    def config(self) -> ClusterConfig:
        return self._node.config

    @property
    def started_at(self) -> float:
        return self._node.started_at

    # the protocol state: the core's own views (membership, leader, placement, ...), read only
    @property
    def core(self) -> Peer:
        return self._node.peer

    @property
    def manifest(self) -> Manifest:
        return self._node.peer.manifest

    def resolve(self, node: str) -> str | None:
        return self._node.resolve(node)

    @staticmethod
    def now() -> float:
        return time.time()

    # the node's own figures
    @property
    def paused(self) -> str | None:
        return self._node.paused

    @property
    def counters(self) -> Mapping[str, int]:
        return self._node.counters

    @property
    def core_errors(self) -> list[tuple[float, str]]:
        return self._node.core_errors

    @property
    def events(self) -> list[dict[str, Any]]:
        return self._node.events

    @property
    def disk(self) -> dict[str, Any]:
        return self._node.disk

    def blocked_items(self) -> list[dict[str, Any]]:
        return self._node.blocked_items()

    @property
    def telemetry(self) -> Telemetry:
        return self._node.telemetry

    @property
    def inbox_size(self) -> int:
        return self._node.inbox.qsize()

    @property
    def metrics_address(self) -> str | None:
        return self._node.metrics.address if self._node.metrics else None

    # hosts nobody can dial
    def links(self) -> dict[str, Any]:
        """This host's dial-out links (nat_blocked), or the links NAT'd hosts keep to it."""
        node = self._node
        nat = node.host.nat_blocked
        doc: dict[str, Any] = {"nat_blocked": nat, "relaying_for": node.relay_hub.linked()}
        doc["relay_links"] = node.relay_hub.status()
        if node.uplinks is not None:
            doc.update(node.uplinks.status())
        return doc

    # files and bandwidth
    @property
    def egress(self) -> Throttle:
        return self._node.egress

    @property
    def ingress(self) -> Throttle:
        return self._node.ingress

    def transfers(self) -> list[tuple[FileVersion, float]]:
        """The pulls under way: (version, when it started)."""
        return [(v, started) for _task, v, started in self._node.transfers.running.values()]

    def progress(self, digest: str) -> Progress | None:
        return self._node.transfers.pulling.get(digest)

    # data at rest
    def scrub(self) -> dict[str, Any]:
        """The scrub's schedule and progress, and every damage found (`node/scrub.py`)."""
        return self._node.scrubber.status()

    # games
    @property
    def games(self) -> Games:
        return self._node.games.games

    @property
    def durable(self) -> Mapping[str, int]:
        return self._node.games.durable
