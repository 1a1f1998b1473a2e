"""The leader's broadcast of a promoted file version, fenced by the leader's term.

Theory of operation
-------------------
A publisher asks for a broadcast by marking the version (attribute `broadcast=1`, from
`ringmesh put --broadcast`). The version is gossiped and pulled like any other; the router
alone says which hosts hold it. What the broadcast adds is urgency, and someone who watches.

* Leader: while it holds its lease, the leader keeps one *directive* fact of its own per item
  whose newest version is marked, `b/<type>/<name>` = {d: digest, t: term}. A newer version
  replaces it; a newest version without the mark withdraws it. It sends `BroadcastOrder(type,
  name, digest, term)` to every host the router places the version on that neither holds nor
  pulls it, and again to each host that still lacks it every `reorder_interval` seconds (a
  laggard), for as long as it leads (itself included: it orders itself without a message).
  Delivery is read from the manifest (`h/` and `p/` facts).
* Fencing: at a host, a directive is in force iff its term is the highest term the host knows
  (its election's term, the `leader` facts) and its origin announced itself leader of that very
  term. An order is in force iff its term is at least that high (the host may not have heard
  of the new leader yet) and, when the host knows who leads that term, it came from that host.
  A new leader re-issues every broadcast under its own term; what an older leader said stops
  counting wherever the newer term is known, and its author withdraws it once it knows too.
* Receivers: a version with a directive or order in force is pulled at CRITICAL priority; a new
  directive, and every order, resets that version's retry backoff and plans at once. Neither
  makes a host pull what the router does not place on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from . import catalog, keys
from .manifest import Manifest, OriginChange
from .messages import BroadcastOrder, FileVersion, ItemKey, Outbox, Timer
from .router import NFS_COVERED, Placement

ATTR = "broadcast"  # the version attribute a publisher marks ("1")
MAX_ORDERS = 1024  # orders remembered at once (a peer cannot grow them without bound)
DELIVERED, PULLING, WAITING = "delivered", "pulling", "waiting"

Key = tuple[ItemKey, str]  # (item, digest)


def marked(v: FileVersion) -> bool:
    return v.attrs.get(ATTR, "").strip().lower() in ("1", "true", "yes")


def directive_key(item: ItemKey) -> str:
    return f"{keys.DIRECTIVE}{item.type}/{item.name}"


@dataclass(frozen=True, slots=True)
class Directive:
    item: ItemKey
    digest: str
    term: int
    leader: str  # the origin of the fact


def directives(m: Manifest, origin: str | None = None) -> list[Directive]:
    """Every well-formed directive fact (of `origin` only, if given)."""
    if origin is None:
        facts = m.live_facts(keys.DIRECTIVE)
    else:
        st = m.origins.get(origin)
        own = sorted(st.facts.items()) if st else []
        facts = [(origin, f) for k, f in own if k.startswith(keys.DIRECTIVE) and not f.tombstone]
    out = []
    for o, f in facts:
        item, v = catalog.item_of(f.key, keys.DIRECTIVE), catalog.unpack(f.value)
        d, t = (v or {}).get("d"), (v or {}).get("t")
        if item is not None and isinstance(d, str) and isinstance(t, int) and not isinstance(t, bool) and t > 0:
            out.append(Directive(item, d, t, o))
    return out


class Broadcasts:
    def __init__(self, me: str, manifest: Manifest, *, reorder_interval: float) -> None:
        self.me, self.m, self.reorder_interval = me, manifest, reorder_interval
        self.term = 0  # the term we last led in
        self.timer_at: float | None = None  # our broadcast timer, while we lead
        self.ordered: dict[tuple[ItemKey, str, str], float] = {}  # (item, digest, host) -> last order (this term)
        self.orders: dict[ItemKey, tuple[str, int]] = {}  # orders received and honoured: item -> (digest, term)
        self.acted: set[tuple[ItemKey, str, int]] = set()  # in force and acted on (backoff reset)
        self.stats = {
            "directives_issued": 0,
            "orders_sent": 0,
            "orders_honoured": 0,
            "orders_stale": 0,
            "orders_foreign": 0,
        }
        self._gen = 0  # bumped when `orders` changes
        self._cache: tuple[object, int, int, dict[Key, tuple[int, str]]] | None = None

    # -- the leader ------------------------------------------------------------------------

    def lead(
        self,
        now: float,
        term: int,
        hlc: Callable[[], int],
        newest: Mapping[ItemKey, FileVersion],
        placer: Callable[[], Callable[[FileVersion], Placement]],
        reachable: Callable[[str], bool],
    ) -> tuple[Outbox, list[Key]]:
        """One look by the leader of `term` (the caller checked its lease): directives, orders.
        `placer()` gives the router's placement, asked for only if something is to be broadcast;
        `hlc()` the clock's reading, for a tombstone. Also the versions the leader orders itself
        (their backoff is reset)."""
        out, retry = Outbox(), []
        if term != self.term:
            self.term, self.ordered = term, {}
        wanted = {item: v for item, v in newest.items() if marked(v)}
        own = {d.item: d for d in directives(self.m, self.me)}
        for item, v in sorted(wanted.items()):
            d = own.get(item)
            if d is None or (d.digest, d.term) != (v.digest, term):
                out.changes.append(self.m.put(directive_key(item), catalog.pack({"d": v.digest, "t": term})))
                self.stats["directives_issued"] += 1
        for item in sorted(own.keys() - wanted.keys()):
            if (ch := self.m.delete(directive_key(item), hlc())) is not None:
                out.changes.append(ch)
        lacking, due = set(), [now + self.reorder_interval]  # look again at least every interval
        if wanted:
            placement = placer()
            held, pulling = catalog.holders(self.m), catalog.holders(self.m, keys.PULLING)
        for item, v in sorted(wanted.items()):
            key = (item, v.digest)
            for host in placement(v).targets:
                if host in held.get(key, ()):
                    continue
                lacking.add((item, v.digest, host))
                if host in pulling.get(key, ()) or not reachable(host):
                    continue
                last = self.ordered.get((item, v.digest, host))
                # the timer's own sum, not `now - last < interval`: at the timer's instant that
                # difference can round below the interval, and the leader re-armed the timer for
                # the same instant forever (found by the simulator: spot-storm, seed 40)
                if last is not None and now < last + self.reorder_interval:
                    due.append(last + self.reorder_interval)
                    continue
                self.ordered[(item, v.digest, host)] = now
                if host == self.me:
                    retry.append(key)
                else:
                    out.sends.append((host, BroadcastOrder(type=item.type, name=item.name, digest=v.digest, term=term)))
        self.stats["orders_sent"] += len(out.sends)
        self.ordered = {k: t for k, t in self.ordered.items() if k in lacking}
        self.timer_at = min(due)
        out.timers.append((Timer.BROADCAST, self.timer_at))
        return out, retry

    def retire(self, known_term: Callable[[], int], hlc: Callable[[], int]) -> list[OriginChange]:
        """Withdraw our own directives of a term older than the newest we know (most of the
        time we have none, and nothing is asked of the election or the clock)."""
        own = directives(self.m, self.me)
        stale = [d for d in own if d.term < known_term()] if own else []
        changes = [self.m.delete(directive_key(d.item), hlc()) for d in stale]
        return [c for c in changes if c is not None]

    # -- every host ------------------------------------------------------------------------

    def on_order(self, sender: str, order: BroadcastOrder, known_term: int, leader_of_term: str | None) -> bool:
        """Whether to honour an order; an honoured one is remembered until a newer term."""
        if order.term < known_term:
            self.stats["orders_stale"] += 1
            return False
        if leader_of_term is not None and leader_of_term != sender:
            self.stats["orders_foreign"] += 1
            return False
        if order.item not in self.orders and len(self.orders) >= MAX_ORDERS:
            del self.orders[next(iter(self.orders))]
        self.orders[order.item] = (order.digest, order.term)
        self._gen += 1
        self.stats["orders_honoured"] += 1
        return True

    def in_force(self, token: object, election_term: int, known_term: Callable[[], int]) -> dict[Key, tuple[int, str]]:
        """`{(item, digest): (term, leader or "order")}` of what counts here now.

        `token` is the manifest's digest, which is a new object whenever a fact changed: with
        the election's term and our orders it keys a cache, so planning many versions costs
        one pass over the directives."""
        c = self._cache
        if c is not None and c[0] is token and c[1:3] == (election_term, self._gen):
            return c[3]
        term = known_term()
        force: dict[Key, tuple[int, str]] = {}
        for d in directives(self.m):
            if d.term == term and catalog.leader_term(self.m, d.leader) == d.term:
                force[(d.item, d.digest)] = (d.term, d.leader)
        for item, (digest, t) in list(self.orders.items()):
            if t < term:
                del self.orders[item]  # a newer leader is known: the order is void for good
            else:
                force.setdefault((item, digest), (t, "order"))
        self._cache = (token, election_term, self._gen, force)
        return force

    def fresh(self, force: Mapping[Key, tuple[int, str]]) -> list[Key]:
        """What came into force since the last call (to reset its backoff once)."""
        now = {(item, digest, t) for (item, digest), (t, _) in force.items()}
        new = sorted({(item, digest) for item, digest, _ in now - self.acted})
        self.acted = now
        return new

    # -- status ------------------------------------------------------------------------------

    def report(
        self,
        known_term: int,
        newest: Mapping[ItemKey, FileVersion],
        placement: Callable[[FileVersion], Placement],
        force: Mapping[Key, tuple[int, str]],
    ) -> list[dict[str, Any]]:
        """Per marked newest version: its directive, delivery per eligible host, who is left out and why."""
        best: dict[Key, Directive] = {}
        for each in directives(self.m):
            cur = best.get((each.item, each.digest))
            if cur is None or each.term > cur.term:
                best[(each.item, each.digest)] = each
        held, pulling = catalog.holders(self.m), catalog.holders(self.m, keys.PULLING)
        out = []
        for item, v in sorted(newest.items()):
            key = (item, v.digest)
            d = best.get(key)
            if not marked(v) and d is None:
                continue
            p = placement(v)
            hosts = {
                h: DELIVERED if h in held.get(key, ()) else PULLING if h in pulling.get(key, ()) else WAITING
                for h in p.targets
            }
            ineligible = dict(p.left_out)
            ineligible.update({h: f"{NFS_COVERED} ({by})" for h, by in p.covered.items()})
            valid = d is not None and force.get(key) == (d.term, d.leader)
            done = sum(s == DELIVERED for s in hosts.values())
            if hosts and done == len(hosts):
                state = "delivered"
            elif valid:
                state = "delivering"
            elif d is not None:
                state = f"stale directive (term {d.term}, newest known {known_term})"
            else:
                state = "awaiting a leader"
            out.append(
                {
                    "item": str(item),
                    "digest": v.digest,
                    "size_bytes": v.size,
                    "publisher": v.origin,
                    "term": d.term if d else None,
                    "leader": d.leader if d else None,
                    "valid": valid,
                    "state": state,
                    "hosts": dict(sorted(hosts.items())),
                    "ineligible": dict(sorted(ineligible.items())),
                    "delivered": done,
                    "eligible": len(hosts),
                    "blocked": p.blocked,
                }
            )
        return out
