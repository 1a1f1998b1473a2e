"""Game streams in the simulator: no game the origin reported durable is ever lost while at
most min_copies - 1 hosts lose their disks, and after heal every training host holds every
durable game exactly once (a stream log keyed by seq holds a game once by construction)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ringmesh.core import PeerConfig
from sim.cluster import Cluster
from sim.network import LinkModel

IDS = ["n00", "n01", "n02", "n03", "n04", "n05"]
ROLES = {"n00": "training", "n01": "training", "n02": "selfplay", "n03": "selfplay", "n04": "selfplay", "n05": "backup"}
EPHEMERAL = {"n03", "n04"}
TRAINING = ["n00", "n01", "n05"]  # game hosts: training and backup
ORIGINS = ["n02", "n03", "n04"]


def make(seed: int) -> Cluster:
    c = Cluster(
        6,
        seed=seed,
        link=LinkModel(),
        config=PeerConfig(gossip_interval=0.5, min_copies=2),
        roles=ROLES,
        ephemeral=EPHEMERAL,
    )
    c.durable: dict[tuple[str, str], int] = {}

    def on_durable(node, eff, now):
        stream = (c.peer(node).replication.origin, eff.config_key)  # the origin in its current life
        c.durable[stream] = max(c.durable.get(stream, 0), eff.through)

    c.world.durable_hooks.append(on_durable)
    c.start()
    return c


def test_games_reach_every_training_host_and_become_durable():
    c = make(1)
    c.world.run(until=3.0)
    published = c.publish_games("n03", "hex8_2p", [f"game {i}".encode() for i in range(5)])
    c.world.run(until=c.now + 10)
    stream = (c.peer("n03").replication.origin, "hex8_2p")
    assert c.durable[stream] == 5
    for t in TRAINING:
        assert c.world.disks[t].games[stream] == dict(published), t


class GameStreamMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 10_000))
    def setup(self, seed):
        self.c = make(seed)
        self.published: dict[tuple[str, str], dict[int, bytes]] = {}
        self.wiped = 0
        self.c.world.run(until=2.0)

    @rule(o=st.sampled_from(ORIGINS), key=st.sampled_from(["hex8_2p", "square8_3p"]), n=st.integers(1, 4))
    def publish(self, o, key, n):
        if not self.c.world.is_up(o):
            return
        games = self.c.publish_games(o, key, [f"{o}/{key}/{self.c.now!r}/{i}".encode() for i in range(n)])
        self.published.setdefault((self.c.peer(o).replication.origin, key), {}).update(games)

    @rule(dt=st.sampled_from([0.1, 0.5, 2.0, 5.0]))
    def advance(self, dt):
        self.c.world.run(until=self.c.now + dt)

    @rule(n=st.sampled_from(IDS))
    def crash(self, n):
        if n not in self.c.world.down:
            self.c.crash(n)

    @rule(n=st.sampled_from(IDS), wipe=st.booleans())
    def restart(self, n, wipe):
        """At most min_copies - 1 = 1 disk is lost in a run. A wiped origin comes back as a new
        incarnation, whose games form new streams: its old seqs are never reused."""
        if n in self.c.world.down:
            wipe = wipe and self.wiped == 0
            self.wiped += wipe
            self.c.restart(n, wipe=wipe)

    @rule(n=st.sampled_from(sorted(EPHEMERAL)), notice=st.booleans())
    def spot_terminated(self, n, notice):
        """A spot host vanishes with its disk (it counts against the one lost disk); with
        notice it first drains: every game not durable yet goes to persistent peers."""
        from ringmesh.core.messages import DrainRequested

        if self.wiped or not self.c.world.is_up(n):
            return
        if notice:
            self.c.world.interpret(n, self.c.peer(n).handle(DrainRequested(), self.c.now))
            self.c.world.run(until=self.c.now + 3.0)
        self.c.crash(n)
        self.c.world.wipe(n)
        self.wiped += 1

    @rule(side=st.sets(st.sampled_from(IDS), min_size=1, max_size=5))
    def partition(self, side):
        self.c.network.split(sorted(side), sorted(set(IDS) - side))

    @rule()
    def heal(self):
        self.c.network.heal()

    @invariant()
    def durable_games_exist_on_enough_disks(self):
        if not hasattr(self, "c"):
            return
        for (o, key), through in self.c.durable.items():
            for q in range(1, through + 1):
                holders = [n for n in IDS if self.c.world.disks[n].games.get((o, key), {}).get(q) is not None]
                assert holders, f"durable game {o}/{key}/{q} lost"
                assert len(holders) >= 2 - self.wiped, (o, key, q, holders)
                assert all(self.c.world.disks[h].games[(o, key)][q] == self.published[(o, key)][q] for h in holders)

    def teardown(self):
        if not hasattr(self, "c"):
            return
        c = self.c
        c.network.heal()
        for n in sorted(c.world.paused):
            c.world.resume(n)
        for n in sorted(c.world.down):
            c.restart(n)

        def done():
            for (o, key), through in c.durable.items():
                for t in TRAINING:
                    log = c.world.disks[t].games.get((o, key), {})
                    if any(log.get(q) != self.published[(o, key)][q] for q in range(1, through + 1)):
                        return False
            return True

        deadline = c.now + 120
        while not done():
            assert c.now < deadline, {k: v for k, v in c.durable.items()}
            c.world.run(until=c.now + 1.0)


GameStreamMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
TestGameStreamMachine = GameStreamMachine.TestCase
