"""distributed_hosts.yaml: the reference example loads; broken files get precise errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ringmesh.config import ConfigError, format_rate, load_config, parse_config, parse_rate
from ringmesh.config.hostsfile import NOT_USED

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIXTURE = FIXTURES / "distributed_hosts.yaml"
FULL = FIXTURES / "distributed_hosts_full.yaml"
ROOT = Path(__file__).resolve().parents[2]


def test_reference_example_loads():
    c = load_config(FIXTURE, env={})
    assert c.gossip_interval == 30 and c.sync_interval == 60 and c.min_copies == 2
    assert c.max_disk_usage_percent == 70 and c.max_concurrent_syncs == 4
    h = c.hosts["nebius-h100-1"]
    assert (h.address, h.role, h.provider, h.voter, h.ephemeral) == (
        "203.0.113.7:8770",
        "training",
        "nebius",
        True,
        False,
    )
    assert c.hosts["vast-3090-7"].ephemeral and not c.hosts["vast-3090-7"].voter
    assert c.hosts["mac-studio"].excluded and not c.hosts["mac-studio"].voter
    assert c.hosts["gh200-a"].voter
    assert (
        c.members()["dev-laptop"].address == "laptop.local:8770" and "nebius-h100-1" in c.members()
    )  # ssh_host, port 8770


def test_environment_overrides_the_file():
    c = load_config(
        FIXTURE,
        env={
            "RINGRIFT_GOSSIP_INTERVAL": "5",
            "RINGRIFT_SYNC_MAX_CONCURRENT": "8",
            "RINGMESH_SYNC_MAX_CONCURRENT": "2",
            "RINGRIFT_SYNC_MAX_DISK_USAGE": "85.5",
        },
    )
    assert c.gossip_interval == 5 and c.max_concurrent_syncs == 2 and c.max_disk_usage_percent == 85.5
    with pytest.raises(ConfigError, match="RINGRIFT_SYNC_INTERVAL: expected a number"):
        load_config(FIXTURE, env={"RINGRIFT_SYNC_INTERVAL": "soon"})


def _broken(edit):
    doc = yaml.safe_load(FIXTURE.read_text())
    edit(doc)
    return doc


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["hosts"]["gh200-a"].update(address="gh200-a"),
            r"hosts\.gh200-a\.address: expected host:port, got 'gh200-a'",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(address="1.2.3.4:99999"),
            r"hosts\.gh200-a\.address: expected host:port",
        ),
        (
            lambda d: d.setdefault("ringmesh", {}).update(roles={"gpu_x": "trainer"}),
            r"ringmesh\.roles\.gpu_x: expected training \| selfplay",
        ),
        (lambda d: d["hosts"]["gh200-a"].update(voter="yes"), r"hosts\.gh200-a\.voter: expected true or false"),
        (
            lambda d: d["sync_routing"].update(max_disk_usage_percent=170),
            r"sync_routing\.max_disk_usage_percent: expected a number in \[1, 100\]",
        ),
        (
            lambda d: d["sync_routing"].update(gossip_interval_seconds="fast"),
            r"sync_routing\.gossip_interval_seconds: expected a number",
        ),
        (lambda d: d["sync_routing"].update(min_copies=True), r"sync_routing\.min_copies: expected a number"),
        (
            lambda d: d["sync_routing"].update(exclude_from_sync="mac-studio"),
            r"sync_routing\.exclude_from_sync: expected a list of host names",
        ),
        (lambda d: d.update(hosts=["a", "b"]), r"hosts: expected a mapping"),
        (lambda d: d["hosts"].update({"bad host!": {}}), r"hosts\.bad host!: expected a host name"),
    ],
)
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


def _limits(h):
    return (
        h.egress_bytes_per_s,
        h.ingress_bytes_per_s,
        h.sources["egress_bytes_per_s"],
        h.sources["ingress_bytes_per_s"],
    )


def test_reference_example_effective_limits_and_provenance():
    c = load_config(FIXTURE, env={})
    assert c.warnings == ()
    assert (
        c.bandwidth_bytes_per_s == 50_000_000
        and c.sources["bandwidth_bytes_per_s"] == "sync_routing.bandwidth_limit_mbps"
    )
    src = "hosts.nebius-h100-1.bandwidth_limit_mbps"
    assert _limits(c.hosts["nebius-h100-1"]) == (100_000_000, 100_000_000, src, src)  # host beats provider (nebius 50)
    assert _limits(c.hosts["gh200-a"]) == (
        100_000_000,
        100_000_000,
        "provider default (lambda)",
        "provider default (lambda)",
    )
    assert _limits(c.hosts["vast-3090-7"])[:3] == (50_000_000, 50_000_000, "provider default (vast)")
    # mac-studio names no provider: the global default of the file applies
    assert _limits(c.hosts["mac-studio"])[:3] == (50_000_000, 50_000_000, "sync_routing.bandwidth_limit_mbps")
    h = c.hosts["nebius-h100-1"]
    assert h.sync_priority == "high" and h.sources["sync_priority"] == "hosts.nebius-h100-1.sync_priority"
    assert (
        c.hosts["gh200-a"].sync_priority == "normal"
        and c.hosts["gh200-a"].sources["sync_priority"] == "built-in default"
    )
    assert c.nfs_sharing_groups == (("gh200-a", "gh200-b", "gh200-c"),)
    assert c.hosts["gh200-b"].nfs_group == ("gh200-a", "gh200-b", "gh200-c") and h.nfs_group == ()
    assert c.exclude_from_sync == ("dev-laptop", "mac-studio") and c.ephemeral_hosts == ("vast-*", "runpod-spot-*")
    assert c.hosts["vast-3090-7"].sources["ephemeral"] == "sync_routing.ephemeral_hosts ('vast-*')"
    (st,) = c.external_storage
    assert (st.host, st.path, st.schedule) == ("backup.example.com", "/backups/ringrift", "0 */6 * * *")
    assert h.disk_cap_percent == 70 and h.sources["disk_cap_percent"] == "sync_routing.max_disk_usage_percent"
    assert {n: h.voter for n, h in c.hosts.items()} == {
        "nebius-h100-1": True,
        "vast-3090-7": False,
        "gh200-a": True,
        "mac-studio": False,
        "dev-laptop": False,
        "gh200-b": True,
        "gh200-c": True,
    }
    assert hash(h)  # still usable in sets, as before


def test_global_bandwidth_from_environment_and_builtin():
    c = load_config(FIXTURE, env={"RINGRIFT_SYNC_BANDWIDTH_MBPS": "30"})
    assert (
        c.bandwidth_bytes_per_s == 30_000_000
        and c.sources["bandwidth_bytes_per_s"] == "environment RINGRIFT_SYNC_BANDWIDTH_MBPS"
    )
    assert _limits(c.hosts["mac-studio"]) == (
        30_000_000,
        30_000_000,
        "environment RINGRIFT_SYNC_BANDWIDTH_MBPS",
        "environment RINGRIFT_SYNC_BANDWIDTH_MBPS",
    )
    assert c.hosts["gh200-a"].egress_bytes_per_s == 100_000_000  # the provider default still wins
    assert c.hosts["nebius-h100-1"].egress_bytes_per_s == 100_000_000  # and the host's own setting
    c = load_config(FIXTURE, env={"RINGRIFT_SYNC_BANDWIDTH_MBPS": "30", "RINGMESH_SYNC_BANDWIDTH_MBPS": "400Mbit/s"})
    assert (
        c.bandwidth_bytes_per_s == 50_000_000
        and c.sources["bandwidth_bytes_per_s"] == "environment RINGMESH_SYNC_BANDWIDTH_MBPS"
    )
    with pytest.raises(ConfigError, match=r"environment: RINGRIFT_SYNC_BANDWIDTH_MBPS: expected .*unknown unit 'fast'"):
        load_config(FIXTURE, env={"RINGRIFT_SYNC_BANDWIDTH_MBPS": "10 fast"})
    c = parse_config({"hosts": {"a": {"address": "h:1"}}}, "x.yaml")
    assert c.bandwidth_bytes_per_s == 20_000_000 and c.hosts["a"].sources["egress_bytes_per_s"] == "built-in default"
    assert (
        c.sources["gossip_interval"] == "built-in default"
        and c.sources["timings.probe_interval_seconds"] == "built-in default"
    )


def test_global_sources_name_file_environment_or_default():
    c = load_config(FIXTURE, env={"RINGRIFT_GOSSIP_INTERVAL": "5"})
    assert c.sources["gossip_interval"] == "environment RINGRIFT_GOSSIP_INTERVAL"
    assert c.sources["sync_interval"] == "sync_routing.auto_sync_interval_seconds"
    assert c.sources["timings.leader_lease_seconds"] == "built-in default"


@pytest.mark.parametrize(
    "text, bytes_per_s",
    [
        (50, 50_000_000),
        (1.5, 1_500_000),
        ("50", 50_000_000),
        ("0.25", 250_000),
        ("50MB/s", 50_000_000),
        ("50 MB/s", 50_000_000),
        ("1.5GB/s", 1_500_000_000),
        ("1TB/s", 10**12),
        ("400Mbit/s", 50_000_000),
        ("800 Kbit/s", 100_000),
        ("800 kbit/s", 100_000),
        ("1Gbit/s", 125_000_000),
        ("100MiB/s", 104_857_600),
        ("1GiB/s", 1_073_741_824),
        ("8 Kibit/s", 1024),
        ("512KiB/s", 524_288),
        ("1000 B/s", 1000),
        ("64 bytes/s", 64),
        ("1 byte/s", 1),
        ("10 Mbits/s", 1_250_000),
        ("1e3 MB/s", 10**9),
        ("12 bit/s", 2),
        ("0.9MB/s", 900_000),
    ],
)
def test_rate_units_parse_exactly(text, bytes_per_s):
    assert parse_rate("f.yaml", "k", text) == bytes_per_s


@pytest.mark.parametrize(
    "value, message",
    [
        ("fast", r"f\.yaml: hosts\.a\.egress_limit: expected a number of MB/s .* got 'fast'"),
        ("-5MB/s", r"hosts\.a\.egress_limit: expected a rate > 0, got '-5MB/s'"),
        (0, r"expected a rate > 0, got 0"),
        ("10 parsecs", r"\(unknown unit 'parsecs'\), got '10 parsecs'"),
        ("400Mb/s", r"expected an unambiguous unit: 'Mbit/s' \(bits\) or 'MB/s' \(bytes\), not 'Mb/s'"),
        ("400Mbps", r"unambiguous unit: 'Mbit/s' \(bits\) or 'MB/s' \(bytes\), not 'Mbps'"),
        ("50MB", r"expected a rate, not a size: write 'MB/s'"),
        ("50 mB/s", r"unknown unit 'mB/s'"),
        ("1 bit/s", r"a rate from 1 B/s to 1 TB/s"),
        ("2TB/s", r"a rate from 1 B/s to 1 TB/s"),
        (True, r"expected a number of MB/s"),
        ([50], r"expected a number of MB/s"),
    ],
)
def test_bad_rates_get_precise_errors(value, message):
    doc = {"hosts": {"a": {"address": "h:1", "egress_limit": value}}}
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, "f.yaml")


def test_format_rate_states_the_unit_exactly():
    assert [format_rate(n) for n in (50_000_000, 104_857_600, 100_000, 1)] == [
        "50 MB/s",
        "104.8576 MB/s",
        "0.1 MB/s",
        "0.000001 MB/s",
    ]


def test_full_example_every_setting():
    c = load_config(FULL, env={})
    h = c.hosts
    assert c.bandwidth_bytes_per_s == 50_000_000  # "400Mbit/s"
    assert _limits(h["gh200-a"]) == (
        1_500_000_000,
        100_000_000,
        "hosts.gh200-a.egress_limit",
        "provider default (lambda)",
    )
    assert _limits(h["gh200-b"]) == (
        100_000_000,
        25_000_000,
        "provider default (lambda)",
        "hosts.gh200-b.ingress_limit",
    )
    assert _limits(h["nebius-h100-1"]) == (
        100_000,
        104_857_600,
        "hosts.nebius-h100-1.egress_limit",
        "hosts.nebius-h100-1.bandwidth_limit_mbps",
    )
    assert _limits(h["hetzner-cpu1"])[:2] == (80_000_000, 80_000_000)
    assert _limits(h["ovh-1"])[:3] == (50_000_000, 50_000_000, "sync_routing.bandwidth_limit_mbps")
    assert h["gh200-a"].sync_priority == "critical" and h["nebius-h100-3"].sync_priority == "background"
    assert (
        h["mac-studio"].disk_cap_percent == 90
        and h["mac-studio"].sources["disk_cap_percent"] == "hosts.mac-studio.disk_cap_percent"
    )
    assert c.paths == {"model": "/data/models", "npz": "/data/npz"}
    assert h["mac-studio"].paths == {
        "model": "/Volumes/RingRift-Data/canonical_models",
        "npz": "/data/npz",
        "checkpoint": "/Volumes/RingRift-Data/ckpt",
    }
    assert h["mac-studio"].sources["paths.npz"] == "ringmesh.paths.npz"
    assert h["mac-studio"].sources["paths.model"] == "hosts.mac-studio.paths.model"
    assert h["local-mac"].excluded and not h["local-mac"].voter and h["vast-29129529"].ephemeral
    assert (
        c.timings["probe_interval_seconds"] == 0.5
        and c.sources["timings.probe_interval_seconds"] == "ringmesh.probe_interval_seconds"
    )
    assert [(e.host, e.schedule) for e in c.external_storage] == [
        ("mac-studio", "30 2 * * 1-5"),
        ("backup.example.com", None),
    ]
    from ringmesh.config import peer_config

    p = peer_config(c)  # the core keeps the schedule and the retention
    assert p.backup_schedules == ("30 2 * * 1-5", None) and p.retention_seconds == c.timings["retention_seconds"]
    f = str(FULL)
    assert c.warnings == (
        f"{f}: hosts.ovh-1.provider: 'ovh' has no bandwidth default "
        "(known: hetzner, lambda, nebius, runpod, tailscale, vast, vultr); the global default applies",
        f"{f}: 6 key(s) ringmesh does not read (other tools' settings, descriptive host keys), "
        "accepted: hosts.*.colour, hosts.*.gpu, hosts.*.memory_gb, hosts.*.ssh_user, hosts.*.vast_instance_id, "
        "sync_routing.frobnicate",
    )


def test_unknown_keys_warn_and_do_not_fail():
    doc = {
        "mystery": 1,
        "sync_routing": {"excluded_hosts": [], "nfs_sharing_groups": []},
        "ringmesh": {"probe_intervall_seconds": 2, "paths": {"models": "/m"}},
        "hosts": {"a": {"address": "h:1", "ssh_host": "x", "gpu": "H100", "bandwith_limit_mbps": 5}},
    }
    doc["hosts"]["b"] = {"address": "h:2", "gpu": "A100", "bandwith_limit_mbps": 5}
    c = parse_config(doc, "f.yaml")
    assert c.warnings == (  # one line per likely typo, one summary for the rest: no warning per key per host
        "f.yaml: ringmesh.probe_intervall_seconds: unknown key, ignored",
        "f.yaml: ringmesh.paths.models: unknown file type, ignored (known: model, npz, checkpoint, gamedb)",
        "f.yaml: hosts.a.bandwith_limit_mbps: unknown key, ignored (did you mean bandwidth_limit_mbps?)",
        "f.yaml: 3 key(s) ringmesh does not read (other tools' settings, descriptive host keys), accepted: "
        "hosts.*.bandwith_limit_mbps, hosts.*.gpu, mystery",
    )
    assert c.hosts["a"].egress_bytes_per_s == 20_000_000


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["sync_routing"]["nfs_sharing_groups"].append([7]),
            r"sync_routing\.nfs_sharing_groups\[1\]\[0\]: expected the name of a host, got 7",
        ),
        (
            lambda d: d["sync_routing"]["nfs_sharing_groups"].append(["vast-3090-7", "gh200-b"]),
            r"sync_routing\.nfs_sharing_groups\[1\]\[1\]: host 'gh200-b' is already in group "
            r"sync_routing\.nfs_sharing_groups\[0\]; "
            r"a host may be in at most one NFS sharing group",
        ),
        (
            lambda d: d["sync_routing"].update(nfs_sharing_groups=["gh200-a"]),
            r"nfs_sharing_groups\[0\]: expected a non-empty list of host names",
        ),
        (
            lambda d: d["sync_routing"].update(nfs_sharing_groups="gh200-a"),
            r"nfs_sharing_groups: expected a list of lists of host names",
        ),
        (
            lambda d: d["sync_routing"]["allowed_external_storage"][0].update(schedule="0 */6 * *"),
            r"allowed_external_storage\[0\]\.schedule: expected a 5-field cron expression "
            r".*got 4\), got '0 \*/6 \* \*'",
        ),
        (
            lambda d: d["sync_routing"]["allowed_external_storage"][0].update(schedule="0 25 * * *"),
            r"allowed_external_storage\[0\]\.schedule: .*hour: 25 is out of range 0-23",
        ),
        (
            lambda d: d["sync_routing"]["allowed_external_storage"][0].pop("path"),
            r"allowed_external_storage\[0\]\.path: expected a non-empty path, got None",
        ),
        (
            lambda d: d["sync_routing"].update(allowed_external_storage={"host": "x"}),
            r"allowed_external_storage: expected a list",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(sync_priority="urgent"),
            r"hosts\.gh200-a\.sync_priority: expected critical \| high \| normal \| low \| background, got 'urgent'",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(disk_cap_percent=120),
            r"hosts\.gh200-a\.disk_cap_percent: expected a number in \[1, 100\]",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(paths={"model": 5}),
            r"hosts\.gh200-a\.paths\.model: expected a directory path",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(paths=["/m"]),
            r"hosts\.gh200-a\.paths: expected a mapping of file type",
        ),
        (
            lambda d: d["hosts"]["gh200-a"].update(bandwidth_limit_mbps="fast"),
            r"hosts\.gh200-a\.bandwidth_limit_mbps: expected a number of MB/s",
        ),
        (
            lambda d: d["sync_routing"].update(bandwidth_limit_mbps="-5MB/s"),
            r"sync_routing\.bandwidth_limit_mbps: expected a rate > 0",
        ),
        (lambda d: d.update(ringmesh=[1]), r"ringmesh: expected a mapping"),
    ],
)
def test_new_fields_are_validated(edit, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_broken(edit), "distributed_hosts.yaml")


def _check(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "ringmesh", "config", "check", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
    )


def test_config_check_json_and_text():
    r = _check(str(FIXTURE), "--json", env={"RINGRIFT_GOSSIP_INTERVAL": "5"})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # the fixture has no ringmesh.tls: its one warning is that peers would talk plaintext
    assert doc["valid"] and [w.split(": ")[1] for w in doc["warnings"]] == ["ringmesh.tls"]
    assert doc["environment_overrides"] == ["RINGRIFT_GOSSIP_INTERVAL"]
    g = doc["global"]
    assert g["gossip_interval"] == {
        "label": "gossip interval",
        "value": 5.0,
        "unit": "s",
        "source": "environment RINGRIFT_GOSSIP_INTERVAL",
        "source_kind": "environment",
    }
    assert (
        "sync_interval" not in g
        and {
            "key": "sync_routing.auto_sync_interval_seconds",
            "why": NOT_USED["sync_routing.auto_sync_interval_seconds"],
        }
        in doc["not_used"]
    )
    assert (
        g["max_concurrent_syncs"]["source_kind"] == "file"
        and g["timings.leader_lease_seconds"]["source_kind"] == "default"
    )
    assert (
        g["bandwidth_bytes_per_s"]["bytes_per_s"] == 50_000_000
        and g["bandwidth_bytes_per_s"]["unit"] == "MB/s (10^6 bytes/s)"
    )
    h = doc["hosts"]["nebius-h100-1"]
    assert h["egress"] == {
        "bytes_per_s": 100_000_000,
        "mb_per_s": 100.0,
        "unit": "MB/s (10^6 bytes/s)",
        "display": "100 MB/s",
        "source": "hosts.nebius-h100-1.bandwidth_limit_mbps",
        "source_kind": "file",
    }
    assert (h["sync_priority"], h["voter"], h["ephemeral"], h["excluded"], h["role"]) == (
        "high",
        True,
        False,
        False,
        "training",
    )
    assert doc["hosts"]["gh200-a"]["ingress"]["source"] == "provider default (lambda)"
    assert doc["hosts"]["gh200-c"]["nfs_group"] == ["gh200-a", "gh200-b", "gh200-c"]
    assert doc["external_storage"][0]["next_run_utc"].endswith(
        ("00:00:00+00:00", "06:00:00+00:00", "12:00:00+00:00", "18:00:00+00:00")
    )

    r = _check(str(FULL), "--node", "gh200-a")
    assert r.returncode == 0, r.stderr
    assert "host gh200-a" in r.stdout and "host gh200-b" not in r.stdout
    assert "1500 MB/s (1500000000 B/s)  [file: hosts.gh200-a.egress_limit]" in r.stdout
    assert "100 MB/s (100000000 B/s)  [provider default (lambda)]" in r.stdout
    assert (
        "warnings (3)" in r.stdout and "PLAINTEXT: peers talk without TLS" in r.stdout and "hosts.*.colour" in r.stdout
    )


def test_config_check_fails_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sync_routing:\n  nfs_sharing_groups: [[3]]\nhosts:\n  a: {address: 'h:1'}\n")
    r = _check(str(bad), "--json")
    assert r.returncode == 2
    assert "sync_routing.nfs_sharing_groups[0][0]: expected the name of a host, got 3" in r.stderr
    assert json.loads(r.stdout)["valid"] is False
    r = _check(str(FIXTURE), "--node", "nope")
    assert r.returncode == 2 and "--node nope: not a host under hosts" in r.stderr
    r = _check(str(tmp_path / "missing.yaml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_watch_games_settings():
    c = parse_config(
        {
            "ringmesh": {"watch_games": ["/data/{node}/selfplay_*.db"], "watch_min_moves": "cluster"},
            "hosts": {"a": {"address": "127.0.0.1:1"}},
        },
        "x.yaml",
    )
    assert c.watch_games == ("/data/{node}/selfplay_*.db",) and c.watch_min_moves == "cluster"
    with pytest.raises(ConfigError, match=r"ringmesh\.watch_min_moves: expected 'cluster' or a number"):
        parse_config({"ringmesh": {"watch_min_moves": "lots"}}, "x.yaml")
    with pytest.raises(ConfigError, match=r"ringmesh\.watch_games: expected a list"):
        parse_config({"ringmesh": {"watch_games": [3]}}, "x.yaml")
