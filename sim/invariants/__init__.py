"""Invariant checkers: separate, small, fed by the world's hooks, each raising `Violation`.

Safety (checked as the run goes, on every event that could break them):
    games.DurableGames        no durable game lost; "durable" only once min_copies disks hold it,
                              one of them a persistent host's
    election.OneLeaderPerTerm at most one leader per term; a voter grants one vote per term
    links.LinkLimits          no host sends or receives above its byte budget (rate, burst)
    disks.DiskCaps            no pull starts onto a host whose disk was above the cap
    sim.checkers.BroadcastFencing  directives only from the leader of their term, with a lease
    sim.checkers.RetainedGames     an ephemeral origin drops a game only once durable on a
                                   persistent game host and `retention` old; (at the end) it does
    sim.checkers.BackupSchedules   a backup runs only on the leader of its term, each slot once
    sim.checkers.NatNeverLeads     a host nobody can dial (nat_blocked) never leads
    sim.checkers.NatFalseDeath     nor is it declared dead while it runs with a link up, the
                                   claimer runs, and the network is calm (the whole window)

Liveness (after the faults stop and the network heals: `convergence.Convergence`):
    manifests equal, one leader known to all, every host sees every host alive, every host
    that should hold a file holds its newest version, every game host holds every game.

A violation stops the run: the runner reports the checker, the message, the seed, the step
(events processed) and the last lines of the trace.
"""

from __future__ import annotations


class Violation(AssertionError):
    """An invariant does not hold. An AssertionError, so that asserting checkers fit in too."""

    def __init__(self, checker: str, message: str) -> None:
        super().__init__(f"{checker}: {message}")
        self.checker, self.message = checker, message
