"""Talking to the peer on this host over its Unix socket (what the CLI and scripts use)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import grpc

from ringmesh.core.broadcast import ATTR as BROADCAST_ATTR
from ringmesh.core.errors import RingmeshError
from ringmesh.node.runtime import socket_path
from ringmesh.node.wire import codec
from ringmesh.node.wire.links import CHANNEL_OPTIONS
from ringmesh.v1 import mesh_pb2_grpc

REQUEST_BUDGET = 7 << 20  # bytes of games per PublishGames request, under the 8 MiB message limit


def _batches(payloads: list[bytes], budget: int) -> list[list[bytes]]:
    """Consecutive runs of payloads of at most `budget` bytes (a larger one goes alone)."""
    out: list[list[bytes]] = []
    size = 0
    for p in payloads:
        if not out or (size + len(p) > budget and out[-1]):
            out.append([])
            size = 0
        out[-1].append(p)
        size += len(p)
    return out


class ClientError(RingmeshError):
    """The local peer is unreachable or refused the request."""


class LocalClient:
    def __init__(self, data_dir: str | Path, timeout: float = 30.0) -> None:
        sock = socket_path(data_dir)
        if not sock.exists():
            raise ClientError(f"no ringmesh daemon on {data_dir} (no socket {sock}); is `ringmesh serve` running?")
        self.channel = grpc.insecure_channel(f"unix:{sock}", options=CHANNEL_OPTIONS)
        self.stub = mesh_pb2_grpc.LocalStub(self.channel)
        self.timeout = timeout

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()

    def _call(self, fn, request, timeout: float | None = None):
        try:
            return fn(request, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise ClientError(f"{e.code().name}: {e.details()}") from None

    def put(
        self,
        path: str | Path,
        type: str,
        name: str = "",
        attrs: Mapping[str, str] | None = None,
        broadcast: bool = False,
        link: bool = False,
    ) -> dict[str, Any]:
        """Publish a file version; `broadcast`: the leader pushes it to every eligible host at once;
        `link`: hard-link it into the store, not copy it (`FileStore.import_file`)."""
        attrs = {**(attrs or {}), **({BROADCAST_ATTR: "1"} if broadcast else {})}
        req = codec.PutRequest(path=str(Path(path).resolve()), type=type, name=name, attrs=attrs, link=link)
        r = self._call(self.stub.Put, req, timeout=3600)
        return {
            "type": r.type,
            "name": r.name,
            "digest": r.digest,
            "size_bytes": r.size,
            "chunk_size_bytes": r.chunk_size,
            "hlc": r.hlc,
        }

    def status(self) -> dict[str, Any]:
        return json.loads(self._call(self.stub.Get, codec.Query(what="status")).json)

    def ls(self) -> dict[str, Any]:
        return json.loads(self._call(self.stub.Get, codec.Query(what="ls")).json)

    def publish_games(
        self, config_key: str, records: list[dict[str, Any]], schemas: Mapping[str, Any] | None = None
    ) -> list[int]:
        """Hand finished games (gamedb records) to the local peer; returns once they are fsynced.
        `schemas`: `{fingerprint: gameschema.Schema}` of the schemas the records name; by default
        those this process read them with (`read_completed_games`). Each is sent once per call."""
        from ringmesh.node.games.games import pack_record
        from ringmesh.node.games.gameschema import recall

        named = {fp for r in records if (fp := r.get("schema")) is not None}
        known = {fp: s for fp in named if (s := (schemas or {}).get(fp) or recall(fp)) is not None}
        encoded = {fp: s.encode() for fp, s in known.items()}
        seqs: list[int] = []
        for batch in _batches([pack_record(r) for r in records], REQUEST_BUDGET - sum(map(len, encoded.values()))):
            req = codec.PublishGamesRequest(config_key=config_key, games=batch, schemas=encoded)
            seqs += self._call(self.stub.PublishGames, req).seqs
        return seqs

    def wait_durable(self, config_key: str, seq: int, timeout: float = 30.0) -> bool:
        """Whether game `seq` of this host's stream `config_key` became durable within `timeout`."""
        req = codec.WaitDurableRequest(config_key=config_key, seq=seq, timeout_s=timeout)
        return self._call(self.stub.WaitDurable, req, timeout=timeout + 10).durable

    def get(self, what: str, **args: object) -> dict[str, Any]:
        """A report: status, ls, recommendations, cluster, replication_targets."""
        q = codec.Query(what=what, args={k: str(v) for k, v in args.items()})
        return json.loads(self._call(self.stub.Get, q).json)

    def control(self, what: str, **args: object) -> dict[str, Any]:
        """An order: sync, priority (config_key=, priority=)."""
        q = codec.Query(what=what, args={k: str(v) for k, v in args.items()})
        return json.loads(self._call(self.stub.Control, q).json)
