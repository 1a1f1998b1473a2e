"""At most one leader per term, and a voter grants at most one vote per term.

Fed by the world's event hook (after each event, the node that handled it is looked at: a
node only becomes leader while handling an event) and send hook (every granted, non-pre
`VoteReply`). Also keeps, for reports, when each term got its leader.
"""

from __future__ import annotations

from typing import Callable

from ringmesh.core import Envelope, Peer, VoteReply
from ringmesh.core import election as el

from . import Violation


class OneLeaderPerTerm:
    name = "one-leader-per-term"

    def __init__(self, peers: Callable[[str], Peer]) -> None:
        self.peers = peers
        self.leaders: dict[int, str] = {}  # term -> its leader
        self.elected: list[tuple[float, int, str]] = []  # (when, term, leader), in order
        self.grants: dict[tuple[str, int], str] = {}  # (voter, term) -> candidate

    def on_event(self, node: str, now: float) -> None:
        e = self.peers(node).election
        if e.role == el.LEADER:
            prior = self.leaders.get(e.term)
            if prior is None:
                self.leaders[e.term] = node
                self.elected.append((now, e.term, node))
            elif prior != node:
                raise Violation(self.name, f"two leaders in term {e.term}: {prior} and {node} (at {now:.3f} s)")

    def on_send(self, src: str, dst: str, env: Envelope) -> None:
        b = env.body
        if isinstance(b, VoteReply) and b.granted and not b.pre:
            prior = self.grants.setdefault((src, b.term), dst)
            if prior != dst:
                raise Violation(self.name, f"{src} granted its vote in term {b.term} to {prior} and to {dst}")
