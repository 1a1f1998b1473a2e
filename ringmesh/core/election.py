"""Leader election among the voters: Raft's election with pre-vote and a leader lease.

Theory of operation
-------------------
Voters (persistent, non-excluded hosts, or those marked `voter: true`) elect one leader per
*term*. The leader acts only while it holds a *lease*; every order it gives carries its term
and hosts ignore orders from an older term.

* Safety: a voter grants at most one vote per term, and records `(term, voted_for)` durably
  (the `SaveVote` effect is carried out before any message of the same step is sent). A
  candidate needs a majority of the voters, and two majorities intersect: at most one leader
  per term.
* Pre-vote: a follower whose election timer ran out first asks the voters whether they would
  vote for it in `term + 1` without changing anything. Voters that heard from a live leader in
  the last `election_timeout` say no. A host that was cut off therefore cannot bump the term
  and depose a healthy leader when it returns.
* Stickiness and lease: a voter that heard from the leader less than `election_timeout` ago
  refuses votes (pre or real). The leader's heartbeat round `r` sent at `t_r` and acknowledged
  by a majority gives it the lease `t_r + lease`, with `lease < election_timeout`: no other
  leader can be elected before it runs out (clocks are assumed to run at about the same rate,
  not to agree). A leader that cannot renew its lease steps down when it ends; a leader
  paused (SIGSTOP, a long GC) finds its lease gone on waking and does not act with it.
* Timers are randomised in `[election_timeout, 2 * election_timeout]`.
* Assumption: a voter keeps its disk. A voter whose vote record is lost could vote twice in
  one term, which no election protocol survives (Raft asks for a membership change). This is
  why voters default to persistent, non-excluded hosts; a spot host never votes unless an
  operator marks it `voter: true`.

* Hosts nobody can dial (`nat`: the file's `nat_blocked`) never stand: a leader must be reachable
  by every host for its heartbeats' acks, broadcast orders and backups. They vote if they are
  voters, and voters refuse a vote to one of them (a host that believes it may lead when the
  file says otherwise is outvoted, not obeyed).

Non-voters learn the leader from its heartbeats (the leader sends every member one on
election, and once per `election_timeout` again to each member that has not acked one of its
term: non-voters ack the announcement, and a lost one is sent again) and from the `leader`
fact it publishes through gossip.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from . import catalog, keys
from .errors import LocalProtocolError, unknown
from .manifest import Manifest
from .messages import (
    ElectionMessage,
    Emit,
    HeartbeatAck,
    LeaderHeartbeat,
    Outbox,
    SaveVote,
    Timer,
    VoteReply,
    VoteRequest,
)

FOLLOWER, PRECANDIDATE, CANDIDATE, LEADER, OBSERVER = "follower", "precandidate", "candidate", "leader", "observer"


@dataclass(frozen=True, slots=True, kw_only=True)
class ElectionConfig:
    heartbeat_interval: float = 0.2
    election_timeout: float = 1.0
    lease: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval < self.lease < self.election_timeout:
            raise LocalProtocolError("need 0 < heartbeat_interval < lease < election_timeout")


class Election:
    def __init__(
        self,
        me: str,
        voters: list[str],
        rng: random.Random,
        config: ElectionConfig = ElectionConfig(),
        *,
        term: int = 0,
        voted_for: str | None = None,
        manifest: Manifest | None = None,
        nat: frozenset[str] = frozenset(),
    ) -> None:
        self.me, self.rng, self.config, self.m = me, rng, config, manifest  # the manifest gets the leader fact
        self.voters = sorted(set(voters))
        self.is_voter = me in self.voters
        self.nat = nat  # hosts that never lead
        self.term, self.voted_for = term, voted_for
        self.role = FOLLOWER if self.is_voter else OBSERVER
        self.leader: str | None = None
        self.last_contact = float("-inf")  # last time we heard the current leader
        self.votes: set[str] = set()
        self.lease_until = float("-inf")
        self.leader_since = float("-inf")
        self.started_at = float("-inf")
        self.hb_seq = 0
        self.hb_sent: dict[int, float] = {}
        self.hb_acks: dict[int, set[str]] = {}
        self.members: list[str] = []  # every known host, for the announcement on election
        self.announced: set[str] = set()  # hosts that acked a heartbeat of our term (as leader)
        self.announce_at = float("inf")  # when the leader next re-announces to the others
        self.elections_started = 0
        # what the step under way changed, made effects at its end (`_done`)
        self.vote_changed = self.won = self.leader_changed = False

    # -- queries ---------------------------------------------------------------------------

    @property
    def majority(self) -> int:
        return len(self.voters) // 2 + 1

    def is_leader(self, now: float) -> bool:
        """Leader of `self.term` with a lease still running: the only state that may act."""
        return self.role == LEADER and now < self.lease_until

    # -- driving ---------------------------------------------------------------------------

    def start(self, now: float) -> Outbox:
        out = Outbox()
        # A voter that just (re)started may have acked a leader's lease it no longer
        # remembers: it grants no vote for one election timeout, as if it had heard a leader.
        self.started_at = now
        if self.is_voter:
            self._arm(out, now)
        return self._done(out)

    def rearm(self, now: float) -> Outbox:
        """The timers this part runs on, set afresh (after a step whose effects were lost).
        An election timer that fires early only re-arms itself: nothing is decided sooner."""
        self.vote_changed = self.won = self.leader_changed = False  # of the step that was lost
        out = Outbox()
        if self.is_voter:
            out.timers.append((Timer.ELECTION, now + self.config.heartbeat_interval))
        if self.role == LEADER:
            out.timers.append((Timer.LEADER_HEARTBEAT, now))
        return out

    def on_timer(self, name: Timer, now: float) -> Outbox:
        out = Outbox()
        self._on_timer(out, name, now)
        return self._done(out)

    def _on_timer(self, out: Outbox, name: Timer, now: float) -> None:
        if name == Timer.ELECTION and self.is_voter:
            if self.role == LEADER:
                if now < self.lease_until or self._lease_pending(now):
                    out.timers.append((Timer.ELECTION, max(self.lease_until, now + self.config.heartbeat_interval)))
                    return
                self._step_down(out, now, leader=None)  # no majority renewed the lease
            if now - self.last_contact < self.config.election_timeout or self.me in self.nat:
                self._arm(out, now, base=self.last_contact)
                return
            self._begin_prevote(out, now)
        elif name == Timer.LEADER_HEARTBEAT and self.role == LEADER and self.me in self.nat:
            self._step_down(out, now, leader=None)  # found out it cannot be dialled: it hands over
        elif name == Timer.LEADER_HEARTBEAT and self.role == LEADER:
            to = self.voters
            if now >= self.announce_at:  # members whose announcement (or its ack) was lost
                self.announce_at = now + self.config.election_timeout
                to = sorted(set(to) | (set(self.members) - self.announced))
            self._heartbeat(out, now, to)

    def on_message(self, sender: str, msg: ElectionMessage, now: float) -> Outbox:
        out = Outbox()
        match msg:
            case VoteRequest():
                self._on_vote_request(out, sender, msg, now)
            case VoteReply():
                self._on_vote_reply(out, sender, msg, now)
            case LeaderHeartbeat():
                self._on_heartbeat(out, sender, msg, now)
            case HeartbeatAck():
                self._on_heartbeat_ack(out, sender, msg, now)
            case _:
                unknown(msg)
        return self._done(out)

    def _done(self, out: Outbox) -> Outbox:
        """The step's vote record, leader fact and leader note, as of its end."""
        if self.vote_changed:
            out.effects.append(SaveVote(term=self.term, voted_for=self.voted_for))
        if self.won and self.m is not None:
            out.writes.append(self.m.put(keys.LEADER, catalog.pack({"t": self.term})))
        if self.leader_changed:
            detail = f"term {self.term}, this host {self.role}"
            out.effects.append(Emit(kind="leader", subject=self.leader or "", detail=detail))
        self.vote_changed = self.won = self.leader_changed = False
        return out

    # -- becoming a candidate --------------------------------------------------------------

    def _arm(self, out: Outbox, now: float, base: float | None = None) -> None:
        t = self.config.election_timeout
        start = now if base is None or base == float("-inf") else max(base, now - t)
        out.timers.append((Timer.ELECTION, max(now, start + t) + self.rng.uniform(0, t)))

    def _begin_prevote(self, out: Outbox, now: float) -> None:
        self.role, self.votes = PRECANDIDATE, {self.me}
        self.elections_started += 1
        out.sends += [(v, VoteRequest(term=self.term + 1, pre=True)) for v in self.voters if v != self.me]
        self._arm(out, now)
        self._maybe_won(out, now)

    def _begin_election(self, out: Outbox, now: float) -> None:
        self.term += 1
        self.role, self.voted_for, self.votes, self.leader = CANDIDATE, self.me, {self.me}, None
        self.vote_changed = self.leader_changed = True
        out.sends += [(v, VoteRequest(term=self.term, pre=False)) for v in self.voters if v != self.me]
        self._arm(out, now)
        self._maybe_won(out, now)

    def _maybe_won(self, out: Outbox, now: float) -> None:
        if len(self.votes) < self.majority:
            return
        if self.role == PRECANDIDATE:
            self._begin_election(out, now)
        elif self.role == CANDIDATE:
            self.role, self.leader, self.leader_since = LEADER, self.me, now
            self.hb_sent, self.hb_acks = {}, {}
            self.announced, self.announce_at = {self.me}, now + self.config.election_timeout
            self.won = self.leader_changed = True
            self._heartbeat(out, now, sorted(set(self.voters) | set(self.members)))

    # -- votes -----------------------------------------------------------------------------

    def _leader_is_alive(self, now: float) -> bool:
        if now - self.started_at < self.config.election_timeout:
            return True
        if self.role == LEADER:
            return now < self.lease_until or self._lease_pending(now)
        return self.leader is not None and now - self.last_contact < self.config.election_timeout

    def _lease_pending(self, now: float) -> bool:
        """A leader elected moments ago, waiting for the acks of its first heartbeats."""
        return self.lease_until == float("-inf") and now - self.leader_since < self.config.election_timeout

    def _on_vote_request(self, out: Outbox, sender: str, msg: VoteRequest, now: float) -> None:
        if not self.is_voter or sender not in self.voters:
            return
        if sender in self.nat:
            out.sends.append((sender, VoteReply(term=max(msg.term, self.term), granted=False, pre=msg.pre)))
            return
        if msg.pre:
            granted = msg.term > self.term and not self._leader_is_alive(now)
            out.sends.append((sender, VoteReply(term=msg.term, granted=granted, pre=True)))
            return
        if msg.term > self.term and not self._leader_is_alive(now):
            self._adopt_term(out, msg.term, now)
        granted = msg.term == self.term and self.voted_for in (None, sender)
        if granted and self.voted_for is None:
            self.voted_for = sender
            self.vote_changed = True
            self._arm(out, now)
        out.sends.append((sender, VoteReply(term=self.term, granted=granted, pre=False)))

    def _on_vote_reply(self, out: Outbox, sender: str, msg: VoteReply, now: float) -> None:
        if sender not in self.voters:
            return
        if not msg.pre and msg.term > self.term:
            self._adopt_term(out, msg.term, now)
            return
        if not msg.granted:
            return
        if (msg.pre and self.role == PRECANDIDATE and msg.term == self.term + 1) or (
            not msg.pre and self.role == CANDIDATE and msg.term == self.term
        ):
            self.votes.add(sender)
            self._maybe_won(out, now)

    def _adopt_term(self, out: Outbox, term: int, now: float) -> None:
        self.term, self.voted_for = term, None
        self.vote_changed = True
        self._step_down(out, now, leader=None)

    def _step_down(self, out: Outbox, now: float, leader: str | None) -> None:
        was = (self.role, self.leader)
        self.role = FOLLOWER if self.is_voter else OBSERVER
        self.leader, self.lease_until, self.votes = leader, float("-inf"), set()
        if was != (self.role, self.leader):
            self.leader_changed = True
        if self.is_voter:
            self._arm(out, now)

    # -- heartbeats and the lease ----------------------------------------------------------

    def _heartbeat(self, out: Outbox, now: float, to: list[str]) -> None:
        self.hb_seq += 1
        self.hb_sent[self.hb_seq] = now
        self.hb_acks[self.hb_seq] = {self.me}
        for old in [s for s in self.hb_sent if s < self.hb_seq - 64]:
            del self.hb_sent[old], self.hb_acks[old]
        out.sends += [(v, LeaderHeartbeat(term=self.term, seq=self.hb_seq)) for v in to if v != self.me]
        out.timers.append((Timer.LEADER_HEARTBEAT, now + self.config.heartbeat_interval))
        out.timers.append((Timer.ELECTION, max(now + self.config.heartbeat_interval, self.lease_until)))
        self._renew(now)

    def _renew(self, now: float) -> None:
        for seq in sorted(self.hb_acks, reverse=True):
            if len(self.hb_acks[seq]) >= self.majority:
                self.lease_until = max(self.lease_until, self.hb_sent[seq] + self.config.lease)
                break

    def _on_heartbeat(self, out: Outbox, sender: str, msg: LeaderHeartbeat, now: float) -> None:
        if msg.term < self.term:
            if self.is_voter and sender in self.voters:
                out.sends.append((sender, HeartbeatAck(term=self.term, seq=msg.seq)))  # tells it of the new term
            return
        if msg.term > self.term:
            self.term, self.voted_for = msg.term, None
            self.vote_changed = True
        if self.leader != sender or self.role not in (FOLLOWER, OBSERVER):
            self._step_down(out, now, leader=sender)
        self.last_contact = now
        if sender in self.voters:  # a non-voter acks too: the leader stops re-announcing to it
            out.sends.append((sender, HeartbeatAck(term=self.term, seq=msg.seq)))
        if self.is_voter and sender in self.voters:
            self._arm(out, now)

    def _on_heartbeat_ack(self, out: Outbox, sender: str, msg: HeartbeatAck, now: float) -> None:
        if msg.term > self.term:
            self._adopt_term(out, msg.term, now)
            return
        if self.role == LEADER and msg.term == self.term:
            self.announced.add(sender)
        if self.role != LEADER or msg.term != self.term or msg.seq not in self.hb_acks or sender not in self.voters:
            return
        self.hb_acks[msg.seq].add(sender)
        self._renew(now)
