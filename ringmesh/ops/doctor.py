"""`ringmesh doctor --config C --node N [--data-dir D]`: is this host fit to run its peer?

One line per check, `ok`, `warn` or `FAIL`; exit status 1 if any check failed, else 0:

  config        the file loads and this host is a member (active, with an address; warnings are warnings)
  certificates  with `ringmesh.tls`: this host's files load, match, name it, are signed by the
                CA and valid (warn within 30 days of expiry); without: a warning (plaintext)
  daemon        whether a daemon holds the data dir (its pid) and answers on its socket; FAIL
                while its protocol core raised in the last 10 minutes (warn for older ones)
  disk          use of the data dir's file system against this host's cap (FAIL above it)
  at rest       the scrub's findings: FAIL while a corruption found here is not repaired (the
                damaged copy is not served meanwhile); the last full scrub otherwise
  links         a host nobody can dial (nat_blocked): the daemon's dial-out links to relays; FAIL
                with none up (nothing reaches this host), warn with fewer than it wants
  peer X        every other host of the config: the standard gRPC health check on its address,
                with a deadline; it must answer SERVING, as X (FAIL if unreachable). A peer
                nobody can dial is not dialled: the daemon's view of it and its relays is shown
  clock         skew against each peer that answered: the peer's wall clock, sent with its
                health answer, against the middle of the call's round trip here (NTP's estimate;
                the error is at most half the round trip). FAIL when some peer is surely off by
                more than --max-skew seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from ringmesh.config import ClusterConfig, ConfigError, HostConfig, load_config
from ringmesh.ops.statusview import duration, size

OK, WARN, FAIL = "ok", "warn", "FAIL"
CERT_WARN_DAYS = 30


@dataclass
class Check:
    status: str
    name: str
    detail: str
    data: dict[str, Any] | None = None


def _config(path: str, node: str) -> tuple[list[Check], ClusterConfig | None, HostConfig | None]:
    try:
        c = load_config(path)
    except ConfigError as e:
        return [Check(FAIL, "config", str(e))], None, None
    host = c.members().get(node)
    if host is None:
        known = ", ".join(sorted(c.members())) or "none"
        h = c.hosts.get(node)
        why = "no such host" if h is None else h.inactive or "no address, tailscale_ip or ssh_host"
        return [Check(FAIL, "config", f"{path}: host {node!r} takes no part ({why}); members: {known}")], c, None
    checks = [
        Check(
            OK,
            "config",
            f"{path}: valid; {node} at {host.address}, role {host.role}; {len(c.members())} member host(s)",
        )
    ]
    checks += [Check(WARN, "config", w) for w in c.warnings]
    return checks, c, host


def _certificates(c: ClusterConfig, host: HostConfig) -> tuple[Check, Any]:
    from ringmesh.node.wire.tls import PLAINTEXT_WARNING, TlsError, load_node

    if host.tls is None:
        return Check(WARN, "certificates", PLAINTEXT_WARNING), None
    try:
        creds = load_node(host.tls.files(), host.name, host.tls.sources)
    except TlsError as e:
        return Check(FAIL, "certificates", str(e)), None
    left = (creds.not_after.timestamp() - time.time()) / 86400
    if creds.key_mode_warning:
        return Check(WARN, "certificates", creds.key_mode_warning), creds
    status = WARN if left < CERT_WARN_DAYS else OK
    return Check(
        status,
        "certificates",
        f"mutual TLS: {host.tls.cert} names {host.name}, signed by {host.tls.ca}, "
        f"expires {creds.not_after:%Y-%m-%d} (in {left:.0f} days)",
    ), creds


def _daemon(data_dir: Path) -> Check:
    from ringmesh.api.client import ClientError, LocalClient
    from ringmesh.node.state import holder

    pid = holder(data_dir)
    if pid is None:
        return Check(WARN, "daemon", f"no ringmesh daemon runs on {data_dir} (start it: ringmesh serve ...)")
    try:
        with LocalClient(data_dir, timeout=5) as lc:
            st = lc.status()
    except ClientError as e:
        return Check(
            FAIL, "daemon", f"a daemon (pid {pid or '?'}) holds {data_dir} but does not answer on its socket: {e}"
        )
    text = (
        f"pid {pid or '?'} on {data_dir}: node {st['node']}, up {duration(st['uptime_s'])}, "
        f"leader {st['leader'] or '(none known)'} (term {st['term']})"
    )
    held = (st.get("games") or {}).get("held") or {}
    refused = sum(k.get("refused", 0) for k in held.values())
    if refused:
        per = ", ".join(f"{key}: {k['refused']}" for key, k in sorted(held.items()) if k.get("refused"))
        return Check(
            FAIL,
            "daemon",
            f"{text}; {refused} game(s) refused by its databases ({per}): "
            f"see `ringmesh games refused`, then `ringmesh games retry`",
            {"pid": pid, "held": held},
        )
    errors = st.get("core_errors") or {}
    if errors.get("last_10_min"):
        last = errors["recent"][-1]["what"] if errors.get("recent") else "?"
        return Check(
            FAIL,
            "daemon",
            f"{text}; its core raised {errors['last_10_min']} time(s) in the last 10 minutes "
            f"(a bug: see its log; last: {last})",
            {"pid": pid, "node": st["node"], **errors},
        )
    if errors.get("total"):
        text += f"; its core raised {errors['total']} time(s), none in the last 10 minutes"
        return Check(WARN, "daemon", text, {"pid": pid, "node": st["node"], **errors})
    return Check(OK, "daemon", text, {"pid": pid, "node": st["node"]})


def _status(data_dir: Path) -> dict[str, Any] | None:
    from ringmesh.api.client import ClientError, LocalClient

    try:
        with LocalClient(data_dir, timeout=5) as lc:
            return lc.status()
    except ClientError:
        return None


def _links(st: dict[str, Any] | None) -> Check:
    """This NAT'd host's dial-out links, as its daemon reports them."""
    if st is None:
        return Check(WARN, "links", "nat_blocked: no daemon answers, so no link is up (nothing reaches this host)")
    links = st.get("links") or {}
    up, wanted = links.get("up", []), links.get("wanted", 3)
    failed = links.get("failed") or {}
    why = "; ".join(f"{r}: {f['why']}" for r, f in sorted(failed.items()) if r not in up)[:400]
    text = f"nat_blocked: {len(up)} of {wanted} links up ({', '.join(up) or 'none'})" + (f"; {why}" if why else "")
    if not up:
        return Check(FAIL, "links", text + ": nothing reaches this host", links)
    return Check(OK if len(up) >= wanted else WARN, "links", text, links)


def _unreachable_peer(name: str, st: dict[str, Any] | None) -> Check:
    """A peer nobody can dial: not dialled; the daemon's view of it and of its relays instead."""
    if st is None:
        return Check(WARN, f"peer {name}", "nat_blocked: not dialled (nobody can); no daemon here to ask about it")
    member = next((m for m in st.get("members", []) if m["name"] == name), None)
    if member is None:
        return Check(WARN, f"peer {name}", "nat_blocked: not dialled; this host's daemon has not heard of it yet")
    relays = member.get("relays") or []
    text = f"nat_blocked: not dialled; {member['state']} here, linked to {', '.join(relays) or 'no relay'}"
    good = member["state"] == "alive" and relays
    return Check(OK if good else WARN, f"peer {name}", text, member)


def _disk(data_dir: Path, host: HostConfig) -> Check:
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        st = os.statvfs(where)
    except OSError as e:
        return Check(FAIL, "disk", f"{data_dir}: cannot measure: {e.strerror}")
    used_blocks = st.f_blocks - st.f_bfree
    used = 100.0 * used_blocks / (used_blocks + st.f_bavail) if used_blocks + st.f_bavail else 0.0
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    cap = host.disk_cap_percent
    text = f"{where}: {used:.1f} % used of {size(total)}, {size(free)} free; cap {cap:g} %"
    data = {"used_percent": round(used, 1), "free_bytes": free, "cap_percent": cap}
    if used > cap:
        return Check(FAIL, "disk", text + ": above the cap, this host takes no new data", data)
    if used > cap - 5:
        return Check(WARN, "disk", text + ": within 5 points of the cap", data)
    return Check(OK, "disk", text, data)


async def _probe(name: str, address: str, creds: Any, deadline: float, samples: int = 3) -> dict[str, Any]:
    """Health-check one peer; the best of `samples` round trips gives the clock estimate."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from ringmesh.node.wire.health import NODE_KEY, TIME_KEY
    from ringmesh.node.wire.links import CHANNEL_OPTIONS

    if creds is None:
        ch = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    else:
        from ringmesh.node.wire.tls import channel_credentials, channel_options

        ch = grpc.aio.secure_channel(
            address, channel_credentials(creds), options=CHANNEL_OPTIONS + channel_options(name)
        )
    stub = health_pb2_grpc.HealthStub(ch)
    out: dict[str, Any] = {"peer": name, "address": address}
    try:
        best = None
        for _ in range(samples):
            t0 = time.time()
            call = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=deadline)
            resp = await call
            t1 = time.time()
            md = dict(await call.trailing_metadata() or ())
            out["status"] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            out["answers_as"] = md.get(NODE_KEY)
            if TIME_KEY in md and (best is None or t1 - t0 < best[0]):
                best = (t1 - t0, float(md[TIME_KEY]) - (t0 + t1) / 2)
        if best is not None:
            out["rtt_s"], out["offset_s"] = best
    except grpc.aio.AioRpcError as e:
        out["error"] = f"{e.code().name}: {e.details()}"
    finally:
        await ch.close()
    return out


def _peer_checks(results: list[dict[str, Any]]) -> list[Check]:
    checks = []
    for r in results:
        name, addr = r["peer"], r["address"]
        if "error" in r:
            checks.append(Check(FAIL, f"peer {name}", f"{addr} unreachable: {r['error']}", r))
        elif r.get("answers_as") not in (None, name):
            checks.append(
                Check(
                    FAIL,
                    f"peer {name}",
                    f"{addr} answers as {r['answers_as']!r}, not {name!r}: the config's address is wrong",
                    r,
                )
            )
        elif r.get("status") != "SERVING":
            checks.append(Check(WARN, f"peer {name}", f"{addr} answers {r.get('status')} (draining or starting)", r))
        else:
            rtt = f" in {r['rtt_s'] * 1000:.1f} ms" if "rtt_s" in r else ""
            checks.append(Check(OK, f"peer {name}", f"{addr} SERVING{rtt}", r))
    return checks


def _clock(results: list[dict[str, Any]], max_skew: float) -> Check:
    measured = [r for r in results if "offset_s" in r]
    if not measured:
        return Check(WARN, "clock", "no peer answered with its clock: skew not measured")
    worst = max(measured, key=lambda r: abs(r["offset_s"]) - r["rtt_s"] / 2)
    off, err = worst["offset_s"], worst["rtt_s"] / 2
    text = (
        f"largest skew against {len(measured)} peer(s): {worst['peer']} {off:+.3f} s (± {err:.3f} s; "
        f"its clock minus ours)"
    )
    data = {r["peer"]: {"offset_s": round(r["offset_s"], 6), "error_s": round(r["rtt_s"] / 2, 6)} for r in measured}
    if abs(off) - err > max_skew:
        return Check(FAIL, "clock", text + f"; more than {max_skew:g} s: fix NTP on one of the two", data)
    if abs(off) + err > max_skew:
        return Check(WARN, "clock", text + f"; may be more than {max_skew:g} s", data)
    return Check(OK, "clock", text, data)


def _at_rest(st: dict[str, Any] | None) -> Check:
    """What the scrub and the serve-time checks found here, as the daemon reports it."""
    if st is None or "scrub" not in st:
        return Check(WARN, "at rest", "no daemon answers: the scrub's findings are unknown")
    sc = st["scrub"]
    open_ = sc["unrepaired"]
    found = sum(sc["found"].values())
    if open_:
        names = ", ".join(f"{d['name']} ({d['kind']}: {d['detail']})" for d in open_[:3])
        return Check(FAIL, "at rest", f"{len(open_)} damaged cop(y/ies) not repaired yet: {names}", sc)
    last = sc.get("last_full_scrub")
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last)) if last else "not finished yet"
    if sc.get("lost"):
        return Check(WARN, "at rest", f"last full scrub {when}; {sc['lost']} game(s) lost on every holder (listed)", sc)
    return Check(OK, "at rest", f"last full scrub {when}; {found} damage(s) found, all repaired", sc)


def run_checks(
    config: str, node: str, data_dir: str | Path, *, deadline: float = 3.0, max_skew: float = 1.0
) -> list[Check]:
    checks, c, host = _config(config, node)
    if c is None or host is None:
        return checks
    cert, creds = _certificates(c, host)
    checks.append(cert)
    data_dir = Path(data_dir)
    checks.append(_daemon(data_dir))
    checks.append(_disk(data_dir, host))
    members = c.members()
    nat = sorted(n for n, h in members.items() if h.nat_blocked and n != node)
    st = _status(data_dir)
    checks.append(_at_rest(st))
    if host.nat_blocked:
        checks.append(_links(st))
    checks += [_unreachable_peer(n, st) for n in nat]
    peers = {n: h.address for n, h in sorted(members.items()) if n != node and h.address and not h.nat_blocked}
    if host.tls is not None and creds is None:
        checks += [
            Check(FAIL, f"peer {n}", f"{a} not checked: this host has no usable certificate") for n, a in peers.items()
        ]
        return checks

    async def probe_all():
        return await asyncio.gather(*(_probe(n, a, creds, deadline) for n, a in peers.items()))

    results = asyncio.run(probe_all()) if peers else []
    checks += _peer_checks(results)
    if peers:
        checks.append(_clock(results, max_skew))
    return checks


def run_doctor(
    config: str, node: str, data_dir: str | Path, *, as_json: bool = False, deadline: float = 3.0, max_skew: float = 1.0
) -> int:
    checks = run_checks(config, node, data_dir, deadline=deadline, max_skew=max_skew)
    failed = sum(c.status == FAIL for c in checks)
    warned = sum(c.status == WARN for c in checks)
    if as_json:
        print(
            json.dumps(
                {
                    "node": node,
                    "ok": not failed,
                    "failed": failed,
                    "warnings": warned,
                    "checks": [asdict(c) for c in checks],
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.status:4}  {c.name:{width}}  {c.detail}")
        print(
            f"doctor: {node}: "
            + (f"{failed} check(s) FAILED" if failed else "healthy")
            + (f", {warned} warning(s)" if warned else "")
        )
    return 1 if failed else 0
