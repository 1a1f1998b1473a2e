"""No transfer above a link's limit: every host's egress and ingress, over any window of W
seconds, carry at most `rate * W + burst` bytes.

Fed by the pulls' grant hook. For each (host, direction) the checker keeps its own token
bucket with the limit the scenario gave the host (not the limiter's own figures: a limiter
configured with the wrong unit is what this catches); a grant the bucket cannot pay for is
a violation. The bucket is exactly the window condition: it empties only if some window
carried more than `rate * W + burst`.
"""

from __future__ import annotations

from typing import Callable

from . import Violation

#: The limiter counts in whole microseconds: it may overshoot by one microsecond's refill.
SLACK_SECONDS = 2e-6


class LinkLimits:
    name = "link-limit"

    def __init__(self, limits: Callable[[str, str], tuple[int, int]]) -> None:
        self.limits = limits  # (host, direction) -> (rate bytes/s, burst bytes)
        self.buckets: dict[tuple[str, str], tuple[float, float]] = {}  # -> (tokens, at)
        self.granted: dict[tuple[str, str], int] = {}  # bytes, for reports

    def on_grant(self, host: str, direction: str, nbytes: int, now: float) -> None:
        key = (host, direction)
        rate, burst = self.limits(host, direction)
        tokens, at = self.buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate) - nbytes
        if tokens < -(rate * SLACK_SECONDS + 1):
            raise Violation(
                self.name,
                f"{host} {direction}: {nbytes} bytes granted at {now:.6f} s exceed its limit of "
                f"{rate} bytes/s with a burst of {burst} bytes (short by {-tokens:.0f} bytes)",
            )
        self.buckets[key] = (tokens, now)
        self.granted[key] = self.granted.get(key, 0) + nbytes
