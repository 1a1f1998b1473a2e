"""The simulated world: a virtual clock, one event heap, the nodes and their timers.

Theory of operation
-------------------
The world is a second interpreter of the core's effects (the gRPC daemon is the first). It
holds `Peer` instances of `ringmesh.core`, unchanged, and feeds them events at virtual time:

  * `Send`      -> the network decides the copies' delays (or a failure), and the world
                   schedules `MessageReceived` on the receiver (or `SendFailed` on the sender);
  * `SetTimer`  -> a `TimerFired` at `at`; a later `SetTimer` of the same name replaces it
                   (the earlier heap entry stays and is skipped when it comes up);
  * `Persist`   -> written to the node's simulated disk (`sim/disk.py`) and handed to the
                   persist hooks (checkers); `SaveVote` goes to the disk too;
  * `StoreGames`-> appended to the node's stream log after `fsync_latency` (a crash of the
                   process before then loses the write), then `GamesStored` comes back;
  * `DropGames` -> retention: the node's own games dropped from its stream log;
  * `GamesLost` -> the node's stream log skips those seqs in its mark; `GamesStored` comes
                   back with it. Rot (`Disk.rot`) is found by `scrub` or by a `ReadGames` of
                   the stream, which drop the bad copies and hand the core `GamesCorrupt`;
  * `RunBackup` -> a backup that takes `backup_seconds`, then `BackupFinished` comes back
                   (to the process that ran it: a crash meanwhile loses it);
  * transfers   -> counted and ignored here; `sim/files.py` carries them out.

A send to a host nobody can dial (`relays`, set when the scenario has NAT'd hosts) goes over
one of its links to relays (`sim/relays.py`); with no `relays`, nothing of that runs.

Events are ordered by (time, insertion sequence), so ties are broken by the order in which
they were scheduled, never by luck. Nodes live in a dict filled in sorted order. Nothing
here draws a random number: the network and the peers own seeded `random.Random`s.

Each node may have its own clock (`set_clock`: an offset and a rate, i.e. drift): the peer is
handed its local time and its timers are set in it; the heap runs on true (world) time.
A paused node (SIGSTOP) keeps its timers and its local completions (fsyncs, reads) until it is
resumed; messages to it are lost. Every event processed is one line of the trace: its hash is
the run's fingerprint, the last `RECENT` lines are kept for reports, and `trace_sink` (if set)
gets every line.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import traceback
from collections import deque
from typing import Callable, Union, cast

from ringmesh.core import (
    CancelTransfer,
    Effect,
    Envelope,
    Event,
    MessageReceived,
    Peer,
    Persist,
    SaveVote,
    Send,
    SendFailed,
    SetTimer,
    StartTransfer,
    TimerFired,
)
from ringmesh.core.errors import unknown
from ringmesh.core.messages import (
    BackupFinished,
    DropGames,
    Emit,
    GamesCorrupt,
    GamesDurable,
    GamesLost,
    GamesRead,
    GamesStored,
    ReadGames,
    RunBackup,
    StoreGames,
)

from .disk import Disk
from .invariants import Violation
from .network import Network
from .relays import Relays
from .traffic import Traffic

#: A scenario's own action, run at its time (a local write, a partition, a heal).
Action = Callable[[], object]  # what it returns is dropped
PersistHook = Callable[[str, Persist, float], None]

#: More events than this at one instant of virtual time is a livelock (a timer re-armed at
#: `now` forever), reported instead of spinning.
LIVELOCK_EVENTS = 100_000

_TIMER = 0
_MESSAGE = 1
_LOCAL = 2  # an event the node's own I/O produced: a failed send, a finished fsync, a read
_ACTION = 3
_FSYNC = 4  # a stream-log write of one process, completing

#: Trace lines kept for a violation's report.
RECENT = 40


class SimulationError(Exception):
    """The simulator was misused or found itself in an impossible state."""


class CoreRaised(Violation):
    """A host's core raised while handling an event: a bug, and a failure of the run."""

    def __init__(self, node: str, what: str, now: float, error: Exception) -> None:
        frames = traceback.extract_tb(error.__traceback__)[-4:]
        self.node, self.event, self.error = node, what, f"{type(error).__name__}: {error}"
        self.frames = [f"{'/'.join(f.filename.split('/')[-3:])}:{f.lineno} in {f.name}: {f.line}" for f in frames]
        super().__init__(
            "core-exception",
            f"{node} raised {self.error} handling {what} at {now:.3f} s "
            f"({self.frames[-1] if self.frames else 'no frame'})",
        )


class World:
    def __init__(self, network: Network) -> None:
        self.now = 0.0
        self.network = network
        self.nodes: dict[str, Peer] = {}
        self.traffic = Traffic()
        self.persist_hooks: list[PersistHook] = []
        self.send_hooks: list[Callable[[str, str, Envelope], None]] = []  # (src, dst, envelope)
        self.durable_hooks: list[Callable[[str, GamesDurable, float], None]] = []
        self.drop_hooks: list[Callable[[str, DropGames, float], None]] = []  # before the games go
        self.rot_hooks: list[Callable[[str, tuple[str, str], tuple[int, ...], float], None]] = []  # rot found
        self.lost_hooks: list[Callable[[str, tuple[str, str], tuple[int, ...], float], None]] = []  # GamesLost
        self.backup_hooks: list[Callable[[str, RunBackup, float], None]] = []
        self.backup_seconds = 1.0  # how long a simulated backup runs
        self.ignored: dict[str, int] = {}  # effects this world does not interpret, by type
        self.events = 0
        self._heap: list[tuple[float, int, int, str, object]] = []
        self._seq = itertools.count()
        self._timers: dict[tuple[str, str], int] = {}  # (node, timer name) -> live entry's seq
        self._trace = hashlib.blake2b(digest_size=16)
        self._same_time = 0
        self.disks: dict[str, Disk] = {}
        self.down: set[str] = set()  # crashed: events for it are dropped
        self.paused: dict[str, list[tuple[int, object]]] = {}  # stopped: its events wait here
        self.event_hooks: list[Callable[[str, float], None]] = []  # (node, now) after each event a node handled
        self.store_hooks: list[
            Callable[[str, str, str, tuple[int, ...], float], None]
        ] = []  # node, origin, key, new seqs
        self.fsync_latency = 0.0  # seconds from StoreGames to the write being durable
        self.clocks: dict[str, tuple[float, float]] = {}  # node -> (offset, rate) of its local clock
        self.recent: deque[str] = deque(maxlen=RECENT)
        self.trace_sink: Callable[[str], None] | None = None
        self.status_hooks: list[Callable[[str, str, float], None]] = []  # (node, crash|restart|pause|resume, now)
        self.relays: Relays | None = None  # hosts nobody can dial and their links (`sim/relays.py`)

    # -- setup -------------------------------------------------------------------------------

    def add(self, peer: Peer) -> None:
        if peer.me in self.nodes:
            raise SimulationError(f"node {peer.me!r} added twice")
        self.nodes[peer.me] = peer
        self.disks[peer.me] = Disk()
        self.traffic.add_node(peer.me)

    def start(self, node: str) -> None:
        peer = self.nodes[node]
        self.interpret(node, self._core(node, "start", lambda: peer.start(self.local_now(node))))

    def _core(self, node: str, what: str, call: Callable[[], list[Effect]]) -> list[Effect]:
        """Run one step of `node`'s core. An exception in it is a bug of the core, reported
        like a checker's violation (the run stops with the host, the event and the frames)."""
        try:
            return call()
        except Exception as e:
            raise CoreRaised(node, what, self.now, e) from e

    # -- faults ----------------------------------------------------------------------------

    def crash(self, node: str) -> None:
        """The process dies: its timers and unprocessed messages are gone, its disk stays."""
        self.down.add(node)
        self.paused.pop(node, None)
        for key in [k for k in self._timers if k[0] == node]:
            del self._timers[key]
        self._record(f"{self.now!r} crash {node}")
        if self.relays is not None:
            self.relays.crashed(node)
        self._status(node, "crash")

    def restart(self, peer: Peer) -> None:
        """A new process for a crashed node (built by the caller, usually from its disk)."""
        self.down.discard(peer.me)
        self.nodes[peer.me] = peer
        self._record(f"{self.now!r} restart {peer.me}")
        self.start(peer.me)
        self._status(peer.me, "restart")

    def wipe(self, node: str) -> None:
        """The node's disk is lost (a spot host replaced, a disk failure)."""
        self.disks[node] = self.disks[node].blank()
        self._record(f"{self.now!r} wipe {node}")

    def pause(self, node: str) -> None:
        """SIGSTOP: the process keeps its state but runs nothing until `resume`."""
        self.paused.setdefault(node, [])
        self._record(f"{self.now!r} pause {node}")
        self._status(node, "pause")

    def resume(self, node: str) -> None:
        """SIGCONT: timers that fell due while stopped fire now, in their order."""
        held = self.paused.pop(node, [])
        self._record(f"{self.now!r} resume {node}")
        for kind, payload in held:
            if kind == _TIMER:
                key = (node, cast(TimerFired, payload).name)
                if key in self._timers:
                    continue  # replaced meanwhile
                self._timers[key] = self._push(self.now, _TIMER, node, payload)
            else:
                self._push(self.now, kind, node, payload)
        self._status(node, "resume")

    def _status(self, node: str, what: str) -> None:
        for hook in self.status_hooks:
            hook(node, what, self.now)

    def is_up(self, node: str) -> bool:
        return node not in self.down and node not in self.paused

    def at(self, when: float, action: Action) -> None:
        """Run a scenario action at virtual time `when`."""
        self._push(max(when, self.now), _ACTION, "", action)

    # -- clocks ------------------------------------------------------------------------------

    def set_clock(self, node: str, offset: float = 0.0, rate: float = 1.0) -> None:
        """`node`'s clock reads `offset + rate * t` at world time t (rate 1 + 1e-4: 100 ppm fast)."""
        if rate <= 0:
            raise SimulationError("a clock rate must be positive")
        if (offset, rate) == (0.0, 1.0):
            self.clocks.pop(node, None)
        else:
            self.clocks[node] = (offset, rate)

    def local_now(self, node: str) -> float:
        c = self.clocks.get(node)
        return self.now if c is None else c[0] + c[1] * self.now

    def _world_time(self, node: str, local: float) -> float:
        """The first world time at which `node`'s clock reads `local` or later (a timer never
        fires before its time on the clock that set it, as a monotonic clock passes it)."""
        c = self.clocks.get(node)
        if c is None:
            return local
        t = (local - c[0]) / c[1]
        while c[0] + c[1] * t < local:
            t = math.nextafter(t, math.inf)
        return t

    def deliver(self, node: str, event: Event) -> bool:
        """Hand `node` a local event (a command, a finished transfer) now; a stopped process
        gets it when it is resumed, a dead one never (False)."""
        if node in self.down:
            return False
        if node in self.paused:
            self.paused[node].append((_LOCAL, event))
            return True
        peer = self.nodes[node]
        self.interpret(node, self._core(node, _describe(event), lambda: peer.handle(event, self.local_now(node))))
        return True

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
        if kind == _TIMER:  # the payload's type goes with its kind (`_push`)
            name = cast(TimerFired, payload).name
            if self._timers.get((node, name)) != seq:
                return False  # replaced by a later SetTimer of the same name
            del self._timers[(node, name)]
        if kind != _ACTION and node in self.down:
            return False
        if kind != _ACTION and node in self.paused:
            if kind != _MESSAGE:
                self.paused[node].append((kind, payload))  # fires on resume
            return False  # a message to a stopped process times out at its sender
        if at == self.now:
            self._same_time += 1
            if self._same_time > LIVELOCK_EVENTS:
                raise SimulationError(
                    f"livelock: over {LIVELOCK_EVENTS} events at t={at!r}, the last {_describe(payload)} on {node}"
                )
        else:
            self._same_time = 0
        self.now = at
        self.events += 1
        if kind == _ACTION:
            self._record(f"{at!r} action")
            cast(Action, payload)()
            return True
        if kind == _FSYNC:
            proc, eff = cast(tuple[Peer, StoreGames], payload)
            if self.nodes[node] is not proc:
                return True  # the process that wrote it is gone: so is the write
            event: Event = self._store(node, eff)
        else:
            event = cast(Event, payload)
        self._record(f"{at!r} {node} {_describe(event)}")
        peer = self.nodes[node]
        now = at if node not in self.clocks else self.local_now(node)
        self.interpret(node, self._core(node, _describe(event), lambda: peer.handle(event, now)))
        for hook in self.event_hooks:
            hook(node, at)
        return True

    def schedule_message(self, at: float, node: str, event: MessageReceived) -> None:
        self._push(at, _MESSAGE, node, event)

    def schedule_local(self, at: float, node: str, event: Event) -> None:
        self._push(at, _LOCAL, node, event)

    def _record(self, line: str) -> None:
        self._trace.update(line.encode() + b"\n")
        self.recent.append(line)
        if self.trace_sink is not None:
            self.trace_sink(line)

    def _store(self, node: str, eff: StoreGames) -> GamesStored:
        seqs, hw = self.disks[node].store_games(eff.origin, eff.config_key, eff.games)
        for hook in self.store_hooks:
            hook(node, eff.origin, eff.config_key, seqs, self.now)
        return GamesStored(
            origin=eff.origin, config_key=eff.config_key, seqs=tuple(q for q, _ in eff.games), hw=hw, ack_to=eff.ack_to
        )

    def interpret(self, node: str, effects: list[Effect]) -> None:
        """Carry out `node`'s effects at the current virtual time."""
        for eff in effects:
            match eff:
                case Send():
                    self._send(node, eff.to, eff.envelope)
                case SetTimer():
                    key = (node, eff.name)
                    at = eff.at if node not in self.clocks else self._world_time(node, eff.at)
                    self._timers[key] = self._push(max(at, self.now), _TIMER, node, TimerFired(name=eff.name))
                case Persist():
                    self.disks[node].persist(eff)
                    self.persisted(node, eff)
                case SaveVote():
                    self.disks[node].vote = (eff.term, eff.voted_for)
                case StoreGames():
                    if self.fsync_latency:  # the write is durable, and the process told, only then
                        self._push(self.now + self.fsync_latency, _FSYNC, node, (self.nodes[node], eff))
                    else:
                        self._push(self.now, _LOCAL, node, self._store(node, eff))  # the answer comes as an event
                case ReadGames():
                    if self.disks[node].rotten.get((eff.origin, eff.config_key)):  # found on the way out
                        self.scrub(node, (eff.origin, eff.config_key))
                    log = self.disks[node].games.get((eff.origin, eff.config_key), {})
                    games = tuple((q, log[q]) for q in range(eff.first, eff.last + 1) if q in log)
                    self._push(
                        self.now,
                        _LOCAL,
                        node,
                        GamesRead(origin=eff.origin, config_key=eff.config_key, games=games, reply_to=eff.reply_to),
                    )
                case GamesDurable():
                    for hook in self.durable_hooks:
                        hook(node, eff, self.now)
                case GamesLost():
                    for lost_hook in self.lost_hooks:
                        lost_hook(node, (eff.origin, eff.config_key), eff.seqs, self.now)
                    hw = self.disks[node].mark_lost(eff.origin, eff.config_key, eff.seqs)
                    stored = GamesStored(origin=eff.origin, config_key=eff.config_key, seqs=(), hw=hw)
                    self._push(self.now, _LOCAL, node, stored)
                case DropGames():
                    for drop_hook in self.drop_hooks:
                        drop_hook(node, eff, self.now)
                    self.disks[node].drop_games(self.nodes[node].replication.origin, eff.config_key, eff.through)
                case RunBackup():
                    for backup_hook in self.backup_hooks:
                        backup_hook(node, eff, self.now)
                    self._backup(node, eff)
                case Emit() | StartTransfer() | CancelTransfer():  # a log line; transfers: `sim/files.py`
                    name = type(eff).__name__
                    self.ignored[name] = self.ignored.get(name, 0) + 1
                case _:
                    unknown(eff)

    def scrub(self, node: str, stream: tuple[str, str] | None = None) -> int:
        """`node` verifies its stream log (one stream's, on a read): bad copies are dropped and
        the core told (`GamesCorrupt`), as the daemon's `scrub_segment`. Returns how many."""
        disk, n = self.disks[node], 0
        for (origin, key), seqs in disk.take_rotten(stream).items():
            n += len(seqs)
            for hook in self.rot_hooks:
                hook(node, (origin, key), seqs, self.now)
            ev = GamesCorrupt(origin=origin, config_key=key, seqs=seqs, hw=disk.high_water(origin, key))
            self._push(self.now, _LOCAL, node, ev)
        return n

    def _backup(self, node: str, eff: RunBackup) -> None:
        proc, started = self.nodes[node], self.local_now(node)
        done = BackupFinished(
            index=eff.index,
            term=eff.term,
            ok=True,
            bytes=0,
            target=f"sim:{eff.index}",
            started_at=started,
            seconds=self.backup_seconds,
        )

        def finish() -> None:
            if self.nodes[node] is proc and node not in self.down:
                self._push(self.now, _LOCAL, node, done)

        self.at(self.now + self.backup_seconds, finish)

    def persisted(self, node: str, eff: Persist) -> None:
        """Tell the hooks that `node` made these changes durable (also for scenario writes)."""
        for hook in self.persist_hooks:
            hook(node, eff, self.now)

    def _send(self, src: str, dst: str, env: Envelope) -> None:
        size = self.traffic.record(src, env)
        for hook in self.send_hooks:
            hook(src, dst, env)
        if dst not in self.nodes:
            self._push(self.now + self.network.model.deadline, _LOCAL, src, SendFailed(peer=dst, reason="unknown host"))
            return
        if self.relays is not None and dst in self.relays.nat and src != dst:
            self.relays.send(src, dst, env, size)  # nobody can dial it: over one of its links
            return
        route = self.network.route(src, dst, size, self.now)
        if dst in self.down:  # connection refused, at once
            self._push(
                self.now + self.network.model_for(src, dst).latency, _LOCAL, src, SendFailed(peer=dst, reason="refused")
            )
            return
        if route.failed or dst in self.paused:
            self._push(
                self.now + self.network.model_for(src, dst).deadline,
                _LOCAL,
                src,
                SendFailed(peer=dst, reason="unreachable"),
            )
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
