"""Membership and failure detection: SWIM probes, Lifeguard local health, claims on gossip.

Theory of operation
-------------------
Every `probe_interval` a host pings one member (round-robin over a shuffled list; a member
that appears, or comes back from the dead, mid-round joins this round at a random place, and a
member another host suspects is probed next, so its confirmation or refutation comes within a
probe period rather than a round of N periods). No ack
within `probe_timeout`: it asks `indirect_probes` other members to ping the target for it
(`PingReq`). No ack by the end of the period: it *suspects* the target. A host's view of
member X is a pure function of the manifest, so hosts whose manifests agree see the same
membership:

    X's own facts   alive = {i: n}   its liveness incarnation (raised to refute)
                    left  = {i: n}   it left gracefully at incarnation n
    any host H      m/X   = {s: "suspect" | "dead", i: n}   H's claim about X at incarnation n

    view(X) = LEFT    if X left at an incarnation >= its alive incarnation
              DEAD    elif some claim "dead" at incarnation >= X's alive incarnation
              SUSPECT elif some claim "suspect" at incarnation >= X's alive incarnation
              ALIVE   otherwise

A host that sees an active claim about itself refutes by raising its alive incarnation above
it. A suspected member is declared dead by a host once its local suspicion timeout runs out;
the timeout starts at `suspicion_max_mult` times the minimum and shrinks towards
the minimum (`suspicion_mult * log10(N) * probe_interval`) as more hosts independently suspect
the same member (Lifeguard). The local health multiplier (0..`max_local_health`) grows when this
host's own probes go unanswered, when it must refute, or when its timers fire late (a paused
process, a blocked loop), and stretches its probe timeouts: a slow host doubts itself before
it accuses others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from . import catalog, keys
from .errors import LocalProtocolError
from .hlc import HybridClock
from .manifest import MAX_NUMBER, Manifest, OriginChange
from .messages import Emit, MembershipMessage, Outbox, Ping, PingAck, PingReq, Timer

ALIVE, SUSPECT, DEAD, LEFT = "alive", "suspect", "dead", "left"


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.4
    indirect_probes: int = 3
    suspicion_mult: float = 2.0
    suspicion_max_mult: float = 6.0
    max_local_health: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise LocalProtocolError("need 0 < probe_timeout < probe_interval")
        if self.indirect_probes < 0 or self.suspicion_mult <= 0 or self.suspicion_max_mult < 1:
            raise LocalProtocolError("bad membership settings")


def _inc(m: Manifest, origin: str, key: str) -> int | None:
    raw = m.get(origin, key)
    v = catalog.unpack(raw) if raw is not None else None
    i = v.get("i") if v else None
    return i if isinstance(i, int) and 0 <= i <= MAX_NUMBER else None


def alive_incarnation(m: Manifest, x: str) -> int:
    return _inc(m, x, keys.ALIVE) or 0


def claims_about(m: Manifest, x: str, claimers: set[str] | None = None) -> list[tuple[str, str, int]]:
    """Active claims `(claimer, state, incarnation)` about `x`, in claimer order.

    `claimers` narrows the scan to the origins known to hold a claim about `x`.
    """
    inc, key, out = alive_incarnation(m, x), keys.CLAIM + x, []
    for origin in sorted(m.origins if claimers is None else claimers & m.origins.keys()):
        raw = m.get(origin, key)
        v = catalog.unpack(raw) if raw is not None else None
        # a claim at MAX_NUMBER or above could not be refuted (by a higher alive incarnation)
        if v and v.get("s") in (SUSPECT, DEAD) and isinstance(v.get("i"), int) and inc <= v["i"] < MAX_NUMBER:
            out.append((origin, v["s"], v["i"]))
    return out


def view_of(m: Manifest, x: str, claimers: set[str] | None = None) -> str:
    left = _inc(m, x, keys.LEFT)
    if left is not None and left >= alive_incarnation(m, x):
        return LEFT
    states = {s for _, s, _ in claims_about(m, x, claimers)}
    return DEAD if DEAD in states else SUSPECT if SUSPECT in states else ALIVE


class Membership:
    def __init__(
        self,
        me: str,
        manifest: Manifest,
        clock: HybridClock,
        rng: random.Random,
        config: MembershipConfig = MembershipConfig(),
    ) -> None:
        self.me, self.m, self.clock, self.rng, self.config = me, manifest, clock, rng, config
        # Both kept by `_observe`, which the manifest calls on every change, whoever makes it:
        self.claimers: dict[str, set[str]] = {}  # member -> origins holding a claim about it
        self._views: dict[str, str] = {}  # member -> its view, dropped when a fact it reads changes
        self._touched: set[str] = set()  # members whose facts changed since `_react` last looked
        self._gone: set[str] = set()  # members seen dead or left (`gone()`), kept as views change
        self._recheck: set[str] = set()  # members whose place in `_gone` must be looked at again
        self._revived: list[str] = []  # members that left `_gone`: they join the probe round
        self.version = 0  # moves whenever some member's view may have changed
        for origin, f in manifest.live_facts(keys.CLAIM):
            self.claimers.setdefault(f.key[len(keys.CLAIM) :], set()).add(origin)
        self._recheck |= manifest.origins.keys() | self.claimers.keys()  # a restart builds us after its load
        manifest.watch(self._observe)
        self.health = 0
        self.seq = 0
        self.order: list[str] = []  # this round's members not yet probed, popped from the end
        self.round: set[str] = set()  # every member in this round, probed or not
        self.urgent: list[str] = []  # members another host suspects: probed before the round goes on
        self._known_n = 0  # how many hosts `_next_target` last knew of (to spot new ones)
        self.probe: tuple[int, str, bool] | None = None  # (seq, target, acked)
        self.next_probe_at = float("inf")
        self.relays: dict[int, tuple[str, int, float]] = {}  # our seq -> (requester, their seq, at)
        self.suspect_since: dict[str, tuple[int, float]] = {}  # member -> (incarnation, since)
        self.stats = {"probes": 0, "probe_failures": 0, "refutations": 0, "suspicions": 0, "deaths_declared": 0}

    # -- views -----------------------------------------------------------------------------

    def view(self, x: str) -> str:
        if x == self.me:
            return ALIVE
        v = self._views.get(x)
        if v is None:
            v = self._views[x] = view_of(self.m, x, self.claimers.get(x, set()))
        return v

    def claims(self, x: str) -> list[tuple[str, str, int]]:
        return claims_about(self.m, x, self.claimers.get(x, set()))

    def gone(self) -> set[str]:
        """The members we see dead or left: kept as views change, not walked each round. Any
        other member we know of is alive or suspect. Shared: read it, do not modify it."""
        recheck, self._recheck = self._recheck, set()
        for x in sorted(recheck - {self.me}):  # sorted: `_revived` order feeds the rng
            if self.view(x) in (DEAD, LEFT):
                self._gone.add(x)
            elif x in self._gone:
                self._gone.discard(x)
                self._revived.append(x)
        return self._gone

    def sample_live(
        self, known: list[str], k: int, exclude: str | None = None, fit: Callable[[str], bool] | None = None
    ) -> list[str]:
        """Up to `k` distinct members of `known`, alive or suspect (and `fit`), drawn at random.

        Draws by rejection from `known` (O(k) while most members are live) and walks the list
        only when a few draws found too few: a cluster mostly gone is the rare case."""
        gone, out = self.gone(), list[str]()
        if not known or k <= 0:
            return out
        for _ in range(4 * k + 8):
            x = known[self.rng.randrange(len(known))]
            if x != self.me and x != exclude and x not in gone and x not in out and (fit is None or fit(x)):
                out.append(x)
                if len(out) == k:
                    return out
        rest = [x for x in self._probe_candidates(known) if x != exclude and x not in out and (fit is None or fit(x))]
        return out + self.rng.sample(rest, min(k - len(out), len(rest)))

    def members(self, known: list[str]) -> dict[str, str]:
        return {x: self.view(x) for x in sorted(set(known) | {self.me})}

    # -- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> Outbox:
        out = Outbox()
        own = self.m.own.facts
        mine = alive_incarnation(self.m, self.me)
        left = _inc(self.m, self.me, keys.LEFT)
        if keys.ALIVE not in own or own[keys.ALIVE].tombstone or (left is not None and left >= mine):
            self._publish_alive(out, max(mine, -1 if left is None else left) + 1)
        self._schedule_probe(out, now, now + self.rng.uniform(0, self.config.probe_interval))
        return out

    def rearm(self, now: float) -> Outbox:
        """The timers this part runs on, set afresh (after a step whose effects were lost)."""
        out = Outbox()
        self.probe = None
        self._schedule_probe(out, now, now + self.config.probe_interval * self.rng.random())
        if self.suspect_since:
            out.timers.append((Timer.SUSPICION, now))
        return out

    def leave(self, now: float) -> Outbox:
        out = Outbox()
        out.changes.append(self.m.put(keys.LEFT, catalog.pack({"i": alive_incarnation(self.m, self.me)})))
        return out

    def on_timer(self, name: Timer, now: float, known: list[str]) -> Outbox:
        out = Outbox()
        self._react(out, now)
        if name == Timer.PROBE:
            late = now - self.next_probe_at > self.config.probe_interval
            self._finish_probe(out, now, stalled=late)
            self._start_probe(out, now, known)
        elif name == Timer.PROBE_INDIRECT and self.probe and not self.probe[2]:
            seq, target, _ = self.probe
            for h in self.sample_live(known, self.config.indirect_probes, exclude=target):
                out.sends.append((h, PingReq(seq=seq, target=target)))
            out.sends.append((target, Ping(seq=seq)))  # and once more directly
        elif name == Timer.SUSPICION:
            self._check_suspicions(out, now, [])
        return out

    def on_message(self, sender: str, msg: MembershipMessage, now: float) -> Outbox:
        out = Outbox()
        if isinstance(msg, Ping):
            out.sends.append((sender, PingAck(seq=msg.seq)))
        elif isinstance(msg, PingReq):
            if msg.target != self.me and msg.target != sender:
                self.seq += 1
                self.relays[self.seq] = (sender, msg.seq, now)
                out.sends.append((msg.target, Ping(seq=self.seq)))
        elif isinstance(msg, PingAck):
            relay = self.relays.pop(msg.seq, None)
            if relay is not None:
                out.sends.append((relay[0], PingAck(seq=relay[1])))
            elif self.probe and self.probe[0] == msg.seq and not self.probe[2]:
                self.probe = (msg.seq, self.probe[1], True)
                self.health = max(0, self.health - 1)
        return out

    def on_manifest_changed(self, now: float) -> Outbox:
        """Claims or incarnations changed: refute claims about us, retire our stale claims,
        and look again at the members concerned."""
        out = Outbox()
        self._react(out, now)
        return out

    def _observe(self, ch: OriginChange) -> None:
        """Keep the claim index and the view cache exact. A member's view reads its own
        `alive` and `left` facts and every `m/<member>` claim: any change to one of them drops
        the cached view. A reset replaces the origin's whole state, so every claim it held and
        its own facts count as changed."""
        touched: set[str] = set()
        if ch.reset:
            touched.add(ch.origin)
            for x, origins in self.claimers.items():
                if ch.origin in origins:
                    origins.discard(ch.origin)
                    touched.add(x)
            st = self.m.origins.get(ch.origin)
            names = [k for k, f in (st.facts.items() if st else ()) if not f.tombstone]
        else:
            names = [f.key for f in ch.upserts] + list(ch.removed)
        for key in names:
            if key in (keys.ALIVE, keys.LEFT):
                touched.add(ch.origin)
            elif key.startswith(keys.CLAIM):
                x = key[len(keys.CLAIM) :]
                touched.add(x)
                if self.m.get(ch.origin, key) is None:
                    self.claimers.get(x, set()).discard(ch.origin)
                else:
                    self.claimers.setdefault(x, set()).add(ch.origin)
        for x in touched:
            self._views.pop(x, None)
        if touched:
            self.version += 1
        self._touched |= touched
        self._recheck |= touched

    def _react(self, out: Outbox, now: float) -> None:
        """Act on the members whose facts changed since the last look."""
        touched, self._touched = self._touched, set()
        if not touched:
            return
        if self.me in touched:
            against_me = [i for _, _, i in self.claims(self.me)]
            if against_me:
                self.stats["refutations"] += 1
                self._bump_health()
                self._publish_alive(out, max(against_me) + 1)
        for x in sorted(touched - {self.me}):
            raw = self.m.get(self.me, keys.CLAIM + x)
            v = catalog.unpack(raw) if raw is not None else None
            if v is not None and (not isinstance(v.get("i"), int) or v["i"] < alive_incarnation(self.m, x)):
                self._retract(out, x)
            elif v is None and x not in self.urgent and self.view(x) == SUSPECT:
                self.urgent.append(x)  # someone else suspects x: look for ourselves, next
        self._check_suspicions(out, now, sorted(touched))

    # -- probing ---------------------------------------------------------------------------

    def _probe_candidates(self, known: list[str]) -> list[str]:
        gone = self.gone()
        return [x for x in known if x != self.me and x not in gone]

    def _scale(self) -> float:
        return 1 + self.health

    def _schedule_probe(self, out: Outbox, now: float, at: float) -> None:
        self.next_probe_at = at
        out.timers.append((Timer.PROBE, at))

    def _start_probe(self, out: Outbox, now: float, known: list[str]) -> None:
        target = self._next_target(known)
        if target is not None:
            self.seq += 1
            self.probe = (self.seq, target, False)
            self.stats["probes"] += 1
            out.sends.append((target, Ping(seq=self.seq)))
            out.timers.append((Timer.PROBE_INDIRECT, now + self.config.probe_timeout * self._scale()))
        for s in [s for s, (_, _, at) in self.relays.items() if now - at > 4 * self.config.probe_interval]:
            del self.relays[s]
        self._schedule_probe(out, now, now + self.config.probe_interval * self._scale())

    def _next_target(self, known: list[str]) -> str | None:
        """A member another host suspects (and we do not yet) first; else the round's next.

        A round visits every live member once in a shuffled order, and is drawn again when it
        is used up: O(1) per probe, not a walk over the members. A member the round has not
        seen (new, or back from the dead or left) joins it at a random place among those not
        yet probed, so it waits about half the rest of the round, not a whole next round.
        `known` is every other host we know of, sorted; it only grows (origins stay)."""
        gone = self.gone()
        while self.urgent:
            x = self.urgent.pop(0)
            if x not in gone and self.view(x) == SUSPECT and self.m.get(self.me, keys.CLAIM + x) is None:
                return x
        fresh, self._revived = self._revived, []
        self.round.difference_update(fresh)  # probed while it was gone: that probe does not count
        if len(known) != self._known_n:
            self._known_n = len(known)
            fresh += [x for x in known if x not in self.round and x != self.me]
        for x in fresh:
            if x not in self.round and x not in gone and self.order:
                self.round.add(x)
                self.order.insert(self.rng.randrange(len(self.order) + 1), x)
        for _ in range(2):  # this round's next live member, or the first of a new round
            while self.order:
                x = self.order.pop()
                if x not in gone:
                    return x
                self.round.discard(x)  # if it comes back, it is fresh again
            self.order = self._probe_candidates(known)
            self.rng.shuffle(self.order)
            self.round = set(self.order)
        return None

    def _finish_probe(self, out: Outbox, now: float, stalled: bool) -> None:
        if self.probe is None or self.probe[2]:
            self.probe = None
            return
        _, target, _ = self.probe
        self.probe = None
        self.stats["probe_failures"] += 1
        self._bump_health()
        if stalled:
            return  # our own timer was late: the silence may be ours, accuse nobody
        view = self.view(target)
        if view == ALIVE or (view == SUSPECT and len(self.claims(target)) <= self.config.indirect_probes):
            if self._claim(out, target, SUSPECT):
                self.stats["suspicions"] += 1
                out.effects.append(Emit(kind="suspected", subject=target))
        self._check_suspicions(out, now, [target])

    def _bump_health(self) -> None:
        self.health = min(self.config.max_local_health, self.health + 1)

    # -- suspicion ---------------------------------------------------------------------------

    def suspicion_timeout(self, n_members: int, confirmations: int) -> float:
        lo = self.config.suspicion_mult * max(1.0, math.log10(max(n_members, 1))) * self.config.probe_interval
        hi = self.config.suspicion_max_mult * lo
        k = max(1, self.config.indirect_probes)
        frac = math.log(min(confirmations, k) + 1) / math.log(k + 1)
        return max(lo, hi - (hi - lo) * frac)

    def _check_suspicions(self, out: Outbox, now: float, known: list[str]) -> None:
        n = len(self.m.origins)
        for x in sorted(set(known) | set(self.suspect_since)):
            if x == self.me:
                continue
            claims = self.claims(x)
            if self.view(x) != SUSPECT:
                self.suspect_since.pop(x, None)
                continue
            inc = max(i for _, _, i in claims)
            if self.suspect_since.get(x, (inc, 0.0))[0] != inc:
                del self.suspect_since[x]
            since = self.suspect_since.setdefault(x, (inc, now))[1]
            if now >= since + self.suspicion_timeout(n, len(claims) - 1):  # the timer's own sum: no rounding gap
                self._claim(out, x, DEAD)
                self.stats["deaths_declared"] += 1
                out.effects.append(Emit(kind="declared-dead", subject=x))
                self.suspect_since.pop(x, None)
        if self.suspect_since:
            # the nearest deadline given each suspect's confirmations so far; one that gains
            # confirmations later brings its deadline forward, which the per-period look catches
            nearest = min(
                s + self.suspicion_timeout(n, len(self.claims(x)) - 1) for x, (_, s) in self.suspect_since.items()
            )
            out.timers.append((Timer.SUSPICION, min(nearest, now + self.config.probe_interval)))

    def _claim(self, out: Outbox, x: str, state: str) -> bool:
        """Publish our claim about `x` (unless we said exactly that already)."""
        value = catalog.pack({"s": state, "i": alive_incarnation(self.m, x)})
        if self.m.get(self.me, keys.CLAIM + x) == value:
            return False
        out.changes.append(self.m.put(keys.CLAIM + x, value))
        return True

    def _retract(self, out: Outbox, x: str) -> None:
        ch = self.m.delete(keys.CLAIM + x, self.clock.last)
        if ch:
            out.changes.append(ch)

    def _publish_alive(self, out: Outbox, inc: int) -> None:
        out.changes.append(self.m.put(keys.ALIVE, catalog.pack({"i": inc})))
        if self.m.get(self.me, keys.LEFT) is not None:
            ch = self.m.delete(keys.LEFT, self.clock.last)
            if ch:
                out.changes.append(ch)
