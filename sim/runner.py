"""One scenario run: the cluster, its workload, its fault plan, the checkers, two phases.

    safety phase    [0, seconds): workload and faults run; every checker watches every step;
                    the first violation stops the run
    liveness phase  at `seconds` faults stop (pending ends of faults are void), the network
                    heals, paused hosts resume, crashed ones restart (spot hosts come back
                    as replacements with empty disks), filled disks are freed; no new work.
                    The cluster must then converge (`invariants.convergence`) within
                    `liveness_bound` seconds, or the report says what did not and why.

Random sources, all derived from the seed (plus those of `Cluster`):
    faults        the plan (`sim/plan.py`), unless a plan is given
    disks/clocks  each host's disk fill and clock, drawn once at the start
    games/<host>  each self-play host's game arrivals, sizes and configs
    promotions    model and NPZ publications
so that a shrunk plan changes only what the removed faults did.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from typing import Any, Callable

from ringmesh.core import ItemKey, Peer, catalog, keys
from ringmesh.core import election as el
from ringmesh.core.bandwidth import Limiter, default_burst
from ringmesh.core.messages import DiskMeasured, DrainRequested

from .checkers import BackupSchedules, BroadcastFencing, NatFalseDeath, NatNeverLeads, RetainedGames
from .cluster import Cluster
from .files import EGRESS, LimitedPulls
from .gossip import _gc_paused
from .invariants import Violation
from .invariants.convergence import Convergence
from .invariants.disks import DiskCaps
from .invariants.election import OneLeaderPerTerm
from .invariants.games import DurableGames
from .invariants.links import LinkLimits
from .plan import FaultEvent, Plan, describe, dumps, generate
from .relays import Relays
from .rot import Rot
from .scenario import MB, Scenario
from .world import CoreRaised, SimulationError

BLOBS = 24  # distinct game payloads (shared objects: sizes are real, memory is not)


def run_scenario(
    sc: Scenario,
    seed: int,
    *,
    plan: Plan | None = None,
    trace: Callable[[str], None] | None = None,
    peer_factory: Callable[..., Peer] = Peer,
    limiter: Callable[[int, int], Limiter] = Limiter,
    liveness: bool = True,
) -> dict[str, Any]:
    """Run `sc` with `seed` (and `plan`, else the seed's plan); the report as plain data.

    `peer_factory` and `limiter` replace the core's classes (a test's deliberately broken
    rule); `trace` gets every line of the trace."""
    with _gc_paused():
        return Run(sc, seed, plan=plan, trace=trace, peer_factory=peer_factory, limiter=limiter).run(liveness=liveness)


class Run:
    def __init__(
        self,
        sc: Scenario,
        seed: int,
        *,
        plan: Plan | None = None,
        trace: Callable[[str], None] | None = None,
        peer_factory: Callable[..., Peer] = Peer,
        limiter: Callable[[int, int], Limiter] = Limiter,
    ) -> None:
        self.sc, self.seed = sc, seed
        self.plan = list(plan) if plan is not None else generate(sc, seed)
        self.rates = {h.name: (h.egress, h.ingress) for h in sc.hosts}
        records = {h.name: {"role": h.role, "provider": h.provider, "ephemeral": h.ephemeral} for h in sc.hosts}
        self.c = c = Cluster(
            len(sc.hosts),
            seed=seed,
            link=sc.link,
            config=sc.peer,
            voters=sc.voters(),
            ids=sc.ids,
            records=records,
            roles={h.name: h.role for h in sc.hosts},
            ephemeral={h.name for h in sc.hosts if h.ephemeral},
            files=True,
            pulls=lambda w: LimitedPulls(w, self.rates.__getitem__, limiter=limiter),
            peer_factory=peer_factory,
        )
        self.world = w = c.world
        self.pulls: LimitedPulls = w.pulls  # type: ignore[attr-defined]
        w.trace_sink = trace
        w.fsync_latency = sc.fsync
        w.network.models = dict(sc.pairs)
        w.network.group = {h.name: h.provider for h in sc.hosts}
        rng = random.Random(f"{seed}/disks")
        for h in sc.hosts:
            d = w.disks[h.name]
            d.capacity, d.base = h.disk_capacity, int(h.disk_capacity * rng.uniform(*h.disk_used) / 100)
        rng = random.Random(f"{seed}/clocks")
        for h in sc.hosts:
            off, drift = rng.uniform(-1, 1) * sc.clock_offset, rng.uniform(-1, 1) * sc.clock_drift
            w.set_clock(h.name, off, 1.0 + drift)

        # -- checkers -----------------------------------------------------------------------
        self.leaders = OneLeaderPerTerm(c.peer)
        w.event_hooks.append(self.leaders.on_event)
        w.send_hooks.append(self.leaders.on_send)
        game_hosts = [h.name for h in sc.hosts if h.role in ("training", "backup") and not h.excluded]
        self.games = DurableGames(
            min_copies=sc.peer.min_copies,
            persistent=lambda h: not sc.host(h).ephemeral,
            disks=w.disks.__getitem__,
            origin_of=lambda h: c.peer(h).replication.origin,
            game_hosts=game_hosts,
        )
        w.store_hooks.append(self.games.on_store)
        w.durable_hooks.append(self.games.on_durable)
        w.lost_hooks.append(self.games.on_lost)
        self.links = LinkLimits(
            lambda h, d: (self.rates[h][0 if d == EGRESS else 1], default_burst(self.rates[h][0 if d == EGRESS else 1]))
        )
        self.pulls.grant_hooks.append(self.links.on_grant)
        self.caps = DiskCaps(sc.peer.max_disk_usage_percent)
        self.pulls.hooks.append(self.caps.on_start)
        self.fencing = BroadcastFencing(c.peer, local=w.local_now)
        w.persist_hooks.append(self.fencing.on_persist)
        self.pulls.hooks.append(self.fencing.on_start)
        self.retained = RetainedGames(
            self.games,
            retention=sc.peer.retention_seconds,
            disks=w.disks.__getitem__,
            game_hosts=game_hosts,
            persistent=lambda h: not sc.host(h).ephemeral,
            peers=c.peer,
            up=w.is_up,
        )
        w.drop_hooks.append(self.retained.on_drop)
        self.backups = BackupSchedules(c.peer, local=w.local_now)
        w.backup_hooks.append(self.backups.on_run)
        self.convergence = Convergence(c, self.games)
        rot = sc.faults.get("rot")  # stored games that go bad, and the nodes' scrubs (none without)
        self.rot = Rot(w, seed, sc.ids, float(rot.get("scrub_period", 60.0))) if rot is not None else None

        # -- hosts nobody can dial: their links, and two checkers (nothing of it without them) --
        nat = sc.peer.nat & set(sc.ids)
        self.relays: Relays | None = None
        self.nat_deaths: NatFalseDeath | None = None
        self.link_changes: dict[str, int] = {}
        if nat:
            self.relays = w.relays = Relays(
                w,
                nat,
                {h.name: h.provider for h in sc.hosts},
                frozenset(h.name for h in sc.hosts if h.ephemeral or h.excluded),
            )
            never = NatNeverLeads(nat, c.peer)
            w.event_hooks.append(never.on_event)
            w.persist_hooks.append(never.on_persist)
            window = NatFalseDeath.window_for(sc.peer.membership, len(sc.hosts))
            self.nat_deaths = deaths = NatFalseDeath(nat, sc.ids, c.peer, w.network, window)
            w.persist_hooks.append(deaths.on_persist)
            w.status_hooks.append(deaths.on_status)
            self.relays.hooks.append(deaths.on_links)
            self.relays.hooks.append(
                lambda h, links, now: self.link_changes.__setitem__(h, self.link_changes.get(h, 0) + 1)
            )

        # -- observers for the report ----------------------------------------------------------
        self.outages: list[dict[str, Any]] = []  # crashes and terminations: detection, failover
        self._open: dict[str, dict[str, Any]] = {}  # host -> its outage under way
        w.persist_hooks.append(self._on_persist)
        self.published: dict[tuple[ItemKey, str], dict[str, Any]] = {}  # file versions
        self.stored: dict[tuple[ItemKey, str], dict[str, float]] = {}
        self.pulls.done_hooks.append(self._on_stored)

        # -- fault state ---------------------------------------------------------------------------
        self.healed = False
        self.owner: dict[tuple[str, str], int] = {}  # (what, host) -> index of the fault event that holds it
        self.blocks: dict[tuple[str, str], int] = {}  # link -> how many partitions block it
        self.losses: dict[int, float] = {}
        self.wiped: set[str] = set()  # hosts down with their disk lost: back as replacements
        self.applied: list[int] = []  # plan indexes applied so far
        self.skipped = 0  # events that found their host in no state to take them
        blob_rng = random.Random(f"{seed}/blobs")
        lo, hi = sc.workload.game_kb
        self.blobs = [bytes(max(1, int(1000 * _loguniform(blob_rng, lo, hi)))) for _ in range(BLOBS)]
        self.games_published = 0
        self.violation: dict[str, Any] | None = None

    # -- the run ----------------------------------------------------------------------------------

    def run(self, liveness: bool = True) -> dict[str, Any]:
        sc, c, w = self.sc, self.c, self.world
        report: dict[str, Any] = {
            "scenario": sc.name,
            "seed": self.seed,
            "hosts": len(sc.hosts),
            "voters": len(sc.voters()),
            "params": _params(sc),
        }
        report["plan"] = {
            "events": len(self.plan),
            "by_kind": _by_kind(self.plan),
            "digest": hashlib.blake2b(dumps(self.plan).encode(), digest_size=8).hexdigest(),
        }
        live: dict[str, Any] | None = None
        try:
            c.start()
            if self.relays is not None:
                self.relays.start()
            self._schedule()
            if self.rot is not None:
                self.rot.start()
            w.run(until=sc.seconds)
            before = w.traffic.snapshot()
            self._heal()
            report["safety"] = {"seconds": sc.seconds, "violation": None}
            if liveness:
                live = self._liveness(before)
            self.games.check_all()
            self.retained.check_end(w.now)
        except (Violation, AssertionError) as e:
            self.violation = self._violation(e)
        except SimulationError as e:
            self.violation = self._violation(e, checker="simulator")
        if self.violation is not None:
            report["safety"] = {"seconds": sc.seconds, "violation": self.violation}
        report["liveness"] = live
        report["metrics"] = self._metrics()
        report["totals"] = self._totals()
        report["trace"] = w.trace_digest()
        report["ok"] = self.violation is None and (live is None or bool(live["converged"]))
        return report

    def _liveness(self, before) -> dict[str, Any]:
        sc, w, conv = self.sc, self.world, self.convergence
        start = w.now
        deadline = start + sc.liveness_bound
        while not conv.done():
            if w.now >= deadline:
                return {
                    "converged": False,
                    "bound_s": sc.liveness_bound,
                    "not_converged": {k: v for k, v in conv.status().items() if not v["ok"]},
                }
            w.run(until=min(deadline, w.now + sc.check_every))
        t = w.now - start
        return {"converged": True, "seconds": round(t, 3), "rounds": round(t / sc.peer.gossip_interval, 2)}

    def _violation(self, e: BaseException, checker: str | None = None) -> dict[str, Any]:
        w = self.world
        name = checker or getattr(e, "checker", "assertion")
        message = getattr(e, "message", None) or str(e)
        faults = [self.plan[i].describe() for i in self.applied]
        out = {
            "checker": name,
            "message": message,
            "seed": self.seed,
            "step": w.events,
            "time": round(w.now, 6),
            "faults_applied": faults[-20:],
            "faults_applied_count": len(faults),
            "trace": list(w.recent),
        }
        if isinstance(e, CoreRaised):
            out.update(host=e.node, event=e.event, exception=e.error, frames=e.frames)
        return out

    # -- scheduling -----------------------------------------------------------------------------

    def _schedule(self) -> None:
        sc, w = self.sc, self.world
        for i, e in enumerate(self.plan):
            w.at(e.at, functools.partial(self._apply, i))
        wl = sc.workload
        if wl.games_per_second > 0:
            for h in sc.hosts:
                if h.role == "selfplay" and not h.excluded:
                    rng = random.Random(f"{self.seed}/games/{h.name}")
                    w.at(rng.expovariate(wl.games_per_second), functools.partial(self._game, h.name, rng))
        prng = random.Random(f"{self.seed}/promotions")
        for kind, every in (("model", wl.model_every), ("npz", wl.npz_every)):
            if every > 0:
                for k in range(1, int(sc.seconds // every) + 1):
                    w.at(k * every, functools.partial(self._promote, kind, k, prng.random()))
        rng = random.Random(f"{self.seed}/measure")
        for name in sc.ids:
            self._measure(name)
            w.at(rng.uniform(0, sc.disk_report_interval), functools.partial(self._measure_loop, name))

    def _game(self, host: str, rng: random.Random) -> None:
        wl = self.sc.workload
        key, blob = rng.choice(wl.configs), self.blobs[rng.randrange(BLOBS)]
        if self.healed:
            return
        if self.world.is_up(host):
            self.c.publish_games(host, key, [blob])
            self.games_published += 1
        self.world.at(self.world.now + rng.expovariate(wl.games_per_second), lambda: self._game(host, rng))

    def _promote(self, kind: str, k: int, r: float) -> None:
        """A training host publishes a new version of a model (promoted: broadcast) or an NPZ."""
        sc, wl = self.sc, self.sc.workload
        if self.healed:
            return
        rng = random.Random(f"{self.seed}/promotions/{kind}/{k}")
        publishers = [
            h.name
            for h in sc.hosts
            if not h.ephemeral and not h.excluded and h.role in ("training", "coordinator") and self.world.is_up(h.name)
        ]
        if not publishers:
            return
        host = publishers[int(r * len(publishers))]
        config = wl.configs[rng.randrange(min(wl.models, len(wl.configs)))]
        lo, hi = wl.model_mb if kind == "model" else wl.npz_mb
        size = int(_loguniform(rng, lo, hi) * MB)
        item = ItemKey(kind, f"canonical_{config}.pth" if kind == "model" else f"{config}.npz")
        digest = hashlib.blake2b(f"{self.seed}/{kind}/{k}".encode(), digest_size=16).hexdigest()
        broadcast = kind == "model" and wl.model_broadcast
        self.published[(item, digest)] = {"at": self.world.now, "size": size, "publisher": host, "broadcast": broadcast}
        self.c.publish_file(host, item, digest, size, broadcast=broadcast)

    def _measure_loop(self, host: str) -> None:
        self._measure(host)
        self.world.at(self.world.now + self.sc.disk_report_interval, lambda: self._measure_loop(host))

    def _measure(self, host: str) -> None:
        """As the daemon's `_measure_disk`: the disk's figures, told to the peer."""
        if not self.world.is_up(host):
            return
        d = self.world.disks[host]
        pct = d.used_percent()
        self.caps.measured(host, pct, self.world.now)
        self.c.command(host, DiskMeasured(used_percent=pct, free_bytes=d.free()))

    # -- faults -----------------------------------------------------------------------------------

    def _apply(self, i: int) -> None:
        if self.healed:
            return
        e, w, c = self.plan[i], self.world, self.c
        self.applied.append(i)
        if e.kind in ("crash", "spot"):
            (h,) = e.hosts
            if h in w.down:
                self.skipped += 1
                return
            if e.kind == "spot" and e.notice:
                c.command(h, DrainRequested())  # SIGTERM: drain within the notice, then gone
                w.at(e.at + e.notice, lambda: self._terminate(i, h))
            else:
                self._terminate(i, h)
        elif e.kind == "pause":
            (h,) = e.hosts
            if not w.is_up(h):
                self.skipped += 1
                return
            w.pause(h)
            self.owner[("pause", h)] = i
            w.at(e.at + e.duration, lambda: self._end(i, "pause", h, lambda: w.resume(h)))
        elif e.kind == "partition":
            links = _links(e)
            self._block(links, +1)
            if e.period:
                self._flap(i, links, on=True, until=e.at + e.duration)
            else:
                w.at(e.at + e.duration, functools.partial(self._unblock, links))
        elif e.kind == "loss":
            self.losses[i] = e.loss
            w.network.extra_loss = min(1.0, sum(self.losses.values()))
            self._network_changed()
            w.at(e.at + e.duration, lambda: self._unloss(i))
        elif e.kind == "disk_fill":
            (h,) = e.hosts
            d = w.disks[h]
            d.filler = max(0, int(d.capacity * e.percent / 100) - (d.used - d.filler))
            self.owner[("fill", h)] = i
            w.at(e.at + e.duration, lambda: self._end(i, "fill", h, lambda: setattr(w.disks[h], "filler", 0)))
        elif e.kind == "rot":
            if self.rot is None or not self.rot.apply(i, e):
                self.skipped += 1
        elif e.kind == "corrupt":
            (h,) = e.hosts
            self.pulls.corrupt.add(h)
            self.owner[("corrupt", h)] = i
            if w.is_up(h):
                self._garbage(h, i)
            w.at(e.at + e.duration, lambda: self._end(i, "corrupt", h, lambda: self.pulls.corrupt.discard(h)))
        else:
            raise SimulationError(f"unknown fault kind {e.kind!r}")

    def _terminate(self, i: int, h: str) -> None:
        if self.healed or h in self.world.down:
            return
        e = self.plan[i]
        self._outage_begins(h)
        self.c.crash(h)
        self.owner[("down", h)] = i
        if e.kind == "spot":
            self.games.wiped(h)
            self.caps.forget(h)  # a replacement's disk is new: it measures it after its start
            self.world.wipe(h)
            self.wiped.add(h)
        self.world.at(self.world.now + e.duration, lambda: self._end(i, "down", h, lambda: self._restart(h)))

    def _restart(self, h: str) -> None:
        """The process starts again (a spot host's replacement: on the blank disk it got)."""
        self.wiped.discard(h)
        self.c.restart(h)
        self._outage_ends(h)
        self._measure(h)

    def _end(self, i: int, what: str, h: str, undo: Callable[[], object]) -> None:
        if self.healed or self.owner.get((what, h)) != i:
            return  # healed already, or a later fault took the host over
        del self.owner[(what, h)]
        undo()

    def _block(self, links: list[tuple[str, str]], delta: int) -> None:
        net = self.world.network
        for link in links:
            n = self.blocks.get(link, 0) + delta
            if n > 0:
                self.blocks[link] = n
                net.blocked.add(link)
            else:
                self.blocks.pop(link, None)
                net.blocked.discard(link)
        self.world._record(f"{self.world.now!r} partition {'+' if delta > 0 else '-'}{len(links)} links")
        self._network_changed()

    def _network_changed(self) -> None:
        if self.nat_deaths is not None:
            self.nat_deaths.network_changed(self.world.now)

    def _flap(self, i: int, links: list[tuple[str, str]], on: bool, until: float) -> None:
        """A flapping partition: on for half a period, off for half, until `until` (then off)."""
        if self.healed:
            return
        w, half = self.world, self.plan[i].period / 2
        if w.now + half >= until:
            w.at(until, functools.partial(self._unblock, links, on))
            return

        def flip() -> None:
            if not self.healed:
                self._block(links, -1 if on else +1)
                self._flap(i, links, not on, until)

        w.at(w.now + half, flip)

    def _unblock(self, links: list[tuple[str, str]], blocked: bool = True) -> None:
        """The end of a partition (if it is on and the scenario's end did not heal it already)."""
        if blocked and not self.healed:
            self._block(links, -1)

    def _unloss(self, i: int) -> None:
        if not self.healed and self.losses.pop(i, None) is not None:
            self.world.network.extra_loss = min(1.0, sum(self.losses.values()))
            self._network_changed()

    def _garbage(self, h: str, i: int) -> None:
        """A corrupting host's facts: values that do not decode (bad msgpack, wrong types, bad
        digests) under keys every reader parses. Nothing it says is a lie that decodes."""
        rng = random.Random(f"{self.seed}/garbage/{i}")
        junk = [
            b"\xc1",
            bytes(rng.getrandbits(8) for _ in range(12)),
            catalog.pack({"d": 7, "s": "x"}),
            catalog.pack({"hw": "many"}),
            b"\x92\x01\x02",
            catalog.pack({"d": "zz" * 16, "s": -1, "c": 0, "t": 1}),
        ]
        names = [
            f"{keys.VERSION}model/corrupt-{i}.pth",
            f"{keys.HOLDING}model/corrupt-{i}.pth",
            f"{keys.PULLING}npz/corrupt-{i}.npz",
            f"{keys.HW}{h}.99/hex8_2p",
            f"{keys.CLAIM}{self.sc.ids[i % len(self.sc.ids)]}",
            f"{keys.HW}bad origin/{i}",
        ]
        for key, value in zip(names, junk):
            self.c.put(h, key, value)

    # -- liveness -------------------------------------------------------------------------------

    def _heal(self) -> None:
        """Faults stop: heal, resume, restart, free the disks; no new work either."""
        w, c = self.world, self.c
        self.healed = True
        w._record(f"{w.now!r} heal")
        w.network.blocked.clear()
        self.blocks.clear()
        self.losses.clear()
        w.network.extra_loss = 0.0
        self._network_changed()
        self.pulls.corrupt.clear()
        for h in sorted(w.paused):
            w.resume(h)
        for h in sorted(w.down):
            self.wiped.discard(h)
            c.restart(h)
            self._outage_ends(h)
        for h in self.sc.ids:
            w.disks[h].filler = 0
            self._measure(h)
        self.owner.clear()

    # -- observers -------------------------------------------------------------------------------

    def _outage_begins(self, h: str) -> None:
        leader = self.leaders.elected[-1] if self.leaders.elected else None
        was_leader = leader is not None and leader[2] == h and self.c.peer(h).election.role == el.LEADER
        o = {
            "host": h,
            "at": self.world.now,
            "leader": was_leader,
            "first_dead": None,
            "seen_dead": {},
            "back": None,
            "term": leader[1] if leader else 0,
        }
        self.outages.append(o)
        self._open[h] = o

    def _outage_ends(self, h: str) -> None:
        o = self._open.pop(h, None)
        if o is not None:
            o["back"] = self.world.now

    def _on_persist(self, node: str, eff, now: float) -> None:
        if not self._open:
            return
        for ch in eff.changes:
            for f in ch.upserts:
                if f.key.startswith(keys.CLAIM) and f.key[len(keys.CLAIM) :] in self._open:
                    v = catalog.unpack(f.value) or {}
                    if v.get("s") == "dead":
                        o = self._open[f.key[2:]]
                        if o["first_dead"] is None:
                            o["first_dead"] = now
                        o["seen_dead"].setdefault(node, now)

    def _on_stored(self, node: str, item: ItemKey, digest: str, now: float) -> None:
        self.stored.setdefault((item, digest), {})[node] = now

    # -- the report --------------------------------------------------------------------------------

    def _metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "traffic": self._traffic(),
            "detection": self._detection(),
            "failover": self._failover(),
            "games": self._games(),
            "files": self._files(),
            "faults": {"applied": len(self.applied), "skipped": self.skipped},
            **({"rot": self.rot.report()} if self.rot is not None else {}),
            "checks": {
                "pulls_checked_against_disk_cap": self.caps.checked,
                "terms_with_a_leader": len(self.leaders.leaders),
                "broadcast_directives": len(self.fencing.directives),
                "critical_pulls_checked": self.fencing.critical,
            },
        }
        if self.relays is not None and self.nat_deaths is not None:
            out["relays"] = {
                "nat_hosts": len(self.relays.nat),
                **self.relays.stats,
                "link_changes_by_host": dict(sorted(self.link_changes.items())),
                "links_up_at_end": {h: list(v) for h, v in self.relays.links.items()},
                "dead_claims_about_nat_hosts": self.nat_deaths.claims,
            }
        return out

    def _traffic(self) -> dict[str, Any]:
        w, n, T = self.world, len(self.sc.hosts), max(self.world.now, 1e-9)
        gossip = sum(w.traffic.bytes.values())
        files = sum(v for (h, d), v in self.links.granted.items() if d == EGRESS)
        return {
            "seconds": round(T, 3),
            "gossip_and_games_bytes_per_host_per_s": round(gossip / n / T, 1),
            "file_bytes_per_host_per_s": round(files / n / T, 1),
            "bytes_by_kind": dict(sorted(w.traffic.bytes_by_kind.items())),
        }

    def _detection(self) -> dict[str, Any]:
        first, everyone = [], []
        for o in self.outages:
            if o["first_dead"] is not None:
                first.append(o["first_dead"] - o["at"])
                everyone += [t - o["at"] for t in o["seen_dead"].values()]
        return {
            "outages": len(self.outages),
            "detected": len(first),
            "first_dead_claim_s": _summary(first),
            "dead_claim_held_per_observer_s": _summary(everyone),
        }

    def _failover(self) -> dict[str, Any]:
        times = []
        for o in self.outages:
            if o["leader"]:
                nxt = [t for t, term, _ in self.leaders.elected if term > o["term"] and t >= o["at"]]
                if nxt:
                    times.append(nxt[0] - o["at"])
        return {
            "leader_outages": sum(1 for o in self.outages if o["leader"]),
            "new_leader_elected_s": _summary(times),
            "terms": len(self.leaders.leaders),
        }

    def _games(self) -> dict[str, Any]:
        """Freshness: from a game's publication to durable, to the first game host, and to every
        host the router places games on at the end of the run (NFS-covered hosts and hosts above
        the disk cap are not among them)."""
        g = self.games
        targets = set(self.c.peer(self.c.ids[0]).game_placement().targets) & g.game_hosts
        durable, first, alls = [], [], []
        for stream, pub in g.published.items():
            dur = g.durable_at.get(stream, {})
            at = g.at_game_hosts.get(stream, {})
            origin_host = stream[0].rpartition(".")[0]
            want = targets - {origin_host}
            for q, t in pub.items():
                if q in dur:
                    durable.append(dur[q] - t)
                held = at.get(q, {})
                if held:
                    first.append(min(held.values()) - t)
                if want and want <= held.keys():
                    alls.append(max(held[h] for h in want) - t)
        return {
            "published": self.games_published,
            "durable": sum(g.durable.values()),
            "to_durable_s": _summary(durable),
            "to_first_game_host_s": _summary(first),
            "to_every_game_host_s": _summary(alls),
            "game_hosts": len(targets),
        }

    def _files(self) -> dict[str, Any]:
        out = []
        for (item, digest), p in sorted(self.published.items(), key=lambda kv: kv[1]["at"]):
            stored = self.stored.get((item, digest), {})
            rate = self.rates[p["publisher"]][0]
            entry = {
                "item": str(item),
                "size_mb": round(p["size"] / MB, 1),
                "broadcast": p["broadcast"],
                "at": round(p["at"], 3),
                "hosts_stored": len(stored),
                "S/B_s": round(p["size"] / rate, 3),
            }
            if stored:
                times = sorted(t - p["at"] for t in stored.values())
                entry["p50_stored_s"] = round(times[len(times) // 2], 3)
                entry["last_stored_s"] = round(times[-1], 3)
                entry["ratio_to_S/B"] = round(times[-1] / (p["size"] / rate), 3)
            out.append(entry)
        return {"versions": out, "pulls": dict(self.pulls.counts)}

    def _totals(self) -> dict[str, Any]:
        w = self.world
        return {
            "simulated_seconds": round(w.now, 6),
            "events": w.events,
            "messages": w.traffic.total_messages(),
            "network": {
                "lost": w.network.stats.lost,
                "duplicated": w.network.stats.duplicated,
                "blocked": w.network.stats.blocked,
            },
            "ignored_effects": dict(sorted(w.ignored.items())),
        }


def _links(e: FaultEvent) -> list[tuple[str, str]]:
    a, b = e.groups
    links = [(x, y) for x in a for y in b]
    if not e.one_way:
        links += [(y, x) for x in a for y in b]
    return links


def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    if lo <= 0 or lo == hi:
        return rng.uniform(lo, hi)
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _summary(xs: list[float]) -> dict[str, Any]:
    if not xs:
        return {"n": 0}
    xs = sorted(xs)
    pick = lambda q: round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)  # noqa: E731
    return {"n": len(xs), "p50": pick(0.5), "p99": pick(0.99), "max": round(xs[-1], 3)}


def _by_kind(plan: Plan) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in plan:
        out[e.kind] = out.get(e.kind, 0) + 1
    return dict(sorted(out.items()))


def _params(sc: Scenario) -> dict[str, Any]:
    p = sc.peer
    return {
        "seconds": sc.seconds,
        "liveness_bound": sc.liveness_bound,
        "gossip_interval_s": p.gossip_interval,
        "fanout": p.fanout,
        "min_copies": p.min_copies,
        "max_disk_usage_percent": p.max_disk_usage_percent,
        "fsync_ms": sc.fsync * 1000,
        "clock_offset_ms": sc.clock_offset * 1000,
        "clock_drift_ppm": sc.clock_drift * 1e6,
        "games_per_second_per_selfplay_host": sc.workload.games_per_second,
    }


__all__ = ["Run", "run_scenario", "describe"]
