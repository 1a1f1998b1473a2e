"""Deliberately broken copies of core rules, for tests that show the checkers catch them."""

from __future__ import annotations

import types

from ringmesh.core import Peer
from ringmesh.core import election as el
from ringmesh.core.bandwidth import Limiter
from ringmesh.core.messages import GamesAck, Outbox, StoreGames


class DoubleVoteElection(el.Election):
    """A voter that grants every vote request of its term or a later one, having voted or not."""

    def _on_vote_request(self, out, sender, msg, now):
        if msg.pre or not self.is_voter or sender not in self.voters:
            return super()._on_vote_request(out, sender, msg, now)
        if msg.term > self.term:
            self._adopt_term(out, msg.term, now)
        granted = msg.term == self.term
        if granted:
            self.voted_for = sender
            self.vote_changed = True
        out.sends.append((sender, el.VoteReply(term=self.term, granted=granted, pre=False)))


class DoubleVotePeer(Peer):
    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        e = self.election
        self.election = DoubleVoteElection(me, e.voters, self.rng, e.config, term=e.term, voted_for=e.voted_for)


def _ack_before_fsync(self, sender, msg):
    """Acknowledge a push as it arrives, before the write is durable."""
    out = Outbox()
    if msg.origin != self.origin and msg.games:
        out.effects.append(StoreGames(origin=msg.origin, config_key=msg.config_key, games=msg.games))
        out.sends.append(
            (sender, GamesAck(origin=msg.origin, config_key=msg.config_key, seqs=tuple(q for q, _ in msg.games)))
        )
    return out


class EarlyAckPeer(Peer):
    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        self.replication.on_push = types.MethodType(_ack_before_fsync, self.replication)


class CapBlindPeer(Peer):
    """A router that does not look at disk use: every host's figures dropped before placing."""

    def host_infos(self):
        from dataclasses import replace

        return [replace(h, disk_used_percent=None) for h in super().host_infos()]


def mbps_limiter(rate: int, burst: int) -> Limiter:
    """The seed's unit mistake: a limit in MB/s taken for kB/s and multiplied by 1000."""
    return Limiter(rate * 1000, burst)


class RaisingPeer(Peer):
    """A core with a bug that raises now and then on a probe timer (about once in a thousand)."""

    def handle(self, event, now):
        from ringmesh.core.messages import TimerFired

        if isinstance(event, TimerFired) and event.name == "probe" and self.rng.random() < 0.001:
            raise ValueError("max() arg is an empty sequence (a deliberate bug)")
        return super().handle(event, now)


class EarlyDropPeer(Peer):
    """Retention that does not wait for durability: every game stored here counts as durable."""

    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        r, honest = self.replication, self.replication.retain

        def retain(now):
            d = r.durability
            d.durable_through = lambda key: d._s(key).stored
            try:
                return honest(now)
            finally:
                del d.durable_through

        r.retain = retain


class EveryHostBacksUpPeer(Peer):
    """Every host runs the scheduled backups, leader or not (under the term it knows)."""

    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        s, honest = self.backup_schedule, self.backup_schedule.tick
        s.tick = lambda now, term: honest(now, self.election.term)


class FloorBlindPeer(Peer):
    """A game host that ignores an origin's retention floor (`lo` in its g/ mark), as peers did
    before it was advertised: it keeps asking the origin for games the origin dropped."""

    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        self.replication._floor = lambda stream, holder: 0


class NatBlindPeer(Peer):
    """An election that ignores `nat`: hosts nobody can dial stand, and voters grant them votes."""

    def __init__(self, me, **kw):
        super().__init__(me, **kw)
        self.election.nat = frozenset()

    def handle(self, event, now):
        out = super().handle(event, now)
        self.election.nat = frozenset()  # nor does it learn it from its own links (LinksChanged)
        return out


def deaf_relays(relays):
    """Relays whose links stay up but carry nothing: every send to a NAT'd host fails."""
    from ringmesh.core import SendFailed

    def send(src, dst, env, size):
        w = relays.world
        w.schedule_local(w.now + w.network.model.deadline, src, SendFailed(peer=dst, reason="unreachable"))

    relays.send = send
