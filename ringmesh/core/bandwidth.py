"""Bandwidth: the byte budget of one direction (egress or ingress) of one host, shared by all
of its transfers through weighted priority classes.

Theory of operation
-------------------
Two mechanisms, composed:

* **How many bytes** — a token bucket. It holds at most `burst_bytes` tokens and refills at
  `rate_bytes_per_s`; a request of `n` bytes is granted only when `n` tokens are there, so over
  any window of `W` seconds at most `rate * W + burst` bytes are granted. A request may not be
  larger than the burst (the shell splits bigger ones), so every request can eventually pass.

* **Whose bytes next** — self-clocked fair queueing (SCFQ, Golestani 1994) between the classes
  that have demand. Every class keeps a virtual finish tag; the head request of class `c` would
  finish at `start_c + n * step_c`, where `step_c = L / weight_c` and `L` is the least common
  multiple of the weights (tags stay integers). The smallest finish tag goes first (ties: the
  higher class); the virtual clock `v` is the tag of the latest grant. A class that was idle
  restarts at `max(v, its last tag)`: it earns no credit while idle, so an idle class's share
  goes to the others, and a class with demand is served at least `weight / sum(weights of the
  classes with demand)` of the rate whatever the others ask for — CRITICAL is never starved,
  nor is BACKGROUND. Over any interval in which classes i and j both have demand,
  `|bytes_i / w_i - bytes_j / w_j| <= max_req_i / w_i + max_req_j / w_j` (SCFQ's bound).
  Inside a class the transfers (flows) take turns, one request each (round-robin).

Weights 16 : 8 : 4 : 2 : 1 (CRITICAL, HIGH, NORMAL, LOW, BACKGROUND): a class gets twice the
next lower one when both are busy. CRITICAL against every other class busy gets 16/31 ≈ 52 %
of the rate, against BACKGROUND alone 16/17 ≈ 94 %; BACKGROUND against all the others still
gets 1/31 ≈ 3 %. A doubling ladder keeps the ordering obvious while no class ever stops.

Time and rounding: `now` (seconds) is rounded to whole microseconds and tokens are kept in
byte-microseconds, all integers: refills are exact, and at the `wake_at` a poll returns, the
head request's tokens are there (`wake_at` is nudged up until it rounds back to at least the
intended microsecond), so driving the limiter by its own wake times always makes progress.
The price of whole microseconds: when the burst exceeds a request by less than one
microsecond's refill (`rate / 10^6` bytes), a rounded-up wake can overflow the bucket and
waste under that much per grant. A `now` earlier than one already seen counts as the latest.

Admission (max_concurrent_syncs) is not here: the transfer planner (`core/transfers.py`,
`max_transfers`) already decides how many transfers run.
"""

from __future__ import annotations

import enum
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Hashable, Mapping

from .errors import LocalProtocolError

US = 1_000_000  # microseconds per second: the limiter's time unit
MIN_BURST = 64 * 1024  # bytes


def default_burst(rate: int) -> int:
    """A limiter's burst when none is configured (the daemon's `Throttle`, the simulator's
    links): a tenth of a second's worth of bytes at `rate` (bytes/s), at least `MIN_BURST`."""
    return max(MIN_BURST, rate // 10)


class Priority(enum.IntEnum):
    """Transfer classes, lowest first so that `max()` is the most urgent."""

    BACKGROUND = 0  # anything that can wait
    LOW = 1  # background replication
    NORMAL = 2  # the default
    HIGH = 3  # a training host needs data
    CRITICAL = 4  # training is blocked on it

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: object) -> Priority:
        """A class from itself or its name in any case ("critical", "HIGH")."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        raise LocalProtocolError(f"unknown priority {value!r} (expected one of: {', '.join(p.label for p in cls)})")


WEIGHTS: Mapping[Priority, int] = MappingProxyType(
    {
        Priority.CRITICAL: 16,
        Priority.HIGH: 8,
        Priority.NORMAL: 4,
        Priority.LOW: 2,
        Priority.BACKGROUND: 1,
    }
)


@dataclass(frozen=True, slots=True)
class Poll:
    granted: tuple[int, ...]  # request ids granted now, in grant order
    wake_at: float | None  # poll again then (None: nothing is waiting)


@dataclass(frozen=True, slots=True)
class _Request:
    flow: Hashable
    cls: Priority
    nbytes: int


@dataclass(slots=True)
class _Class:
    step: int  # virtual time per byte: L / weight
    flows: OrderedDict[Hashable, deque[int]] = field(default_factory=OrderedDict)  # round-robin order
    start: int = 0  # tag its head request starts from (meaningful while it has demand)
    finish: int = 0  # tag of its latest grant


class Limiter:
    """Token bucket + weighted fair queueing for one direction of one host. Pure: no clock.

    `submit` queues a request, `poll` grants what may go now and says when to poll next,
    `cancel` withdraws a request that is still waiting.
    """

    def __init__(self, rate_bytes_per_s: int, burst_bytes: int, weights: Mapping[Priority, int] = WEIGHTS) -> None:
        for name, x in (("rate_bytes_per_s", rate_bytes_per_s), ("burst_bytes", burst_bytes)):
            if not isinstance(x, int) or isinstance(x, bool) or x < 1:
                raise LocalProtocolError(f"{name} must be a whole number >= 1, got {x!r}")
        if set(weights) != set(Priority) or not all(isinstance(w, int) and w >= 1 for w in weights.values()):
            raise LocalProtocolError("weights: give every priority class a whole number >= 1")
        self.rate, self.burst = rate_bytes_per_s, burst_bytes
        lcm = math.lcm(*weights.values())
        self._classes = {p: _Class(step=lcm // weights[p]) for p in sorted(Priority, reverse=True)}
        self._requests: dict[int, _Request] = {}
        self._next_id = 0
        self._v = 0  # virtual clock: tag of the latest grant
        self._t: int | None = None  # latest time seen, µs
        self._tokens = burst_bytes * US  # byte-µs; the bucket starts full

    @property
    def pending(self) -> int:
        return len(self._requests)

    def tokens(self, now: float) -> int:
        """Whole bytes in the bucket at `now` (advances the bucket's clock)."""
        self._advance(now)
        return self._tokens // US

    def submit(self, flow: Hashable, cls: Priority, nbytes: int, now: float) -> int:
        """Queue `nbytes` for `flow` in class `cls`; returns the request id `poll` will grant."""
        if not isinstance(nbytes, int) or isinstance(nbytes, bool) or not 0 <= nbytes <= self.burst:
            raise LocalProtocolError(f"a request must be 0..{self.burst} bytes (the burst), got {nbytes!r}")
        cls = Priority.parse(cls)
        self._advance(now)
        rid, self._next_id = self._next_id, self._next_id + 1
        self._requests[rid] = _Request(flow, cls, nbytes)
        c = self._classes[cls]
        if not c.flows:  # the class gets demand: it restarts at the virtual clock, no idle credit
            c.start = max(self._v, c.finish)
        c.flows.setdefault(flow, deque()).append(rid)
        return rid

    def cancel(self, rid: int) -> bool:
        """Withdraw a waiting request; False if it was granted already or never existed."""
        req = self._requests.pop(rid, None)
        if req is None:
            return False
        flows = self._classes[req.cls].flows
        q = flows[req.flow]
        q.remove(rid)
        if not q:
            del flows[req.flow]
        return True

    def poll(self, now: float) -> Poll:
        """Grant every request that may go at `now`, in fair order; say when to poll next."""
        t = self._advance(now)
        granted: list[int] = []
        while True:
            head = self._head()
            if head is None:
                return Poll(tuple(granted), None)
            cls, rid, tag = head
            need = self._requests[rid].nbytes * US
            if self._tokens < need:
                return Poll(tuple(granted), _wake(t + -(-(need - self._tokens) // self.rate)))
            self._grant(cls, rid, tag, need)
            granted.append(rid)

    # -- internals -------------------------------------------------------------------------

    def _advance(self, now: float) -> int:
        t = round(now * US)
        if self._t is not None and t <= self._t:
            return self._t
        if self._t is not None:
            self._tokens = min(self.burst * US, self._tokens + (t - self._t) * self.rate)
        self._t = t
        return t

    def _head(self) -> tuple[Priority, int, int] | None:
        """The class whose head request has the smallest finish tag (ties: the higher class)."""
        best = None
        for cls, c in self._classes.items():  # highest class first, so ties keep it
            if not c.flows:
                continue
            rid = next(iter(c.flows.values()))[0]
            tag = c.start + self._requests[rid].nbytes * c.step
            if best is None or tag < best[2]:
                best = (cls, rid, tag)
        return best

    def _grant(self, cls: Priority, rid: int, tag: int, need: int) -> None:
        req = self._requests.pop(rid)
        c = self._classes[cls]
        self._tokens -= need
        self._v = max(self._v, tag)
        c.finish = c.start = tag
        q = c.flows[req.flow]
        q.popleft()
        if q:
            c.flows.move_to_end(req.flow)  # the next flow of the class takes its turn
        else:
            del c.flows[req.flow]


def _wake(t_us: int) -> float:
    """`t_us` as seconds, nudged up so that rounding it back gives at least `t_us`."""
    w = t_us / US
    while round(w * US) < t_us:
        w = math.nextafter(w, math.inf)
    return w
