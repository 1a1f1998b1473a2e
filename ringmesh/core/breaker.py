"""Per-peer circuit breakers: after `threshold` consecutive failures a peer is left alone for an
exponentially growing, jittered while; then one trial call decides (half-open)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import LocalProtocolError

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    threshold: int = 3
    base: float = 1.0
    cap: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or not 0 < self.base <= self.cap:
            raise LocalProtocolError("need threshold >= 1 and 0 < base <= cap")


@dataclass(slots=True)
class _Peer:
    failures: int = 0  # consecutive
    opened: int = 0  # how many times in a row the breaker opened
    open_until: float = float("-inf")
    trial: bool = False  # a half-open trial is under way
    total_failures: int = 0
    total_successes: int = 0


class Breakers:
    def __init__(self, rng: random.Random, config: BreakerConfig = BreakerConfig()) -> None:
        self.rng, self.config = rng, config
        self.peers: dict[str, _Peer] = {}
        self.tripped: set[str] = set()  # peers at or past the threshold: open or half-open

    def state(self, peer: str, now: float) -> str:
        p = self.peers.get(peer)
        if p is None or p.failures < self.config.threshold:
            return CLOSED
        return OPEN if now < p.open_until or p.trial else HALF_OPEN

    def allow(self, peer: str, now: float) -> bool:
        """May we call `peer` now? In half-open state this takes the one trial call."""
        st = self.state(peer, now)
        if st == HALF_OPEN:
            self.peers[peer].trial = True
            return True
        return st == CLOSED

    def blocked(self, now: float) -> list[str]:
        """The peers not to be called now (open), in name order."""
        return sorted(p for p in self.tripped if self.state(p, now) == OPEN)

    def healthy(self, peer: str, now: float) -> bool:
        """Closed: fit to be chosen as a source or target (does not take the trial)."""
        return self.state(peer, now) == CLOSED

    def success(self, peer: str) -> None:
        p = self.peers.setdefault(peer, _Peer())
        p.failures, p.opened, p.trial, p.open_until = 0, 0, False, float("-inf")
        self.tripped.discard(peer)
        p.total_successes += 1

    def failure(self, peer: str, now: float) -> None:
        p = self.peers.setdefault(peer, _Peer())
        p.failures += 1
        p.total_failures += 1
        if p.failures >= self.config.threshold:
            self.tripped.add(peer)
        if p.failures >= self.config.threshold and (p.trial or now >= p.open_until):
            backoff = min(self.config.cap, self.config.base * 2**p.opened)
            p.open_until = now + backoff * self.rng.uniform(0.5, 1.0)
            p.opened += 1
            p.trial = False

    def report(self, now: float) -> dict[str, dict[str, object]]:
        return {
            peer: {
                "state": self.state(peer, now),
                "consecutive_failures": p.failures,
                "failures": p.total_failures,
                "successes": p.total_successes,
                "open_for_s": round(max(0.0, p.open_until - now), 3),
            }
            for peer, p in sorted(self.peers.items())
        }
