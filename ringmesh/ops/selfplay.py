"""A realistic, seeded self-play database fixture, written the way the cluster's writer does:
game ``active`` first, players, initial state, moves with history entries and snapshots every
20 moves, then finalised ``completed``. Used by tests, benchmarks and the demo.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import struct
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from ringmesh.node.games.gamedb import create_db, parse_config_key
from ringmesh.node.games.gamedb_schema import SCHEMA_VERSION

_PHASES = ("ring_placement", "movement", "capture", "line_processing", "territory_processing")
_MOVE_TYPES = {
    "ring_placement": ("place_ring", "skip_placement"),
    "movement": ("move_stack", "move_ring"),
    "capture": ("overtaking_capture", "continue_capture_segment"),
    "line_processing": ("process_line", "choose_line_reward"),
    "territory_processing": ("process_territory_region", "eliminate_rings_from_stack"),
}
_RINGS = {"square8": 18, "square19": 36, "hex8": 18, "hexagonal": 48}
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _cells(board: str) -> list[str]:
    if board.startswith("square"):
        n = 8 if board == "square8" else 19
        return [f"{x},{y}" for x in range(n) for y in range(n)]
    r = 4 if board == "hex8" else 12
    return [f"{x},{y},{-x - y}" for x in range(-r, r + 1) for y in range(-r, r + 1) if abs(x + y) <= r]


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode(), compresslevel=6, mtime=0)


def _h(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds")


class _Game:
    """One simulated game's evolving state (a RingRift-like GameState)."""

    def __init__(self, rng: random.Random, board: str, players: int, created: datetime):
        self.rng = rng
        self.board = board
        self.players = players
        self.game_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.rng_seed = rng.getrandbits(31)
        self.created = created
        self.clock = created
        self.cells = _cells(board)
        rings = _RINGS[board]
        self.state: dict[str, Any] = {
            "id": self.game_id,
            "boardType": board,
            "rngSeed": self.rng_seed,
            "board": {
                "type": board,
                "size": len(self.cells),
                "stacks": {},
                "markers": {},
                "collapsedSpaces": {},
                "eliminatedRings": {str(p): 0 for p in range(1, players + 1)},
            },
            "players": [
                {
                    "playerNumber": p,
                    "type": "ai",
                    "ringsInHand": rings,
                    "eliminatedRings": 0,
                    "territorySpaces": 0,
                    "aiProfile": {"difficulty": 8, "aiType": "gumbel_mcts"},
                }
                for p in range(1, players + 1)
            ],
            "currentPhase": "ring_placement",
            "currentPlayer": 1,
            "gameStatus": "active",
            "moveHistory": [],
            "timeControl": {"type": "none", "initialTime": 0, "increment": 0},
            "victoryThreshold": rings // 2 + 1,
            "territoryVictoryThreshold": len(self.cells) // 2 + 1,
            "totalRingsInPlay": rings * players,
            "totalRingsEliminated": 0,
        }
        self.moves = 0
        self.turns = 0
        self.state_text = json.dumps(self.state, separators=(",", ":"))

    def progress(self) -> str:
        b = self.state["board"]
        return json.dumps(
            {
                "markers": len(b["markers"]),
                "collapsed": len(b["collapsedSpaces"]),
                "eliminated": self.state["totalRingsEliminated"],
            },
            separators=(",", ":"),
        )

    def summary(self) -> str:
        b = self.state["board"]
        return json.dumps(
            {
                "stacks": len(b["stacks"]),
                "markers": len(b["markers"]),
                "collapsedSpaces": len(b["collapsedSpaces"]),
                "ringsInHand": [p["ringsInHand"] for p in self.state["players"]],
            },
            separators=(",", ":"),
        )

    def step(self) -> tuple[tuple, tuple, tuple | None]:
        """Play one move; returns (game_moves row, game_history_entries row, game_choices row|None)."""
        rng, st, b = self.rng, self.state, self.state["board"]
        n = self.moves
        player = st["currentPlayer"]
        phase_before = st["currentPhase"]
        before_text, before_hash, progress_before, summary_before = (
            self.state_text,
            _h(self.state_text),
            self.progress(),
            self.summary(),
        )
        move_type = rng.choice(_MOVE_TYPES[phase_before])
        to = rng.choice(self.cells)
        frm = rng.choice(self.cells)
        stack = b["stacks"].setdefault(to, {"rings": [], "stackHeight": 0, "capHeight": 0, "controllingPlayer": player})
        stack["rings"].append(player)
        stack["stackHeight"] = len(stack["rings"])
        stack["capHeight"] = 1 + rng.randrange(stack["stackHeight"])
        stack["controllingPlayer"] = player
        pl = st["players"][player - 1]
        if pl["ringsInHand"] > 0 and phase_before == "ring_placement":
            pl["ringsInHand"] -= 1
        if phase_before != "ring_placement":
            b["markers"][frm] = {"player": player, "position": frm, "type": "regular"}
        if rng.random() < 0.15:
            b["collapsedSpaces"][rng.choice(self.cells)] = player
            pl["territorySpaces"] += 1
        if rng.random() < 0.1:
            st["totalRingsEliminated"] += 1
            pl["eliminatedRings"] += 1
            b["eliminatedRings"][str(player)] += 1
        move = {
            "id": f"m{n}",
            "type": move_type,
            "player": player,
            "from": frm if phase_before != "ring_placement" else None,
            "to": to,
            "placementCount": 1 if move_type == "place_ring" else None,
            "moveNumber": n + 1,
            "thinkTime": rng.randrange(5, 900),
            "timestamp": _iso(self.clock),
        }
        st["moveHistory"].append({"type": move_type, "player": player, "to": to})
        del st["moveHistory"][:-12]
        if n >= 2 * self.players * 3 or all(p["ringsInHand"] == 0 for p in st["players"]):
            st["currentPhase"] = rng.choice(_PHASES[1:])
        next_player = player % self.players + 1 if rng.random() < 0.8 else player
        if next_player != player:
            self.turns += 1
        st["currentPlayer"] = next_player
        self.state_text = after_text = json.dumps(st, separators=(",", ":"))
        think = move["thinkTime"]
        self.clock += timedelta(milliseconds=think)
        evaluation = round(rng.uniform(-1, 1), 4)
        k = rng.randrange(3, 12)
        cand = rng.sample(self.cells, min(k, len(self.cells)))
        probs = [rng.random() for _ in cand]
        s = sum(probs)
        move_probs = json.dumps({c: round(p / s, 5) for c, p in zip(cand, probs)}, separators=(",", ":"))
        search = json.dumps(
            {
                "simulations": 800,
                "q_values": [round(rng.uniform(-1, 1), 4) for _ in cand],
                "visit_counts": [rng.randrange(800) for _ in cand],
                "root_value": evaluation,
            },
            separators=(",", ":"),
        )
        avail = json.dumps([{"type": move_type, "to": c} for c in cand], separators=(",", ":"))
        features = struct.pack("<24f", *(rng.uniform(-1, 1) for _ in range(24)))
        move_row = (
            self.game_id,
            n,
            self.turns,
            player,
            phase_before,
            move_type,
            json.dumps(move, separators=(",", ":")),
            _iso(self.clock),
            think,
            None,
            evaluation,
            "value",
            rng.randrange(1, 30),
            rng.randrange(100, 200000),
            " ".join(cand[:4]),
            think,
            move_probs,
            search,
            features,
        )
        hist_row = (
            self.game_id,
            n,
            player,
            phase_before,
            st["currentPhase"],
            "active",
            "active",
            progress_before,
            self.progress(),
            before_hash,
            _h(after_text),
            summary_before,
            self.summary(),
            before_text,
            after_text,
            0,
            avail,
            len(cand),
            evaluation,
            rng.randrange(1, 30),
            1,
            None,
        )
        choice_row = None
        if phase_before in ("line_processing", "territory_processing") and rng.random() < 0.5:
            ctype = "line_reward_option" if phase_before == "line_processing" else "region_order"
            options = json.dumps(
                [{"option": i, "positions": rng.sample(self.cells, 3)} for i in range(3)], separators=(",", ":")
            )
            choice_row = (
                self.game_id,
                n,
                ctype,
                player,
                options,
                json.dumps({"option": rng.randrange(3)}),
                "policy argmax",
            )
        self.moves += 1
        return move_row, hist_row, choice_row


class FixtureWriter:
    """Writes games into a self-play database the way the cluster's writer does.

    ``start()`` inserts the game ``active`` with its players and initial state (gzip JSON,
    ``compressed=1``); ``play(game, k)`` writes k moves (+ history entries, choices and a
    snapshot every 20 moves), committing per ``commit_every`` moves; ``finish(game)``
    updates the game to ``completed`` with winner, totals and final player rows.  All
    content is a function of the seed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        config_key: str = "hex8_2p",
        seed: int = 0,
        source: str = "self_play",
        commit_every: int = 10,
        writer_pause: float | Callable[[], None] | None = None,
    ):
        self.board, self.players = parse_config_key(config_key)
        self.rng = random.Random(seed)
        self.source = source
        self.commit_every = max(1, commit_every)
        self.pause = writer_pause
        self.conn = create_db(path)
        self.clock = _EPOCH + timedelta(seconds=self.rng.randrange(86400 * 300))

    def close(self) -> None:
        self.conn.close()

    def _pause(self) -> None:
        if self.pause is None:
            return
        if callable(self.pause):
            self.pause()
        elif self.pause > 0:
            time.sleep(self.pause)

    def start(self) -> _Game:
        self.clock += timedelta(milliseconds=self.rng.randrange(50, 5000))
        g = _Game(self.rng, self.board, self.players, self.clock)
        meta = json.dumps(
            {
                "source": self.source,
                "engine": "gumbel_mcts",
                "simulations": 800,
                "host": "gpu-%02d" % self.rng.randrange(40),
                "model": f"canonical_{self.board}_{self.players}p",
            }
        )
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "INSERT INTO games (game_id, board_type, num_players, rng_seed, created_at, game_status,"
            " total_moves, total_turns, source, schema_version, time_control_type, metadata_json,"
            " engine_mode, opponent_type) VALUES (?,?,?,?,?,'active',0,0,?,?,'none',?,?,?)",
            (
                g.game_id,
                self.board,
                self.players,
                g.rng_seed,
                _iso(g.created),
                self.source,
                SCHEMA_VERSION,
                meta,
                "gumbel_mcts",
                "self",
            ),
        )
        c.executemany(
            "INSERT INTO game_players (game_id, player_number, player_type, ai_type, ai_difficulty,"
            " ai_profile_id) VALUES (?,?,?,?,?,?)",
            [
                (g.game_id, p, "ai", "gumbel_mcts", 8, f"gumbel_d8_v{self.rng.randrange(3, 9)}")
                for p in range(1, self.players + 1)
            ],
        )
        c.execute(
            "INSERT INTO game_initial_state (game_id, initial_state_json, compressed) VALUES (?,?,1)",
            (g.game_id, _gz(g.state_text)),
        )
        c.execute("COMMIT")
        self._pause()
        return g

    def play(self, g: _Game, k: int) -> None:
        c = self.conn
        for i in range(k):
            if i % self.commit_every == 0:
                if i:
                    c.execute("COMMIT")
                    self._pause()
                c.execute("BEGIN IMMEDIATE")
            move_row, hist_row, choice_row = g.step()
            c.execute(f"INSERT INTO game_moves VALUES ({','.join('?' * len(move_row))})", move_row)
            c.execute(f"INSERT INTO game_history_entries VALUES ({','.join('?' * len(hist_row))})", hist_row)
            if choice_row:
                c.execute("INSERT INTO game_choices VALUES (?,?,?,?,?,?,?)", choice_row)
            if g.moves % 20 == 0:
                c.execute(
                    "INSERT INTO game_state_snapshots VALUES (?,?,?,1,?)",
                    (g.game_id, g.moves, _gz(g.state_text), _h(g.state_text)),
                )
        if k:
            c.execute("COMMIT")
            self._pause()

    def finish(self, g: _Game, *, status: str = "completed") -> None:
        rng, st = self.rng, g.state
        winner = rng.randrange(1, self.players + 1)
        reason = rng.choice(("ring_elimination", "territory_control", "last_player_standing", "stalemate"))
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        for p in st["players"]:
            c.execute(
                "UPDATE game_players SET final_eliminated_rings=?, final_territory_spaces=?,"
                " final_rings_in_hand=? WHERE game_id=? AND player_number=?",
                (p["eliminatedRings"], p["territorySpaces"], p["ringsInHand"], g.game_id, p["playerNumber"]),
            )
        q = round(rng.uniform(0.3, 1.0), 4)
        c.execute(
            "UPDATE games SET game_status=?, completed_at=?, winner=?, termination_reason=?, total_moves=?,"
            " total_turns=?, duration_ms=?, quality_score=?, quality_category=? WHERE game_id=?",
            (
                status,
                _iso(g.clock),
                winner,
                reason,
                g.moves,
                g.turns,
                int((g.clock - g.created).total_seconds() * 1000),
                q,
                "high" if q > 0.7 else "medium" if q > 0.5 else "low",
                g.game_id,
            ),
        )
        c.execute("COMMIT")
        self._pause()


def generate_games(
    path: str | Path,
    n: int,
    *,
    config_key: str = "hex8_2p",
    seed: int = 0,
    moves: tuple[int, int] = (40, 120),
    writer_pause: float | Callable[[], None] | None = None,
    active: int = 0,
    source: str = "self_play",
    commit_every: int = 10,
) -> list[str]:
    """Write ``n`` completed games (then ``active`` unfinished ones) into the DB at ``path``.

    Deterministic from ``seed``.  Each game: ``active`` row + players + gzip initial state,
    ``moves`` (uniform in the inclusive range) move rows with before/after state JSON in
    ``game_history_entries`` (the bulk), snapshots every 20 moves, then ``completed``.
    ``writer_pause`` (seconds or a callable) runs after every commit, to simulate a live
    writer.  Unfinished games get half their moves and stay ``active``.  Returns the ids of
    the completed games in write order.
    """
    w = FixtureWriter(
        path, config_key=config_key, seed=seed, source=source, commit_every=commit_every, writer_pause=writer_pause
    )
    done = []
    try:
        for i in range(n + active):
            g = w.start()
            k = w.rng.randint(*moves)
            if i >= n:
                w.play(g, k // 2)
                continue
            w.play(g, k)
            w.finish(g)
            done.append(g.game_id)
    finally:
        w.close()
    return done


# ----------------------------------------------------------------------------- intake
