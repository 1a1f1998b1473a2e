"""Gossip exchanges that cost what changed: a fingerprint of the whole vector, partial digests.

`Manifest.vector_hash()` is the XOR, over origins, of a keyed 64-bit hash of each digest entry
`(origin, incarnation, max_counter, floor)`: kept up to date as entries change, the same for
the same entries in any order. An exchange (each delta is `Manifest.delta_for`'s: gap-free per
origin, cut to the budget):

  Syn(RECENT)   the sender's fingerprint and its entries touched in the last `recent_rounds`
                gossip rounds (its own entry always).
  SynAck        the receiver puts the listed entries in place of its own and hashes: equal to
                the sender's fingerprint means the two differ in listed origins only. It sends
                the deltas the sender lacks among them and its own entries where they differ
                (ABSENT where it holds nothing). Otherwise it also lists its own recent entries
                and flags `mismatch`.
  Ack           the deltas the receiver lacks among the entries the SynAck listed, and among
                those the Syn listed that moved here since (not sent when empty).
  on mismatch   the sender checks the same way whether the difference lies within what the
                SynAck listed: if so it sends a TARGETED Syn of its entries for those origins,
                else (or when a TARGETED Syn mismatches too) a FULL one: the whole digest, which
                is answered with the whole digest and never followed up (Scuttlebutt as before).

Replicas that agree exchange fingerprints and one entry each way. Nothing is lost by a lost
or duplicated message: the fingerprints keep differing until a later exchange settles it.
"""

from __future__ import annotations

from typing import Mapping

from .manifest import Manifest, OriginDigest, entry_hash
from .messages import Ack, Syn, SynAck

FULL, RECENT, TARGETED = 0, 1, 2


def explains(m: Manifest, fingerprint: int, entries: Mapping[str, OriginDigest]) -> bool:
    """Our vector with `entries` in place of ours hashes to `fingerprint`: we differ from its
    holder in no origin outside `entries` (but with probability ~2^-64)."""
    x = m.vector_hash()
    for o, d in entries.items():
        x ^= m.hash_of(o) ^ entry_hash(o, d)
    return x == fingerprint


def differing(m: Manifest, entries: Mapping[str, OriginDigest]) -> dict[str, OriginDigest]:
    """Our entries for the origins where `entries` differ from ours (ABSENT: we hold nothing)."""
    return {o: e for o, d in entries.items() if (e := m.entry(o)) != d}


def _with_own(m: Manifest, entries: dict[str, OriginDigest]) -> dict[str, OriginDigest]:
    entries[m.me] = m.entry(m.me)  # the sender's own report (telemetry's lag; a past life of the receiver's)
    return entries


def syn(m: Manifest, recent_rounds: int) -> Syn:
    """A gossip round's Syn (its entries kept as `m.listed`)."""
    m.listed = _with_own(m, m.recent(recent_rounds))
    return Syn(digest=m.listed, fingerprint=m.vector_hash(), scope=RECENT)


def full_syn(m: Manifest) -> Syn:
    return Syn(digest=m.digest(), fingerprint=m.vector_hash(), scope=FULL)


def on_syn(m: Manifest, body: Syn, budget: int, recent_rounds: int) -> SynAck:
    fp = m.vector_hash()
    if body.scope == FULL:
        return SynAck(digest=m.digest(), delta=m.delta_for(body.digest, budget), fingerprint=fp, scope=FULL)
    mismatch = not explains(m, body.fingerprint, body.digest)
    entries, theirs = differing(m, body.digest), dict(body.digest)
    if mismatch and body.scope == RECENT:
        recent = m.recent(recent_rounds)
        entries = recent | entries
        # A guess that the sender lacks just the newest write of each origin that moved here
        # lately: sent at once, it saves the round trips of a TARGETED Syn under churn. A wrong
        # guess costs bytes only: a receiver below it ignores the run, one above skips it.
        for o, e in recent.items():
            if o not in theirs and e.max_counter - 1 >= e.floor:
                theirs[o] = e._replace(max_counter=e.max_counter - 1)
    delta = m.delta_for(theirs, budget, only=theirs)
    return SynAck(digest=_with_own(m, entries), delta=delta, fingerprint=fp, scope=body.scope, mismatch=mismatch)


def on_synack(m: Manifest, body: SynAck, budget: int) -> list[Ack | Syn]:
    """What answers a SynAck whose delta has been applied: an Ack, a follow-up Syn, both or none."""
    if body.scope == FULL:
        delta = m.delta_for(body.digest, budget)
        return [Ack(delta=delta)] if delta.origins else []
    # An origin the SynAck does not list was, when the receiver answered, as our Syn listed it
    # (if it answers this round's Syn): what we learned since (from the answer of another target
    # of the round) is pushed at once. A wrong guess costs bytes only (`apply` checks ranges).
    theirs = dict(m.listed) if body.scope == RECENT else {}
    theirs.update(body.digest)
    delta = m.delta_for(theirs, budget, only=theirs)
    out: list[Ack | Syn] = [Ack(delta=delta)] if delta.origins else []
    if body.mismatch:
        if body.scope == RECENT and explains(m, body.fingerprint, body.digest):
            theirs_ahead = differing(m, body.digest)
            if theirs_ahead:
                out.append(Syn(digest=_with_own(m, theirs_ahead), fingerprint=m.vector_hash(), scope=TARGETED))
        else:
            out.append(full_syn(m))
    return out
