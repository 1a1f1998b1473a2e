"""NetCluster's config for NAT'd hosts (HostSpec.nat_blocked): the file says `nat_blocked: true`
and `force_relay_mode: true` for them and nothing for the others, and ringmesh reads it so. No
namespaces: the constructor only writes the file (the lab starts with `start`)."""

from __future__ import annotations

import yaml

from ringmesh.config import load_config

from .cluster import NetCluster
from .scenarios import nat_hosts


def test_nat_blocked_hosts_are_configured_so(tmp_path):
    c = NetCluster(tmp_path, nat_hosts(), seed=1, prefix="rmnc")
    doc = yaml.safe_load(c.config_path.read_text())["hosts"]
    nats = c.names(nat=True)
    assert nats == ["nat1", "nat2", "nat3"] and len(c.hosts) == 8
    for n, h in doc.items():
        assert h.get("nat_blocked", False) is (n in nats) and h.get("force_relay_mode", False) is (n in nats)
    cfg = load_config(c.config_path)
    assert {n for n, h in cfg.hosts.items() if h.nat_blocked} == set(nats)
    assert cfg.hosts["nat1"].voter and not cfg.hosts["nat2"].voter and not cfg.hosts["nat3"].voter
    assert c.block_nat and c.lab.inbound_blocked() == set()  # nothing is blocked before the daemons start
