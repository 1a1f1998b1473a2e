"""Mutual TLS between peers: real `ringmesh serve` processes with certificates from a cluster CA
converge and move files; a client without a certificate, with one from another CA, or with a
valid one that claims to be another host is refused, and the peer goes on serving. Plus the
`certs` commands and the `ringmesh.tls` config checks."""

from __future__ import annotations

import datetime as dt
import filecmp
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml

from ringmesh.api import cli
from ringmesh.config import ConfigError, parse_config
from ringmesh.node.wire import codec
from ringmesh.node.wire.tls import TlsError, channel_options, init_ca, issue, load_node
from ringmesh.ops.localcluster import LocalCluster, wait_for
from ringmesh.v1 import mesh_pb2_grpc

from .conftest import serving

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    c = LocalCluster(
        tmp_path_factory.mktemp("tls") / "c",
        3,
        gossip_interval=0.2,
        tls=True,
        roles={f"node{i}": "training" for i in (1, 2, 3)},
    )
    with serving(c):
        yield c


def _pem(path) -> bytes:
    return Path(path).read_bytes()


def _channel(
    cluster, target: str, *, cert_dir: Path | None, node: str | None, ca: Path | None = None, name: str | None = None
) -> grpc.Channel:
    """A channel to `target`'s port with `node`'s key and certificate from `cert_dir` (none if
    `node` is None), trusting `ca` (the cluster CA by default), expecting the server to be `name`."""
    ca = ca or cluster.tls_dir / "ca.crt"
    creds = grpc.ssl_channel_credentials(
        root_certificates=_pem(ca),
        private_key=_pem(cert_dir / f"{node}.key") if node else None,
        certificate_chain=_pem(cert_dir / f"{node}.crt") if node else None,
    )
    return grpc.secure_channel(cluster.nodes[target].address, creds, options=channel_options(name or target))


def _syn(sender: str) -> codec.EnvelopePB:
    env = codec.EnvelopePB(sender=sender, hlc=1)
    env.syn.SetInParent()
    return env


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as e:
        call()
    return e.value.code()


def _everyone_holds(cluster, name, digest):
    def check():
        for n in cluster.running():
            doc = cluster.nodes[n].query("ls") or {"items": []}
            it = next((i for i in doc["items"] if i["name"] == name), None)
            if not it or it["digest"] != digest or sorted(it["holders"]) != sorted(cluster.running()):
                return False
        return True

    return check


def test_peers_with_mtls_converge_and_move_a_file(tls_cluster, tmp_path):
    c = tls_cluster
    f = tmp_path / "canonical_hex8_2p.pth"
    f.write_bytes(os.urandom(5 * MiB + 17))  # 2 chunks
    with c.nodes["node1"].client() as cl:
        put = cl.put(f, "model")
    wait_for(_everyone_holds(c, f.name, put["digest"]), 30, what="every peer to hold the model over mTLS")
    wait_for(c.converged, 20, what="identical manifests")
    for name, nd in c.nodes.items():
        assert filecmp.cmp(f, nd.data_dir / "files" / "model" / f.name, shallow=False), name
        log = nd.log_path.read_text()
        assert "mutual TLS" in log and "PLAINTEXT" not in log, name
    for doc in c.query_all("status").values():
        assert {m["name"]: m["state"] for m in doc["members"]} == {f"node{i}": "alive" for i in (1, 2, 3)}
        assert doc["counters"].get("rejected_identity", 0) == 0


def test_clients_without_a_cluster_certificate_are_refused(tls_cluster, tmp_path):
    c = tls_cluster
    address = c.nodes["node1"].address
    # plaintext: no TLS handshake at all
    with grpc.insecure_channel(address) as ch:
        s = mesh_pb2_grpc.PeerStub(ch)
        assert _code(lambda: s.Deliver(_syn("node2"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        assert (
            _code(lambda: list(s.FetchChunks(codec.ChunkRequest(digest="0" * 32, indices=[0]), timeout=5)))
            == grpc.StatusCode.UNAVAILABLE
        )
    # TLS, trusting the cluster CA, but no client certificate
    with _channel(c, "node1", cert_dir=None, node=None) as ch:
        assert (
            _code(lambda: mesh_pb2_grpc.PeerStub(ch).Deliver(_syn("node2"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        )
    # a certificate for node2 from another CA (a look-alike cluster)
    other = tmp_path / "other"
    init_ca(other)
    issue(other, "node2")
    with _channel(c, "node1", cert_dir=other, node="node2") as ch:
        s = mesh_pb2_grpc.PeerStub(ch)
        assert _code(lambda: s.Deliver(_syn("node2"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        assert (
            _code(lambda: s.GetRecipe(codec.RecipeRequest(digest="0" * 32), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        )
    # the other way round: a server whose certificate names another host than the one dialled
    with _channel(c, "node1", cert_dir=c.tls_dir, node="node3", name="node2") as ch:
        assert (
            _code(lambda: mesh_pb2_grpc.PeerStub(ch).Deliver(_syn("node3"), timeout=5)) == grpc.StatusCode.UNAVAILABLE
        )
    # refused in the handshake: no handler ever saw these calls
    assert c.nodes["node1"].query("status")["counters"].get("rejected_identity", 0) == 0
    wait_for(c.converged, 20, what="the cluster to go on")


def test_a_valid_certificate_cannot_claim_another_host(tls_cluster, tmp_path):
    c = tls_cluster
    with _channel(c, "node2", cert_dir=c.tls_dir, node="node3") as ch:
        s = mesh_pb2_grpc.PeerStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            s.Deliver(_syn("node1"), timeout=5)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'node1' is not the host of the client certificate 'node3'" in e.value.details()
        s.Deliver(_syn("node3"), timeout=5)  # as itself: accepted
        assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest="0" * 32), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert c.nodes["node2"].query("status")["counters"]["rejected_identity"] == 1
    assert (
        "refused a message from node3 (certificate) claiming to come from node1"
        in c.nodes["node2"].log_path.read_text()
    )

    # a host the cluster does not know yet, with a certificate from our CA: let in, and logged
    issue(c.tls_dir, "newhost", tmp_path)
    with _channel(c, "node2", cert_dir=tmp_path, node="newhost") as ch:
        s = mesh_pb2_grpc.PeerStub(ch)
        assert _code(lambda: s.GetRecipe(codec.RecipeRequest(digest="0" * 32), timeout=5)) == grpc.StatusCode.NOT_FOUND
    assert "host newhost is in neither the config nor the manifest" in c.nodes["node2"].log_path.read_text()

    # node2 is up and correct afterwards: a new file reaches everyone through it
    f = tmp_path / "hex8_2p.npz"
    f.write_bytes(os.urandom(MiB + 5))
    with c.nodes["node2"].client() as cl:
        put = cl.put(f, "npz")
    wait_for(_everyone_holds(c, f.name, put["digest"]), 30, what="the npz everywhere")
    assert filecmp.cmp(f, c.nodes["node3"].data_dir / "files" / "npz" / f.name, shallow=False)
    assert c.running() == ["node1", "node2", "node3"]


# -- certs commands ------------------------------------------------------------------------------


def test_certs_init_and_issue(tmp_path, capsys):
    ca = tmp_path / "ca"
    assert cli.main(["certs", "init", "--dir", str(ca)]) == 0
    assert stat.S_IMODE((ca / "ca.key").stat().st_mode) == 0o600
    before = (ca / "ca.key").read_bytes()
    assert cli.main(["certs", "init", "--dir", str(ca)]) == 2
    assert "already exists; not overwriting the cluster CA" in capsys.readouterr().err
    assert (ca / "ca.key").read_bytes() == before

    assert cli.main(["certs", "issue", "gh200-a", "--dir", str(ca), "--out", str(tmp_path / "out")]) == 0
    assert stat.S_IMODE((tmp_path / "out" / "gh200-a.key").stat().st_mode) == 0o600
    creds = load_node(
        {"ca": ca / "ca.crt", "cert": tmp_path / "out" / "gh200-a.crt", "key": tmp_path / "out" / "gh200-a.key"},
        "gh200-a",
    )
    assert creds.key_mode_warning is None
    assert cli.main(["certs", "issue", "gh200-a", "--dir", str(ca), "--out", str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["certs", "issue", "bad host!", "--dir", str(ca)]) == 2
    assert "not a host name" in capsys.readouterr().err
    assert cli.main(["certs", "issue", "x", "--dir", str(tmp_path / "nowhere")]) == 2
    assert "cannot read the CA certificate" in capsys.readouterr().err
    long = "n" * 100  # longer than a common name may be: named by the subjectAltName alone
    assert cli.main(["certs", "issue", long, "--dir", str(ca)]) == 0
    load_node({"ca": ca / "ca.crt", "cert": ca / f"{long}.crt", "key": ca / f"{long}.key"}, long)


def test_loading_checks_every_file(tmp_path):
    ca, other = tmp_path / "ca", tmp_path / "other"
    init_ca(ca)
    init_ca(other)
    issue(ca, "a")
    issue(ca, "b")
    issue(other, "a", tmp_path / "o")

    def load(node="a", **kw):
        files = {"ca": ca / "ca.crt", "cert": ca / "a.crt", "key": ca / "a.key", **kw}
        return load_node(files, node, {k: f"ringmesh.tls.{k}" for k in files})

    load()
    cases = [
        (
            dict(cert=ca / "missing.crt"),
            r"ringmesh\.tls\.cert: .*missing\.crt: cannot read this host's certificate: No such file",
        ),
        (dict(ca=ca / "a.key"), r"ringmesh\.tls\.ca: .*a\.key: the CA certificate: not a PEM certificate"),
        (dict(key=ca / "a.crt"), r"ringmesh\.tls\.key: .*a\.crt: this host's key: not a PEM private key"),
        (dict(key=ca / "b.key"), r"this key does not belong to the certificate"),
        (dict(cert=ca / "b.crt", key=ca / "b.key"), r"the certificate names 'b', not this host 'a'"),
        (dict(cert=tmp_path / "o" / "a.crt", key=tmp_path / "o" / "a.key"), r"not signed by the CA in"),
        (dict(ca=ca / "a.crt"), r"not signed by the CA|not a CA certificate"),
        (dict(cert=tmp_path), r"is a directory"),
    ]
    for kw, message in cases:
        with pytest.raises(TlsError, match=message):
            load(**kw)
    with pytest.raises(TlsError, match="expired on"):
        load_node(
            {"ca": ca / "ca.crt", "cert": ca / "a.crt", "key": ca / "a.key"},
            "a",
            now=dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=900),
        )
    os.chmod(ca / "a.key", 0o644)
    assert "readable by other users" in load().key_mode_warning


# -- config --------------------------------------------------------------------------------------


def _doc(g=None, **host_a):
    """A config with `ringmesh.tls: g` (absent if None) and host a's settings `host_a`."""
    return {
        **({"ringmesh": {"tls": g}} if g is not None else {}),
        "hosts": {"a": {"address": "127.0.0.1:1", **host_a}, "b": {"address": "127.0.0.1:2"}},
    }


def test_tls_config_values():
    assert parse_config(_doc(), "/etc/rm/hosts.yaml").hosts["a"].tls is None
    assert parse_config(_doc(False), "/etc/rm/hosts.yaml").tls is None  # YAML `off`
    assert parse_config(_doc("off"), "/etc/rm/hosts.yaml").tls is None
    c = parse_config(
        _doc({"ca": "certs/ca.crt", "cert": "certs/{node}.crt", "key": "/k/{node}.key"}), "/etc/rm/hosts.yaml"
    )
    assert c.tls.cert == "certs/{node}.crt"
    a, b = c.hosts["a"].tls, c.hosts["b"].tls
    assert (a.ca, a.cert, a.key) == ("/etc/rm/certs/ca.crt", "/etc/rm/certs/a.crt", "/k/a.key")
    assert (b.cert, b.key) == ("/etc/rm/certs/b.crt", "/k/b.key")
    assert a.sources["cert"] == "ringmesh.tls.cert"
    # a host may move its own files
    c = parse_config(
        _doc({"ca": "/c/ca.crt", "cert": "/c/{node}.crt", "key": "/c/{node}.key"}, tls={"key": "/secure/{node}.pem"}),
        "x.yaml",
    )
    assert (c.hosts["a"].tls.key, c.hosts["a"].tls.cert, c.hosts["b"].tls.key) == (
        "/secure/a.pem",
        "/c/a.crt",
        "/c/b.key",
    )
    assert c.hosts["a"].tls.sources["key"] == "hosts.a.tls.key"
    c = parse_config(_doc({"ca": "/c", "cert": "/c", "key": "/c", "cetr": "/x"}), "x.yaml")
    assert "x.yaml: ringmesh.tls.cetr: unknown key, ignored" in c.warnings


@pytest.mark.parametrize(
    "doc, message",
    [
        (_doc(True), r"x\.yaml: ringmesh\.tls: expected off, or a mapping of ca, cert and key"),
        (_doc("on"), r"ringmesh\.tls: expected off, or a mapping"),
        (
            _doc({"ca": "/c", "cert": "/c"}),
            r"ringmesh\.tls\.key: expected a file path \(ringmesh\.tls needs ca, cert and key\), got None",
        ),
        (
            _doc({"ca": "/c", "cert": "", "key": "/k"}),
            r"ringmesh\.tls\.cert: expected a file path \(a non-empty string\), got ''",
        ),
        (_doc({"ca": ["/c"], "cert": "/c", "key": "/k"}), r"ringmesh\.tls\.ca: expected a file path"),
        (_doc(tls={"cert": "/c"}), r"hosts\.a\.tls: set ringmesh\.tls first"),
        (
            _doc({"ca": "/c", "cert": "/c", "key": "/k"}, tls=False),
            r"hosts\.a\.tls: expected a mapping of any of ca, cert, key",
        ),
        (_doc({"ca": "/c", "cert": "/c", "key": "/k"}, tls={"key": 3}), r"hosts\.a\.tls\.key: expected a file path"),
    ],
)
def test_bad_tls_config_values(doc, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(doc, "x.yaml")


def _run(*args, timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "ringmesh", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_serve_with_bad_tls_files_stops_with_a_clear_error(tmp_path):
    certs = tmp_path / "certs"
    init_ca(certs)
    issue(certs, "b")
    cfg = tmp_path / "hosts.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "ringmesh": {"tls": {"ca": "certs/ca.crt", "cert": "certs/{node}.crt", "key": "certs/{node}.key"}},
                "hosts": {"a": {"address": "127.0.0.1:1"}, "b": {"address": "127.0.0.1:2"}},
            }
        )
    )
    r = _run("serve", "--config", str(cfg), "--node", "a", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"ringmesh: {cfg}: ringmesh.tls.cert: {certs / 'a.crt'}: cannot read this host's certificate" in r.stderr
    cfg.write_text(
        cfg.read_text().replace("certs/{node}.crt", "certs/b.crt").replace("certs/{node}.key", "certs/b.key")
    )
    r = _run("serve", "--config", str(cfg), "--node", "a", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "the certificate names 'b', not this host 'a' (issue one with `ringmesh certs issue a`)" in r.stderr
    # config check shows the TLS files, and with --node checks them as this machine sees them
    r = _run("config", "check", str(cfg), "--node", "a", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["global"]["tls"]["display"] == "mutual TLS"
    assert doc["hosts"]["a"]["tls"]["cert"]["path"] == str(certs / "b.crt")
    assert any("the certificate names 'b', not this host 'a'" in w for w in doc["warnings"])


def test_plaintext_is_loud(tmp_path):
    cfg = tmp_path / "hosts.yaml"
    cfg.write_text(yaml.safe_dump({"hosts": {"a": {"address": "127.0.0.1:1"}}}))
    r = _run("config", "check", str(cfg))
    assert r.returncode == 0 and "off: PLAINTEXT" in r.stdout
    assert "ringmesh.tls: PLAINTEXT: peers talk without TLS" in r.stdout
    with LocalCluster(tmp_path / "c", 1, gossip_interval=0.2) as c:
        c.start_all()
        wait_for(
            lambda: (
                "WARNING node1 ringmesh.node.runtime: PLAINTEXT: peers talk without TLS"
                in c.nodes["node1"].log_path.read_text()
            ),
            10,
            what="the plaintext warning in the log",
        )
        assert c.signal("node1", signal.SIGTERM) == 0
