"""The wire-size estimate and the per-node accounting."""

from __future__ import annotations

from ringmesh.core import Ack, Envelope, Manifest, Syn, SynAck
from sim.traffic import DIGEST_ENTRY_BYTES, ENVELOPE_BYTES, FINGERPRINT_BYTES, Traffic, message_size


def _manifests():
    a, b = Manifest("alpha", 1), Manifest("b", 1)
    a.put("node", b"x" * 100)
    return a, b


def test_syn_is_envelope_plus_fingerprint_plus_one_entry_per_listed_origin():
    a, _ = _manifests()
    env = Envelope(sender="alpha", hlc=1, body=Syn(digest={"alpha": a.digest()["alpha"], "b": a.digest()["alpha"]}))
    assert message_size(env) == ENVELOPE_BYTES + 5 + FINGERPRINT_BYTES + (5 + DIGEST_ENTRY_BYTES) + (
        1 + DIGEST_ENTRY_BYTES
    )


def test_synack_and_ack_add_the_delta_wire_size():
    a, b = _manifests()
    delta = a.delta_for(b.digest(), 1 << 20)
    assert delta.wire_size() > 100
    ack = Envelope(sender="alpha", hlc=1, body=Ack(delta=delta))
    synack = Envelope(sender="alpha", hlc=1, body=SynAck(digest=a.digest(), delta=delta))
    assert message_size(ack) == ENVELOPE_BYTES + 5 + delta.wire_size()
    assert message_size(synack) == message_size(ack) + FINGERPRINT_BYTES + 5 + DIGEST_ENTRY_BYTES


def test_traffic_counts_per_node_and_differences():
    a, b = _manifests()
    t = Traffic()
    t.add_node("alpha"), t.add_node("b")
    env = Envelope(sender="alpha", hlc=1, body=Syn(digest=a.digest()))
    t.record("alpha", env)
    before = t.snapshot()
    t.record("alpha", env)
    t.record("b", Envelope(sender="b", hlc=1, body=Syn(digest=b.digest())))
    later = t.since(before)
    assert later.messages == {"alpha": 1, "b": 1}
    assert later.bytes["alpha"] == message_size(env)
    assert t.total_messages() == 3 and t.by_kind == {"Syn": 3}
