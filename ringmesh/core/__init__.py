"""The pure protocol core: no I/O, no wall clock, no global random.

Inputs are events with `now` passed in; outputs are effects. The gRPC daemon
(`ringmesh.node.runtime`) and the simulator (`sim`) interpret the same effects.
"""

from .errors import LocalProtocolError, RemoteProtocolError, RingmeshError
from .manifest import Delta, Fact, Manifest, OriginChange, OriginDelta, OriginDigest, OriginState
from .messages import (
    Ack, CancelTransfer, Effect, Envelope, Event, FilePublished, FileStored, FileVersion, HeartbeatAck, ItemKey,
    LeaderHeartbeat, LeaveRequested, MessageReceived, Persist, Ping, PingAck, PingReq, SaveVote, Send, SendFailed,
    SetTimer, StartTransfer, Syn, SynAck, TimerFired, TransferFailed, VoteReply, VoteRequest,
)
from .peer import Peer, PeerConfig

__all__ = [
    "Ack", "CancelTransfer", "Delta", "Effect", "Envelope", "Event", "Fact", "FilePublished",
    "FileStored", "FileVersion", "HeartbeatAck", "ItemKey", "LeaderHeartbeat", "LeaveRequested",
    "LocalProtocolError", "Manifest", "MessageReceived", "OriginChange", "OriginDelta", "OriginDigest",
    "OriginState", "Peer", "PeerConfig", "Persist", "Ping", "PingAck", "PingReq", "RemoteProtocolError",
    "RingmeshError", "SaveVote", "Send", "SendFailed", "SetTimer", "StartTransfer", "Syn", "SynAck",
    "TimerFired", "TransferFailed", "VoteReply", "VoteRequest",
]
