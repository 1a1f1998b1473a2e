"""The operators' own distributed_hosts.yaml, as it is (issue 14): the fixtures of their real
file, template and example load; the role table, the address rule, inactive hosts, voters,
bandwidth override globs, storage paths and external storage mean what their code means."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ringmesh.config import ConfigError, parse_config
from ringmesh.config.hostsfile import ROLE_TABLE

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "ringrift"
REAL = FIXTURES / "distributed_hosts.2025-12-31.yaml"
FILES = [REAL, FIXTURES / "distributed_hosts.template.yaml", FIXTURES / "distributed_hosts.yaml.example"]

# REFERENCE.md's small example, as printed there
REFERENCE_EXAMPLE = """
sync_routing:
  auto_sync_interval_seconds: 60
  gossip_interval_seconds: 30
  max_concurrent_syncs: 4
  bandwidth_limit_mbps: 50
  max_disk_usage_percent: 70
  min_copies: 2
  exclude_from_sync: [mac-studio, dev-laptop]
  nfs_sharing_groups:
    - [gh200-a, gh200-b, gh200-c]
  ephemeral_hosts: ["vast-*", "runpod-spot-*"]
  allowed_external_storage:
    - host: backup.example.com
      path: /backups/ringrift
      schedule: "0 */6 * * *"
hosts:
  nebius-h100-1:
    address: 203.0.113.7:8770
    provider: nebius
    role: training
    sync_priority: high
    bandwidth_limit_mbps: 100
    voter: true
"""

needs_fixtures = pytest.mark.skipif(not REAL.exists(), reason=f"the operators' fixtures are not at {FIXTURES}")


def _real() -> dict:
    return yaml.safe_load(REAL.read_text())


def _check(path: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ringmesh", "config", "check", path, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


@needs_fixtures
@pytest.mark.parametrize("path", FILES + ["reference"], ids=lambda p: getattr(p, "name", p))
def test_their_files_pass_config_check_with_no_flood_of_warnings(path, tmp_path):
    if path == "reference":
        path = tmp_path / "reference.yaml"
        path.write_text(REFERENCE_EXAMPLE)
    r = _check(str(path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["valid"] and doc["hosts"]
    assert sum("does not read" in w for w in doc["warnings"]) <= 1
    assert not any("unknown key" in w for w in doc["warnings"]), doc["warnings"]
    assert len(doc["warnings"]) < 15, doc["warnings"]  # a handful of real findings, never one per key per host
    for name, h in doc["hosts"].items():
        assert h["member"] == (h["why_not"] is None), name
        if h["member"]:
            assert h["address"] and h["role"] in ("training", "selfplay", "coordinator", "backup", "none"), name


@needs_fixtures
def test_the_real_file_members_roles_voters_and_addresses():
    c = parse_config(_real(), "real.yaml")
    members = c.members()
    assert len(c.hosts) == 42 and len(members) == 34
    # inactive: offline, retired, proxy_only, p2p_enabled: false
    for name, why in (
        ("vast-29128352", "status offline"),
        ("nebius-h100-2", "status retired"),
        ("aws-proxy", "status proxy_only"),
        ("vast-29129529", "p2p_enabled: false"),
    ):
        assert name not in members and c.hosts[name].inactive == why
    # p2p_voters is the voter list (and only active hosts vote)
    assert sorted(n for n, h in members.items() if h.voter) == sorted(_real()["p2p_voters"])
    assert c.hosts["mac-studio"].sources["voter"] == "p2p_voters"
    # address: tailscale_ip over ssh_host, port 8770
    assert members["lambda-gh200-1"].address == "198.19.0.13:8770"
    assert members["mac-studio"].address == "198.19.0.11:8770" and members["local-mac"].address == "localhost:8770"
    # roles
    assert members["lambda-gh200-1"].role == "selfplay" and members["lambda-gh200-3"].role == "training"
    assert members["runpod-a100-2"].role == "training"  # gpu_selfplay with training_enabled
    assert members["nebius-backbone-1"].role == "backup"
    assert members["local-mac"].role == "none"  # skip_sync_receive
    assert members["mac-studio"].role == "backup"  # the external storage's host
    assert members["vast-28918742"].ephemeral and members["vast-28918742"].sources["ephemeral"].endswith("is_ephemeral")
    # exclusions, replication, rates with their source
    assert c.exclude_from_sync == ("hetzner-cpu1", "hetzner-cpu2") and c.min_copies == 3
    assert c.sources["min_copies"] == "sync_routing.replication_target"
    assert members["vast-28918742"].egress_bytes_per_s == 50_000_000
    assert members["vast-28918742"].sources["egress_bytes_per_s"] == "auto_sync.host_bandwidth_overrides ('vast-*')"
    assert members["hetzner-cpu3"].ingress_bytes_per_s == 30_000_000
    assert members["local-mac"].egress_bytes_per_s == 100_000_000  # auto_sync.bandwidth_limit_mbps
    assert members["lambda-gh200-1"].sync_priority == "high" and members["vast-28918742"].sync_priority == "normal"
    assert members["lambda-gh200-1"].nat_blocked and not members["nebius-h100-1"].nat_blocked
    # storage: mac-studio's storage_paths, then the external storage's subdirs over them
    ms = members["mac-studio"]
    assert ms.paths["checkpoint"] == "/Volumes/RingRift-Data/model_checkpoints"
    assert ms.paths["model"] == "/Volumes/RingRift-Data/canonical_models"
    assert ms.paths["npz"] == "/Volumes/RingRift-Data/canonical_data"
    assert ms.games_dir == "/Volumes/RingRift-Data/selfplay_repository"
    assert dict(c.external_storage[0].dirs) == {
        "gamedb": "/Volumes/RingRift-Data/selfplay_repository",
        "npz": "/Volumes/RingRift-Data/canonical_data",
        "model": "/Volumes/RingRift-Data/canonical_models",
    }
    # what ringmesh does not act on is said once
    keys = dict(c.not_used)
    assert "auto_sync.interval_seconds" in keys and "hosts.*.force_relay_mode" in keys
    assert "hosts.*.nat_blocked" not in keys, "acted on: relayed (node/wire/relay.py)"
    assert "hosts.*.gpu" in c.unread and "protocols" not in c.unread


def test_the_role_table_overrides_and_unknown_roles():
    doc = {
        "ringmesh": {"roles": {"gpu_render": "selfplay", "cpu_selfplay": "backup"}},
        "hosts": {
            "a": {"address": "h:1", "role": "gpu_render"},
            "b": {"address": "h:2", "role": "cpu_selfplay"},
            "c": {"address": "h:3", "role": "quantum_trainer"},
            "d": {"address": "h:4", "role": "gpu_selfplay"},
            "e": {"address": "h:5", "role": "gpu_selfplay", "skip_sync_receive": True},
        },
    }
    c = parse_config(doc, "f.yaml")
    assert [c.hosts[n].role for n in "abcde"] == ["selfplay", "backup", "none", "selfplay", "none"]
    assert c.hosts["a"].sources["role"] == "hosts.a.role ('gpu_render' -> selfplay)"
    assert any("hosts.c.role: role 'quantum_trainer' is not in ringmesh's role table" in w for w in c.warnings)
    assert ROLE_TABLE["gpu_training_primary"][0] == "training" and ROLE_TABLE["proxy"][0] == "none"
    with pytest.raises(
        ConfigError, match=r"ringmesh\.roles\.x: expected training \| selfplay \| coordinator \| backup \| none"
    ):
        parse_config({"ringmesh": {"roles": {"x": "gpu"}}, "hosts": {}}, "f.yaml")


def test_the_address_rule():
    hosts = {
        "ts": {"tailscale_ip": "100.64.0.1", "ssh_host": "ubuntu@203.0.113.5"},
        "ssh": {"ssh_host": "ubuntu@203.0.113.5"},
        "mapped": {"ssh_host": "ssh.example.net", "p2p_public_port": 41234},
        "own": {"address": "127.0.0.1:9000", "tailscale_ip": "100.64.0.2"},
        "none": {"role": "gpu_selfplay"},
        "placeholder": {"tailscale_ip": "<tailscale-ip>"},
    }
    c = parse_config({"hosts": copy.deepcopy(hosts)}, "f.yaml")
    got = {n: h.address for n, h in c.hosts.items()}
    assert got == {
        "ts": "100.64.0.1:8770",
        "ssh": "203.0.113.5:8770",
        "mapped": "ssh.example.net:41234",
        "own": "127.0.0.1:9000",
        "none": None,
        "placeholder": None,
    }
    assert set(c.members()) == {"ts", "ssh", "mapped", "own"}
    assert any("hosts.placeholder.tailscale_ip: '<tailscale-ip>' is not a host name" in w for w in c.warnings)
    c = parse_config({"ringmesh": {"port": 7000}, "hosts": copy.deepcopy(hosts)}, "f.yaml")
    assert c.hosts["ts"].address == "100.64.0.1:7000" and c.hosts["mapped"].address == "ssh.example.net:7000"
    assert c.hosts["ts"].sources["address"] == "hosts.ts.tailscale_ip, port from ringmesh.port"


def test_names_that_are_not_hosts_warn_and_bad_values_name_their_key():
    doc = {
        "p2p_voters": ["a", "ghost"],
        "sync_routing": {
            "nfs_sharing_groups": [["a", "phantom"]],
            "priority_hosts": ["nobody"],
            "excluded_hosts": ["gone"],
        },
        "hosts": {"a": {"address": "h:1"}},
    }
    c = parse_config(doc, "f.yaml")
    for where in (
        "p2p_voters[1]: 'ghost'",
        "nfs_sharing_groups[0][1]: 'phantom'",
        "priority_hosts[0]: 'nobody'",
        "excluded_hosts[0]: 'gone'",
    ):
        assert any(where in w for w in c.warnings), where
    for bad, key in (
        (
            {"auto_sync": {"host_bandwidth_overrides": {"vast-*": "fast"}}},
            r"auto_sync\.host_bandwidth_overrides\.vast-\*",
        ),
        ({"auto_sync": {"max_concurrent_syncs": 0}}, r"auto_sync\.max_concurrent_syncs"),
        ({"hosts": {"a": {"ssh_host": "x", "nat_blocked": "yes"}}}, r"hosts\.a\.nat_blocked: expected true or false"),
        ({"hosts": {"a": {"ssh_host": "x", "storage_paths": {"models": ""}}}}, r"hosts\.a\.storage_paths\.models"),
        (
            {"sync_routing": {"allowed_external_storage": [{"host": "a", "path": "/x", "receive_models": 1}]}},
            r"allowed_external_storage\[0\]\.receive_models",
        ),
        ({"ringmesh": {"port": 70000}}, r"ringmesh\.port"),
    ):
        with pytest.raises(ConfigError, match=key):
            parse_config({"hosts": {"a": {"address": "h:1"}}, **bad}, "f.yaml")
