"""Typed errors of the protocol core.

A `RemoteProtocolError` is a peer's mistake: the shell rejects the message, counts it and goes
on. A `LocalProtocolError` is our own misuse of the core (a bad command, an oversized value).
"""

from __future__ import annotations

from typing import Never, NoReturn


class RingmeshError(Exception):
    """Base class of every error ringmesh raises on purpose."""


class LocalProtocolError(RingmeshError):
    """We asked the core for something it cannot do."""


class RemoteProtocolError(RingmeshError):
    """A peer sent something malformed or out of range."""


def unknown(what: Never) -> NoReturn:
    """The last case of a `match` over a closed union (an event, a message body, a timer, an
    effect): like `typing.assert_never`, mypy proves it unreachable, and at run time a value
    the union lacks raises."""
    raise LocalProtocolError(f"unknown {type(what).__name__}: {what!r}")
