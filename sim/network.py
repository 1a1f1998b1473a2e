"""The simulated network: per-message latency, loss, duplication and partitions.

Every random choice is drawn from the `random.Random` the network is given (derived from the
run's seed), in the order the world asks, so one seed gives one schedule of faults.

A partition is a set of blocked directed links `(src, dst)`. A message on a blocked link is
not delivered and its sender is told (`Route.failed`), as a gRPC channel would report an
unreachable peer after its deadline. A lost message vanishes silently.

Links may differ by the hosts' groups (providers): `models[(group of src, group of dst)]`
overrides `model`; `extra_loss` adds to every link's loss (a lossy spell); `egress[host]`
overrides the model's uplink rate of one host.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkModel:
    """How every link behaves; times are seconds, probabilities are per message."""

    latency: float = 0.020
    jitter: float = 0.010  # each copy takes latency + uniform(0, jitter)
    loss: float = 0.0
    duplicate: float = 0.0  # probability that a delivered message arrives twice
    deadline: float = 1.0  # when the sender learns that a blocked link failed
    egress_bytes_per_s: float | None = None  # each host's uplink; None: unlimited

    @classmethod
    def from_ms(cls, latency_ms: float, jitter_ms: float, loss: float = 0.0, duplicate: float = 0.0) -> LinkModel:
        return cls(latency=latency_ms / 1000, jitter=jitter_ms / 1000, loss=loss, duplicate=duplicate)

    def __post_init__(self) -> None:
        if self.latency < 0 or self.jitter < 0 or self.deadline < 0:
            raise ValueError("latency, jitter and deadline must be non-negative")
        for name in ("loss", "duplicate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], not {p}")


@dataclass(frozen=True, slots=True)
class Route:
    """What happens to one message: its copies' delays, or a failure after `deadline`."""

    delays: tuple[float, ...] = ()
    failed: bool = False


@dataclass(slots=True)
class NetworkStats:
    sent: int = 0
    delivered: int = 0  # copies scheduled for delivery, duplicates included
    lost: int = 0
    duplicated: int = 0
    blocked: int = 0


class Network:
    def __init__(self, rng: random.Random, model: LinkModel = LinkModel()) -> None:
        self.rng = rng
        self.model = model
        self.blocked: set[tuple[str, str]] = set()
        self.models: dict[tuple[str, str], LinkModel] = {}  # (group of src, group of dst) -> link
        self.group: dict[str, str] = {}  # host -> its group (provider)
        self.egress: dict[str, float] = {}  # host -> uplink bytes/s, overriding the model's
        self.extra_loss = 0.0
        self.uplink_free: dict[str, float] = {}  # when each host's uplink is next idle
        self.uplink_bytes: dict[str, int] = {}
        self.stats = NetworkStats()

    # -- one message -------------------------------------------------------------------------

    def route(self, src: str, dst: str, size: int = 0, now: float = 0.0) -> Route:
        """What happens to a message of `size` bytes sent at `now`. With an egress limit, the
        sender's uplink serialises its messages: each leaves when the previous one has, and
        takes size / rate to do so (a FIFO link; the limit is never exceeded)."""
        m, rng, stats = self.model_for(src, dst), self.rng, self.stats
        stats.sent += 1
        if (src, dst) in self.blocked:
            stats.blocked += 1
            return Route(failed=True)
        loss = m.loss + self.extra_loss if self.extra_loss else m.loss
        if loss and rng.random() < loss:
            stats.lost += 1
            return Route()
        copies = 2 if m.duplicate and rng.random() < m.duplicate else 1
        if copies == 2:
            stats.duplicated += 1
        stats.delivered += copies
        queued = 0.0
        egress = self.egress.get(src, m.egress_bytes_per_s) if self.egress else m.egress_bytes_per_s
        if egress:
            start = max(now, self.uplink_free.get(src, 0.0))
            self.uplink_free[src] = start + size / egress
            queued = self.uplink_free[src] - now
            self.uplink_bytes[src] = self.uplink_bytes.get(src, 0) + size
        return Route(delays=tuple(queued + m.latency + rng.uniform(0.0, m.jitter) for _ in range(copies)))

    def model_for(self, src: str, dst: str) -> LinkModel:
        if not self.models:
            return self.model
        return self.models.get((self.group.get(src, ""), self.group.get(dst, "")), self.model)

    # -- partitions ----------------------------------------------------------------------------

    def block(self, src: str, dst: str) -> None:
        if src != dst:
            self.blocked.add((src, dst))

    def split_one_way(self, senders: Iterable[str], receivers: Iterable[str]) -> None:
        """Messages from `senders` to `receivers` are blocked; the other direction still works."""
        receivers = list(receivers)
        for s in senders:
            for r in receivers:
                self.block(s, r)

    def split(self, *groups: Iterable[str]) -> None:
        """Symmetric partition: no message crosses between any two of `groups`."""
        groups_ = [list(g) for g in groups]
        for i, a in enumerate(groups_):
            for j, b in enumerate(groups_):
                if i != j:
                    self.split_one_way(a, b)

    def isolate(self, node: str, others: Iterable[str]) -> None:
        self.split([node], [o for o in others if o != node])

    def heal(self) -> None:
        self.blocked.clear()
