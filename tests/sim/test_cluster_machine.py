"""The whole peer (gossip, membership, election) under schedules Hypothesis chooses: crashes,
restarts with and without disk, pauses, symmetric and one-way partitions, loss, time.

Safety, checked after every step: at most one leader per term, a voter never grants two
votes in one term. Liveness, after heal and quiescence: every host agrees on one leader and
on the same membership (everyone alive), and the manifests converge."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ringmesh.core import PeerConfig
from ringmesh.core import membership as mb
from sim.cluster import Cluster
from sim.invariants.election import OneLeaderPerTerm
from sim.membership import agreed_leader
from sim.network import LinkModel

N, VOTERS = 5, 3


class ClusterMachine(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 10_000))
    def setup(self, seed):
        self.c = Cluster(N, seed=seed, link=LinkModel(loss=0.0), config=PeerConfig(gossip_interval=0.5), voters=VOTERS)
        self.log = OneLeaderPerTerm(self.c.peer)  # checked on every event and every vote sent
        self.c.world.event_hooks.append(self.log.on_event)
        self.c.world.send_hooks.append(self.log.on_send)
        self.c.start()

    def _node(self, i):
        return self.c.ids[i % N]

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 3.0]))
    def advance(self, dt):
        self.c.world.run(until=self.c.now + dt)

    @rule(i=st.integers(0, N - 1))
    def crash(self, i):
        n = self._node(i)
        if n not in self.c.world.down:
            self.c.crash(n)

    @rule(i=st.integers(0, N - 1), wipe=st.booleans())
    def restart(self, i, wipe):
        """Restart with its disk, or (non-voters only) with a wiped one. A voter that loses
        its disk loses its vote record, and no election protocol stays safe through that
        (see ringmesh/core/election.py): voters are persistent hosts by design."""
        n = self._node(i)
        if n in self.c.world.down:
            self.c.restart(n, wipe=wipe and n not in self.c.voters)

    @rule(i=st.integers(0, N - 1))
    def pause(self, i):
        n = self._node(i)
        if self.c.world.is_up(n):
            self.c.world.pause(n)

    @precondition(lambda self: self.c.world.paused)
    @rule(i=st.integers(0, N - 1))
    def resume(self, i):
        paused = sorted(self.c.world.paused)
        self.c.world.resume(paused[i % len(paused)])

    @rule(cut=st.sets(st.integers(0, N - 1), min_size=1, max_size=N - 1), one_way=st.booleans())
    def partition(self, cut, one_way):
        side = {self._node(i) for i in cut}
        other = set(self.c.ids) - side
        self.c.network.blocked |= {(a, b) for a in side for b in other}
        if not one_way:
            self.c.network.blocked |= {(b, a) for a in side for b in other}

    @rule()
    def heal(self):
        self.c.network.blocked.clear()

    @rule(loss=st.sampled_from([0.0, 0.1, 0.3]))
    def lossy(self, loss):
        self.c.network.model = LinkModel(loss=loss)

    @invariant()
    def safe(self):
        if hasattr(self, "c"):  # the hooks raise at the event itself; here: every leader was seen
            for n in self.c.ids:
                e = self.c.peer(n).election
                assert e.role != "leader" or self.log.leaders.get(e.term) == n

    def teardown(self):
        if not hasattr(self, "c"):
            return
        c = self.c
        c.network.blocked.clear()
        c.network.model = LinkModel(loss=0.0)
        for n in sorted(c.world.paused):
            c.world.resume(n)
        for n in sorted(c.world.down):
            c.restart(n)
        deadline = c.now + 120
        while c.now < deadline:
            c.world.run(until=c.now + 0.5)
            views_ok = all(c.peer(o).membership.view(x) == mb.ALIVE for o in c.ids for x in c.ids)
            if views_ok and agreed_leader(c) is not None and c.vectors_equal():
                return
        state = {
            n: (c.peer(n).leader(), c.peer(n).election.role, {x: c.peer(n).membership.view(x) for x in c.ids})
            for n in c.ids
        }
        raise AssertionError(f"no agreement 120 s after heal: {state}")


ClusterMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
TestClusterMachine = ClusterMachine.TestCase
