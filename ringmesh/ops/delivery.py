"""Waiting for a version to arrive, as `ringmesh put --wait` and `ringmesh get --wait` do.

Both read the local daemon's reports (`ls`, `status`) until the version is where it should be:
every host the router places it on (and, for a broadcast, every host the broadcast reaches), or
this host. On a terminal a progress bar shows hosts done and bytes; the outcome is a list of the
hosts still missing and why (down, pulling, not started), never a bare timeout.

A wait polls a report every `POLL` seconds: it is a person's command on a terminal, not
synchronisation between components.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ringmesh.ops.progress import Progress

POLL = 0.2


class Reports(Protocol):
    def get(self, what: str, **args: object) -> dict[str, Any]: ...


@dataclass
class Outcome:
    done: bool
    hosts: list[str]  # the hosts that should hold it
    holders: list[str]
    missing: dict[str, str] = field(default_factory=dict)  # host -> why it does not hold it yet
    seconds: float = 0.0


def _item(ls: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((it for it in ls["items"] if f"{it['type']}/{it['name']}" == name), None)


def _why(host: str, it: dict[str, Any], status: dict[str, Any]) -> str:
    member = next((m for m in status["members"] if m["name"] == host), None)
    if member is None:
        return "not a member this host knows"
    if member["state"] != "alive":
        return f"{member['state']} (it pulls once it is back)"
    if host in it.get("pulling", []):
        return "pulling"
    breaker = member.get("breaker") or {}
    if breaker.get("state") == "open":
        return "unreachable from here (breaker open)"
    return "not started yet (waiting for a source or a transfer slot)"


def wanted_hosts(it: dict[str, Any], status: dict[str, Any], broadcast: bool) -> list[str]:
    hosts = set(it["targets"])
    if broadcast:
        bc = next((b for b in status.get("broadcasts", []) if b["digest"] == it["digest"]), None)
        hosts |= set(bc["hosts"]) if bc else set()
    return sorted(hosts)


def wait_delivered(
    c: Reports, name: str, digest: str, *, broadcast: bool, timeout: float | None, bar: Progress
) -> Outcome:
    """Until every host that should hold `digest` of item `name` does (or `timeout` s)."""
    t0 = time.monotonic()
    while True:
        ls, st = c.get("ls"), c.get("status")
        it = _item(ls, name)
        if it is None or it["digest"] != digest:
            newer = it["digest"][:12] if it else None
            raise LookupError(
                f"{name} {digest[:12]} is not the newest version any more" + (f" ({newer} is)" if newer else "")
            )
        hosts = wanted_hosts(it, st, broadcast)
        held = [h for h in hosts if h in it["holders"]]
        bar.total = len(hosts) * it["size_bytes"]
        bar.update(len(held) * it["size_bytes"], f"{len(held)}/{len(hosts)} hosts")
        out = Outcome(set(held) == set(hosts), hosts, sorted(it["holders"]), seconds=time.monotonic() - t0)
        if out.done or (timeout is not None and out.seconds >= timeout):
            out.missing = {h: _why(h, it, st) for h in hosts if h not in held}
            return out
        time.sleep(POLL)


def wait_here(c: Reports, name: str, digest: str, *, timeout: float | None, bar: Progress) -> Outcome:
    """Until this host holds `digest` of item `name` (or `timeout` s)."""
    t0 = time.monotonic()
    while True:
        ls, st = c.get("ls"), c.get("status")
        it = _item(ls, name)
        if it is None:
            raise LookupError(f"no item {name}")
        me = st["node"]
        pull = next((t for t in st["transfers"] if t["digest"] == digest), None)
        done_bytes = it["size_bytes"] if me in it["holders"] else 0
        if pull and pull.get("chunks"):
            done_bytes = int(it["size_bytes"] * pull["chunks_verified"] / pull["chunks"])
        bar.total = it["size_bytes"]
        bar.update(done_bytes, "pulling" if pull else "")
        out = Outcome(me in it["holders"] and it["digest"] == digest, [me], sorted(it["holders"]))
        out.seconds = time.monotonic() - t0
        if out.done or (timeout is not None and out.seconds >= timeout):
            out.missing = {} if out.done else {me: "pulling" if pull else "not started yet (waiting for a source)"}
            return out
        time.sleep(POLL)


def report(out: Outcome, name: str, digest: str) -> list[str]:
    if out.done:
        return [f"{name} {digest[:12]} is on all {len(out.hosts)} host(s) it should be ({out.seconds:.1f} s)"]
    have = len(out.hosts) - len(out.missing)
    lines = [f"{name} {digest[:12]}: {have}/{len(out.hosts)} hosts after {out.seconds:.1f} s; missing:"]
    lines += [f"  {h}: {why}" for h, why in sorted(out.missing.items())]
    return lines
