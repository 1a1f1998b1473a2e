"""The chaos scenarios, each bounded in time and driven by one seed (printed first): every fault
choice (which host, which signal, when, which side of a split) comes from random.Random(seed).

  spot_storm   8 hosts; the 3 ephemeral selfplay hosts, on links with 10 % loss each way, are
               killed (SIGKILL, or SIGTERM: drain) and replaced by fresh hosts while every
               selfplay host produces games; a model promoted at the start reaches the new hosts.
  partition    8 hosts split 4/4 (both ways) during a model promotion; the other side promotes a
               newer version while cut off; then heal.
  leader_loss  SIGKILL the leader during a broadcast (it is restarted later); then SIGSTOP the
               new leader past its lease and resume it.
  disk_full    a training host pulls a promoted model into a small tmpfs that another process
               fills mid-pull (and keeps full a while); then the space is freed. Two variants:
               where="dest", the model destination (`paths: model:`) is the tmpfs, so the install
               finds no room; where="data_dir", the whole data dir is (manifest store, stream log,
               games database, partial files): the issue's case, which exposes a daemon bug.
  nat          8 hosts, 3 of them nobody can dial (issue 2.4: `nat_blocked`, inbound connections
               dropped in their namespaces): they link to relays; games and models flow both
               ways; a relay is SIGKILLed (they re-link); no false death; the leader is public.

After each: every game reported durable is on every training host exactly once; every eligible
host holds the newest model byte-identical; one leader; manifests converged within
CONVERGE_BOUND_S of the heal; no daemon crashed (exit codes, logs); no temp or partial file at
any destination path. A failed check raises ChaosFailure: the check, the seed, each peer's last
log lines. Used by tests/chaos/test_chaos.py (CI timings) and bench/soak.py (the issue's).
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from .cluster import (
    MODEL,
    GameFactory,
    HostSpec,
    NetCluster,
    Producer,
    StatusSampler,
    check_games,
    overlapping_leases,
    random_file,
    standard_hosts,
    wait_until,
)

MiB, MB = 1 << 20, 1_000_000
SEEDS = {"spot_storm": 1108, "partition": 2208, "leader_loss": 3308, "disk_full": 4408, "nat": 5508}
PARTITION_SECONDS = 30.0  # the 4/4 split: bench/soak.py --scenario partition
PARTITION_SECONDS_CI = 10.0  # the same split in CI, shortened to keep `make test` within minutes
CONVERGE_BOUND_S = 20.0  # manifests equal on every host at most this long after a heal
SPOT_LOSS = 0.10
MODEL_MIB = 16


def seed_for(scenario: str) -> int:
    """The scenario's fixed seed; CHAOS_SEED overrides it (to replay or explore)."""
    return int(os.environ.get("CHAOS_SEED", SEEDS[scenario]))


def _begin(name: str, seed: int) -> random.Random:
    print(f"chaos scenario {name}: seed {seed} (replay: CHAOS_SEED={seed})", flush=True)
    return random.Random(seed)


def _finish(
    c: NetCluster,
    producers: list[Producer],
    report: dict[str, Any],
    *,
    games_timeout: float = 60.0,
    model: tuple[Path, str] | None = None,
    converge_since: float | None = None,
    fail_on_lost: bool = True,
) -> dict[str, Any]:
    """The checks every scenario ends with, in order; the report gets what they measured."""
    for p in producers:
        p.stop()
    for p in producers:
        p.join(30)
    t = time.monotonic()
    if model is not None:
        report["model_targets"] = c.check_model(model[0], model[1], timeout=90)
    report["games"] = check_games(c, producers, games_timeout, fail=fail_on_lost)
    report["leader"] = c.check_one_leader(30)
    report["converged_s" if converge_since is None else "converged_after_heal_s"] = c.check_converged(
        CONVERGE_BOUND_S, converge_since
    )
    c.check_no_partials()
    report["checks_s"] = round(time.monotonic() - t, 1)
    crashed = c.reap()
    if crashed:
        c.check_daemons()  # fails, naming them
    codes = c.stop_all()
    report["grpc_noise_records"] = c.check_daemons()
    report["exit_codes"] = codes
    report["producer_errors"] = {p.host: dict(p.errors) for p in producers if p.errors}
    return report


def _producers(c: NetCluster, factory: GameFactory, names: list[str], **kw) -> list[Producer]:
    ps = [Producer(c, n, factory, **kw) for n in names]
    for p in ps:
        p.start()
    return ps


def _producing(c: NetCluster, p: Producer, timeout: float = 30.0) -> None:
    """Wait until `p`'s host, in its current life, has had a game acknowledged."""
    life = c.hosts[p.host].life
    c.wait(
        lambda: any(lf == life for lf, _ in list(p.acked)),
        timeout,
        "games produced",
        f"{p.host} (life {life}) to take a game",
    )


# -- spot storm ----------------------------------------------------------------------------


def spot_storm(
    root: Path,
    seed: int,
    *,
    kills: int = 3,
    duration_s: float | None = None,
    loss: float = SPOT_LOSS,
    model_mib: int = MODEL_MIB,
    promote_every_s: float | None = None,
    rss_every_s: float | None = None,
    interval: float = 0.5,
    batch: int = 2,
    gap_s: tuple[float, float] = (2.0, 5.0),
    prefix: str = "rmch",
    progress=None,
    fail_on_lost: bool = True,
    report: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`kills` spot kills (CI), or kills for `duration_s` seconds (the soak, with a new model
    version promoted every `promote_every_s` and daemon RSS sampled every `rss_every_s`)."""
    rng = _begin("spot_storm", seed)
    t_start = time.monotonic()
    report = {} if report is None else report  # filled as the run goes: a caller keeps what a failed run measured
    report.update(scenario="spot_storm", seed=seed)
    factory = GameFactory(root / "templates", seed)
    with NetCluster(root / "cluster", standard_hosts(), seed=seed, prefix=prefix) as c:
        report["rss"], report["events"], report["producers"] = c.rss, c.events, []
        c.start()
        if rss_every_s:
            c.sample_rss_every(rss_every_s)
        spots = c.names(ephemeral=True)
        for s in spots:
            c.lab.loss(c.index(s), loss, both_ways=True)
        c.note(f"{loss:.0%} loss each way on the links of {', '.join(spots)}")
        producers = _producers(c, factory, c.names(role="selfplay"), interval=interval, batch=batch)
        by_host = {p.host: p for p in producers}
        report["producers"][:] = producers
        model = random_file(root / MODEL, model_mib * MiB, rng)
        digest = c.publish_model(rng.choice(c.names(role="training")), model)["digest"]
        victims = list(spots)
        rng.shuffle(victims)
        n, drained, last_promote = 0, [], time.monotonic()
        while (n < kills) if duration_s is None else (time.monotonic() - t_start < duration_s):
            victim = victims[n % len(victims)] if duration_s is None else rng.choice(spots)
            gap = rng.uniform(*gap_s)
            _producing(c, by_host[victim])
            time.sleep(gap)  # fault timing: the victim produces games for `gap` s
            life = c.hosts[victim].life
            if rng.random() < 2 / 3:
                c.kill(victim)
            else:  # a spot notice: SIGTERM, the host drains, then goes
                with by_host[victim].lock:
                    before = [q for (lf, q) in by_host[victim].acked if lf == life]
                c.terminate(victim)
                tail = c.hosts[victim].log.read_text(errors="replace")[-4000:]
                if "drain: every game is durable" in tail and before:
                    by_host[victim]._mark(life, max(before))  # the daemon said so, for what it took before the notice
                    drained.append(f"{victim}#{life}")
            time.sleep(rng.uniform(0.5, 2.0))  # the slot is empty for a moment
            c.replace(victim)
            c.wait_ready(victim)
            n += 1
            if promote_every_s and time.monotonic() - last_promote >= promote_every_s:
                model = random_file(root / MODEL, model_mib * MiB, rng)
                digest = c.publish_model(rng.choice(c.names(role="training")), model)["digest"]
                last_promote = time.monotonic()
            if progress:
                progress(c, producers, n)
        for v in spots:  # every replacement is up and producing
            _producing(c, by_host[v])
        report.update(kills=n, drained=drained, storm_s=round(time.monotonic() - t_start, 1))
        _finish(c, producers, report, model=(model, digest), fail_on_lost=fail_on_lost)
    del report["producers"]
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


# -- partition -----------------------------------------------------------------------------


def partition(
    root: Path,
    seed: int,
    *,
    partition_s: float = PARTITION_SECONDS_CI,
    model_mib: int = MODEL_MIB,
    link_mb: float = 10,
    prefix: str = "rmch",
) -> dict[str, Any]:
    rng = _begin("partition", seed)
    t_start = time.monotonic()
    report: dict[str, Any] = {"scenario": "partition", "seed": seed, "partition_s": partition_s}
    factory = GameFactory(root / "templates", seed)
    with NetCluster(root / "cluster", standard_hosts(), seed=seed, prefix=prefix) as c:
        c.start()
        c.check_one_leader(30)
        rest = c.names(role="selfplay")
        rng.shuffle(rest)
        side_a, side_b = ["train1", *rest[:3]], ["train2", *rest[3:]]
        report["sides"] = [side_a, side_b]
        for h in c.hosts:  # links slow enough that the promotion is under way when the cut comes
            c.lab.limit(c.index(h), int(link_mb * MB), int(link_mb * MB))
        producers = _producers(c, factory, c.names(role="selfplay"), interval=0.5)
        v1 = random_file(root / "v1.pth", model_mib * MiB, rng)
        first = rng.choice([side_a, side_b])
        second = side_b if first is side_a else side_a
        c.publish_model(rng.choice(first), v1)
        c.wait(
            lambda: any((c.status(n) or {}).get("transfers") for n in c.running()),
            20,
            "promotion under way",
            "a host pulling the promoted model",
        )
        c.lab.partition([c.index(h) for h in side_a], [c.index(h) for h in side_b])
        t_cut = time.monotonic()
        c.note(f"partition {side_a} | {side_b} for {partition_s:.0f} s")
        v2_at = t_cut + rng.uniform(1.0, partition_s / 2)
        v2 = random_file(root / MODEL, model_mib * MiB, rng)
        digest2, leases, samples = None, [], 0
        while time.monotonic() - t_cut < partition_s:
            if digest2 is None and time.monotonic() >= v2_at:
                digest2 = c.publish_model(rng.choice(second), v2)["digest"]
            leases += c.leases()  # every lease any host reports during the cut
            samples += 1
            time.sleep(0.2)
        if digest2 is None:
            digest2 = c.publish_model(rng.choice(second), v2)["digest"]
        c.lab.heal()
        t_heal = time.monotonic()
        split_brain = overlapping_leases(leases)
        c.note(
            f"heal ({samples} rounds of status during the cut: {len(leases)} leases seen, held by "
            f"{sorted({(h, t) for h, t, _, _ in leases})}; overlapping: {len(split_brain)})"
        )
        if split_brain:
            c.fail("one leader during the partition", f"two hosts held a leader's lease at once: {split_brain[:5]}")
        for h in c.hosts:
            c.lab.unlimit(c.index(h))
        report["lease_samples"] = len(leases)
        _finish(c, producers, report, model=(v2, digest2), converge_since=t_heal)
        report["events"] = c.events
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


# -- leader loss -----------------------------------------------------------------------------


def leader_loss(
    root: Path, seed: int, *, model_mib: int = MODEL_MIB, link_mb: float = 8, prefix: str = "rmch"
) -> dict[str, Any]:
    rng = _begin("leader_loss", seed)
    t_start = time.monotonic()
    report: dict[str, Any] = {"scenario": "leader_loss", "seed": seed}
    factory = GameFactory(root / "templates", seed)
    with NetCluster(root / "cluster", standard_hosts(training=2, selfplay=3, spot=1), seed=seed, prefix=prefix) as c:
        c.start()
        leader, term = c.check_one_leader(30)
        for h in c.hosts:
            c.lab.limit(c.index(h), int(link_mb * MB), int(link_mb * MB))
        producers = _producers(c, factory, c.names(role="selfplay"), interval=0.5)
        model = random_file(root / MODEL, model_mib * MiB, rng)
        publisher = rng.choice([n for n in c.hosts if n != leader])
        digest = c.publish_model(publisher, model)["digest"]

        def directive_out():  # whoever leads now (leases lapse under load) has issued it; not all hold it yet
            now_leader, now_term, acting, _ = c.leader_view()
            if now_leader is None or acting != [now_leader]:
                return None
            st = c.status(now_leader) or {}
            if not any(
                b["digest"] == digest and b["term"] == now_term and b["leader"] == now_leader
                for b in st.get("broadcasts", [])
            ):
                return None
            holders = set(
                next((i["holders"] for i in (c.ls(now_leader) or {}).get("items", []) if i["digest"] == digest), [])
            )
            return (now_leader, now_term) if set(c.hosts) - holders else None

        leader, term = c.wait(
            directive_out, 30, "broadcast under way", "a leader's directive, not yet delivered everywhere"
        )
        c.kill(leader)
        t_kill = time.monotonic()

        def new_leader():
            l2, t2, acting, _ = c.leader_view()
            return (l2, t2) if l2 is not None and l2 != leader and t2 > term and acting == [l2] else None

        leader2, term2 = c.wait(new_leader, 30, "a new leader after SIGKILL", "the others to agree on a new leader")
        report["failover_s"] = round(time.monotonic() - t_kill, 2)
        c.note(f"new leader {leader2} (term {term2}) {report['failover_s']} s after the kill")

        def reissued():  # under the new leader's own term: the dead leader's directive no longer counts
            now_leader, _, acting, _ = c.leader_view()  # (leader2, unless it lost its lease to another since)
            if now_leader in (None, leader) or acting != [now_leader]:
                return False
            st = c.status(now_leader) or {}
            return any(
                b["digest"] == digest and b["term"] >= term2 and b["leader"] == now_leader and b["valid"]
                for b in st.get("broadcasts", [])
            )

        c.wait(
            reissued, 15, "the new leader re-issues the broadcast", f"a leader of term >= {term2} to lead the broadcast"
        )
        c.check_model(model, digest, timeout=60)
        report["broadcast_done_after_kill_s"] = round(time.monotonic() - t_kill, 2)
        c.start_host(leader)  # the old leader comes back (same data dir) and must follow
        c.wait_ready(leader)

        def follows():
            e = (c.status(leader) or {}).get("election") or {}
            return e.get("role") == "follower" and e.get("term", 0) >= term2

        c.wait(follows, 30, "the old leader follows", f"{leader} to follow in a term >= {term2}")

        # SIGSTOP the leader past its lease
        stopped, stopped_term = c.check_one_leader(30)
        c.pause(stopped)
        t_stop = time.monotonic()

        def replaced():
            l3, t3, acting, _ = c.leader_view()
            return (l3, t3) if l3 is not None and l3 != stopped and t3 > stopped_term and acting == [l3] else None

        leader3, term3 = c.wait(replaced, 30, "a new leader while the leader is stopped", "the others to elect one")
        time.sleep(rng.uniform(0.5, 2.0))  # stopped a little longer still
        report["stopped_s"] = round(time.monotonic() - t_stop, 2)
        c.resume(stopped)
        st = c.wait(lambda: c.status(stopped), 10, "the stopped host answers", f"{stopped} to answer after SIGCONT")
        if st["election"]["is_leader"]:
            c.fail(
                "a leader stopped past its lease does not act", f"{stopped} says it leads on waking: {st['election']}"
            )
        report["leaders"] = [(leader, term), (leader2, term2), (stopped, stopped_term), (leader3, term3)]
        for h in c.hosts:
            c.lab.unlimit(c.index(h))
        _finish(c, producers, report, model=(model, digest))
        report["events"] = c.events
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


# -- disk full -------------------------------------------------------------------------------


def fill(path: Path) -> int:
    """Write zeros to `path` until the file system is full; returns the bytes written."""
    n = 0
    block = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                n += f.write(block)
        except OSError:
            pass
        try:  # the last partial block
            while True:
                w = f.write(b"\0" * 4096)
                if not w:
                    break
                n += w
        except OSError:
            pass
    return n


def disk_full(
    root: Path,
    seed: int,
    *,
    where: str = "dest",
    model_mib: int = 24,
    ingress_mb: float = 4,
    full_s: float = 3.0,
    prefix: str = "rmch",
) -> dict[str, Any]:
    """`where="dest"`: the training host's model destination (`paths: model:`) is a tmpfs just
    larger than the model; it fills mid-pull, so the install finds no room. `where="data_dir"`:
    its whole data dir (manifest store, stream log, games database, partial files) is a tmpfs
    that fills mid-pull."""
    rng = _begin(f"disk_full ({where})", seed)
    t_start = time.monotonic()
    report: dict[str, Any] = {"scenario": "disk_full", "where": where, "seed": seed}
    factory = GameFactory(root / "templates", seed)
    specs = standard_hosts(training=2, selfplay=1, spot=1)
    victim = rng.choice([s.name for s in specs if s.role == "training"])
    mount = root / "cluster" / f"{victim}-small"
    if where == "dest":
        size = f"{model_mib + 4}m"
        specs = [
            dataclasses.replace(s, paths=(("model", str(mount / "models")),)) if s.name == victim else s for s in specs
        ]
    else:
        size = f"{model_mib * 2 + 16}m"
    with NetCluster(root / "cluster", specs, seed=seed, prefix=prefix) as c:
        if where != "dest":
            mount = c.hosts[victim].data_dir
        c.mount_tmpfs(mount, size)
        report["tmpfs"] = size
        c.note(f"{victim}'s {'model destination' if where == 'dest' else 'data dir'} is a {size} tmpfs")
        c.start()
        c.check_one_leader(30)
        c.lab.limit(c.index(victim), None, int(ingress_mb * MB))  # a slow download: the fill comes mid-pull
        producers = _producers(c, factory, c.names(role="selfplay"), interval=0.5)
        model = random_file(root / MODEL, model_mib * MiB, rng)
        digest = c.publish_model(rng.choice([n for n in c.hosts if n != victim]), model)["digest"]

        def pulling():
            t = [x for x in (c.status(victim) or {}).get("transfers", []) if x["digest"] == digest]
            return t and t[0].get("chunks_verified", 0) >= 1

        c.wait(pulling, 30, "the pull starts", f"{victim} to verify a first chunk of the model")
        filler = mount / "filler.bin"
        report["filled_bytes"] = fill(filler)
        c.note(f"filled the tmpfs: {report['filled_bytes']} bytes")

        def failed():
            st = c.status(victim)
            return st and st["counters"].get("transfers_disk_full", 0) >= 1

        c.wait(failed, 60, "the pull fails on a full disk", f"{victim} to report a transfer stopped by the full disk")
        # the failed pull gave its partial file's space back: fill that too, so the disk stays full a while
        topped = mount / "filler2.bin"
        report["topped_up_bytes"] = fill(topped)
        c.note(f"{victim}'s pull failed (disk full); filled again: {report['topped_up_bytes']} bytes")
        t_full = time.monotonic()
        while time.monotonic() - t_full < full_s:  # the disk stays full a while: the daemon keeps serving
            if c.status(victim) is None:
                c.fail("daemon alive on a full disk", f"{victim} stopped answering while its disk was full")
            time.sleep(0.3)
        dest = c.dest_dir(victim, "model")
        leftovers = sorted(p.name for p in dest.glob("*")) if dest.is_dir() else []
        if leftovers:
            c.fail("no temp or partial file at the destination", f"{victim} has {leftovers} in {dest} while full")
        c.check_daemons()  # now already: the full disk made no daemon fail (exit, traceback, internal error)
        filler.unlink()
        topped.unlink()
        t_free = time.monotonic()
        c.note("freed the disk")
        c.check_model(model, digest, timeout=90)
        report["completed_after_free_s"] = round(time.monotonic() - t_free, 2)
        report["disk_full_failures"] = c.status(victim)["counters"].get("transfers_disk_full")
        c.lab.unlimit(c.index(victim))
        _finish(c, producers, report, model=(model, digest))
        report["events"] = c.events
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


# -- nat -----------------------------------------------------------------------------------

NAT_MODEL_MIB = 4
MEMBERS_BOUND_S = 30.0  # every host sees every other alive this long after the daemons start
LINK_BOUND_S = 30.0  # every NAT'd host has its relays this long after membership settled
RELINK_BOUND_S = 20.0  # a NAT'd host replaces a SIGKILLed relay within this
DETECT_BOUND_S = 30.0  # every host sees a SIGKILLed host dead within this
AFTER_KILL_DURABLE_S = 30.0  # games a NAT'd host took after its relay's kill are durable within this


def nat_hosts() -> list[HostSpec]:
    """8 hosts, 3 of them NAT'd self-play producers (nat1 a voter, as persistent hosts are; nat2
    and nat3 not), 2 public training hosts, 2 public persistent self-play hosts, 1 public spot
    host. Relay candidates (public, persistent): train1, train2, self1, self2; 5 voters."""
    return [
        HostSpec("train1", "training"),
        HostSpec("train2", "training"),
        HostSpec("self1"),
        HostSpec("self2"),
        HostSpec("spot1", ephemeral=True),
        HostSpec("nat1", nat_blocked=True),
        HostSpec("nat2", nat_blocked=True, voter=False),
        HostSpec("nat3", nat_blocked=True, voter=False),
    ]


def _fresh_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _relay_candidates(c: NetCluster) -> list[str]:
    """Who a NAT'd host may keep its links to now (core/reach.py): public, persistent, running."""
    return [n for n in c.running() if not c.hosts[n].spec.nat_blocked and not c.hosts[n].spec.ephemeral]


def _check_linked(
    c: NetCluster, nats: list[str], bound: float, check: str, *, without: str | None = None, required: bool = True
) -> tuple[float, dict[str, list[str]]] | None:
    """Every running NAT'd host of `nats` has links up to min(wanted, candidates) relays, all
    of them candidates (and none `without`), within `bound` s. Returns (seconds, each host's
    `up`); None when no status has a `links` section and `required` is False (a control run)."""
    t = time.monotonic()
    state: dict[str, Any] = {}

    def linked():
        cands = set(_relay_candidates(c))
        ups, why = {}, []
        docs = {n: c.status(n) for n in nats if n in c.running()}
        if not required and docs and all(d is not None and "links" not in d for d in docs.values()):
            state["control"] = True  # this daemon reports no links at all: nothing to wait for
            return True
        for n in nats:
            if n not in c.running():
                continue
            links = (docs.get(n) or {}).get("links")
            if links is None:
                why.append(f"{n}: no `links` in its status")
                continue
            up = list(links.get("up") or [])
            ups[n] = up
            want = min(int(links.get("wanted") or 3), len(cands))
            if links.get("nat_blocked") is not True:
                why.append(f"{n}: links.nat_blocked is {links.get('nat_blocked')!r}")
            elif without is not None and without in up:
                why.append(f"{n}: still lists {without} up")
            elif not set(up) <= cands:
                why.append(f"{n}: up {up} are not all candidates {sorted(cands)}")
            elif len(set(up)) != want:
                why.append(f"{n}: {len(set(up))} relays up {up}, want {want} of {sorted(cands)}")
        state["why"], state["ups"] = why, ups
        return not why

    if not wait_until(linked, bound, 0.25):
        c.fail(check, f"not within {bound:.0f} s: " + "; ".join(state["why"]))
    if state.get("control"):
        c.note("no `links` in the NAT'd hosts' status (a control run): link checks skipped")
        return None
    took = round(time.monotonic() - t, 2)
    c.note(f"NAT'd hosts linked after {took} s: {state['ups']}")
    return took, state["ups"]


def _delivery(c: NetCluster, digest: str, since: float, timeout: float, model: str = MODEL) -> dict[str, float]:
    """Seconds from `since` until each running host's own listing says it holds `digest` of
    `model` (installed); waits until every one does or `timeout` (check_model judges after)."""
    held: dict[str, float] = {}

    def all_hold():
        for n in c.running():
            if n in held:
                continue
            it = next((i for i in (c.ls(n) or {}).get("items", []) if i["name"] == model), None)
            if it is not None and it["digest"] == digest and n in it["holders"]:
                held[n] = round(time.monotonic() - since, 2)
        return set(c.running()) <= set(held)

    wait_until(all_hold, timeout, 0.2)
    return held


def _split_times(c: NetCluster, times: dict[str, float], exclude: str | None = None) -> dict[str, Any]:
    """Max and per-host delivery seconds, NAT'd hosts vs public ones (the publisher left out)."""
    out: dict[str, Any] = {}
    for kind, nat in (("nat", True), ("public", False)):
        ts = {n: t for n, t in times.items() if c.hosts[n].spec.nat_blocked == nat and n != exclude}
        out[kind] = {"max_s": max(ts.values(), default=None), "hosts": ts}
    return out


class DeathWatch(threading.Thread):
    """From the SIGKILL of `victim` on (start it right after), the seconds until each running
    host sees it dead, polled every 0.1 s alongside whatever else the scenario waits for;
    `result` waits for the rest of `bound` and fails `check` unless every host did by then."""

    def __init__(self, c: NetCluster, victim: str, bound: float) -> None:
        super().__init__(name=f"deathwatch-{victim}", daemon=True)
        self.c, self.victim, self.bound = c, victim, bound
        self.since = time.monotonic()
        self.seen: dict[str, float] = {}
        self.states: dict[str, str | None] = {}
        self.start()

    def run(self) -> None:
        def all_see():
            for n in self.c.running():
                if n in self.seen:
                    continue
                doc = self.c.status(n) or {}
                m = next((m for m in doc.get("members", []) if m["name"] == self.victim), None)
                self.states[n] = m and m["state"]
                if m is not None and m["state"] == "dead":
                    self.seen[n] = round(time.monotonic() - self.since, 2)
            return set(self.c.running()) <= set(self.seen)

        wait_until(all_see, self.bound, 0.1)

    def result(self, check: str) -> dict[str, Any]:
        self.join(max(0.0, self.bound - (time.monotonic() - self.since)) + 10)
        seen = dict(self.seen)
        if self.is_alive() or not set(self.c.running()) <= set(seen):
            self.c.fail(
                check,
                f"{self.victim} not seen dead by every host within {self.bound:.0f} s of its SIGKILL: "
                f"last states {self.states}, seen dead after (s) {seen}",
            )
        self.c.note(f"{self.victim} seen dead by every host {max(seen.values())} s after its SIGKILL")
        return {"first_s": min(seen.values()), "all_s": max(seen.values()), "hosts": seen}


def _no_false_death(c: NetCluster, sampler: StatusSampler, nats: list[str], *, suspect_ok: bool) -> dict[str, Any]:
    """No host seen dead while it was up (by any host that was up); no NAT'd host seen even
    suspect (unless `suspect_ok`). Public hosts' suspicions are counted, not failed on."""
    dead = sampler.unexpected(states=("dead",))
    if dead:
        c.fail(
            "no false death",
            f"{len(dead)} view(s) of a running host as dead, first (s, observer, member): {dead[:8]}; last: {dead[-1]}",
        )
    nat_suspect = sampler.unexpected(nats, states=("suspect",))
    if nat_suspect and not suspect_ok:
        c.fail(
            "no NAT'd host suspected",
            f"{len(nat_suspect)} view(s) of a running NAT'd host as suspect, first (s, observer, member): "
            f"{nat_suspect[:8]}; last: {nat_suspect[-1]}",
        )
    public_suspect = sampler.unexpected([n for n in c.hosts if n not in nats], states=("suspect",))
    return {
        "samples": sampler.views,
        "rounds": sampler.rounds,
        "nat_suspect_views": len(nat_suspect),
        "public_suspect_views": len(public_suspect),
        "public_suspect_first": public_suspect[:3],
    }


def _public_leader(c: NetCluster, sampler: StatusSampler, nats: list[str]) -> dict[str, Any]:
    named, acting = sampler.leaders_seen()
    bad = {n: v for n, v in {**named, **acting}.items() if n in nats}
    if bad:
        c.fail(
            "the leader is public",
            f"a NAT'd host was named leader or acted as one (views): named {named}, acting {acting}",
        )
    return {"named": named, "acting": acting}


def _taken(c: NetCluster, producers: dict[str, Producer], names: list[str]) -> dict[str, int]:
    """The highest seq each host's producer has had acknowledged in the host's current life."""
    out = {}
    for n in names:
        p, life = producers[n], c.hosts[n].life
        with p.lock:
            out[n] = max((q for lf, q in p.acked if lf == life), default=0)
    return out


def _wait_durable_past(
    c: NetCluster, producers: dict[str, Producer], taken: dict[str, int], bound: float, check: str
) -> None:
    """Each host's stream becomes durable past the seq it had taken (`taken`) within `bound` s."""
    state: dict[str, Any] = {}

    def durable_past():
        left = []
        for n, q in taken.items():
            p, life = producers[n], c.hosts[n].life
            with p.lock:
                through = p.durable_through.get(life, 0)
            if through <= q:
                left.append(f"{n}: durable through seq {through}, had taken {q}")
        state["left"] = left
        return not left

    if not wait_until(durable_past, bound, 0.25):
        c.fail(check, f"within {bound:.0f} s: {state.get('left')}")


def _cut_link(
    c: NetCluster,
    sampler: StatusSampler,
    nats: list[str],
    producers: dict[str, Producer],
    rng: random.Random,
    *,
    suspect_ok: bool,
    linked: bool,
) -> dict[str, Any]:
    """Drop every packet between the NAT'd hosts and one of their relays (both ways, processes
    left running): the NAT'd hosts re-link without it; games stay durable; nobody is seen dead."""
    relays: dict[str, list[str]] = {}
    for n in nats:
        for r in ((c.status(n) or {}).get("links") or {}).get("up") or []:
            relays.setdefault(r, []).append(n)
    if not relays:
        if linked:
            c.fail("NAT'd hosts linked to their relays", "no NAT'd host lists a relay up before the cut")
        return {}
    relay = rng.choice(sorted(relays))
    taken = _taken(c, producers, nats)
    c.lab.partition([c.index(relay)], [c.index(n) for n in nats])
    t_cut = time.monotonic()
    c.note(f"cut every packet between {relay} and {nats} (relay of {relays[relay]}); processes keep running")
    out: dict[str, Any] = {"relay": relay, "relay_of": relays[relay]}
    relinked = _check_linked(
        c, nats, RELINK_BOUND_S, "NAT'd hosts re-link when a relay's link goes silent", without=relay
    )
    if relinked:
        out["relinked_s"], out["relays_after_cut"] = relinked
    _wait_durable_past(c, producers, taken, AFTER_KILL_DURABLE_S, "games taken after the link cut become durable")
    out["durable_after_cut_s"] = round(time.monotonic() - t_cut, 2)
    out["no_false_death"] = _no_false_death(c, sampler, nats, suspect_ok=suspect_ok)
    c.lab.heal()
    c.note("heal the cut")
    c.wait_members(list(c.hosts), 30, check="every host alive after the cut heals")
    return out


def nat(
    root: Path,
    seed: int,
    *,
    model_mib: int = NAT_MODEL_MIB,
    block: bool = True,
    suspect_ok: bool = True,
    steady_s: float = 10.0,
    cut_link: bool = False,
    prefix: str = "rmch",
) -> dict[str, Any]:
    """Issue 2.4: 3 of 8 hosts nobody can dial (`nat_blocked`, their namespaces drop inbound
    connections). Membership settles; every NAT'd host links to 3 relays; games published on
    every self-play host (NAT'd ones included) become durable on both training hosts; a model
    promoted from a public host reaches the NAT'd hosts and one promoted from a NAT'd host the
    public ones; SIGKILL a relay (public, not the leader, not a training host if possible):
    the NAT'd hosts re-link, games stay durable, nobody is seen dead falsely; it comes back;
    SIGKILL a NAT'd host: how long until everyone sees it dead. The leader is public in every
    sample. `steady_s`: how long the cluster runs under observation before the relay kill (half
    as long after it rejoins). `block=False`: a control run, NAT'd in the config only (link
    checks skipped when the daemon reports no links). `cut_link`: also, before the NAT'd host's
    kill, every packet between the NAT'd hosts and one of their relays is dropped (both ways,
    no FIN, no RST: a NAT mapping that expired, a middlebox that lost its state) while every
    host keeps running; the NAT'd hosts must notice the silent link and re-link elsewhere within
    RELINK_BOUND_S, nobody may be seen dead; then the cut heals.

    Bounds: every host sees every other alive within MEMBERS_BOUND_S of the daemons' start;
    links up within LINK_BOUND_S; re-linked (the dead relay gone from every `up`, back to
    min(3, candidates)) within RELINK_BOUND_S of the kill; games taken after the kill durable
    within AFTER_KILL_DURABLE_S; a SIGKILLed host seen dead by all within DETECT_BOUND_S. No
    running host is ever seen dead, in any sample (every 0.5 s, every host's view). Suspicions are
    counted for NAT'd and public hosts alike (`nat_suspect_views`, `public_suspect_views`); with
    `suspect_ok=False` a NAT'd host's is a failure. The default allows them: on a 2-core machine
    running 8 daemons, probes with the 0.4 s timeout time out now and then for public hosts just as
    for NAT'd ones (`pytest tests/chaos/test_chaos.py -k test_nat -s` prints both counts), and SWIM's
    suspicion exists to absorb exactly that; what the issue forbids is a false death."""
    rng = _begin("nat", seed)
    t_start = time.monotonic()
    report: dict[str, Any] = {"scenario": "nat", "seed": seed, "blocked": block}
    factory = GameFactory(root / "templates", seed)
    with NetCluster(root / "cluster", nat_hosts(), seed=seed, prefix=prefix, block_nat=block) as c:
        nats = c.names(nat=True)
        report["nat_hosts"] = nats
        report["members_alive_s"] = c.start(bound=MEMBERS_BOUND_S)
        sampler = StatusSampler(c, 0.5)
        sampler.start()
        linked = _check_linked(c, nats, LINK_BOUND_S, "NAT'd hosts linked to their relays", required=block)
        if linked:
            report["linked_s"], report["relays"] = linked
        producers = _producers(c, factory, c.names(role="selfplay"), interval=0.5)
        by_host = {p.host: p for p in producers}
        for n in nats:
            _producing(c, by_host[n])

        # a model promoted from a public host reaches the NAT'd hosts ...
        publisher = rng.choice([n for n in c.names(nat=False) if not c.hosts[n].spec.ephemeral])
        m1 = random_file(_fresh_dir(root / "v1") / MODEL, model_mib * MiB, rng)
        t = time.monotonic()
        d1 = c.publish_model(publisher, m1)["digest"]
        times = _delivery(c, d1, t, 60)
        c.check_model(m1, d1, timeout=max(1.0, 60 - (time.monotonic() - t)))
        report["broadcast_from_public"] = {"from": publisher, **_split_times(c, times, publisher)}
        # ... and one promoted from a NAT'd host reaches the public ones
        publisher = rng.choice(nats)
        m2 = random_file(_fresh_dir(root / "v2") / MODEL, model_mib * MiB, rng)
        t = time.monotonic()
        d2 = c.publish_model(publisher, m2)["digest"]
        times = _delivery(c, d2, t, 60)
        c.check_model(m2, d2, timeout=max(1.0, 60 - (time.monotonic() - t)))
        report["broadcast_from_nat"] = {"from": publisher, **_split_times(c, times, publisher)}
        time.sleep(steady_s)  # the run's length: the cluster works (games, gossip, probes) under observation
        report["no_false_death_before_kill"] = _no_false_death(c, sampler, nats, suspect_ok=suspect_ok)

        # SIGKILL a relay of the NAT'd hosts
        leader, _ = c.check_one_leader(30)
        if leader in nats:
            c.fail("the leader is public", f"{leader}, NAT'd, leads")
        relays_now: dict[str, list[str]] = {}
        for n in nats:
            up = ((c.status(n) or {}).get("links") or {}).get("up") or []
            for r in up:
                relays_now.setdefault(r, []).append(n)
        if not relays_now and linked:
            c.fail("NAT'd hosts linked to their relays", "no NAT'd host lists a relay up before the kill")
        pool = sorted(relays_now) or sorted(_relay_candidates(c))  # a control run: any candidate

        def tier(r: str) -> tuple[bool, bool]:
            return (r == leader, c.hosts[r].spec.role == "training")

        best = min(tier(r) for r in pool)
        relay = rng.choice([r for r in pool if tier(r) == best])
        report["killed_relay"] = {"host": relay, "relay_of": relays_now.get(relay, []), "was_leader": relay == leader}
        before_kill = _taken(c, by_host, nats)
        sampler.expect_down(relay)
        c.kill(relay)
        t_kill = time.monotonic()
        watch = DeathWatch(c, relay, DETECT_BOUND_S)
        relinked = _check_linked(
            c, nats, RELINK_BOUND_S, "NAT'd hosts re-link after a relay's SIGKILL", without=relay, required=block
        )
        if relinked:
            report["relinked_s"], report["relays_after_kill"] = relinked

        _wait_durable_past(
            c, by_host, before_kill, AFTER_KILL_DURABLE_S, "games taken after the relay kill become durable"
        )
        report["durable_after_kill_s"] = round(time.monotonic() - t_kill, 2)
        report["detect_public_dead"] = watch.result("a SIGKILLed public host is seen dead")
        report["no_false_death_relay_kill"] = _no_false_death(c, sampler, nats, suspect_ok=suspect_ok)
        c.start_host(relay)  # it comes back (same data dir)
        c.wait_ready(relay)
        c.wait_members(list(c.hosts), 30, check="the killed relay rejoins")
        sampler.expect_up(relay)
        c.note(f"{relay} is back, seen alive by every host")
        time.sleep(steady_s / 2)  # and a while more with every host up

        if cut_link:
            report["cut_link"] = _cut_link(c, sampler, nats, by_host, rng, suspect_ok=suspect_ok, linked=bool(linked))
            time.sleep(steady_s / 2)

        # SIGKILL a NAT'd host: how long until everyone sees it dead
        victim = rng.choice([n for n in nats if n != publisher])  # keep the NAT'd source of the newest model
        sampler.expect_down(victim)
        c.kill(victim)
        report["detect_nat_dead"] = DeathWatch(c, victim, DETECT_BOUND_S).result("a SIGKILLed NAT'd host is seen dead")
        report["killed_nat"] = victim
        report["false_death"] = _no_false_death(c, sampler, nats, suspect_ok=suspect_ok)
        report["leaders_seen"] = _public_leader(c, sampler, nats)
        sampler.stop()
        relayed = {}
        for n in c.running():
            counters = (c.status(n) or {}).get("counters") or {}
            if counters.get("relayed_calls") or counters.get("relayed_bytes"):
                relayed[n] = {k: counters.get(k, 0) for k in ("relayed_calls", "relayed_bytes")}
        report["relayed"] = relayed
        report["refutations"] = {
            n: ((c.status(n) or {}).get("membership_stats") or {}).get("refutations") for n in nats if n in c.running()
        }
        _finish(c, producers, report, model=(m2, d2))
        if report["leader"][0] in nats:
            c.fail("the leader is public", f"{report['leader']} at the end")
        report["games_by_host"] = {p.host: {"produced": len(p.acked), "durable": len(p.durable)} for p in producers}
        missing = [n for n in nats if not by_host[n].durable]
        if missing:
            c.fail("games published on NAT'd hosts are durable", f"no durable game from {missing}")
        report["events"] = c.events
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    return report


SCENARIOS = {
    "spot_storm": spot_storm,
    "partition": partition,
    "leader_loss": leader_loss,
    "disk_full": disk_full,
    "nat": nat,
}
__all__ = ["SCENARIOS", "SEEDS", "seed_for", "PARTITION_SECONDS", "PARTITION_SECONDS_CI", "CONVERGE_BOUND_S"]
