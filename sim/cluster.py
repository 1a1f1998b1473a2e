"""A cluster of core peers in one world: naming, seeding and the questions scenarios ask.

Random sources, all derived from the run's seed and never from the global `random` module:
    network            random.Random(f"{seed}/network")
    node <id>          random.Random(f"{seed}/node/{id}")
    scenario choices   random.Random(f"{seed}/scenario")
(`random.Random` seeds a str through SHA-512, independent of PYTHONHASHSEED.)
"""

from __future__ import annotations

import random
from typing import Iterable

from ringmesh.core import Peer, PeerConfig, Persist

from .checkers import VectorConvergence
from .network import LinkModel, Network
from .world import World

PROVIDERS = ("lambda", "vast", "runpod", "hetzner")


def node_ids(n: int) -> list[str]:
    """`n00`, `n01`, ...: zero-padded, so that sorted order is numeric order."""
    if n < 1:
        raise ValueError("a cluster needs at least one node")
    width = max(2, len(str(n - 1)))
    return [f"n{i:0{width}d}" for i in range(n)]


def node_record(i: int, node: str) -> dict[str, object]:
    """A plausible node record, the fact each node publishes about itself at start."""
    return {
        "address": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:7946",
        "role": "training" if i % 10 == 0 else "selfplay",
        "provider": PROVIDERS[i % len(PROVIDERS)],
        "ephemeral": i % 3 != 0,
        "incarnation": 1,
        "name": node,
    }


class Cluster:
    """N peers, each configured with every other node as a seed (as the config file does)."""

    def __init__(
        self, n: int, *, seed: int, link: LinkModel = LinkModel(), config: PeerConfig = PeerConfig(), voters: int = 0,
        roles: dict[str, str] | None = None, ephemeral: set[str] | None = None,
    ) -> None:
        self.roles, self.ephemeral = roles or {}, ephemeral
        self.seed = seed
        self.config = config
        self.ids = node_ids(n)
        self.voters = self.ids[:voters]
        self.world = World(Network(random.Random(f"{seed}/network"), link))
        self.rng = random.Random(f"{seed}/scenario")
        self.lives: dict[str, int] = {node: 0 for node in self.ids}
        for node in self.ids:
            self.world.add(self._peer(node))
        self.vectors = VectorConvergence(self.ids)
        self.world.persist_hooks.append(self.vectors.on_persist)

    @property
    def network(self) -> Network:
        return self.world.network

    @property
    def now(self) -> float:
        return self.world.now

    def _peer(self, node: str) -> Peer:
        """A process for `node`, from what its disk holds (nothing, the first time)."""
        life = self.lives[node]
        disk = self.world.disks.get(node)
        incarnation = 1 + life  # a wiped disk comes back as a later life
        return Peer(
            node,
            incarnation=incarnation,
            rng=random.Random(f"{self.seed}/node/{node}" + (f"/{life}" if life else "")),
            config=self.config,
            seeds=self.ids,
            voters=self.voters,
            node_record=self._record(node),
            manifest=disk.manifest(node, incarnation) if disk and not disk.empty else None,
            hlc=disk.hlc if disk else 0,
            vote=disk.vote if disk else (0, None),
        )

    def _record(self, node: str) -> dict[str, object]:
        rec = node_record(self.ids.index(node), node)
        if node in self.roles:
            rec["role"] = self.roles[node]
        if self.ephemeral is not None:
            rec["ephemeral"] = node in self.ephemeral
        return rec

    def start(self) -> None:
        for node in self.ids:
            self.world.start(node)

    def publish_games(self, node: str, config_key: str, payloads: list[bytes]) -> tuple[tuple[int, bytes], ...]:
        """Self-play on `node` finished these games: its log takes them (fsynced), the peer is told."""
        from ringmesh.core.messages import GamesStored

        origin = self.peer(node).replication.origin
        games, hw = self.world.disks[node].append_own(origin, config_key, payloads)
        if self.world.is_up(node):
            self.world.interpret(node, self.peer(node).handle(
                GamesStored(origin=origin, config_key=config_key, seqs=tuple(q for q, _ in games), hw=hw, games=games),
                self.now))
        return games

    def crash(self, node: str) -> None:
        self.world.crash(node)

    def restart(self, node: str, *, wipe: bool = False) -> None:
        """Start `node` again, from its disk, or with an empty one if `wipe`."""
        if wipe:
            self.world.wipe(node)
        self.lives[node] += 1
        self.world.restart(self._peer(node))

    def live(self) -> list[str]:
        return [n for n in self.ids if self.world.is_up(n)]

    def peer(self, node: str) -> Peer:
        return self.world.nodes[node]

    def put(self, node: str, key: str, value: bytes) -> tuple[int, int]:
        """A local write of one fact on `node`'s own origin; returns (incarnation, counter)."""
        peer = self.peer(node)
        change = peer.manifest.put(key, value)
        self.world.persisted(node, Persist(changes=(change,), hlc=peer.clock.now(self.now)))
        return change.incarnation, change.max_counter

    def run_rounds(self, rounds: float) -> None:
        """Let `rounds` gossip intervals of virtual time pass."""
        self.world.run(until=self.now + rounds * self.config.gossip_interval)

    # -- questions -----------------------------------------------------------------------------

    def fingerprints(self, nodes: Iterable[str] | None = None) -> dict[str, str]:
        return {n: self.peer(n).manifest.fingerprint() for n in (self.ids if nodes is None else nodes)}

    def vectors_equal(self) -> bool:
        """The core's own answer: one fingerprint across the cluster (O(N^2); use sparingly)."""
        return len(set(self.fingerprints().values())) == 1

    def holders(self, origin: str, key: str, value: bytes) -> list[str]:
        return [n for n in self.ids if self.peer(n).manifest.get(origin, key) == value]
