"""The few figures a node keeps only for observability (ops/metrics.py and `status` read them):
bytes per peer, delta bytes, transfers per class and outcome, when this host last received a
message from each peer, and each origin's own reports of its change counter that this host does not hold yet
(the convergence lag; see ops/metrics.py). Touched on the event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Any

IN, OUT = "in", "out"


class Telemetry:
    """The few figures the daemon keeps only for observability. Touched on the event loop."""

    def __init__(self) -> None:
        self.peer_bytes: Counter[tuple[str, str, str]] = Counter()  # (peer, direction, what) -> bytes
        self.messages: Counter[tuple[str, str]] = Counter()  # (direction, kind) -> messages
        self.delta_bytes: Counter[str] = Counter()  # direction -> bytes of manifest deltas
        self.transfers: Counter[tuple[str, str]] = Counter()  # (class, outcome) -> transfers
        self._heard: dict[str, float] = {}  # peer -> when a message from it last arrived
        # origin -> its own reports, (incarnation, max_counter, when first reported), that we do not hold yet
        self._reports: dict[str, deque[tuple[int, int, float]]] = {}
        self.catch_up: dict[str, list[float]] = {}  # origin -> [reports met, seconds they took in all]

    def message(self, peer: str, direction: str, msg: Any, body: Any = None, manifest: Any = None) -> None:
        """One gossip/membership/... envelope (protobuf) sent to or received from `peer`; given
        the decoded `body` and our `manifest`, the sender's report of its own counter is noted."""
        if direction == IN:
            self._heard[peer] = time.time()
        digest = getattr(body, "digest", None)  # Syn/SynAck: a version vector (BroadcastOrder's is a str)
        if isinstance(digest, dict) and manifest is not None and (own := digest.get(peer)) is not None:
            self.reported(peer, own.incarnation, own.max_counter, manifest, time.time())
        size = msg.ByteSize()
        kind = msg.WhichOneof("body") or "none"
        self.peer_bytes[(peer, direction, "messages")] += size
        self.messages[(direction, kind)] += 1
        if kind in ("syn_ack", "ack"):
            self.delta_bytes[direction] += sum(d.ByteSize() for d in getattr(msg, kind).delta)

    def chunks(self, peer: str, direction: str, n: int) -> None:
        self.peer_bytes[(peer, direction, "chunks")] += n

    def transfer(self, cls: str, outcome: str) -> None:
        self.transfers[(cls, outcome)] += 1

    def reported(self, origin: str, incarnation: int, max_counter: int, manifest, now: float) -> None:
        """`origin` says it is at (incarnation, max_counter): note it unless we hold that already."""
        st = manifest.origins.get(origin)
        mark = (incarnation, max_counter)
        if st is not None and (st.incarnation, st.max_counter) >= mark:
            return
        q = self._reports.setdefault(origin, deque())
        if q and mark <= q[-1][:2]:
            return
        if len(q) >= 64:  # keep the oldest times; the newest report stands for the rest
            q[-1] = (incarnation, max_counter, q[-1][2])
        else:
            q.append((incarnation, max_counter, now))

    def lag(self, origin: str, manifest, now: float) -> tuple[int, float]:
        """(changes of `origin` it reported that we lack, seconds we have lacked the oldest)."""
        q = self._reports.get(origin)
        if not q:
            return 0, 0.0
        st = manifest.origins.get(origin)
        inc, top, _ = q[-1]
        have = st.max_counter if st is not None and st.incarnation == inc else 0
        return max(0, top - have), max(0.0, now - q[0][2])

    def sample(self, manifest, now: float) -> None:
        """Note every origin's report our replica now meets."""
        for origin, q in list(self._reports.items()):
            st = manifest.origins.get(origin)
            have = (st.incarnation, st.max_counter) if st is not None else (-1, -1)
            while q and q[0][:2] <= have:
                met = self.catch_up.setdefault(origin, [0, 0.0])
                met[0] += 1
                met[1] += now - q.popleft()[2]
            if not q:
                del self._reports[origin]

    def last_heard(self, peer: str, now: float) -> float | None:
        """Seconds since a message from `peer` last arrived here (None: never)."""
        seen = self._heard.get(peer)
        return None if seen is None else max(0.0, now - seen)

    async def watch(self, manifest, every: float) -> None:
        """Sample the reports every `every` seconds."""
        while True:
            self.sample(manifest, time.time())
            await asyncio.sleep(every)
