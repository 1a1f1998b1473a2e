"""A relay cannot forge, alter, redirect or replay a call (node/wire/relay.py): the target checks
the caller's signature against the certificate sent along and the cluster CA."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.node.wire import codec
from ringmesh.node.wire.relay import RelayRouter, signed_bytes
from ringmesh.node.wire.tls import TlsError, init_ca, issue, load_node
from ringmesh.node.wire.uplinks import Uplinks


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    out = {}
    for ca in ("ca", "other-ca"):
        d = tmp_path_factory.mktemp(ca)
        init_ca(d)
        for node in ("node1", "node2", "node3"):
            key, cert = issue(d, node)
            out[ca, node] = load_node({"ca": str(d / "ca.crt"), "cert": str(cert), "key": str(key)}, node)
    return out


def _router(creds, node: str, ca: str = "ca") -> RelayRouter:
    return RelayRouter(SimpleNamespace(tls=creds[ca, node], peer=SimpleNamespace(me=node)), direct=lambda n: None)


def _target(creds, node: str = "node3") -> Uplinks:
    return Uplinks(SimpleNamespace(tls=creds["ca", node], peer=SimpleNamespace(me=node)), None, lambda n: None)


def _call(router: RelayRouter, target: str = "node3"):
    env = codec.EnvelopePB(sender=router.node.peer.me, hlc=1)
    return router.call(target, "Deliver", env, 5.0, [("ringmesh-priority", "high")])


def test_a_signed_call_names_its_caller(creds):
    assert _target(creds)._verify(_call(_router(creds, "node1"))) == "node1"


TAMPER = {
    "request": lambda c: setattr(c, "request", c.request + b"\x00"),
    "method": lambda c: setattr(c, "method", "FetchChunks"),
    "metadata": lambda c: c.metadata.__setitem__("ringmesh-priority", "critical"),
    "timeout": lambda c: setattr(c, "timeout_s", 60.0),
    "caller": lambda c: setattr(c, "caller", "node2"),
    "nonce": lambda c: setattr(c, "nonce", b"x" * 12),
    "time": lambda c: setattr(c, "issued_ms", c.issued_ms + 1),
    "signature": lambda c: setattr(c, "signature", c.signature[:-1] + bytes([c.signature[-1] ^ 1])),
}


@pytest.mark.parametrize("what", sorted(TAMPER))
def test_a_relay_that_alters_a_call_is_refused(creds, what):
    call = _call(_router(creds, "node1"))
    TAMPER[what](call)
    with pytest.raises(TlsError):
        _target(creds)._verify(call)


@settings(max_examples=50, deadline=None)
@given(at=st.integers(0, 400), bit=st.integers(0, 7))
def test_any_bit_flipped_in_the_signed_part_is_refused(creds, at, bit):
    call = _call(_router(creds, "node1"))
    raw = bytearray(call.request)
    raw[at % len(raw)] ^= 1 << bit
    call.request = bytes(raw)
    with pytest.raises(TlsError):
        _target(creds)._verify(call)


def test_a_call_for_another_host_or_replayed_or_stale_is_refused(creds):
    router, target = _router(creds, "node1"), _target(creds)
    with pytest.raises(TlsError, match="for 'node2'"):
        target._verify(_call(router, "node2"))  # a relay sending node2's call to node3
    call = _call(router)
    assert target._verify(call) == "node1"
    with pytest.raises(TlsError, match="replayed"):
        target._verify(call)
    old = _call(router)
    old.issued_ms -= 10 * 60 * 1000
    old.signature = router.signer.sign(signed_bytes(old))
    with pytest.raises(TlsError, match="from our clock"):
        target._verify(old)


def test_a_certificate_of_another_ca_or_another_hosts_key_is_refused(creds):
    stranger = _call(_router(creds, "node1", ca="other-ca"))
    with pytest.raises(TlsError, match="our CA"):
        _target(creds)._verify(stranger)
    mixed = _call(_router(creds, "node1"))
    mixed.certificate = _router(creds, "node2").signer.certificate  # node2's certificate, node1's signature
    mixed.caller = "node2"
    with pytest.raises(TlsError):
        _target(creds)._verify(mixed)


def test_plaintext_takes_the_caller_as_given_but_still_checks_the_target():
    uplinks = Uplinks(SimpleNamespace(tls=None, peer=SimpleNamespace(me="node3")), None, lambda n: None)
    assert uplinks._verify(codec.RelayedCall(caller="node1", target="node3")) == "node1"
    with pytest.raises(TlsError):
        uplinks._verify(codec.RelayedCall(caller="node1", target="node4"))
