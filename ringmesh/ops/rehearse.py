"""`ringmesh rehearse FILE [--hosts N | --all] [--minutes M]`: the operators' own cluster on
this machine, before anyone installs ringmesh on a host.

Every member of the file (or N of them, chosen to keep every placement role, spot hosts and
a majority of voters) runs as a real `ringmesh serve` on loopback with the file's roles,
voters, limits, exclusions and routing; only what cannot be rehearsed here is rewritten:
addresses (127.0.0.1, free ports), directories (under a scratch folder), TLS (off) and the
gossip interval (1 s, ringmesh's own default, where their file's 15 s is their HTTP gossip's).
Synthetic self-play games are published on the hosts that play, a model is promoted by
broadcast, and the report says where each data type went and why (the router's reasons), who
leads, and what `status` shows.
Bounded in time; it stops every peer and removes its folder (unless --keep).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from ringmesh.config import ClusterConfig, HostConfig, load_config
from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.ops.localcluster import LocalCluster, free_ports, wait_for

REHEARSAL_GOSSIP_S = 1.0
GAMES_PER_HOST = 3
MODEL_BYTES = 2 << 20


def choose(c: ClusterConfig, n: int) -> list[str]:
    """`n` members: one of every (placement role, spot or not) group first, then voters up to
    three (an election worth the name), then the groups in turn."""
    members = c.members()
    groups: dict[tuple[str, bool], list[str]] = {}
    for name, h in sorted(members.items()):
        groups.setdefault((h.role, h.ephemeral), []).append(name)
    queues = [list(g) for _, g in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    picked = [q.pop(0) for q in queues][:n]
    voters = [v for v in sorted(members) if members[v].voter and v not in picked]
    while voters and len(picked) < n and sum(members[p].voter for p in picked) < 3:
        picked.append(voters.pop(0))
    while len(picked) < min(n, len(members)):
        for q in queues:
            while q and q[0] in picked:
                q.pop(0)
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return sorted(picked)


def rehearsal_doc(c: ClusterConfig, chosen: list[str], ports: list[int], root: Path) -> dict[str, Any]:
    """The file as the rehearsal runs it: the chosen hosts on loopback, nothing else changed
    but directories, TLS and the gossip interval."""
    doc = copy.deepcopy(dict(c.raw))
    hosts = {}
    for name, port in zip(chosen, ports):
        h = dict(doc["hosts"][name] or {})
        for k in ("tailscale_ip", "ssh_host", "p2p_public_port", "tls", "paths"):
            h.pop(k, None)
        if "storage_paths" in h:
            h["storage_paths"] = {k: str(root / "storage" / name / k) for k in h["storage_paths"]}
        h["address"] = f"127.0.0.1:{port}"
        hosts[name] = h
    doc["hosts"] = hosts
    keep = set(chosen)
    if "p2p_voters" in doc:
        doc["p2p_voters"] = [v for v in doc["p2p_voters"] if v in keep]
    routing = doc.setdefault("sync_routing", {})
    for key in ("exclude_from_sync", "excluded_hosts", "priority_hosts"):
        if key in routing:
            routing[key] = [h for h in routing[key] if h in keep]
    if "nfs_sharing_groups" in routing:
        routing["nfs_sharing_groups"] = [
            g for g in ([h for h in g if h in keep] for g in routing["nfs_sharing_groups"]) if g
        ]
    for e in routing.get("allowed_external_storage") or []:
        e["path"] = str(root / "external" / str(e.get("host")))
    routing["gossip_interval_seconds"] = REHEARSAL_GOSSIP_S
    own = doc.setdefault("ringmesh", {}) or {}
    for k in ("tls", "metrics_listen", "watch_games", "paths", "port"):
        own.pop(k, None)
    doc["ringmesh"] = own
    return doc


def _statuses(cluster: LocalCluster) -> dict[str, dict | None]:
    return cluster.query_all("status")


def run_rehearse(
    path: str, hosts: int | None = 8, minutes: float = 3.0, as_json: bool = False, keep: bool = False
) -> int:
    c = load_config(path)
    members = c.members()
    chosen = sorted(members) if hosts is None else choose(c, hosts)
    root = Path(tempfile.mkdtemp(prefix="ringmesh-rehearse-"))
    say = (lambda *a: None) if as_json else print
    report: dict[str, Any] = {"file": path, "members_in_file": len(members), "hosts": chosen, "ok": False, "checks": {}}
    deadline = time.monotonic() + minutes * 60
    doc = rehearsal_doc(c, chosen, free_ports(len(chosen)), root)
    config_path = root / "distributed_hosts.yaml"
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rc = load_config(config_path)
    cluster = LocalCluster.of(root, config_path, {n: h.address for n, h in rc.members().items() if h.address})
    say(f"rehearsing {len(chosen)} of the {len(members)} members of {path} on loopback ({root})")
    poll = 0.2 + 0.03 * len(chosen)  # a status poll of every peer costs each a little CPU
    try:
        t0 = time.monotonic()
        cluster.start_all(timeout=max(30.0, 2.0 * len(chosen)))
        report["startup_s"] = round(time.monotonic() - t0, 2)
        alive = _wait(lambda: _all_alive(cluster, chosen), deadline, "every member alive on every peer", poll)
        report["all_alive_s"] = round(time.monotonic() - t0, 2)
        leader = _wait(lambda: _leader(cluster), deadline, "one leader known to every peer", poll)
        report["leader"] = leader
        report["checks"]["every member alive"] = bool(alive)
        report["checks"]["leader is a voter"] = rc.hosts[leader].voter
        report["games"] = _games(cluster, rc, root, deadline)
        report["model"] = _model(cluster, rc, root, deadline)
        report["checks"]["games where the role table says"] = report["games"]["ok"]
        report["checks"]["model on every eligible host"] = report["model"]["ok"]
        st = cluster.nodes[leader].query("status") or {}
        report["status_of_leader"] = {
            "members": {m["name"]: m["state"] for m in st.get("members", [])},
            "term": st.get("term"),
            "core_errors": st.get("core_errors"),
        }
        report["ok"] = all(report["checks"].values())
    except (TimeoutError, RuntimeError) as e:
        report["error"] = str(e)
    finally:
        report["usage"] = _usage(cluster)
        report["exit_codes"] = cluster.stop_all()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if as_json:
        print(json.dumps(report, sort_keys=True, default=str))
    else:
        _print(report, rc)
    return 0 if report["ok"] else 1


def _usage(cluster: LocalCluster) -> dict[str, Any]:
    """CPU seconds and resident memory of each peer process, from /proc (Linux)."""
    per: dict[str, dict[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for name, nd in cluster.nodes.items():
        if nd.proc is None or nd.proc.poll() is not None:
            continue
        try:
            stat = Path(f"/proc/{nd.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss = next(
                int(line.split()[1])
                for line in Path(f"/proc/{nd.proc.pid}/status").read_text().splitlines()
                if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration, IndexError, ValueError):
            continue
        per[name] = {"cpu_s": round((int(stat[11]) + int(stat[12])) / tick, 2), "rss_mib": round(rss / 1024, 1)}
    if not per:
        return {}
    cpu, rss_mib = [v["cpu_s"] for v in per.values()], [v["rss_mib"] for v in per.values()]
    return {
        "peers": len(per),
        "cpu_s_total": round(sum(cpu), 1),
        "cpu_s_max": max(cpu),
        "rss_mib_mean": round(sum(rss_mib) / len(rss_mib), 1),
        "rss_mib_max": max(rss_mib),
        "per_peer": per,
    }


def _wait(cond, deadline: float, what: str, every: float = 0.2):
    """`cond()` once it holds, polled every `every` s; TimeoutError at the rehearsal's deadline."""
    return wait_for(cond, max(0.0, deadline - time.monotonic()), every, f"{what} (the rehearsal's time bound)")


def _all_alive(cluster: LocalCluster, chosen: list[str]) -> bool:
    docs = _statuses(cluster)
    want = set(chosen)
    return all(d and {m["name"] for m in d["members"] if m["state"] == "alive"} >= want for d in docs.values())


def _leader(cluster: LocalCluster) -> str | None:
    leaders = {(d or {}).get("leader") for d in _statuses(cluster).values()}
    return leaders.pop() if len(leaders) == 1 and None not in leaders else None


def _games(cluster: LocalCluster, rc: ClusterConfig, root: Path, deadline: float) -> dict[str, Any]:
    """Synthetic games on every host that plays; then which hosts took them in, and why."""
    players = [n for n, h in rc.members().items() if h.produces_games]
    ids: list[str] = []
    for i, name in enumerate(players):
        db = root / f"selfplay_{name}.db"
        selfplay.generate_games(db, GAMES_PER_HOST, config_key="hex8_2p", seed=i, moves=(20, 30))
        records, _ = gamedb.read_completed_games(db)
        with cluster.nodes[name].client() as cl:
            cl.publish_games("hex8_2p", records)
        ids += [r["game_id"] for r in records]
    takers = [n for n, h in rc.members().items() if h.role in ("training", "backup") and not h.excluded]

    def landed() -> bool:
        return all(_game_count(rc.hosts[n], cluster) >= len(ids) for n in takers)

    ok = bool(ids) and bool(takers)
    try:
        _wait(landed, deadline, f"{len(ids)} games on every training and backup host")
    except TimeoutError:
        ok = False
    where = {n: _game_count(rc.hosts[n], cluster) for n in rc.members()}
    why = {n: _why_games(rc.hosts[n]) for n in rc.members()}
    return {
        "published": len(ids),
        "producers": players,
        "takers": takers,
        "ok": ok and landed(),
        "games_per_host": where,
        "why": why,
    }


def _why_games(h: HostConfig) -> str:
    if h.excluded:
        return "excluded from sync"
    if h.role in ("training", "backup"):
        return f"{h.role} host: takes every game ({h.sources.get('role')})"
    return f"{h.role} host: takes no games ({h.sources.get('role')})"


def _game_count(h: HostConfig, cluster: LocalCluster) -> int:
    return gamedb.count_games(
        (Path(h.games_dir) if h.games_dir else cluster.nodes[h.name].data_dir / "games") / "hex8_2p.db"
    )


def _model(cluster: LocalCluster, rc: ClusterConfig, root: Path, deadline: float) -> dict[str, Any]:
    """A model promoted by broadcast from a training host; where the router placed it, why
    the others were left out, and who holds it."""
    trainers = [n for n, h in rc.members().items() if h.role == "training"] or sorted(rc.members())
    publisher = trainers[0]
    model = root / "canonical_hex8_2p.pth"
    model.write_bytes(os.urandom(MODEL_BYTES))
    with cluster.nodes[publisher].client() as cl:
        put = cl.put(model, "model", broadcast=True)

    def item() -> dict | None:
        ls = cluster.nodes[publisher].query("ls") or {}
        return next((i for i in ls.get("items", []) if i["name"] == model.name and i["digest"] == put["digest"]), None)

    def delivered() -> dict | None:
        it = item()
        return it if it and set(it["targets"]) <= set(it["holders"]) and len(it["targets"]) > 0 else None

    try:
        it = _wait(delivered, deadline, "the model on every host the router places it on")
        ok = True
    except TimeoutError:
        it, ok = item() or {}, False
    return {
        "publisher": publisher,
        "targets": it.get("targets", []),
        "holders": it.get("holders", []),
        "left_out": it.get("left_out", {}),
        "ok": ok,
    }


def _print(r: dict[str, Any], rc: ClusterConfig) -> None:
    if "error" in r:
        print(f"rehearsal FAILED: {r['error']}")
    if r.get("leader"):
        print(
            f"leader: {r['leader']} (a p2p_voters host: {'yes' if r['checks'].get('leader is a voter') else 'NO'}); "
            f"every member alive {r.get('all_alive_s')} s after start"
        )
    g = r.get("games")
    if g:
        print(f"\ngames: {g['published']} published on {', '.join(g['producers']) or 'no host'}")
        for name, n in sorted(g["games_per_host"].items()):
            print(f"  {name:24} {n:3} game(s)   {g['why'][name]}")
    m = r.get("model")
    if m:
        print(f"\nmodel (broadcast from {m['publisher']}): on {len(m['holders'])} host(s)")
        for name in sorted(rc.members()):
            where = "holds it" if name in m["holders"] else f"left out: {m['left_out'].get(name, 'pending')}"
            print(f"  {name:24} {where}")
    u = r.get("usage") or {}
    if u:
        print(
            f"\n{u['peers']} peers used {u['cpu_s_total']} CPU s in all (max {u['cpu_s_max']} s), "
            f"{u['rss_mib_mean']} MiB resident on average (max {u['rss_mib_max']} MiB)"
        )
    print()
    for check, ok in r["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    print("rehearsal OK" if r["ok"] else "rehearsal FAILED")
