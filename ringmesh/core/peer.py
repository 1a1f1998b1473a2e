"""One ringmesh peer as a pure state machine: `handle(event, now) -> [effects]`.

The peer owns a `Manifest` and drives it:
  * every `gossip_interval` (jittered) it beats its heartbeat and sends `Syn(digest)` to
    `fanout` peers drawn from its seeded `random.Random`;
  * `Syn` is answered with `SynAck(digest, delta)`, and `SynAck` with `Ack(delta)`: a
    push-pull exchange in three one-way messages, each delta cut to `delta_budget` bytes;
  * it plans file transfers: every newest file version it does not hold is pulled from the
    hosts that hold it, a few at a time, with exponential backoff after failures.

`now` is seconds (wall time under the daemon, virtual time under the simulator). The peer
never reads a clock, never does I/O, and draws every random choice from `rng`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping

from . import catalog
from .errors import LocalProtocolError
from .hlc import HybridClock
from .manifest import MIN_BUDGET, Delta, Manifest, OriginChange, OriginDigest
from .messages import (
    Ack,
    CancelTransfer,
    Effect,
    Envelope,
    Event,
    FilePublished,
    FileStored,
    FileVersion,
    ItemKey,
    MessageReceived,
    Persist,
    Send,
    SendFailed,
    SetTimer,
    StartTransfer,
    Syn,
    SynAck,
    TimerFired,
    TransferFailed,
)

GOSSIP = "gossip"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerConfig:
    gossip_interval: float = 1.0
    fanout: int = 3
    delta_budget: int = 512 * 1024
    tombstone_grace: float = 3600.0
    purge_every: int = 60  # gossip rounds between tombstone purges
    max_transfers: int = 4
    retry_base: float = 1.0
    retry_cap: float = 60.0

    def __post_init__(self) -> None:
        if self.gossip_interval <= 0:
            raise LocalProtocolError("gossip_interval must be positive")
        if self.fanout < 1:
            raise LocalProtocolError("fanout must be at least 1")
        if self.delta_budget < MIN_BUDGET:
            raise LocalProtocolError(f"delta_budget must be at least {MIN_BUDGET} bytes")
        if self.max_transfers < 1:
            raise LocalProtocolError("max_transfers must be at least 1")


class Peer:
    def __init__(
        self,
        me: str,
        *,
        incarnation: int,
        rng: random.Random,
        config: PeerConfig = PeerConfig(),
        seeds: Iterable[str] = (),
        node_record: Mapping[str, object] | None = None,
        manifest: Manifest | None = None,
        hlc: int = 0,
    ) -> None:
        self.me = me
        self.rng = rng
        self.config = config
        self.seeds = sorted(set(seeds) - {me})
        self.manifest = manifest if manifest is not None else Manifest(me, incarnation)
        self.clock = HybridClock(hlc)
        self.node_record = dict(node_record or {})
        self.rounds = 0
        self.transfers: dict[tuple[ItemKey, str], FileVersion] = {}
        self.backoff: dict[tuple[ItemKey, str], tuple[int, float]] = {}  # failures, retry at

    # -- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        record = catalog.pack(self.node_record)
        if self.manifest.get(self.me, catalog.NODE_KEY) != record:
            out.append(self._persist([self.manifest.put(catalog.NODE_KEY, record)], now))
        out.append(SetTimer(name=GOSSIP, at=now + self.rng.uniform(0, self.config.gossip_interval)))
        out += self._plan_transfers(now)
        return out

    def handle(self, event: Event, now: float) -> list[Effect]:
        if isinstance(event, TimerFired):
            return self._on_timer(event.name, now) if event.name == GOSSIP else []
        if isinstance(event, MessageReceived):
            return self._on_message(event.envelope, now)
        if isinstance(event, FilePublished):
            return self._on_published(event, now)
        if isinstance(event, FileStored):
            return self._on_stored(event.item, event.digest, now)
        if isinstance(event, TransferFailed):
            return self._on_transfer_failed(event.item, event.digest, now)
        if isinstance(event, SendFailed):
            return []  # the failure detector and breakers (membership) take this up
        raise LocalProtocolError(f"unknown event {event!r}")

    # -- gossip ----------------------------------------------------------------------------

    def known_peers(self) -> list[str]:
        """Every other host we know of: the configured seeds and every origin in the manifest."""
        return sorted((set(self.seeds) | set(self.manifest.origins)) - {self.me})

    def _on_timer(self, name: str, now: float) -> list[Effect]:
        self.rounds += 1
        self.manifest.beat()
        out: list[Effect] = []
        if self.rounds % self.config.purge_every == 0:
            changes = self.manifest.purge_tombstones(self.clock.now(now), int(self.config.tombstone_grace * 1000))
            if changes:
                out.append(self._persist(changes, now))
        peers = self.known_peers()
        targets = self.rng.sample(peers, min(self.config.fanout, len(peers)))
        digest = self.manifest.digest()
        out += [self._send(p, Syn(digest=digest), now) for p in targets]
        out.append(SetTimer(name=GOSSIP, at=now + self.config.gossip_interval * self.rng.uniform(0.9, 1.1)))
        out += self._plan_transfers(now)
        return out

    def _on_message(self, env: Envelope, now: float) -> list[Effect]:
        self.clock.observe(env.hlc, now)
        body, sender = env.body, env.sender
        out: list[Effect] = []
        if isinstance(body, (Syn, SynAck)):
            out += self._check_own_incarnation(body.digest, now)
        if isinstance(body, (SynAck, Ack)):
            out += self._apply(body.delta, now)
        if isinstance(body, Syn):
            reply = SynAck(digest=self.manifest.digest(), delta=self._delta_for(body.digest))
            out.append(self._send(sender, reply, now))
        elif isinstance(body, SynAck):
            out.append(self._send(sender, Ack(delta=self._delta_for(body.digest)), now))
        return out

    def _delta_for(self, digest: Mapping[str, OriginDigest]) -> Delta:
        return self.manifest.delta_for(digest, self.config.delta_budget)

    def _apply(self, delta: Delta, now: float) -> list[Effect]:
        changes = self.manifest.apply(delta)
        if not changes:
            return []
        out: list[Effect] = [self._persist(changes, now)]
        if any(k.startswith(("v/", "h/")) for ch in changes for k in [f.key for f in ch.upserts] + list(ch.removed)):
            out += self._plan_transfers(now)
        return out

    def _check_own_incarnation(self, digest: Mapping[str, OriginDigest], now: float) -> list[Effect]:
        """Someone remembers a life of ours we do not: start a higher incarnation."""
        seen, own = digest.get(self.me), self.manifest.own
        if seen is None:
            return []
        if seen.incarnation > own.incarnation or (
            seen.incarnation == own.incarnation and seen.max_counter > own.max_counter
        ):
            return [self._persist([self.manifest.reincarnate(seen.incarnation + 1)], now)]
        return []

    def _send(self, to: str, body: Syn | SynAck | Ack, now: float) -> Send:
        return Send(to=to, envelope=Envelope(sender=self.me, hlc=self.clock.now(now), body=body))

    def _persist(self, changes: list[OriginChange], now: float) -> Persist:
        return Persist(changes=tuple(changes), hlc=self.clock.now(now))

    # -- files -----------------------------------------------------------------------------

    def _on_published(self, ev: FilePublished, now: float) -> list[Effect]:
        catalog.check_item(ev.item)
        v = FileVersion(
            item=ev.item, digest=ev.digest, size=ev.size, chunk_size=ev.chunk_size,
            hlc=self.clock.now(now), origin=self.me, attrs=dict(ev.attrs),
        )
        changes = [
            self.manifest.put(catalog.version_key(ev.item), catalog.encode_version(v)),
            self.manifest.put(catalog.holding_key(ev.item), catalog.encode_holding(v)),
        ]
        return [self._persist(changes, now)] + self._plan_transfers(now)

    def _on_stored(self, item: ItemKey, digest: str, now: float) -> list[Effect]:
        v = self.transfers.pop((item, digest), None)
        self.backoff.pop((item, digest), None)
        if v is None:
            v = next((x for x in self.manifest_versions().values() if (x.item, x.digest) == (item, digest)), None)
        out: list[Effect] = []
        if v is not None and catalog.holdings(self.manifest, self.me).get(item) != digest:
            out.append(self._persist([self.manifest.put(catalog.holding_key(item), catalog.encode_holding(v))], now))
        return out + self._plan_transfers(now)

    def _on_transfer_failed(self, item: ItemKey, digest: str, now: float) -> list[Effect]:
        self.transfers.pop((item, digest), None)
        failures = self.backoff.get((item, digest), (0, now))[0] + 1
        delay = min(self.config.retry_cap, self.config.retry_base * 2 ** (failures - 1))
        self.backoff[(item, digest)] = (failures, now + delay * self.rng.uniform(0.5, 1.0))
        return self._plan_transfers(now)

    def wanted(self) -> list[FileVersion]:
        """Newest versions this host should hold and does not (the router narrows this later)."""
        mine = catalog.holdings(self.manifest, self.me)
        return [v for item, v in sorted(self.manifest_versions().items()) if mine.get(item) != v.digest]

    def manifest_versions(self) -> dict[ItemKey, FileVersion]:
        return catalog.newest_versions(self.manifest)

    def _plan_transfers(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        newest = self.manifest_versions()
        for (item, digest) in sorted(self.transfers):
            if newest.get(item) is None or newest[item].digest != digest:
                del self.transfers[(item, digest)]
                out.append(CancelTransfer(item=item, digest=digest))
        held = catalog.holders(self.manifest)
        for v in self.wanted():
            if len(self.transfers) >= self.config.max_transfers:
                break
            key = (v.item, v.digest)
            if key in self.transfers or self.backoff.get(key, (0, 0.0))[1] > now:
                continue
            sources = [h for h in held.get(key, []) if h != self.me]
            if not sources:
                continue
            self.rng.shuffle(sources)
            self.transfers[key] = v
            out.append(StartTransfer(version=v, sources=tuple(sources)))
        return out
