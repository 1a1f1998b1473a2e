"""The simulated world: a virtual clock, one event heap, the nodes and their timers.

Theory of operation
-------------------
The world is a second interpreter of the core's effects (the gRPC daemon is the first). It
holds `Peer` instances of `ringmesh.core`, unchanged, and feeds them events at virtual time:

  * `Send`      -> the network decides the copies' delays (or a failure), and the world
                   schedules `MessageReceived` on the receiver (or `SendFailed` on the sender);
  * `SetTimer`  -> a `TimerFired` at `at`; a later `SetTimer` of the same name replaces it
                   (the earlier heap entry stays and is skipped when it comes up);
  * `Persist`   -> handed to the persist hooks (checkers); no disk or crash model yet;
  * transfers   -> counted and ignored (no file data moves in this simulator yet).

Events are ordered by (time, insertion sequence), so ties are broken by the order in which
they were scheduled, never by luck. Nodes live in a dict filled in sorted order. Nothing
here draws a random number: the network and the peers own seeded `random.Random`s.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
from typing import Callable, Union

from ringmesh.core import (
    Effect, Envelope, Event, MessageReceived, Peer, Persist, Send, SendFailed, SetTimer, TimerFired,
)

from .network import Network
from .traffic import Traffic

#: A scenario's own action, run at its time (a local write, a partition, a heal).
Action = Callable[[], None]
PersistHook = Callable[[str, Persist, float], None]

_TIMER = 0
_MESSAGE = 1
_FAILURE = 2
_ACTION = 3


class SimulationError(Exception):
    """The simulator was misused or found itself in an impossible state."""


class World:
    def __init__(self, network: Network) -> None:
        self.now = 0.0
        self.network = network
        self.nodes: dict[str, Peer] = {}
        self.traffic = Traffic()
        self.persist_hooks: list[PersistHook] = []
        self.ignored: dict[str, int] = {}  # effects this world does not interpret, by type
        self.events = 0
        self._heap: list[tuple[float, int, int, str, object]] = []
        self._seq = itertools.count()
        self._timers: dict[tuple[str, str], int] = {}  # (node, timer name) -> live entry's seq
        self._trace = hashlib.blake2b(digest_size=16)

    # -- setup -------------------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        if peer.me in self.nodes:
            raise SimulationError(f"node {peer.me!r} added twice")
        self.nodes[peer.me] = peer
        self.traffic.add_node(peer.me)

    def start(self, node: str) -> None:
        self.interpret(node, self.nodes[node].start(self.now))

    def at(self, when: float, action: Action) -> None:
        """Run a scenario action at virtual time `when`."""
        self._push(max(when, self.now), _ACTION, "", action)

    # -- running -----------------------------------------------------------------------------

    def run(self, *, until: float, stop: Callable[[], bool] | None = None) -> bool:
        """Process events up to virtual time `until`, or until `stop()` holds after an event.

        Returns whether `stop()` held. The clock ends at the last event processed, or at
        `until` if the heap ran past it.
        """
        heap = self._heap
        if stop is not None and stop():
            return True
        while heap and heap[0][0] <= until:
            self._step(heapq.heappop(heap))
            if stop is not None and stop():
                return True
        self.now = max(self.now, until)
        return False

    def step(self) -> bool:
        """Process the next event, if there is one (skipped stale timers do not count)."""
        heap = self._heap
        while heap:
            if self._step(heapq.heappop(heap)):
                return True
        return False

    def trace_digest(self) -> str:
        """A hash of every event processed so far: two runs with equal digests took one path."""
        return self._trace.hexdigest()

    # -- internals ---------------------------------------------------------------------------

    def _push(self, at: float, kind: int, node: str, payload: object) -> int:
        seq = next(self._seq)
        heapq.heappush(self._heap, (at, seq, kind, node, payload))
        return seq

    def _step(self, entry: tuple[float, int, int, str, object]) -> bool:
        at, seq, kind, node, payload = entry
        if kind == _TIMER:
            if self._timers.get((node, payload.name)) != seq:  # type: ignore[union-attr]
                return False  # replaced by a later SetTimer of the same name
            del self._timers[(node, payload.name)]  # type: ignore[union-attr]
        self.now = at
        self.events += 1
        if kind == _ACTION:
            self._trace.update(f"{at!r} action\n".encode())
            payload()  # type: ignore[operator]
            return True
        event: Event = payload  # type: ignore[assignment]
        self._trace.update(f"{at!r} {node} {_describe(event)}\n".encode())
        self.interpret(node, self.nodes[node].handle(event, at))
        return True

    def interpret(self, node: str, effects: list[Effect]) -> None:
        """Carry out `node`'s effects at the current virtual time."""
        for eff in effects:
            if isinstance(eff, Send):
                self._send(node, eff.to, eff.envelope)
            elif isinstance(eff, SetTimer):
                key = (node, eff.name)
                self._timers[key] = self._push(max(eff.at, self.now), _TIMER, node, TimerFired(name=eff.name))
            elif isinstance(eff, Persist):
                self.persisted(node, eff)
            else:
                name = type(eff).__name__
                self.ignored[name] = self.ignored.get(name, 0) + 1

    def persisted(self, node: str, eff: Persist) -> None:
        """Tell the hooks that `node` made these changes durable (also for scenario writes)."""
        for hook in self.persist_hooks:
            hook(node, eff, self.now)

    def _send(self, src: str, dst: str, env: Envelope) -> None:
        self.traffic.record(src, env)
        if dst not in self.nodes:
            self._push(self.now + self.network.model.deadline, _FAILURE, src, SendFailed(peer=dst, reason="unknown host"))
            return
        route = self.network.route(src, dst)
        if route.failed:
            self._push(self.now + self.network.model.deadline, _FAILURE, src, SendFailed(peer=dst, reason="unreachable"))
            return
        event = MessageReceived(envelope=env)
        for delay in route.delays:
            self._push(self.now + delay, _MESSAGE, dst, event)


def _describe(event: Union[Event, object]) -> str:
    if isinstance(event, MessageReceived):
        env = event.envelope
        return f"{type(env.body).__name__} from {env.sender} hlc {env.hlc}"
    if isinstance(event, TimerFired):
        return f"timer {event.name}"
    if isinstance(event, SendFailed):
        return f"send to {event.peer} failed: {event.reason}"
    return type(event).__name__
