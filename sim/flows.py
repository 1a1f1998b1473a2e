"""A chunked file broadcast as flows over bandwidth-limited links (a flow-level simulator).

One publisher holds a file of `size` bytes in chunks (`recipe.chunk_size_for`, 4 MiB). Each of
N receivers runs the real scheduler, `ringmesh.core.swarm.Swarm`, unchanged (`PULL`; a plan after
every delivery, announcement and start of a chunk, and at least every `PULL.tick`), with "any of
these" requests (`Swarm.plan_asks`; `asks=0`: one named chunk per request, as
`ringmesh.node.files.transfer.pull` asks today). Every sender, the publisher included, picks the
chunk and the next requester with its own `ringmesh.core.swarm.Seeding`; the requester hears which
chunk with its first byte (`Swarm.started`) and renews a request naming chunks it got meanwhile.
Its sources are the publisher (the whole file) and its peer set, which tell it each chunk they
verify (`Swarm.announce`) and each chunk they ask for (`Swarm.expect`); every message takes one
`latency`.

* Each host has an uplink and a downlink (bytes/s). A chunk under way is a *flow* on its
  sender's uplink and its receiver's downlink; rates are the max-min fair allocation, made
  again at every flow start and end and constant in between, so the next completion is
  computed exactly (no time step). A flow holds both links at once (propagation is not on
  the links): a request starts its flow one latency after it was planned, and the chunk is
  verified one latency after its last byte left.
* A sender serves at most `uploads` flows at once; later requests wait at the sender (as streams
  wait at an HTTP/2 server with a stream limit), in the order `Seeding.next` gives (`asks=0`:
  first come first served), in flight for the requester as `Swarm` counts them.
  A cancel (the endgame's losing copy, a chunk not wanted any more) drops a queued request or
  stops a running flow; the bytes it sent are wasted.
* Peer sets: a random undirected graph of average degree `peers` (every receiver when
  N - 1 <= peers). A real pull watches every peer pulling the version, but `Swarm.plan` costs
  O(chunks x sources), ~35 ms with 1,000 sources: hours per run at N = 1000. The publisher is a
  source for every receiver (the manifest names it), or for `publisher_peers` of them.
* Not modelled: loss, failures, bans, timeouts, disks, TCP ramp-up, message bytes; finished
  receivers named to all as sources by the manifest (they serve their peer set only). One seed,
  one run: draws come from `random.Random(seed)`, events run in (time, sequence) order.

The allocation: `_fill` is progressive filling (rates grow together; a full link freezes its
flows: it is their *bottleneck*). `FlowNet` re-solves only the flows on the links a change
touched, the others held, then checks the border: if every flow there still has a bottleneck
(a full link on which no flow is faster), the allocation is max-min fair, hence the global one
(it is unique); if not, the failing links join the region. `check=True` verifies each change.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import math
import random
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

from ringmesh.core import recipe
from ringmesh.core.swarm import PULL, Ask, Seeding, Swarm

from .gossip import _gc_paused
from .world import SimulationError

MB = 1_000_000
TOL = 1e-9  # relative to a link's capacity: float rounding, not physics
Ends = Mapping[int, tuple[int, int]]  # flow -> (uplink, downlink)


def _fill(flows: Iterable[int], ends: Ends, caps: Mapping[int, float]) -> dict[int, tuple[float, int]]:
    """Progressive filling of `flows` over links of capacity `caps[link]`: {flow: (rate, bottleneck)}."""
    members: dict[int, list[int]] = {}
    for f in flows:
        for link in ends[f]:
            members.setdefault(link, []).append(f)
    rem = {link: float(caps[link]) for link in members}
    cnt = {link: len(m) for link, m in members.items()}
    heap = [(max(rem[link], 0.0) / cnt[link], link) for link in members]
    heapq.heapify(heap)
    out: dict[int, tuple[float, int]] = {}
    while heap:  # each push follows a freeze, so at most links + 2 x flows entries
        share, link = heapq.heappop(heap)
        if not cnt[link] or share != max(rem[link], 0.0) / cnt[link]:
            continue  # stale: the link's share changed since
        for f in [f for f in members[link] if f not in out]:
            out[f] = (share, link)
            for k in ends[f]:
                rem[k], cnt[k] = rem[k] - share, cnt[k] - 1
                if k != link and cnt[k]:
                    heapq.heappush(heap, (max(rem[k], 0.0) / cnt[k], k))
    return out


def violation(ends: Ends, rate: Mapping[int, float], cap: Sequence[float], rel: float = 1e-6) -> str | None:
    """Why `rate` is not the max-min fair allocation (None if it is): a link carries more than
    its capacity, or a flow has no bottleneck (a full link on which no flow is faster)."""
    load, top = [0.0] * len(cap), [0.0] * len(cap)
    for f, links in ends.items():
        for link in links:
            load[link], top[link] = load[link] + rate[f], max(top[link], rate[f])
    for link in range(len(cap)):
        if load[link] > cap[link] * (1 + rel):
            return f"link {link} carries {load[link]!r} > capacity {cap[link]!r}"
    for f, links in ends.items():
        if not any(load[k] >= cap[k] * (1 - rel) and rate[f] >= top[k] - rel * cap[k] for k in links):
            return f"flow {f} at {rate[f]!r} has no bottleneck on links {links}"
    return None


class FlowNet:
    """The flows in progress and their max-min fair rates, kept current incrementally."""

    def __init__(self, cap: Sequence[float]) -> None:
        self.cap = list(cap)
        self.on: list[dict[int, None]] = [{} for _ in self.cap]  # link -> its flows, in order
        self.ends: dict[int, tuple[int, int]] = {}  # flow -> (uplink, downlink)
        self.rate: dict[int, float] = {}
        self.solves = 0  # regions solved, widenings included

    def change(self, add: Iterable[tuple[int, tuple[int, int]]] = (), remove: Iterable[int] = ()) -> dict[int, float]:
        """Start flows `add` ((flow, (uplink, downlink))), end `remove`: {flow: its new rate}."""
        region: dict[int, None] = {}
        for f in remove:
            for link in self.ends.pop(f):
                del self.on[link][f]
                region[link] = None
            del self.rate[f]
        for f, links in add:
            self.ends[f], self.rate[f] = links, -1.0
            for link in links:
                self.on[link][f] = None
                region[link] = None
        return self._rebalance(region)

    def _rebalance(self, region: dict[int, None]) -> dict[int, float]:
        on, ends, rate, cap = self.on, self.ends, self.rate, self.cap
        for _ in range(len(cap) + 1):  # the region grows every time round
            self.solves += 1
            flows = {g: None for link in region for g in on[link]}
            border = {k: None for g in flows for k in ends[g] if k not in region}
            # what flows outside the region leave of each link (all of it, on the region's own)
            caps = {k: cap[k] - sum(rate[g] for g in on[k] if g not in flows) for k in [*region, *border]}
            new = _fill(flows, ends, caps)
            stats: dict[int, tuple[float, float]] = {}  # link -> (load, fastest flow) under `new`

            def neck(g: int, r: float) -> bool:  # flow g at rate r: a full link, none faster on it?
                for k in ends[g]:
                    st = stats.get(k)
                    if st is None:
                        rs = [new[h][0] if h in new else rate[h] for h in on[k]]
                        st = stats[k] = (sum(rs), max(rs))
                    if st[0] >= cap[k] * (1 - TOL) and r >= st[1] - TOL * cap[k]:
                        return True
                return False

            # A bottleneck in the region holds (all its flows were re-solved); others: check them.
            bad = [
                link
                for link in border
                if not all(
                    (new[g][1] in region or neck(g, new[g][0])) if g in new else neck(g, rate[g]) for g in on[link]
                )
            ]
            if not bad:
                break
            region.update(dict.fromkeys(bad))
        else:
            raise SimulationError("the allocation region outgrew the network")
        changed = {g: r for g, (r, _) in new.items() if r != rate[g]}
        rate.update(changed)
        return changed


@dataclass(frozen=True, slots=True, kw_only=True)
class BroadcastParams:
    nodes: int  # receivers; the publisher is one more host
    seed: int
    size: int = 400 * MB  # bytes
    chunk: int | None = None  # None: recipe.chunk_size_for(size)
    link_bytes_per_s: float = 100 * MB  # B: every uplink and downlink
    receiver_uplink_bytes_per_s: float | None = None  # None: B
    latency_ms: float = 20.0  # one way
    per_peer: int = PULL.per_peer
    endgame_after: float = PULL.endgame_after
    uploads: int = PULL.uploads  # flows a sender serves at once; further requests queue ...
    extra_uploads: int = PULL.extra_uploads  # ... but up to this many more while its uplink is not full
    peers: int = 8  # average peer-set size
    publisher_peers: int | None = None  # receivers that have the publisher as a source; None: all
    asks: int = PULL.asks_per_peer  # "any of" requests open per source; 0: one named chunk each, FCFS
    ask_width: int = PULL.ask_width  # chunks named in one such request

    def chunk_bytes(self) -> int:
        return self.chunk or recipe.chunk_size_for(self.size)


_REQUEST, _DONE, _DELIVER, _ANNOUNCE, _EXPECT, _CANCEL, _TICK, _STARTED = range(8)
_S, _D, _C, _LEFT, _SINCE, _RATE, _VER = range(7)  # a flow: [.., bytes left at `since`, .., DONE version]


def run_broadcast(p: BroadcastParams, *, check: bool = False, trace: list | None = None) -> dict[str, object]:
    """One broadcast's report (JSON-ready, deterministic). `check`: verify the allocation and every
    skipped plan (slow). `trace`: a list to get (t0, t1, sender, receiver, chunk, rate) of each flow."""
    with _gc_paused():
        return _Broadcast(p, check, trace).run()


def _peer_sets(n: int, degree: int, rng: random.Random) -> list[list[int]]:
    """Receivers 1..n: each links to degree // 2 (at least 1) others drawn at random, both ways."""
    if n - 1 <= degree:
        return [[]] + [[q for q in range(1, n + 1) if q != r] for r in range(1, n + 1)]
    sets: list[set[int]] = [set() for _ in range(n + 1)]
    k = max(1, degree // 2)
    for r in range(1, n + 1):
        for q in [q for q in rng.sample(range(1, n + 1), k + 1) if q != r][:k]:
            sets[r].add(q)
            sets[q].add(r)
    return [sorted(s) for s in sets]


class _Broadcast:
    def __init__(self, p: BroadcastParams, check: bool, trace: list | None) -> None:
        if min(p.nodes, p.size, p.per_peer, p.uploads, p.peers, p.chunk_bytes(), p.publisher_peers or 1) < 1:
            raise ValueError("nodes, size, chunk, per_peer, uploads, peers, publisher_peers must be at least 1")
        self.p, self.check, self.trace = p, check, trace
        n, self.now, self.progress, self.rng = p.nodes, 0.0, 0.0, random.Random(p.seed)
        self.lat, self.chunk = p.latency_ms / 1000, p.chunk_bytes()
        self.n_chunks = recipe.chunk_count(p.size, self.chunk)
        self.size = [recipe.chunk_span(c, p.size, self.chunk)[1] for c in range(self.n_chunks)]
        b, up = p.link_bytes_per_s, p.receiver_uplink_bytes_per_s or p.link_bytes_per_s
        # host h: link 2h is its uplink, 2h + 1 its downlink; host 0 is the publisher
        self.net = FlowNet([x for h in range(n + 1) for x in ((b if h == 0 else up), b)])
        self.names = ["pub"] + [f"r{r:0{len(str(n))}d}" for r in range(1, n + 1)]
        self.index = {name: h for h, name in enumerate(self.names)}
        self.nbrs = _peer_sets(n, p.peers, self.rng)
        self.swarms = [Swarm(self.n_chunks, random.Random(0))]  # the publisher's, unused
        for r in range(1, n + 1):
            self.swarms.append(
                Swarm(
                    self.n_chunks,
                    random.Random(self.rng.getrandbits(64)),
                    per_peer=p.per_peer,
                    endgame_after=p.endgame_after,
                )
            )
            for q in self.nbrs[r]:
                self.swarms[r].source(self.names[q], set())
        self.seeding = [
            Seeding(self.n_chunks, uploads=p.uploads, extra_uploads=p.extra_uploads) for _ in range(n + 1)
        ]  # each host's side as a source
        everyone = range(1, n + 1)
        for r in everyone if p.publisher_peers is None else self.rng.sample(everyone, min(n, p.publisher_peers)):
            self.swarms[r].source("pub", None)
        self.heap: list[tuple] = []  # events: (time, sequence, kind, arguments)
        self.seq, self.fids = itertools.count(), itertools.count()
        self.flows: dict[int, list] = {}  # flow id -> flow
        self.by_key: dict[tuple[int, int, int], int] = {}  # request (sender, receiver, chunk) -> flow id
        self.queue: list[list[tuple[int, Ask, float]]] = [[] for _ in range(n + 1)]  # per sender: (r, ask, when)
        self.queued: set[tuple[int, int, int]] = set()  # of those, the ones not cancelled, by `_key`
        self.sent: dict[tuple[int, int, int], float] = {}  # flow (sender, receiver, chunk) -> when asked
        self.gave: set[tuple[int, int, int]] = set()  # (sender, receiver, chunk) sent whole
        self.sent_bytes = [0.0] * (n + 1)
        self.finish: dict[int, float] = {}  # receiver -> when it had the whole file
        self.first_copy: dict[int, float] = {}  # chunk -> when a receiver first verified it
        self.counts = dict(requests=0, flows=0, queued=0, cancelled=0, duplicates=0, renewed=0, plans=0, events=0)
        self.digest = hashlib.blake2b(digest_size=16)

    def _push(self, t: float, kind: int, args: tuple) -> None:  # ties run in the order pushed
        heapq.heappush(self.heap, (t, next(self.seq), kind, args))

    def run(self) -> dict[str, object]:
        n = self.p.nodes
        for r in range(1, n + 1):
            self._plan(r)
            self._push(self.rng.random() * PULL.tick, _TICK, (r,))  # each pull's loop has its own phase
        handlers = (
            self._request,
            self._done,
            self._deliver,
            self._announce,
            self._expect,
            self._cancel,
            self._tick,
            self._started,
        )
        bound = 100 * (n + 1) * (self.n_chunks + 10) * (self.p.per_peer + self.p.peers)
        stall = 60 + 1000 * self.chunk / min(self.net.cap)  # no chunk verified anywhere for so long
        while len(self.finish) < n:
            if not self.heap or self.counts["events"] >= bound or self.now - self.progress > stall:
                raise SimulationError(f"{n - len(self.finish)} receivers unfinished at t={self.now:.3f} s")
            self.counts["events"] += 1
            self.now, _, kind, args = heapq.heappop(self.heap)
            handlers[kind](*args)
        for fl in self.flows.values():  # copies still on the wire when the last receiver finished
            self._settle(fl)
            self.sent_bytes[fl[_S]] += self.size[fl[_C]] - fl[_LEFT]
        return self._report()

    def _plan(self, r: int, offers: list[tuple[str, Iterable[int] | None]] | None = None) -> None:
        """Receiver r plans, unless (outside the endgame, where time matters) no `offer` (a peer
        and the chunks it may now be asked for, None: all it holds) can give it a request: a
        plan asks for all it can, so nothing else can. `Swarm.plan` is most of the run time."""
        sw = self.swarms[r]
        if (
            offers is not None
            and len(sw.in_flight) + len(sw.have) < sw.n_chunks
            and (
                # "any of" requests: all it may have open are, and none needs renewing
                len(sw.in_flight) + len(sw.asks) >= sw.ask_limit and not sw.stale()
                if self.p.asks
                else not any(self._could_ask(sw, peer, chunks) for peer, chunks in offers)
            )
        ):
            if self.check and self._asks(sw):
                raise SimulationError(f"{self.names[r]} skipped a plan that had requests to make")
            return
        self.counts["plans"] += 1
        asked = self._asks(sw)
        for a in asked:
            self._push(self.now + self.lat, _REQUEST, (self.index[a.peer], r, a, self.now))
        if named := tuple(a.chunks[0] for a in asked if a.id < 0):  # the pull tells its watchers
            self._push(self.now + self.lat, _EXPECT, (r, named))  # what it is fetching (Swarm.expect)
        self.counts["requests"] += len(asked)

    def _asks(self, sw: Swarm) -> list[Ask]:
        if self.p.asks:
            return sw.plan_asks(self.now, self.p.asks, self.p.ask_width)
        return [Ask(peer, (c,), len(sw.have)) for peer, c in sw.plan(self.now)]  # today's pull

    @staticmethod
    def _could_ask(sw: Swarm, peer: str, chunks: Iterable[int] | None) -> bool:
        if chunks is None:  # all it holds
            held = sw.sources[peer]
            chunks = range(sw.n_chunks) if held is None else held
        return (
            sum(1 for a in sw.in_flight.values() if peer in a) < sw.per_peer  # a free slot
            and any(c not in sw.have and c not in sw.in_flight for c in chunks)
        )

    def _deliver(self, s: int, r: int, c: int) -> None:
        sw, t0 = self.swarms[r], self.sent.pop((s, r, c))
        if c in sw.have:
            self.counts["duplicates"] += 1  # an endgame copy that finished before its cancel came
            return
        self.digest.update(f"{self.now!r} {s} {r} {c};".encode())
        self.first_copy.setdefault(c, self.now)
        self.progress = self.now
        losers = sw.received(self.names[s], c, self.size[c], self.now - t0)
        for loser in losers:
            self._push(self.now + self.lat, _CANCEL, (self.index[loser], r, c))
        self._push(self.now + self.lat, _ANNOUNCE, (r, c))
        if self.queue[r]:  # as a source: a request naming c may wait for it
            self._serve(r)
        if sw.done:
            self.finish[r] = self.now
            for a in sw.asks.values():  # requests still open: withdrawn
                self._push(self.now + self.lat, _CANCEL, (self.index[a.peer], r, -1 - a.id))
        else:  # the source and the losers have a free slot again
            self._plan(r, [(peer, None) for peer in [self.names[s], *losers]])

    def _announce(self, r: int, c: int) -> None:
        for q in self.nbrs[r]:
            self.swarms[q].announce(self.names[r], c)
            if q not in self.finish:
                self._plan(q, [(self.names[r], (c,))])

    def _expect(self, r: int, chunks: tuple[int, ...]) -> None:
        for q in self.nbrs[r]:
            if q not in self.finish:
                for c in chunks:
                    self.swarms[q].expect(self.names[r], c, self.now)
                self._plan(q, [(self.names[r], chunks)])  # its pull wakes up: r may be asked for them

    def _tick(self, r: int) -> None:
        if r not in self.finish:  # the pull's loop wakes up: only the endgame can ask for more
            self._plan(r, [])
            self._push(self.now + PULL.tick, _TICK, (r,))

    @staticmethod
    def _key(s: int, r: int, a: Ask) -> tuple[int, int, int]:  # a request: its chunk, or -1 - its ask id
        return (s, r, a.chunks[0] if a.id < 0 else -1 - a.id)

    def _request(self, s: int, r: int, a: Ask, when: float) -> None:
        if a.renew:  # new chunks for a request that waits here; else it was served already
            key = self._key(s, r, a)
            if key in self.queued:
                self.counts["renewed"] += 1
                q = self.queue[s]
                i = next(
                    i for i, e in enumerate(q) if e[0] == r and e[1].id == a.id and self._key(s, r, e[1]) in self.queued
                )
                if a.chunks:
                    q[i] = (r, a, q[i][2])
                    self._serve(s)
                else:
                    self.queued.discard(key)
            return
        self.queue[s].append((r, a, when))
        self.queued.add(self._key(s, r, a))
        if not self._serve(s):
            self.counts["queued"] += 1

    def _serve(self, s: int) -> bool:
        """Sender s starts requests from its queue while it has a slot: whether it started any."""
        started = False
        while self._slot(s) and (add := self._next(s)):
            self._change(add=add)
            started = True
        return started

    def _start(self, s: int, r: int, a: Ask, when: float) -> list[tuple[int, tuple[int, int]]]:
        """Sender s serves request `a` of r: its `Seeding` picks the chunk (none if it sends
        every chunk named to r already)."""
        chunks = self._servable(s, r, a)
        if not chunks:
            self.counts["duplicates"] += 1
            return []
        c = self.seeding[s].choose(chunks, self._have(s))
        assert c is not None
        if a.id >= 0:  # r hears which chunk with its first byte
            self._push(self.now + self.lat, _STARTED, (s, r, a.id, c))
        self.sent[(s, r, c)] = when
        fid = next(self.fids)
        self.flows[fid] = [s, r, c, float(self.size[c]), self.now, 0.0, 0]
        self.by_key[(s, r, c)] = fid
        self.counts["flows"] += 1
        return [(fid, (2 * s, 2 * r + 1))]  # its sender's uplink, its receiver's downlink

    def _started(self, s: int, r: int, ask: int, c: int) -> None:
        sw = self.swarms[r]
        if r in self.finish:
            self._push(self.now + self.lat, _CANCEL, (s, r, c))
            return
        if sw.started(ask, c, self.now):
            self._push(self.now + self.lat, _EXPECT, (r, (c,)))
        else:  # not wanted (any more)
            self._push(self.now + self.lat, _CANCEL, (s, r, c))
        self._plan(r, [(self.names[s], None)])  # its request to s is served: another may go

    def _done(self, fid: int, version: int) -> None:
        if (fl := self.flows.get(fid)) is not None and fl[_VER] == version:  # else: stale
            fl[_LEFT] = 0.0  # what is left is float rounding
            self.gave.add((fl[_S], fl[_D], fl[_C]))
            self._end(fid)
            self._push(self.now + self.lat, _DELIVER, (fl[_S], fl[_D], fl[_C]))

    def _cancel(self, s: int, r: int, c: int) -> None:
        key = (s, r, c)
        if key in self.queued:
            self.queued.discard(key)  # skipped when it comes up in the queue
        elif c >= 0 and key in self.by_key:
            self.counts["cancelled"] += 1
            self.seeding[s].unsent(c)
            del self.sent[key]
            self._end(self.by_key[key])
        # else: finished already (its delivery counts as a duplicate) or a request served already

    def _end(self, fid: int) -> None:
        """Take flow `fid` off the links; its sender starts the next request in its queue."""
        fl = self.flows.pop(fid)
        s = fl[_S]
        self._settle(fl)
        self.sent_bytes[s] += self.size[fl[_C]] - fl[_LEFT]
        del self.by_key[(s, fl[_D], fl[_C])]
        self._change(add=self._next(s), remove=[fid])

    def _next(self, s: int) -> list[tuple[int, tuple[int, int]]]:
        """Sender s starts the next request in its queue (none if the queue is empty)."""
        add: list[tuple[int, tuple[int, int]]] = []
        q = self.queue[s]
        while q and not add:
            q[:] = [e for e in q if self._key(s, e[0], e[1]) in self.queued]  # drop the cancelled
            i = Seeding.next([e[1] for e in q], self._have(s)) if self.p.asks else (0 if q else None)
            if i is None:
                break
            r, a, when = q.pop(i)
            self.queued.discard(self._key(s, r, a))
            add = self._start(s, r, a, when)
        return add

    def _have(self, s: int) -> set[int] | None:
        return None if s == 0 else self.swarms[s].have

    def _servable(self, s: int, r: int, a: Ask) -> tuple[int, ...]:
        """The chunks `a` names that s is not sending to r already nor sent."""
        sending = {k[2] for k in self.by_key if k[0] == s and k[1] == r}
        return tuple(c for c in a.chunks if c not in sending and (s, r, c) not in self.gave)

    def _slot(self, s: int) -> bool:
        """Sender s may start another flow (`Seeding.may_start`; its own send rate it knows)."""
        on = self.net.on[2 * s]
        full = sum(self.net.rate[f] for f in on) >= self.net.cap[2 * s] * (1 - 1e-6)
        return self.seeding[s].may_start(len(on), full if self.p.asks else True)

    def _settle(self, fl: list) -> None:  # its bytes left, now, at the rate it had since `since`
        dt = self.now - fl[_SINCE]
        if dt > 0:
            fl[_LEFT] = max(0.0, fl[_LEFT] - fl[_RATE] * dt)
            if self.trace is not None:
                self.trace.append((fl[_SINCE], self.now, fl[_S], fl[_D], fl[_C], fl[_RATE]))
            fl[_SINCE] = self.now

    def _change(self, add: Iterable[tuple[int, tuple[int, int]]] = (), remove: Iterable[int] = ()) -> None:
        changed = self.net.change(add, remove)
        for fid, rate in changed.items():
            fl = self.flows[fid]
            self._settle(fl)
            fl[_RATE], fl[_VER] = rate, fl[_VER] + 1
            if rate > 0:
                self._push(self.now + fl[_LEFT] / rate, _DONE, (fid, fl[_VER]))
        if self.check and (why := violation(self.net.ends, self.net.rate, self.net.cap)):
            raise SimulationError(f"at t={self.now!r}: {why}")
        for s in sorted({self.flows[f][_S] for f in changed}):  # an uplink that is no longer full
            if self.queue[s] and self._slot(s) and (add := self._next(s)):
                self._change(add=add)

    def _report(self) -> dict[str, object]:
        p, n, c, b = self.p, self.p.nodes, self.chunk, self.p.link_bytes_per_s
        t = sorted(self.finish.values())
        bound, log_bound, moved = p.size / b, p.size / b + math.log2(n) * c / b, sum(self.sent_bytes)
        return {
            "scenario": "broadcast",
            "params": {**asdict(p), "chunk": c, "chunks": self.n_chunks},
            "last_completion_s": round(t[-1], 6),
            "bound_s": round(bound, 6),
            "bound_log_s": round(log_bound, 6),
            "ratio_to_bound": round(t[-1] / bound, 4),
            "ratio_to_log_bound": round(t[-1] / log_bound, 4),
            "completion_s": {
                "mean": round(sum(t) / n, 6),
                "p50": round(t[math.ceil(0.5 * n) - 1], 6),
                "p99": round(t[math.ceil(0.99 * n) - 1], 6),
                "min": round(t[0], 6),
            },
            "whole_file_in_swarm_s": round(max(self.first_copy.values()), 6),  # every chunk out once
            "publisher_copies": round(self.sent_bytes[0] / p.size, 4),
            "bytes_moved": round(moved),
            "bytes_moved_per_copy_needed": round(moved / (n * p.size), 4),
            "mean_peer_set": round(sum(len(s) for s in self.nbrs) / n, 2),
            "counts": {**self.counts, "solves": self.net.solves},
            "trace": self.digest.hexdigest(),
        }
