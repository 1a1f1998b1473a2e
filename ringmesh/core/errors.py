"""Typed errors of the protocol core.

A `RemoteProtocolError` is a peer's mistake: the shell rejects the message, counts it and goes
on. A `LocalProtocolError` is our own misuse of the core (a bad command, an oversized value).
"""


class RingmeshError(Exception):
    """Base class of every error ringmesh raises on purpose."""


class LocalProtocolError(RingmeshError):
    """We asked the core for something it cannot do."""


class RemoteProtocolError(RingmeshError):
    """A peer sent something malformed or out of range."""
