"""File pulls in the simulator: what the daemon does with `StartTransfer` and `CancelTransfer`.

Two models, one interface (`start`, `cancel`, `started`, `hooks`):

* `FilePulls` — whole files: a pull takes `size / rate` seconds and then succeeds if one of its
  sources is still up in the process it had at the start, else fails (its connections broke).
* `LimitedPulls` — pieces through the hosts' byte budgets: every host has an egress and an
  ingress `ringmesh.core.bandwidth.Limiter` (its burst `default_burst`, as the daemon's `Throttle`
  sets it), and a pull asks its source's egress, then its own ingress, for each piece of at most
  one chunk (a burst, if smaller), `depth` pieces in flight, as the daemon's server and pull
  await their `Throttle`s. A piece arrives one link latency after both grants. A source that
  goes away mid-pull is replaced by the next live one of the pull's sources; none left: the
  pull fails. A *corrupt* source's pieces fail verification: the pull fails at once (the
  planner retries it later, from the sources in a new random order). A pull that completes
  onto a disk without room fails ("no space left"). Grants are reported to `grant_hooks`
  `(host, "egress" | "ingress", bytes, now)` so that a checker can hold every link to its limit.

A NAT'd source (`sim/relays.py`) serves only while it has a link up to a relay (a reverse
fetch over that link); without one it counts as a source that is down.

A pull dies with its own process (a crash, a restart) or with a `CancelTransfer`. A completed
pull installs the file on the node's disk (`Disk.install`) and tells the peer `FileStored`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ringmesh.core import CancelTransfer, Effect, FileStored, ItemKey, Peer, StartTransfer, TransferFailed
from ringmesh.core.bandwidth import Limiter, Priority, default_burst
from ringmesh.core.messages import Event

from .world import World

EGRESS, INGRESS = "egress", "ingress"
PullKey = tuple[str, ItemKey, str]  # (node, item, digest)


class FilePulls:
    """Whole-file pulls at one fixed rate (see the module's docstring)."""

    def __init__(self, world: World, rate: float) -> None:
        self.world, self.rate = world, rate
        self.started: list[tuple[float, str, StartTransfer]] = []
        self.hooks: list[Callable[[str, StartTransfer, float], None]] = []
        self.running: dict[PullKey, int] = {}  # -> token
        self.corrupt: set[str] = set()  # unused here: a whole-file pull has no pieces to check
        self._tokens = 0

    def start(self, node: str, e: StartTransfer) -> None:
        self.started.append((self.world.now, node, e))
        for hook in self.hooks:
            hook(node, e, self.world.now)
        self._tokens += 1
        key, token = (node, e.version.item, e.version.digest), self._tokens
        self.running[key] = token
        procs = {n: self.world.nodes.get(n) for n in (node, *e.sources)}  # the processes at the start
        self.world.at(self.world.now + e.version.size / self.rate, lambda: self._finish(key, token, procs, e))

    def cancel(self, node: str, e: CancelTransfer) -> None:
        self.running.pop((node, e.item, e.digest), None)

    def node_down(self, node: str) -> None:
        """`node`'s process died: its pulls die with it (they are checked lazily here)."""

    def _finish(self, key: PullKey, token: int, procs: dict[str, Peer | None], e: StartTransfer) -> None:
        node = key[0]
        if self.running.get(key) != token or self.world.nodes[node] is not procs[node] or node in self.world.down:
            return  # cancelled, or its process is gone (a stopped one learns of it when resumed)
        del self.running[key]
        v = e.version
        if any(
            self.world.is_up(s) and self.world.nodes.get(s) is procs[s] and _serves(self.world, s) for s in e.sources
        ):
            self.world.disks[node].install(v.item, v.digest, v.size)
            done: Event = FileStored(item=v.item, digest=v.digest)
        else:
            done = TransferFailed(item=v.item, digest=v.digest, reason="every source is down")
        self.world.deliver(node, done)


def _serves(world: World, host: str) -> bool:
    """Can `host` serve chunks now? A NAT'd host only over a link (`sim/relays.py`)."""
    return world.relays is None or world.relays.reachable(host)


class _Link:
    """One direction of one host: a core `Limiter`, polled at the times it names."""

    def __init__(
        self,
        world: World,
        host: str,
        direction: str,
        rate: int,
        burst: int,
        hooks: list[Callable[[str, str, int, float], None]],
        limiter: Limiter | None = None,
    ) -> None:
        self.world, self.host, self.direction, self.hooks = world, host, direction, hooks
        self.rate, self.burst = rate, burst
        self.limiter = limiter if limiter is not None else Limiter(rate, burst)
        self.waiting: dict[int, tuple[int, Callable[[int], None]]] = {}  # request id -> (bytes, on grant)
        self.wake: float | None = None  # when a poll is scheduled

    def request(self, flow: object, cls: Priority, nbytes: int, on_grant: Callable[[int], None]) -> int:
        rid = self.limiter.submit(flow, cls, nbytes, self.world.now)
        self.waiting[rid] = (nbytes, on_grant)
        self.poll()
        return rid

    def cancel(self, rid: int) -> None:
        if self.waiting.pop(rid, None) is not None:
            self.limiter.cancel(rid)

    def poll(self) -> None:
        p = self.limiter.poll(self.world.now)
        for rid in p.granted:
            nbytes, on_grant = self.waiting.pop(rid)
            for hook in self.hooks:
                hook(self.host, self.direction, nbytes, self.world.now)
            on_grant(rid)
        if p.wake_at is not None and (self.wake is None or p.wake_at < self.wake or self.wake <= self.world.now):
            self.wake = p.wake_at
            self.world.at(p.wake_at, self._woken)

    def _woken(self) -> None:
        if self.wake is not None and self.world.now >= self.wake:
            self.wake = None
            self.poll()


@dataclass(eq=False)
class _Pull:
    node: str
    start: StartTransfer
    proc: Peer
    sources: list[str]  # still to try, in the planner's order
    cls: Priority
    source: str | None = None
    source_proc: Peer | None = None
    sent: int = 0  # bytes asked for
    done: int = 0  # bytes arrived and verified
    in_flight: int = 0
    rids: set[tuple[str, str, int]] = field(default_factory=set)  # (host, direction, request id) waiting
    alive: bool = True


class LimitedPulls:
    """Pulls in pieces through each host's egress and ingress limiter (see the module's docstring)."""

    def __init__(
        self,
        world: World,
        rates: Callable[[str], tuple[int, int]],
        *,
        depth: int = 2,
        burst: Callable[[int], int] = default_burst,
        limiter: Callable[[int, int], Limiter] = Limiter,
    ) -> None:
        self.world, self.rates, self.depth, self.burst, self.make_limiter = world, rates, depth, burst, limiter
        self.started: list[tuple[float, str, StartTransfer]] = []
        self.hooks: list[Callable[[str, StartTransfer, float], None]] = []
        self.grant_hooks: list[Callable[[str, str, int, float], None]] = []
        self.done_hooks: list[Callable[[str, ItemKey, str, float], None]] = []  # (node, item, digest, now)
        self.links: dict[tuple[str, str], _Link] = {}
        self.running: dict[PullKey, _Pull] = {}
        self.corrupt: set[str] = set()  # hosts whose pieces fail verification
        self.counts = {
            "started": 0,
            "stored": 0,
            "failed": 0,
            "cancelled": 0,
            "source_switches": 0,
            "corrupt_pieces": 0,
            "no_space": 0,
        }

    def link(self, host: str, direction: str) -> _Link:
        key = (host, direction)
        lk = self.links.get(key)
        if lk is None:
            rate = self.rates(host)[0 if direction == EGRESS else 1]
            burst = self.burst(rate)
            lk = self.links[key] = _Link(
                self.world, host, direction, rate, burst, self.grant_hooks, self.make_limiter(rate, burst)
            )
        return lk

    # -- the interface ------------------------------------------------------------------------

    def start(self, node: str, e: StartTransfer) -> None:
        now = self.world.now
        self.started.append((now, node, e))
        for hook in self.hooks:
            hook(node, e, now)
        self.counts["started"] += 1
        key = (node, e.version.item, e.version.digest)
        old = self.running.pop(key, None)
        if old is not None:
            self._drop(old)
        p = _Pull(node, e, self.world.nodes[node], list(e.sources), Priority.parse(e.priority))
        self.running[key] = p
        if self._next_source(p):
            self._pump(p)

    def cancel(self, node: str, e: CancelTransfer) -> None:
        p = self.running.pop((node, e.item, e.digest), None)
        if p is not None:
            self.counts["cancelled"] += 1
            self._drop(p)

    def node_down(self, node: str) -> None:
        for key in [k for k in self.running if k[0] == node]:
            self._drop(self.running.pop(key))

    # -- a pull ---------------------------------------------------------------------------------

    def _up(self, host: str, proc: Peer | None) -> bool:
        """`host` runs `proc` and serves (a stopped source serves nothing)."""
        return self.world.is_up(host) and self.world.nodes.get(host) is proc and _serves(self.world, host)

    def _alive(self, host: str, proc: Peer | None) -> bool:
        """`host` still runs `proc`, perhaps stopped (it learns how its pulls ended on resume)."""
        return host not in self.world.down and self.world.nodes.get(host) is proc

    def _next_source(self, p: _Pull) -> bool:
        """Take the next live source; none left: the pull fails (one deadline later)."""
        while p.sources:
            s = p.sources.pop(0)
            if s in self.world.nodes and self.world.is_up(s) and _serves(self.world, s):
                if p.source is not None:
                    self.counts["source_switches"] += 1
                p.source, p.source_proc = s, self.world.nodes[s]
                p.sent = p.done  # pieces under way from the old source are asked again
                return True
        self._fail(p, "every source is down", delay=self.world.network.model.deadline)
        return False

    def _pump(self, p: _Pull) -> None:
        size, chunk = p.start.version.size, p.start.version.chunk_size
        src = p.source
        assert src is not None
        out, inn = self.link(src, EGRESS), self.link(p.node, INGRESS)
        while p.alive and p.in_flight < self.depth and p.sent < size:
            piece = min(size - p.sent, chunk, out.burst, inn.burst)
            p.sent += piece
            p.in_flight += 1
            self._ask(p, out, inn, src, piece)
        if p.alive and size == 0 and p.in_flight == 0:
            self._complete(p)

    def _ask(self, p: _Pull, out: _Link, inn: _Link, src: str, piece: int) -> None:
        """One piece: the source's egress grants it, then our ingress, then it travels."""
        flow = (p.node, p.start.version.item, p.start.version.digest)

        def egress_granted(rid: int) -> None:
            p.rids.discard((src, EGRESS, rid))
            if p.alive:
                r = inn.request(flow, p.cls, piece, ingress_granted)
                if r in inn.waiting:
                    p.rids.add((p.node, INGRESS, r))

        def ingress_granted(rid: int) -> None:
            p.rids.discard((p.node, INGRESS, rid))
            if p.alive:
                lat = self.world.network.model_for(src, p.node).latency
                self.world.at(self.world.now + lat, lambda: self._arrived(p, src, piece))

        r = out.request(flow, p.cls, piece, egress_granted)
        if r in out.waiting:
            p.rids.add((src, EGRESS, r))

    def _arrived(self, p: _Pull, src: str, piece: int) -> None:
        if not p.alive or not self._alive(p.node, p.proc):
            return
        if src != p.source:
            return  # from a source we left; its piece is asked again
        p.in_flight -= 1
        if not self._up(src, p.source_proc):  # the connection broke: the rest from another source
            for host, direction, rid in sorted(p.rids):
                self.links[(host, direction)].cancel(rid)
            p.rids.clear()
            p.in_flight = 0
            if self._next_source(p):
                self._pump(p)
            return
        if src in self.corrupt:
            self.counts["corrupt_pieces"] += 1
            self._fail(p, f"a chunk from {src} failed verification")
            return
        p.done += piece
        if p.done >= p.start.version.size:
            self._complete(p)
        else:
            self._pump(p)

    def _complete(self, p: _Pull) -> None:
        v = p.start.version
        disk = self.world.disks[p.node]
        if disk.capacity and disk.free() < v.size:
            self.counts["no_space"] += 1
            self._fail(p, "no space left on the disk")
            return
        self._end(p)
        disk.install(v.item, v.digest, v.size)
        self.counts["stored"] += 1
        for hook in self.done_hooks:
            hook(p.node, v.item, v.digest, self.world.now)
        self.world.deliver(p.node, FileStored(item=v.item, digest=v.digest))

    def _fail(self, p: _Pull, reason: str, delay: float = 0.0) -> None:
        self._end(p)
        self.counts["failed"] += 1
        v = p.start.version
        event = TransferFailed(item=v.item, digest=v.digest, reason=reason)
        if delay:
            self.world.at(
                self.world.now + delay, lambda: self._alive(p.node, p.proc) and self.world.deliver(p.node, event)
            )
        else:
            self.world.deliver(p.node, event)

    def _end(self, p: _Pull) -> None:
        key = (p.node, p.start.version.item, p.start.version.digest)
        if self.running.get(key) is p:
            del self.running[key]
        self._drop(p)

    def _drop(self, p: _Pull) -> None:
        p.alive = False
        for host, direction, rid in sorted(p.rids):
            self.links[(host, direction)].cancel(rid)
        p.rids.clear()


class FileWorld(World):
    """The world, carrying out file pulls too (`pulls`: either model above)."""

    def __init__(
        self, network, rate: float = 100e6, pulls: Callable[[World], FilePulls | LimitedPulls] | None = None
    ) -> None:
        super().__init__(network)
        self.pulls: FilePulls | LimitedPulls = pulls(self) if pulls is not None else FilePulls(self, rate)

    def interpret(self, node: str, effects: list[Effect]) -> None:
        rest: list[Effect] = []
        for eff in effects:
            if isinstance(eff, StartTransfer):
                self.pulls.start(node, eff)
            elif isinstance(eff, CancelTransfer):
                self.pulls.cancel(node, eff)
            else:
                rest.append(eff)
        super().interpret(node, rest)
