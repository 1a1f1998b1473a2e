"""distributed_hosts.yaml: the reference example loads; broken files get precise errors."""

from pathlib import Path

import pytest
import yaml

from ringmesh.config import ConfigError, load_config, parse_config

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "distributed_hosts.yaml"


def test_reference_example_loads():
    c = load_config(FIXTURE, env={})
    assert c.gossip_interval == 30 and c.sync_interval == 60 and c.min_copies == 2
    assert c.max_disk_usage_percent == 70 and c.max_concurrent_syncs == 4
    h = c.hosts["nebius-h100-1"]
    assert (h.address, h.role, h.provider, h.voter, h.ephemeral) == ("203.0.113.7:8770", "training", "nebius", True, False)
    assert c.hosts["vast-3090-7"].ephemeral and not c.hosts["vast-3090-7"].voter
    assert c.hosts["mac-studio"].excluded and not c.hosts["mac-studio"].voter
    assert c.hosts["gh200-a"].voter
    assert "dev-laptop" not in c.members() and "nebius-h100-1" in c.members()


def test_environment_overrides_the_file():
    c = load_config(FIXTURE, env={"RINGRIFT_GOSSIP_INTERVAL": "5", "RINGRIFT_SYNC_MAX_CONCURRENT": "8",
                                  "RINGMESH_SYNC_MAX_CONCURRENT": "2", "RINGRIFT_SYNC_MAX_DISK_USAGE": "85.5"})
    assert c.gossip_interval == 5 and c.max_concurrent_syncs == 2 and c.max_disk_usage_percent == 85.5
    with pytest.raises(ConfigError, match="RINGRIFT_SYNC_INTERVAL: expected a number"):
        load_config(FIXTURE, env={"RINGRIFT_SYNC_INTERVAL": "soon"})


def _broken(edit):
    doc = yaml.safe_load(FIXTURE.read_text())
    edit(doc)
    return doc


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["hosts"]["gh200-a"].update(address="gh200-a"), r"hosts\.gh200-a\.address: expected host:port, got 'gh200-a'"),
    (lambda d: d["hosts"]["gh200-a"].update(address="1.2.3.4:99999"), r"hosts\.gh200-a\.address: expected host:port"),
    (lambda d: d["hosts"]["gh200-a"].update(role="trainer"), r"hosts\.gh200-a\.role: expected training \| selfplay"),
    (lambda d: d["hosts"]["gh200-a"].update(voter="yes"), r"hosts\.gh200-a\.voter: expected true or false"),
    (lambda d: d["sync_routing"].update(max_disk_usage_percent=170), r"sync_routing\.max_disk_usage_percent: expected a number in \[1, 100\]"),
    (lambda d: d["sync_routing"].update(gossip_interval_seconds="fast"), r"sync_routing\.gossip_interval_seconds: expected a number"),
    (lambda d: d["sync_routing"].update(min_copies=True), r"sync_routing\.min_copies: expected a number"),
    (lambda d: d["sync_routing"].update(exclude_from_sync="mac-studio"), r"sync_routing\.exclude_from_sync: expected a list of host names"),
    (lambda d: d.update(hosts=["a", "b"]), r"hosts: expected a mapping"),
    (lambda d: d["hosts"].update({"bad host!": {}}), r"hosts\.bad host!: expected a host name"),
])
def test_broken_configs_name_the_key(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_broken(edit), "distributed_hosts.yaml")


def test_unreadable_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("hosts: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"\(top level\): expected a mapping"):
        load_config(bad)
