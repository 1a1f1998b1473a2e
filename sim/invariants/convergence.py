"""Liveness: what a healed cluster must reach, and, while it has not, what is missing and why.

Looked at every `check_every` seconds of the liveness phase, cheapest first (`done` stops at
the first condition that fails; `status` explains every one of them):

    manifests   every host holds the same version vector (incremental, confirmed by the core's
                own fingerprints)
    leader      every host knows one leader, which is up
    membership  every host sees every host alive
    files       every host the router places the newest version of a file on (as the converged
                manifest says) holds it, in its manifest and on its disk
    games       every game host holds every game of every stream up to the longest prefix that
                still exists on some disk
"""

from __future__ import annotations

from typing import Any, Callable

from ringmesh.core import catalog
from ringmesh.core import membership as mb
from ringmesh.core.streams import host_of

from ..cluster import Cluster
from ..membership import agreed_leader
from .games import DurableGames

SHOWN = 8  # examples per condition in a report


class Convergence:
    def __init__(
        self, cluster: Cluster, games: DurableGames, *, on_disk: Callable[[str], object] | None = None
    ) -> None:
        self.c, self.games = cluster, games
        self.confirmed: str | None = None  # fingerprint the vectors were confirmed at

    # -- the conditions, cheap first ---------------------------------------------------------------

    def done(self) -> bool:
        return all(ok for ok, _ in (self._check(name) for name in self.ORDER))

    def status(self) -> dict[str, Any]:
        """Every condition: `{"ok": bool, ...why not}`."""
        out = {}
        for name in self.ORDER:
            ok, why = self._check(name, explain=True)
            out[name] = {"ok": ok, **why}
        return out

    ORDER = ("manifests", "leader", "membership", "files", "games")

    def _check(self, name: str, explain: bool = False) -> tuple[bool, dict[str, Any]]:
        return getattr(self, f"_{name}")(explain)

    def _manifests(self, explain: bool) -> tuple[bool, dict[str, Any]]:
        c = self.c
        if c.vectors.converged():
            fps = c.fingerprints()
            if len(set(fps.values())) == 1:
                return True, {}
            if not explain:
                return False, {}
            groups: dict[str, list[str]] = {}
            for n, fp in fps.items():
                groups.setdefault(fp, []).append(n)
            return False, {
                "why": "the persist checker saw equal vectors but the fingerprints differ",
                "fingerprints": len(groups),
            }
        if not explain:
            return False, {}
        lag = c.vectors.lagging()
        detail = {}
        for n in lag[:SHOWN]:
            mine = c.peer(n).manifest.version_vector()
            behind = [o for o, v in sorted(c.vectors.truth.items()) if mine.get(o) != v]
            detail[n] = {"origins_behind": len(behind), "e.g.": behind[:3], "up": c.world.is_up(n)}
        return False, {"lagging": len(lag), "hosts": detail}

    def _leader(self, explain: bool) -> tuple[bool, dict[str, Any]]:
        c = self.c
        if agreed_leader(c) is not None:
            return True, {}
        if not explain:
            return False, {}
        known: dict[str, list[str]] = {}
        for n in c.live():
            leader, term = c.peer(n).leader()
            known.setdefault(f"{leader} (term {term})", []).append(n)
        return False, {
            "leaders_known": {k: len(v) for k, v in sorted(known.items())},
            "why": "no host leads" if list(known) == ["None"] else "hosts disagree or the leader is down",
        }

    def _membership(self, explain: bool) -> tuple[bool, dict[str, Any]]:
        c = self.c
        bad = []
        for o in c.ids:
            m = c.peer(o).membership
            for x in c.ids:
                if x != o and m.view(x) != mb.ALIVE:
                    bad.append((o, x, m.view(x)))
                    if not explain:
                        return False, {}
        if not bad:
            return True, {}
        return False, {"views_not_alive": len(bad), "e.g.": [f"{o} sees {x} {v}" for o, x, v in bad[:SHOWN]]}

    def _files(self, explain: bool) -> tuple[bool, dict[str, Any]]:
        c = self.c
        ref = c.peer(c.ids[0])
        placer = ref.placer()
        missing = []
        for item, v in sorted(catalog.newest_versions(ref.manifest).items()):
            for t in placer(v).targets:
                held = catalog.holdings(ref.manifest, t).get(item)
                on_disk = c.world.disks[t].files.get(item, ("", 0))[0]
                if held != v.digest or on_disk != v.digest:
                    if not explain:
                        return False, {}
                    missing.append(self._why_file(t, v, held, on_disk))
        if not missing:
            return True, {}
        return False, {"missing": len(missing), "e.g.": missing[:SHOWN]}

    def _why_file(self, t: str, v, held, on_disk) -> str:
        p = self.c.peer(t)
        key = (v.item, v.digest)
        state = "pulling" if key in p.transfers.running else "waiting"
        backoff = p.transfers.backoff.get(key)
        if backoff:
            state += f", {backoff[0]} failures, retry at {backoff[1]:.1f} s"
        holders = catalog.holders(p.manifest).get(key, [])
        return (
            f"{t} lacks {v.item} {v.digest[:8]} ({state}; manifest says {str(held)[:8]}, disk {str(on_disk)[:8]}; "
            f"{len(holders)} holders known to it)"
        )

    def _games(self, explain: bool) -> tuple[bool, dict[str, Any]]:
        c = self.c
        hosts = c.peer(c.ids[0]).game_placement().targets
        missing = []
        for stream in sorted(self.games.ever):
            top = self.available(stream)
            if not top:
                continue
            for h in hosts:
                if host_of(stream[0]) == h and c.peer(h).replication.origin == stream[0]:
                    continue
                disk, lost = c.world.disks[h], self.games.lost(stream)
                hw = 0
                while disk.holds(stream, hw + 1) or hw + 1 in lost:  # a good copy, or lost everywhere
                    hw += 1
                if hw < top:
                    if not explain:
                        return False, {}
                    missing.append(f"{h} holds {stream[0]}/{stream[1]} through {hw} of {top}")
        if not missing:
            return True, {}
        return False, {"missing": len(missing), "e.g.": missing[:SHOWN]}

    def available(self, stream: tuple[str, str]) -> int:
        """The longest prefix 1..k of the stream whose every game is on some disk now, with a
        copy that verifies (or lost on every holder and so known to the cluster)."""
        ever, disks, lost = self.games.ever.get(stream, {}), self.c.world.disks, self.games.lost(stream)
        k = 0
        while k + 1 in ever and (k + 1 in lost or any(disks[h].holds(stream, k + 1) for h in ever[k + 1])):
            k += 1
        return k
