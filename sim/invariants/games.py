"""No durable game is lost, and no game is called durable before it is.

Fed by the world's store hook (a stream-log write became durable on a host: the origin's
own intake or a push/pull after its fsync), durable hook (an origin's `GamesDurable`) and
the runner's `wiped(host)` before a disk is lost.

* When an origin reports games durable through seq n, every one of them must have been
  written to at least `min_copies` disks, one of them a persistent host's (DESIGN.md "Game
  streams"). An ack sent before the fsync, or a mark advertised too early, fails here.
* When a disk is lost, every durable game on it must still be on another disk. Only spot
  hosts lose disks in the scenarios, so a durable game always keeps its persistent copy.
* Copies count only while they verify: a copy gone bad (`Disk.rot`, found or not) is none.
  A durable game whose every copy went bad before one was repaired is lost for real: a
  violation (`check_all`), which the rot scenario's rates keep from happening (one copy at a
  time, scrubs more often than rot hits a stream again). A game lost before it was durable
  (its only copy rotted) is no violation: the cluster lists it (`x/` facts, GamesLost) and
  the report counts it.

It also keeps, per game, when it was published, when it became durable and when the game
hosts stored it, for the freshness figures of the report.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from ringmesh.core.messages import GamesDurable

from . import Violation

if TYPE_CHECKING:
    from ..disk import Disk

Stream = tuple[str, str]  # (origin, config_key)


class DurableGames:
    name = "durable-games"

    def __init__(
        self,
        *,
        min_copies: int,
        persistent: Callable[[str], bool],
        disks: Callable[[str], Disk],
        origin_of: Callable[[str], str],
        game_hosts: Iterable[str] = (),
    ) -> None:
        self.min_copies, self.persistent, self.disks, self.origin_of = min_copies, persistent, disks, origin_of
        self.game_hosts = set(game_hosts)
        self.ever: dict[Stream, dict[int, set[str]]] = {}  # every host whose disk held the game
        self.durable: dict[Stream, int] = {}  # stream -> durable through (as its origin said)
        self.published: dict[Stream, dict[int, float]] = {}
        self.durable_at: dict[Stream, dict[int, float]] = {}
        self.at_game_hosts: dict[Stream, dict[int, dict[str, float]]] = {}  # when each game host stored it
        self.lost_seqs: dict[Stream, set[int]] = {}  # GamesLost, as any host carried it out
        self.lost_beyond_model = 0  # durable games lost with every persistent copy (not in the fault model)

    def on_store(self, node: str, origin: str, key: str, seqs: tuple[int, ...], now: float) -> None:
        stream = (origin, key)
        ever = self.ever.setdefault(stream, {})
        own = self.origin_of(node) == origin
        for q in seqs:
            ever.setdefault(q, set()).add(node)
            if own:
                self.published.setdefault(stream, {}).setdefault(q, now)
            elif node in self.game_hosts:
                self.at_game_hosts.setdefault(stream, {}).setdefault(q, {}).setdefault(node, now)

    def on_durable(self, node: str, eff: GamesDurable, now: float) -> None:
        stream = (self.origin_of(node), eff.config_key)
        before = self.durable.get(stream, 0)
        if eff.through <= before:
            return
        ever = self.ever.get(stream, {})
        for q in range(before + 1, eff.through + 1):
            hosts = ever.get(q, set())
            if len(hosts) < self.min_copies or not any(self.persistent(h) for h in hosts):
                raise Violation(
                    self.name,
                    f"{node} declared game {stream[0]}/{stream[1]}/{q} durable at {now:.3f} s, "
                    f"but only these disks ever held it: {sorted(hosts) or 'none'} "
                    f"(need {self.min_copies}, one persistent)",
                )
            self.durable_at.setdefault(stream, {})[q] = now
        self.durable[stream] = eff.through

    def wiped(self, node: str) -> None:
        """`node`'s disk is about to be lost: each durable game on it must be on another disk."""
        disk = self.disks(node)
        for (origin, key), log in disk.games.items():
            through = self.durable.get((origin, key), 0)
            for q in log:
                if q > through:
                    continue
                others = [h for h in self.ever[(origin, key)][q] if h != node and self.disks(h).holds((origin, key), q)]
                if not others:
                    raise Violation(self.name, f"durable game {origin}/{key}/{q} lost: its last copy was on {node}")

    def check_all(self) -> None:
        """Every durable game is on some disk with a copy that verifies (a full sweep, for the
        end of a run)."""
        for stream, through in self.durable.items():
            for q in range(1, through + 1):
                hosts = self.ever.get(stream, {}).get(q, set())
                if not any(self.disks(h).holds(stream, q) for h in hosts):
                    bad = sorted(h for h in hosts if q in self.disks(h).rotten.get(stream, ()))
                    how = f" (copies gone bad, unrepaired: {bad})" if bad else ""
                    lost = " (the cluster lists it lost)" if q in self.lost(stream) else ""
                    raise Violation(self.name, f"durable game {stream[0]}/{stream[1]}/{q} is on no disk{how}{lost}")

    def on_lost(self, node: str, stream: Stream, seqs: tuple[int, ...], now: float) -> None:
        """`node`'s log skips these seqs from now on: lost on every holder, the cluster says."""
        self.lost_seqs.setdefault(stream, set()).update(seqs)

    def lost(self, stream: Stream) -> set[int]:
        """The seqs of `stream` some host's log skips as lost on every holder (GamesLost)."""
        return self.lost_seqs.get(stream, set())
