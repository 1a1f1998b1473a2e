"""The Python client for self-play and training processes (sync and asyncio).

    from ringmesh.api.mesh_client import MeshClient
    with MeshClient("/var/lib/ringmesh") as mesh:
        mesh.publish_game("hex8_2p", game_id, record)       # returns once fsynced on this host
        mesh.publish_file("/models/canonical_hex8_2p.pth", "model", broadcast=True)  # promote a model
        mesh.wait_durable(game_id, timeout=30)              # True once min_copies hosts hold it
        for game in mesh.iter_games("hex8_2p", since=cursor): ...   # on a training host

A record is what `ringmesh.node.games.gamedb.read_completed_games` returns: every row of the game in
every table that references it. `iter_games` reads this host's materialised database (the
self-play schema) in arrival order; its cursor is the last row id seen.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any, Iterator

from ringmesh.api.client import ClientError, LocalClient
from ringmesh.node.games.gameschema import game_tables


class MeshClient:
    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self._local = LocalClient(self.data_dir)
        self._seqs: dict[str, tuple[str, int]] = {}  # game_id -> (config_key, seq)

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._local.__exit__(None, None, None)

    def publish_game(self, config_key: str, game_id: str, record: dict[str, Any]) -> int:
        """Publish one finished game; returns its seq in this host's stream once it is fsynced."""
        if record.get("game_id") != game_id:
            record = {**record, "game_id": game_id}
        (seq,) = self._local.publish_games(config_key, [record])
        self._seqs[game_id] = (config_key, seq)
        return seq

    def wait_durable(self, game_id: str, timeout: float = 30.0) -> bool:
        """Whether a game this client published became durable within `timeout` seconds."""
        if game_id not in self._seqs:
            raise ClientError(f"game {game_id!r} was not published through this client")
        config_key, seq = self._seqs[game_id]
        return self._local.wait_durable(config_key, seq, timeout)

    def publish_file(
        self, path: str | Path, type: str, name: str = "", attrs: dict[str, str] | None = None, broadcast: bool = False
    ) -> dict[str, Any]:
        """Publish a file version (a model, an NPZ archive, a checkpoint) from this host; with
        `broadcast=True` the leader has every eligible host pull it at once (a promoted model).
        Returns its digest, size and chunk size once the local peer offers it."""
        return self._local.put(path, type, name, attrs, broadcast=broadcast)

    def status(self) -> dict[str, Any]:
        return self._local.status()

    def iter_games(self, config_key: str, since: int = 0, limit: int | None = None) -> Iterator[dict[str, Any]]:
        """Games materialised on this host after row `since`, oldest first, each with its
        `cursor` (pass the last one back as `since`) and its rows per table."""
        path = Path(self.status()["games"].get("dir") or self.data_dir / "games") / f"{config_key}.db"
        if not path.exists():
            return
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            tables = game_tables(con)  # whatever game tables the schemas of its sources brought
            if "games" not in tables:
                return
            order = {
                t: ", ".join(
                    f'"{r[1]}"'
                    for r in sorted((r for r in con.execute(f'PRAGMA table_info("{t}")') if r[5]), key=lambda r: r[5])
                )
                or "rowid"
                for t in tables
            }
            con.row_factory = sqlite3.Row
            q = "SELECT rowid AS cursor, * FROM games WHERE rowid > ? ORDER BY rowid"
            rows = con.execute(q + (f" LIMIT {int(limit)}" if limit else ""), (since,)).fetchall()
            for row in rows:
                game = dict(row)
                gid = game["game_id"]
                game["tables"] = {
                    t: [
                        dict(r) for r in con.execute(f'SELECT * FROM "{t}" WHERE game_id=? ORDER BY {order[t]}', (gid,))
                    ]
                    for t in tables
                    if t != "games"
                }
                yield game
        finally:
            con.close()


class AsyncMeshClient:
    """The same calls for asyncio code; the blocking work runs in a thread."""

    def __init__(self, data_dir: str | Path) -> None:
        self._sync = MeshClient(data_dir)

    async def __aenter__(self) -> AsyncMeshClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self._sync.close()

    async def publish_game(self, config_key: str, game_id: str, record: dict[str, Any]) -> int:
        return await asyncio.to_thread(self._sync.publish_game, config_key, game_id, record)

    async def wait_durable(self, game_id: str, timeout: float = 30.0) -> bool:
        return await asyncio.to_thread(self._sync.wait_durable, game_id, timeout)

    async def publish_file(
        self, path: str | Path, type: str, name: str = "", attrs: dict[str, str] | None = None, broadcast: bool = False
    ) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.publish_file, path, type, name, attrs, broadcast)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._sync.status)

    async def iter_games(self, config_key: str, since: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        return await asyncio.to_thread(lambda: list(self._sync.iter_games(config_key, since, limit)))
