"""Faults a test puts into a real daemon process, through code: nothing here is reachable
from `ringmesh serve`, and no setting or environment variable of a production host turns it on.

    python -m ringmesh.testing.faults FAULT[,FAULT...] serve --config ... --node ...

installs the named faults, then runs the command line as `ringmesh` would. A test starts such
a daemon with `LocalCluster.start(name, launcher=launcher("lying-holder"))`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ringmesh.node.wire import service


def lying_holder() -> None:
    """Every chunk this host serves has its first byte flipped on the way out, after its own
    check passed (a bad NIC, a bad RAM stick); what it pulls, it verifies as usual."""
    real = service.frames

    def flipped(index: int, data: bytes) -> list[tuple[int, int, bytes]]:
        out = real(index, data)
        if out and out[0][2]:
            idx, off, part = out[0]
            out[0] = (idx, off, bytes([part[0] ^ 0xFF]) + part[1:])
        return out

    service.frames = flipped


def unchecked_serve() -> None:
    """Chunks are served as read, without the serve-time check (the baseline of its cost in
    `bench/at_rest.py`)."""
    from ringmesh.node.files.store import FileStore

    def read(self, item, digest, index, size, chunk_size):
        return FileStore.read_chunk(self, item, index, size, chunk_size)

    FileStore.read_verified = read  # type: ignore[method-assign]


FAULTS: dict[str, Callable[[], None]] = {"lying-holder": lying_holder, "unchecked-serve": unchecked_serve}


def launcher(*faults: str) -> tuple[str, ...]:
    """The interpreter arguments that start `ringmesh` with `faults` installed."""
    unknown = set(faults) - set(FAULTS)
    if unknown:
        raise ValueError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    return ("-m", __name__, ",".join(faults))


def main(argv: list[str]) -> int:
    from ringmesh.api.cli import main as cli

    names, *rest = argv
    for name in names.split(","):
        FAULTS[name]()
    return cli(rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
