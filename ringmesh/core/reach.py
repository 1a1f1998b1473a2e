"""Which hosts a host nobody can dial keeps its links to (`nat_blocked` in the file).

Such a host dials out to `k` relays and everything for it arrives over those links
(node/wire/relay.py carries it; the simulator models it). The choice is pure so that the daemon and
the simulator make the same one:

* Candidates are hosts that can be dialled and stay: not NAT'd, not ephemeral, not believed dead
  (alive or suspect) — and with no link up, any of them: a host with no link hears nothing and
  soon believes everyone dead.
* Spread: at most one relay per provider while other providers have candidates left (one
  provider's outage does not cut a NAT'd host off), then the rest by rank.
* Rank: rendezvous hashing of (host, candidate). Each NAT'd host ranks the candidates
  differently, so relaying is spread over the cluster, and a host whose relay failed replaces only
  that one (the survivors keep their rank): links are not reshuffled by churn elsewhere.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

RELAYS = 3  # links a NAT'd host keeps


def rank(me: str, candidate: str) -> bytes:
    return hashlib.blake2b(f"{me}\0{candidate}".encode(), digest_size=8).digest()


def choose_relays(me: str, candidates: Mapping[str, str], k: int = RELAYS, keep: Iterable[str] = ()) -> list[str]:
    """Up to `k` relays for `me` among `candidates` (host -> provider), spread over providers.
    `keep`: relays whose links are up now; they stay chosen while they are candidates."""
    pool = {c: p for c, p in candidates.items() if c != me}
    chosen = [c for c in dict.fromkeys(keep) if c in pool][:k]
    providers = {pool[c] for c in chosen}
    ordered = sorted((c for c in pool if c not in chosen), key=lambda c: rank(me, c))
    for c in ordered:  # one per provider first
        if len(chosen) < k and pool[c] not in providers:
            chosen.append(c)
            providers.add(pool[c])
    for c in ordered:
        if len(chosen) < k and c not in chosen:
            chosen.append(c)
    return chosen
