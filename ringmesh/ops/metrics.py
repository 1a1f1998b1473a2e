"""Prometheus metrics of a running peer, read from its live state at scrape time.

`ringmesh: metrics_listen: "127.0.0.1:9464"` in the config (or `ringmesh serve --metrics-listen`,
or the environment's `RINGMESH_METRICS_LISTEN`) serves `GET /metrics` in the text exposition
format; off unless set. Port 0 takes a free port; `ringmesh status --json` names it
(`metrics.listen`).

The HTTP server (prometheus_client's) runs in threads of its own. A scrape asks the daemon's
event loop for one snapshot (`_families`, a pass over the state like `ringmesh status`), waits
for it there, and formats it in the HTTP thread: nothing blocks the loop, and the loop is the
only thread that reads the core's state.

What the daemon did not count before is counted in `Telemetry` (bytes per peer, delta bytes,
transfers per class and outcome, when a message from each peer last arrived); everything else
is read where it lives: the core's views, the daemon's counters, the throttles, the stream log.

Convergence lag per origin, against what the origin itself reports: every Syn or SynAck an
origin sends carries its own digest entry, i.e. its change counter at that moment. This host
notes each such report it does not yet hold; `ringmesh_origin_lag_changes{origin}` is how many
of the origin's reported changes it still lacks, `ringmesh_origin_lag_seconds{origin}` how long
it has lacked the oldest of them (0: up to date), and the summary
`ringmesh_origin_catch_up_seconds{origin}` how long each report took to be met (measured a few
times per gossip interval, at most once a second). With every host scraped,
`max by (origin) (ringmesh_origin_max_change) - ringmesh_origin_max_change` compares the
replicas directly. `ringmesh_peer_last_heard_seconds` is how long ago a message from a peer last
arrived here (a direct sign of life; liveness itself is membership's, `ringmesh_members`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Iterable, Mapping

from ringmesh.config import ConfigError
from ringmesh.core import membership
from ringmesh.core.bandwidth import Priority
from ringmesh.core.breaker import CLOSED, HALF_OPEN, OPEN
from ringmesh.node.telemetry import IN, OUT

if TYPE_CHECKING:
    from ringmesh.node.view import NodeView

log = logging.getLogger("ringmesh.ops.metrics")
LISTEN_ENV = "RINGMESH_METRICS_LISTEN"
STATES = (membership.ALIVE, membership.SUSPECT, membership.DEAD, membership.LEFT)
BREAKER_STATES = (CLOSED, HALF_OPEN, OPEN)
SCRAPE_TIMEOUT = 10.0  # seconds a scrape waits for the event loop's snapshot
GAUGE_COUNTERS = {"items_blocked"}  # daemon counters that are levels, not counts


# -- the families ---------------------------------------------------------------------------------


def _families(view: NodeView) -> list:
    """Every metric family, read from the node now. Runs on the event loop."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, SummaryMetricFamily

    from ringmesh.core import streams
    from ringmesh.ops import reports

    now = time.time()
    core, manifest, telemetry = view.core, view.manifest, view.telemetry
    telemetry.sample(manifest, now)
    out: list = []

    def gauge(
        name: str,
        doc: str,
        labels: Iterable[str] = (),
        samples: Iterable[tuple[Iterable[str], float]] = (),
        value: float | None = None,
    ) -> None:
        family = (
            GaugeMetricFamily(name, doc, value=value)
            if value is not None
            else GaugeMetricFamily(name, doc, labels=list(labels))
        )
        for label_values, sample in samples:
            family.add_metric(list(label_values), sample)
        out.append(family)

    def counter(
        name: str,
        doc: str,
        labels: Iterable[str] = (),
        samples: Iterable[tuple[Iterable[str], float]] = (),
        value: float | None = None,
    ) -> None:
        family = (
            CounterMetricFamily(name, doc, value=value)
            if value is not None
            else CounterMetricFamily(name, doc, labels=list(labels))
        )
        for label_values, sample in samples:
            family.add_metric(list(label_values), sample)
        out.append(family)

    # this host
    out.append(
        InfoMetricFamily(
            "ringmesh_node",
            "This host: name, address, role, provider (value 1).",
            value={
                "node": view.name,
                "address": view.address or "",  # a member always has one; a label value must be a str
                "role": view.host.role,
                "provider": view.host.provider,
                "ephemeral": str(view.host.ephemeral).lower(),
            },
        )
    )
    gauge("ringmesh_uptime_seconds", "Seconds since the daemon started.", value=now - view.started_at)
    gauge(
        "ringmesh_incarnation",
        "This host's incarnation (a new life after a wiped disk).",
        value=manifest.own.incarnation,
    )

    # gossip
    counter("ringmesh_gossip_rounds", "Gossip rounds this host started.", value=core.rounds)
    counter(
        "ringmesh_gossip_delta_bytes",
        "Bytes of manifest deltas (in SynAck and Ack messages) sent and received.",
        ["direction"],
        [((k,), telemetry.delta_bytes[k]) for k in (OUT, IN)],
    )
    counter(
        "ringmesh_messages",
        "Peer messages sent and received, by kind.",
        ["direction", "kind"],
        [(k, n) for k, n in sorted(telemetry.messages.items())],
    )
    gauge("ringmesh_inbox_events", "Events waiting for the core.", value=view.inbox_size)
    gauge(
        "ringmesh_origin_max_change",
        "Each origin's highest change counter as this host knows it.",
        ["origin"],
        [((o,), origin_state.max_counter) for o, origin_state in sorted(manifest.origins.items())],
    )
    lags = {o: telemetry.lag(o, manifest, now) for o in sorted(manifest.origins) if o != core.me}
    gauge(
        "ringmesh_origin_lag_changes",
        "Convergence lag: changes each origin reported (its own digest entry) that this host does not hold yet.",
        ["origin"],
        [((o,), n) for o, (n, _s) in lags.items()],
    )
    gauge(
        "ringmesh_origin_lag_seconds",
        "Convergence lag: seconds this host has lacked the oldest change an origin reported (0: up to date).",
        ["origin"],
        [((o,), sec) for o, (_n, sec) in lags.items()],
    )
    catch = SummaryMetricFamily(
        "ringmesh_origin_catch_up_seconds",
        "Time from an origin's report of a change to this host holding it.",
        labels=["origin"],
    )
    for o, (n, total) in sorted(telemetry.catch_up.items()):
        catch.add_metric([o], count_value=int(n), sum_value=total)  # n: a count, kept in a list of floats
    out.append(catch)
    gauge(
        "ringmesh_peer_last_heard_seconds",
        "Seconds since a message from each peer last arrived here.",
        ["peer"],
        [((o,), age) for o in sorted(manifest.origins) if (age := telemetry.last_heard(o, now)) is not None],
    )

    # membership
    known = sorted(set(manifest.origins) | set(core.known_peers()))
    views = {h: core.membership.view(h) for h in known}
    by_state = Counter(views.values())
    gauge(
        "ringmesh_members",
        "Members by state, as this host sees them (itself included).",
        ["state"],
        [((s,), by_state.get(s, 0)) for s in STATES],
    )
    gauge(
        "ringmesh_member_state",
        "1 for each member's current state, 0 for the others.",
        ["member", "state"],
        [((h, s), float(v == s)) for h, v in views.items() for s in STATES],
    )
    gauge("ringmesh_local_health", "Lifeguard local health multiplier (0 = healthy).", value=core.membership.health)

    # hosts nobody can dial: their dial-out links, and the calls relayed over them
    links = view.links()
    gauge(
        "ringmesh_links",
        "Dial-out links: up from this host (nat_blocked), or held here for NAT'd hosts.",
        ["side"],
        [(("up",), len(links.get("up", ()))), (("held",), len(links["relaying_for"]))],
    )
    counts = view.counters
    counter(
        "ringmesh_relayed_calls",
        "Calls through relays: carried here for others (relay), arrived over this host's links "
        "(target), sent by this host through a relay (caller).",
        ["role"],
        [
            (("relay",), counts.get("relayed_calls", 0)),
            (("target",), counts.get("calls_via_links", 0)),
            (("caller",), counts.get("calls_via_relays", 0)),
        ],
    )
    counter(
        "ringmesh_relayed_bytes",
        "Response bytes through relays: carried here (relay), sent up this host's links (target).",
        ["role"],
        [(("relay",), counts.get("relayed_bytes", 0)), (("target",), counts.get("bytes_via_links", 0))],
    )

    # data at rest (node/scrub.py, node/files/integrity.py)
    sc = view.scrub()
    kinds = ("files", "games", "manifest")
    gauge(
        "ringmesh_scrub_last_full_timestamp_seconds",
        "Every file, game segment and the manifest held here was verified at or after this time (0: not yet).",
        value=sc["last_full_scrub"] or 0,
    )
    counter(
        "ringmesh_scrub_verified_bytes",
        "Bytes the scrub read back and verified, by data type.",
        ["type"],
        [((k,), sc["bytes_verified"][k]) for k in kinds],
    )
    counter(
        "ringmesh_corruptions_found",
        "Copies found bad here (rot, or changed behind ringmesh's back), by data type.",
        ["type"],
        [((k,), sc["found"][k]) for k in kinds],
    )
    counter(
        "ringmesh_corruptions_repaired",
        "Of those, repaired (pulled again, adopted, re-fetched, rewritten), by data type.",
        ["type"],
        [((k,), sc["repaired"][k]) for k in kinds],
    )
    gauge("ringmesh_corruptions_unrepaired", "Damaged copies here not repaired yet.", value=len(sc["unrepaired"]))
    gauge(
        "ringmesh_damaged_items_below_min_copies",
        "Items damaged here with fewer good copies elsewhere than min_copies.",
        value=len(sc["below_min_copies"]),
    )

    # leader
    leader, term = core.leader()
    election = core.election
    gauge("ringmesh_leader_term", "The newest term this host knows.", value=term)
    gauge(
        "ringmesh_leader",
        "1 for the leader this host knows, labelled with it and its term.",
        ["leader", "term"],
        [((leader, str(term)), 1)] if leader else [],
    )
    gauge("ringmesh_is_leader", "1 while this host leads with a lease.", value=float(election.is_leader(now)))
    gauge(
        "ringmesh_leader_lease_remaining_seconds",
        "Seconds of lease this host has left (0 unless it leads).",
        value=max(0.0, election.lease_until - now),
    )
    counter("ringmesh_elections_started", "Elections this host started.", value=election.elections_started)

    # transfers
    running = Counter(core.priority_of(v).label for v, _started in view.transfers())
    classes = [c.label for c in sorted(Priority, reverse=True)]
    gauge(
        "ringmesh_transfers_running",
        "Pulls under way, by priority class.",
        ["class"],
        [((c,), running.get(c, 0)) for c in classes],
    )
    counter(
        "ringmesh_transfers",
        "Pulls that ended, by priority class and outcome.",
        ["class", "outcome"],
        [((c, o), telemetry.transfers.get((c, o), 0)) for c in classes for o in ("done", "failed")],
    )
    counter(
        "ringmesh_throttle_bytes",
        "Bytes let through this host's byte budget, by direction and class.",
        ["direction", "class"],
        [
            ((direction, c.label), throttle.granted[c])
            for direction, throttle in ((OUT, view.egress), (IN, view.ingress))
            for c in sorted(Priority, reverse=True)
        ],
    )
    gauge(
        "ringmesh_throttle_rate_bytes_per_second",
        "This host's byte budget per direction (0: no limit).",
        ["direction"],
        [((OUT,), view.egress.rate or 0), ((IN,), view.ingress.rate or 0)],
    )

    # peers
    counter(
        "ringmesh_peer_bytes",
        "Bytes to and from each peer: messages, and file chunks.",
        ["peer", "direction", "what"],
        [(k, n) for k, n in sorted(telemetry.peer_bytes.items())],
    )
    breakers = core.breakers.report(now)
    gauge(
        "ringmesh_breaker_state",
        "1 for each peer's breaker state (closed, half-open, open), 0 for the others.",
        ["peer", "state"],
        [((h, s), float(breaker["state"] == s)) for h, breaker in breakers.items() for s in BREAKER_STATES],
    )
    counter(
        "ringmesh_breaker_failures",
        "Failed calls to each peer.",
        ["peer"],
        [((h,), p.total_failures) for h, p in sorted(core.breakers.peers.items())],  # report()'s "failures"
    )

    # games
    own = core.replication.origin
    produced = {k: hw for (o, k), hw in view.games.log.streams().items() if o == own}
    materialised = dict(view.games.by_config)
    keys = sorted(set(produced) | set(view.durable) | set(materialised))
    counter(
        "ringmesh_games_published",
        "Games this host took in (its own streams, this life), per config.",
        ["config_key"],
        [((k,), produced.get(k, 0)) for k in keys],
    )
    counter(
        "ringmesh_games_durable",
        "Of those, how many are durable (held by enough hosts), per config.",
        ["config_key"],
        [((k,), view.durable.get(k, 0)) for k in keys],
    )
    counter(
        "ringmesh_games_materialised",
        "Games appended to this host's game databases since start, per config.",
        ["config_key"],
        [((k,), materialised.get(k, 0)) for k in keys],
    )
    fresh = streams.freshness(manifest, core.game_placement().targets, now)
    gauge(
        "ringmesh_config_games",
        "Games the cluster produced, per config (all streams).",
        ["config_key"],
        [((k,), config["games"]) for k, config in sorted(fresh.items())],
    )
    gauge(
        "ringmesh_config_newest_game_age_seconds",
        "Age of the newest game, per config.",
        ["config_key"],
        [((k,), config["newest_age_s"]) for k, config in sorted(fresh.items()) if config["newest_age_s"] is not None],
    )
    gauge(
        "ringmesh_config_hosts_behind",
        "Game hosts missing some of a config's games.",
        ["config_key"],
        [((k,), len(config["hosts_behind"])) for k, config in sorted(fresh.items())],
    )

    # items
    cluster = reports.cluster_data(view)
    under = [it for it in cluster["items"] if it["hosts_behind"] or it["copies"] < it["wanted_copies"]]
    gauge("ringmesh_items", "Named file items (newest versions) in the manifest.", value=len(cluster["items"]))
    gauge("ringmesh_items_under_replicated", "Items some target host does not hold yet.", value=len(under))
    gauge(
        "ringmesh_items_blocked",
        "Items no eligible host can take.",
        value=sum(it["blocked"] for it in cluster["items"]),
    )

    # disk
    disk = view.disk or {}
    for key, name, doc in (
        ("used_percent", "ringmesh_disk_used_percent", "Disk use of the data dir's file system, percent."),
        ("free_bytes", "ringmesh_disk_free_bytes", "Bytes free for this host on the data dir's file system."),
        ("total_bytes", "ringmesh_disk_total_bytes", "Size of the data dir's file system, bytes."),
    ):
        if key in disk:
            gauge(name, doc, value=disk[key])
    gauge(
        "ringmesh_disk_cap_percent",
        "Disk use above which this host takes no new data, percent.",
        value=view.host.disk_cap_percent,
    )

    gauge(
        "ringmesh_games_held",
        "Games this host holds back from its databases, by config and kind "
        "(refused: see `ringmesh games refused`; waiting: for their schema).",
        ["config_key", "kind"],
        [
            ((key, kind), n)
            for key, kinds in sorted(view.games.held_summary.items())
            for kind, n in sorted(kinds.items())
        ],
    )
    counter(
        "ringmesh_core_errors",
        "Steps of the protocol core that raised (a bug; the core's timers were re-armed).",
        value=view.counters.get("core_errors", 0),
    )

    # everything else the daemon counts
    counter(
        "ringmesh_events",
        "The daemon's other counters (send failures, rejected messages, ...).",
        ["event"],
        [((k,), n) for k, n in sorted(view.counters.items()) if k not in GAUGE_COUNTERS | {"core_errors"}],
    )
    return out


class _Collector:
    def __init__(self, view: NodeView, loop: asyncio.AbstractEventLoop) -> None:
        self.view, self.loop = view, loop

    def collect(self):
        async def snapshot():
            return _families(self.view)

        fut = asyncio.run_coroutine_threadsafe(snapshot(), self.loop)
        try:
            yield from fut.result(timeout=SCRAPE_TIMEOUT)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise RuntimeError(f"the event loop did not answer within {SCRAPE_TIMEOUT:.0f} s") from None


def listen_setting(configured: str | None, flag: str | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """Where to serve /metrics: the flag, else the environment, else the config; None: off."""
    env = os.environ if env is None else env
    for where, setting in (
        ("--metrics-listen", flag),
        (f"environment {LISTEN_ENV}", env.get(LISTEN_ENV)),
        ("ringmesh.metrics_listen", configured),
    ):
        if setting:
            return check_listen(where, setting)
    return None


def check_listen(where: str, listen: object) -> str:
    """HOST:PORT with a port 0..65535 (0: any free port)."""
    host, sep, port = listen.rpartition(":") if isinstance(listen, str) else ("", "", "")
    if not isinstance(listen, str) or not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{where}: expected host:port for the metrics endpoint (port 0: any free one), got {listen!r}"
        )
    return listen


class MetricsServer:
    """`GET /metrics` on `listen` (HOST:PORT; port 0: any free one, see `address`)."""

    def __init__(self, view: NodeView, listen: str) -> None:
        from prometheus_client import CollectorRegistry, start_http_server

        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(view, asyncio.get_running_loop()))
        try:
            self._httpd, self._thread = start_http_server(int(port), addr=host, registry=registry)
        except OSError as e:
            raise ConfigError(f"metrics: cannot listen on {listen}: {e.strerror}") from None
        bound = self._httpd.server_address
        self.address = f"{host}:{bound[1]}" if ":" not in host else f"[{host}]:{bound[1]}"
        log.info("metrics on http://%s/metrics", self.address)

    async def close(self) -> None:
        await asyncio.to_thread(self._httpd.shutdown)
        self._httpd.server_close()
