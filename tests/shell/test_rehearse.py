"""`ringmesh rehearse`: a 42-host file in the real shape (made here, modelled on the operators'
fixtures), 8 of its members as real peers on loopback (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from ringmesh.config import parse_config
from ringmesh.ops.rehearse import choose


def real_shape(n_vast: int = 14) -> dict:
    """42 hosts as their file has them: no `address`, roles of theirs, statuses, NAT flags,
    p2p_voters, auto_sync overrides, storage paths, an external drive on the coordinator."""
    hosts: dict[str, dict] = {
        "mac-studio": {
            "ssh_host": "192.0.2.10",
            "role": "coordinator",
            "status": "ready",
            "p2p_enabled": True,
            "memory_gb": 96,
            "gpu": "M3",
            "storage_paths": {"games": "/Volumes/D/games", "models": "/Volumes/D/models"},
            "use_external_storage": True,
            "external_storage_path": "/Volumes/D",
        },
        "local-mac": {
            "ssh_host": "localhost",
            "role": "coordinator",
            "status": "ready",
            "p2p_enabled": True,
            "skip_sync_receive": True,
        },
        "aws-proxy": {"ssh_host": "192.0.2.11", "role": "proxy", "status": "proxy_only", "p2p_enabled": False},
        "nebius-backbone-1": {
            "ssh_host": "192.0.2.12",
            "tailscale_ip": "100.64.1.12",
            "role": "backbone",
            "status": "ready",
            "p2p_enabled": True,
        },
    }
    for i in range(1, 12):
        role = "gpu_selfplay" if i <= 2 else "gpu_training_primary"
        hosts[f"lambda-gh200-{i}"] = {
            "ssh_host": f"192.0.2.{20 + i}",
            "tailscale_ip": f"100.64.2.{i}",
            "role": role,
            "status": "ready",
            "p2p_enabled": True,
            "selfplay_enabled": True,
            "training_enabled": role != "gpu_selfplay",
            "nat_blocked": i <= 9,
            "gpu": "GH200",
            "cpus": 64,
        }
    for i in range(n_vast):
        hosts[f"vast-{29000000 + i}"] = {
            "ssh_host": "ssh.example.net",
            "ssh_port": 40000 + i,
            "tailscale_ip": f"100.64.3.{i}",
            "role": "nn_training_primary" if i == 0 else "gpu_selfplay",
            "status": "offline" if i % 5 == 4 else "ready",
            "p2p_enabled": i != 13,
            "is_ephemeral": True,
            "vast_instance_id": 29000000 + i,
        }
    for i in range(5):
        hosts[f"runpod-a100-{i}"] = {
            "ssh_host": f"192.0.2.{60 + i}",
            "tailscale_ip": f"100.64.4.{i}",
            "role": "gpu_selfplay",
            "status": "ready",
            "p2p_enabled": True,
            "p2p_public_port": 41000 + i,
        }
    for i in range(1, 4):
        hosts[f"nebius-h100-{i}"] = {
            "ssh_host": f"192.0.2.{70 + i}",
            "tailscale_ip": f"100.64.5.{i}",
            "role": "gpu_training_primary",
            "status": "retired" if i == 2 else "ready",
            "p2p_enabled": i != 2,
        }
    for i in range(1, 4):
        hosts[f"hetzner-cpu{i}"] = {
            "ssh_host": f"192.0.2.{80 + i}",
            "tailscale_ip": f"100.64.6.{i}",
            "role": "cpu_selfplay",
            "status": "ready",
            "p2p_enabled": True,
        }
    hosts["vultr-a100-20gb"] = {
        "ssh_host": "192.0.2.90",
        "role": "gpu_selfplay",
        "status": "ready",
        "p2p_enabled": True,
    }
    return {
        "disk_management": {"rotating_pool": {"enabled": True}},
        "sync_routing": {
            "max_disk_usage_percent": 70,
            "target_disk_usage_percent": 60,
            "replication_target": 2,
            "excluded_hosts": ["hetzner-cpu1"],
            "priority_hosts": ["lambda-gh200-3", "mac-studio"],
            "allowed_external_storage": [
                {
                    "host": "mac-studio",
                    "path": "/Volumes/D",
                    "receive_games": True,
                    "receive_models": True,
                    "subdirs": {"games": "g", "models": "m"},
                }
            ],
        },
        "auto_sync": {
            "enabled": True,
            "interval_seconds": 60,
            "gossip_interval_seconds": 15,
            "max_concurrent_syncs": 12,
            "bandwidth_limit_mbps": 100,
            "host_bandwidth_overrides": {"vast-*": 50, "hetzner-*": 30},
        },
        "elo_sync": {"coordinator": "mac-studio"},
        "p2p_voters": [
            "local-mac",
            "mac-studio",
            "nebius-backbone-1",
            "nebius-h100-3",
            "hetzner-cpu2",
            "hetzner-cpu3",
            "vultr-a100-20gb",
        ],
        "protocols": {"swim": {"enabled": True}},
        "hosts": hosts,
    }


def test_the_real_shape_has_every_role_and_choose_keeps_them():
    doc = real_shape()
    c = parse_config(doc, "f.yaml")
    assert len(c.hosts) >= 40
    picked = choose(c, 8)
    roles = {c.hosts[n].role for n in picked}
    assert len(picked) == 8 and roles >= {"training", "selfplay", "backup"}
    assert sum(c.hosts[n].voter for n in picked) >= 3 and any(c.hosts[n].ephemeral for n in picked)


def test_rehearse_eight_hosts_of_a_real_shaped_file(tmp_path):
    path = tmp_path / "distributed_hosts.yaml"
    path.write_text(yaml.safe_dump(real_shape(), sort_keys=False))
    r = subprocess.run(
        [sys.executable, "-m", "ringmesh", "rehearse", str(path), "--hosts", "8", "--minutes", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=330,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(r.stdout)
    c = parse_config(real_shape(), "f.yaml")
    assert rep["ok"] and len(rep["hosts"]) == 8 and all(rep["checks"].values()), rep["checks"]
    assert rep["leader"] in real_shape()["p2p_voters"] and rep["leader"] in rep["hosts"]
    assert set(rep["status_of_leader"]["members"]) == set(rep["hosts"])
    assert set(rep["status_of_leader"]["members"].values()) == {"alive"}
    games = rep["games"]
    for name, n in games["games_per_host"].items():
        h = c.hosts[name]
        takes = h.role in ("training", "backup") and not h.excluded
        assert n == (games["published"] if takes else 0), (name, h.role, n)
    model = rep["model"]
    for name in rep["hosts"]:
        h = c.hosts[name]
        eligible = (h.role in ("training", "selfplay") or name == "mac-studio") and not h.excluded
        assert (name in model["holders"]) == eligible or name == model["publisher"], (name, model)
    assert set(rep["exit_codes"].values()) == {0}
