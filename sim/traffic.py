"""Byte accounting: an estimate of each message's wire size, and what each node sent.

The estimate follows the core's own byte budget (`Delta.wire_size`, close to the protobuf
encoding) and adds a fixed cost per digest entry and per envelope. It is an estimate of the
gRPC payload, not a measurement of one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ringmesh.core import Ack, Envelope, OriginDigest, Syn, SynAck

#: sender name, HLC, message tag and framing.
ENVELOPE_BYTES = 32
#: incarnation, heartbeat, max_counter and floor of one origin, beside its name.
DIGEST_ENTRY_BYTES = 24
#: a Syn's or SynAck's fingerprint, scope (and mismatch flag).
FINGERPRINT_BYTES = 12
#: any other message (membership probes, election): a few names and integers.
OTHER_MESSAGE_BYTES = 64


def digest_size(digest: Mapping[str, OriginDigest]) -> int:
    return sum(map(len, map(str.encode, digest))) + DIGEST_ENTRY_BYTES * len(digest)


def message_size(env: Envelope) -> int:
    body = env.body
    size = ENVELOPE_BYTES + len(env.sender.encode())
    if isinstance(body, Syn):
        return size + FINGERPRINT_BYTES + digest_size(body.digest)
    if isinstance(body, SynAck):
        return size + FINGERPRINT_BYTES + digest_size(body.digest) + body.delta.wire_size()
    if isinstance(body, Ack):
        return size + body.delta.wire_size()
    return size + OTHER_MESSAGE_BYTES


@dataclass(slots=True)
class Traffic:
    """Messages and bytes sent, per node and per message kind."""

    messages: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)  # messages per message kind
    bytes_by_kind: dict[str, int] = field(default_factory=dict)

    def add_node(self, node: str) -> None:
        self.messages.setdefault(node, 0)
        self.bytes.setdefault(node, 0)

    def record(self, node: str, env: Envelope) -> int:
        size = message_size(env)
        self.messages[node] += 1
        self.bytes[node] += size
        kind = type(env.body).__name__
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + size
        return size

    def snapshot(self) -> "Traffic":
        return Traffic(dict(self.messages), dict(self.bytes), dict(self.by_kind), dict(self.bytes_by_kind))

    def since(self, before: "Traffic") -> "Traffic":
        """What was sent after `before` was taken."""
        return Traffic(
            {n: c - before.messages.get(n, 0) for n, c in self.messages.items()},
            {n: b - before.bytes.get(n, 0) for n, b in self.bytes.items()},
            {k: c - before.by_kind.get(k, 0) for k, c in self.by_kind.items()},
            {k: b - before.bytes_by_kind.get(k, 0) for k, b in self.bytes_by_kind.items()},
        )

    def total_messages(self) -> int:
        return sum(self.messages.values())
