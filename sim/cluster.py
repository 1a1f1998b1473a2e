"""A cluster of core peers in one world: naming, seeding and the questions scenarios ask.

Random sources, all derived from the run's seed and never from the global `random` module:
    network            random.Random(f"{seed}/network")
    node <id>          random.Random(f"{seed}/node/{id}")
    scenario choices   random.Random(f"{seed}/scenario")
(`random.Random` seeds a str through SHA-512, independent of PYTHONHASHSEED.)

With `files=True` the world also carries out file pulls (`sim/files.py`): whole files at a
time (`FilePulls`), or, given `pulls`, any model built from the world (`LimitedPulls`).
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

from ringmesh.core import FilePublished, ItemKey, Peer, PeerConfig, Persist
from ringmesh.core.broadcast import ATTR as BROADCAST_ATTR
from ringmesh.core.messages import Event

from .checkers import VectorConvergence
from .files import FilePulls, FileWorld, LimitedPulls  # FilePulls: also where tests look for it
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
        self,
        n: int,
        *,
        seed: int,
        link: LinkModel = LinkModel(),
        config: PeerConfig = PeerConfig(),
        voters: int | Iterable[str] = 0,
        roles: dict[str, str] | None = None,
        ephemeral: set[str] | None = None,
        files: bool = False,
        file_rate: float = 100e6,
        ids: Iterable[str] | None = None,
        records: dict[str, dict[str, object]] | None = None,
        pulls: Callable[[World], FilePulls | LimitedPulls] | None = None,
        peer_factory: Callable[..., Peer] = Peer,
    ) -> None:
        """`ids`: the hosts' names (default `node_ids(n)`); `records`: node record fields per host
        over the generated ones; `voters`: how many of the first hosts vote, or their names;
        `peer_factory`: the class of every process (a test's deliberately broken subclass)."""
        self.roles, self.ephemeral, self.records = roles or {}, ephemeral, records or {}
        self.seed = seed
        self.config = config
        self.peer_factory = peer_factory
        self.ids = sorted(ids) if ids is not None else node_ids(n)
        if len(set(self.ids)) != len(self.ids) or not self.ids:
            raise ValueError("host names must be distinct, and there must be at least one")
        self.voters = self.ids[:voters] if isinstance(voters, int) else sorted(voters)
        network = Network(random.Random(f"{seed}/network"), link)
        self.world = FileWorld(network, file_rate, pulls) if files else World(network)
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
        return self.peer_factory(
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
        rec.update(self.records.get(node, {}))
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
        for hook in self.world.store_hooks:
            hook(node, origin, config_key, tuple(q for q, _ in games), self.now)
        self.world.deliver(
            node, GamesStored(origin=origin, config_key=config_key, seqs=tuple(q for q, _ in games), hw=hw, games=games)
        )
        return games

    def command(self, node: str, event: Event) -> None:
        """A local command or report on `node` (a disk measurement, a sync request, ...)."""
        self.world.deliver(node, event)

    def publish_file(
        self, node: str, item: ItemKey, digest: str, size: int, *, chunk_size: int = 4 << 20, broadcast: bool = False
    ) -> None:
        """`node` publishes a version of a named file (`broadcast`: marked for the leader's broadcast)."""
        attrs = {BROADCAST_ATTR: "1"} if broadcast else {}
        if self.world.is_up(node):
            self.world.disks[node].install(item, digest, size)
        self.command(node, FilePublished(item=item, digest=digest, size=size, chunk_size=chunk_size, attrs=attrs))

    def crash(self, node: str) -> None:
        self.world.crash(node)
        pulls = getattr(self.world, "pulls", None)
        if pulls is not None:
            pulls.node_down(node)

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
