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
import time
from pathlib import Path
from typing import Any

from .cluster import (
    MODEL,
    GameFactory,
    NetCluster,
    Producer,
    check_games,
    overlapping_leases,
    random_file,
    standard_hosts,
)

MiB, MB = 1 << 20, 1_000_000
SEEDS = {"spot_storm": 1108, "partition": 2208, "leader_loss": 3308, "disk_full": 4408}
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


SCENARIOS = {"spot_storm": spot_storm, "partition": partition, "leader_loss": leader_loss, "disk_full": disk_full}
__all__ = ["SCENARIOS", "SEEDS", "seed_for", "PARTITION_SECONDS", "PARTITION_SECONDS_CI", "CONVERGE_BOUND_S"]
