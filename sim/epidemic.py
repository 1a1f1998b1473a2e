"""One rumour's spread by the peer's gossip rounds, without manifests: the model for 10^4 hosts.

The full peer keeps every host's manifest (N origins each, O(N^2) memory and O(N) work per
message), which stops at a few thousand simulated hosts. For the dissemination curve at
N = 10,000 this module keeps only what decides it, with the peer's own rules:

  * each host's gossip timer: first at uniform(0, interval), then every interval x
    uniform(1 - GOSSIP_JITTER, 1 + GOSSIP_JITTER) (`Peer.start`, `Peer._on_gossip_timer`);
  * each round it opens `fanout` exchanges with hosts drawn uniformly from the others
    (`Peer._gossip_targets` when all are alive);
  * an exchange is Syn -> SynAck -> Ack, each message one latency + uniform(0, jitter) late and
    lost with probability `loss`; the SynAck carries the rumour if the answering host held it
    when the Syn arrived, the Ack if the initiator held it when the SynAck arrived
    (Scuttlebutt push-pull: each side sends what the other's digest lacks).

The rumour is written `warmup` intervals after the start (timers desynchronised), by a host
drawn from the seed. Validated against the full peer at N = 100 and 1,000
(`bench/sim_convergence.py` prints both curves). One seed, one run.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import asdict, dataclass

from ringmesh.core.peer import GOSSIP_JITTER

from .gossip import theory_rounds

_TICK, _SYN, _SYNACK, _ACK = range(4)
_CARRIES = 4  # added to a SynAck's or Ack's kind when it carries the rumour


@dataclass(frozen=True, slots=True, kw_only=True)
class EpidemicParams:
    nodes: int
    seed: int
    fanout: int = 3
    interval: float = 1.0
    latency_ms: float = 20.0
    jitter_ms: float = 10.0
    loss: float = 0.0
    warmup: float = 5.0  # intervals before the write
    max_rounds: float = 100.0


def run_epidemic(p: EpidemicParams) -> dict[str, object]:
    """The report: rounds until every host holds the rumour, and how many held it per round."""
    if p.nodes < 2 or p.fanout < 1:
        raise ValueError("need at least 2 nodes and fanout 1")
    rng = random.Random(f"{p.seed}/epidemic")
    n, iv, lat, jit, loss = p.nodes, p.interval, p.latency_ms / 1000, p.jitter_ms / 1000, p.loss
    informed = [math.inf] * n
    heap: list[tuple[float, int, int, int, int]] = []  # (time, seq, kind, to, from)
    seq = 0
    for i in range(n):
        heapq.heappush(heap, (rng.uniform(0, iv), seq, _TICK, i, -1))
        seq += 1
    t0 = p.warmup * iv
    writer = rng.randrange(n)
    informed[writer] = t0
    count, events, messages, end = 1, 0, 0, t0 + p.max_rounds * iv
    fanout, push, others = min(p.fanout, n - 1), heapq.heappush, range(n - 1)
    while heap and count < n:
        t, _, kind, a, b = heapq.heappop(heap)
        if t > end:
            break
        events += 1
        if kind == _TICK:
            for x in rng.sample(others, fanout):
                x += x >= a  # any host but a
                messages += 1
                if not (loss and rng.random() < loss):
                    push(heap, (t + lat + rng.uniform(0, jit), seq, _SYN, x, a))
                    seq += 1
            push(heap, (t + iv * rng.uniform(1 - GOSSIP_JITTER, 1 + GOSSIP_JITTER), seq, _TICK, a, -1))
            seq += 1
            continue
        if kind & _CARRIES and informed[a] > t:
            informed[a] = t
            count += 1
        base = kind & ~_CARRIES
        if base == _ACK:
            continue
        messages += 1
        if not (loss and rng.random() < loss):  # a Syn is answered by a SynAck, a SynAck by an Ack
            reply = (_SYNACK if base == _SYN else _ACK) + (_CARRIES if informed[a] <= t else 0)
            push(heap, (t + lat + rng.uniform(0, jit), seq, reply, b, a))
            seq += 1
    times = sorted(x - t0 for x in informed if x != math.inf)
    rounds = times[-1] / iv if count == n else None
    per_round, i = [], 0
    for r in range(1, int((times[-1] / iv) if times else 0) + 2):
        while i < len(times) and times[i] < r * iv:
            i += 1
        per_round.append(i)
    return {
        "scenario": "epidemic",
        "params": asdict(p),
        "converged": count == n,
        "informed": count,
        "rounds": None if rounds is None else round(rounds, 3),
        "theory_rounds": round(theory_rounds(n), 3),
        "informed_per_round": per_round,
        "events": events,
        "messages": messages,
    }
