"""Hosts nobody can dial (`nat_blocked`): their dial-out links to relays, and what goes over them.

A NAT'd host N sends to anyone directly (it can dial out). Nobody can dial N: a message for N
from S goes S -> R -> N, where R is a relay N keeps a link to, both legs through the ordinary
`Network.route` (loss, latency, partitions; the delays add up), or R -> N alone when S is
itself such a relay. The sender tries N's up links in their order (the order of N's node
record): a relay that is down refuses at once (next), a leg that is blocked, or ends at a
stopped process, costs the sender a deadline (then the next relay); a leg that loses the
message loses it (silently, as any lost message). No link left to try: `SendFailed("unreachable")`
once the deadline (or the time spent trying, if longer) has passed; nothing is delivered.

Links, as the daemon keeps them (node/wire/relay.py): every `tick` seconds of simulated time,
each NAT'd host that runs picks `reach.choose_relays(N, candidates, keep=its up links)`, where
the candidates are the hosts N's own core sees alive (or only suspects), not NAT'd, not
ephemeral (with their providers), less those whose dial failed within the last `link_timeout`.
A NAT'd host with no link up takes every such host as a candidate whatever its view says: it
hears nothing, so its view is stale (the sweep found the deadlock: a host that lost its links
suspected every relay and never dialled again). It drops the links it
no longer wants and, unless it is waiting out `redial` after a break, dials the new ones: a
dial succeeds at once if the relay runs and neither direction between them is blocked. A link
breaks
  * at once when its relay's process dies (crash, spot termination: connection reset), or N's;
  * after `link_timeout` of silence: the relay stopped, N stopped, or a partition between them,
    seen at ticks; a link that recovers before that stays up.
Whenever N's set of up links changes, N's core is told `LinksChanged(relays=...)` (its node
record shows them). A host that restarts starts with no links and dials at its next tick.

File transfers (the simplest honest version): a NAT'd host serves a chunk fetch (a *reverse*
fetch, which the daemon carries over a link) only while it has at least one link up; when its
last link goes, its transfers break as if it were down. The relay's bandwidth is not modelled.

Nothing here draws a random number of its own: the legs' routes draw from the network's rng,
and only for messages to NAT'd hosts, so a world without NAT'd hosts runs exactly as before.
`hooks` get `(host, links, now)` on each change (the report's counts, the checkers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from ringmesh.core import Envelope, MessageReceived, SendFailed, reach
from ringmesh.core import membership as mb
from ringmesh.core.messages import LinksChanged

if TYPE_CHECKING:
    from .world import World

LINK_TIMEOUT = 5.0  # silence after which a link counts as broken
REDIAL = 1.0  # the wait after a break before dialling again
TICK = 1.0  # how often links are looked at


class Relays:
    def __init__(
        self,
        world: World,
        nat: frozenset[str],
        providers: Mapping[str, str],
        ephemeral: frozenset[str] = frozenset(),
        *,
        k: int = reach.RELAYS,
        link_timeout: float = LINK_TIMEOUT,
        redial: float = REDIAL,
        tick: float = TICK,
    ) -> None:
        self.world, self.nat, self.k = world, frozenset(nat), k
        self.link_timeout, self.redial, self.tick_every = link_timeout, redial, tick
        self.candidates = {h: p for h, p in sorted(providers.items()) if h not in self.nat and h not in ephemeral}
        self.links: dict[str, list[str]] = {n: [] for n in sorted(self.nat)}  # up links, in order
        self.silent: dict[tuple[str, str], float] = {}  # (host, relay) -> since when nothing gets through
        self.dial_after: dict[str, float] = {}  # host -> no dial before
        self.failed_dial: dict[tuple[str, str], float] = {}  # (host, relay) -> when a dial failed
        self.enabled = True  # False: nobody dials (a test's world where NAT'd hosts are cut off)
        self.hooks: list[Callable[[str, tuple[str, ...], float], None]] = []
        self.stats = {
            "relayed": 0,  # messages that went S -> R -> N
            "over_own_link": 0,  # messages from a relay straight over N's link to it
            "unreachable": 0,  # sends to a NAT'd host that found no way through
            "link_changes": 0,
            "links_broken": 0,
            "dials_failed": 0,
        }

    def start(self) -> None:
        self.world.at(self.world.now, self._tick)

    def reachable(self, host: str) -> bool:
        """Can others get data from `host` now (a NAT'd host: over one of its links)?"""
        return host not in self.nat or bool(self.links[host])

    # -- messages -------------------------------------------------------------------------------

    def send(self, src: str, dst: str, env: Envelope, size: int) -> None:
        w, net = self.world, self.world.network
        now, waited = w.now, 0.0
        for r in list(self.links[dst]):
            if r == src:
                first: tuple[float, ...] = (0.0,)
            else:
                if r in w.down:
                    continue  # refused at once
                leg = net.route(src, r, size, now)
                if leg.failed or r in w.paused:
                    waited += net.model_for(src, r).deadline
                    continue
                if not leg.delays:
                    return  # lost on the first leg
                first = leg.delays
            leg2 = net.route(r, dst, size, now + first[0])
            if leg2.failed or dst in w.paused:
                waited += net.model_for(src, r if r != src else dst).deadline
                continue
            if not leg2.delays:
                return  # lost on the second leg
            self.stats["over_own_link" if r == src else "relayed"] += 1
            event = MessageReceived(envelope=env)
            for d1 in first:
                for d2 in leg2.delays:
                    w.schedule_message(now + waited + d1 + d2, dst, event)
            return
        self.stats["unreachable"] += 1
        w.schedule_local(
            now + max(waited, net.model_for(src, dst).deadline), src, SendFailed(peer=dst, reason="unreachable")
        )

    # -- links ------------------------------------------------------------------------------------

    def crashed(self, node: str) -> None:
        """`node`'s process died: its own links go, and every link to it resets at once."""
        if node in self.links and self.links[node]:
            self.links[node] = []
            self._changed(node, tell=False)
        for n, links in self.links.items():
            if node in links:
                links.remove(node)
                self.silent.pop((n, node), None)
                self.stats["links_broken"] += 1
                self.dial_after[n] = max(self.dial_after.get(n, 0.0), self.world.now + self.redial)
                self._changed(n)

    def _healthy(self, n: str, r: str) -> bool:
        w, blocked = self.world, self.world.network.blocked
        return w.is_up(n) and w.is_up(r) and (n, r) not in blocked and (r, n) not in blocked

    def _tick(self) -> None:
        w, now = self.world, self.world.now
        for n, links in self.links.items():
            if n in w.down:
                continue
            changed = False
            for r in list(links):
                if self._healthy(n, r):
                    self.silent.pop((n, r), None)
                    continue
                since = self.silent.setdefault((n, r), now)
                if now - since >= self.link_timeout:
                    links.remove(r)
                    del self.silent[(n, r)]
                    self.stats["links_broken"] += 1
                    self.dial_after[n] = max(self.dial_after.get(n, 0.0), now + self.redial)
                    changed = True
            if self.enabled and w.is_up(n):
                changed |= self._dial(n, links, now)
            if changed:
                self._changed(n)
        w.at(now + self.tick_every, self._tick)

    def _dial(self, n: str, links: list[str], now: float) -> bool:
        w, peer = self.world, self.world.nodes[n]
        # With no link up, N hears nothing (no ack, no gossip reply): its view goes stale and
        # would keep every candidate suspect for ever, so then every candidate is one.
        deaf = not links
        cands = {
            h: p
            for h, p in self.candidates.items()
            if (deaf or peer.membership.view(h) in (mb.ALIVE, mb.SUSPECT))
            and now - self.failed_dial.get((n, h), -self.link_timeout) >= self.link_timeout
        }
        want = reach.choose_relays(n, cands, self.k, keep=links)
        changed = False
        for r in [r for r in links if r not in want]:  # no longer a candidate: closed
            links.remove(r)
            self.silent.pop((n, r), None)
            changed = True
        if now < self.dial_after.get(n, 0.0):
            return changed
        for r in want:
            if r in links:
                continue
            if self._healthy(n, r) and r in w.nodes:
                links.append(r)
                changed = True
            else:
                self.failed_dial[(n, r)] = now
                self.stats["dials_failed"] += 1
        return changed

    def _changed(self, n: str, tell: bool = True) -> None:
        self.stats["link_changes"] += 1
        relays = tuple(self.links[n])
        for hook in self.hooks:
            hook(n, relays, self.world.now)
        if tell:
            self.world.deliver(n, LinksChanged(relays=relays))
