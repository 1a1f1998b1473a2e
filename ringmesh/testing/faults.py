"""Faults a test puts into a real daemon process, through code: nothing here is reachable
from `ringmesh serve`, and no setting or environment variable of a production host turns it on.

    python -m ringmesh.testing.faults FAULT[,FAULT...] serve --config ... --node ...

installs the named faults, then runs the command line as `ringmesh` would. A test starts such
a daemon with `LocalCluster.start(name, launcher=launcher("lying-holder"))`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ringmesh.node.files import store


def lying_holder() -> None:
    """Every chunk this host serves has its first byte flipped; what it pulls, it verifies as usual."""

    def lying(read: Callable[..., bytes]) -> Callable[..., bytes]:
        def read_flipped(*args, **kwargs) -> bytes:
            data = read(*args, **kwargs)
            return bytes([data[0] ^ 0xFF]) + data[1:] if data else data

        return read_flipped

    store.FileStore.read_chunk = lying(store.FileStore.read_chunk)  # type: ignore[method-assign]
    store.Partial.read = lying(store.Partial.read)  # type: ignore[method-assign]


FAULTS: dict[str, Callable[[], None]] = {"lying-holder": lying_holder}


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
