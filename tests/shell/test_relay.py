"""Hosts nobody can dial (`nat_blocked`): real peers on loopback, the NAT'd ones listening
elsewhere than the file says, so that a direct dial of one fails; everything for them must come
over the links they dial out (node/wire/relay.py). With TLS, so relayed calls are signed and
checked. The netns version with iptables (inbound TCP dropped) is tests/chaos `nat`."""

from __future__ import annotations

import hashlib
import signal
import time

from ringmesh.node.games import gamedb
from ringmesh.ops import selfplay
from ringmesh.ops.doctor import run_checks
from ringmesh.ops.localcluster import LocalCluster, free_ports, wait_for
from ringmesh.ops.statusview import render

ROLES = {"node1": "training", "node2": "backup", "node3": "selfplay", "node4": "selfplay"}
NAT = ("node3", "node4")


def _holders(c: LocalCluster, name: str, digest: str) -> set[str]:
    ls = c.nodes[name].query("ls") or {"items": []}
    return {h for item in ls["items"] if item["digest"] == digest for h in item["holders"]}


def _members(c: LocalCluster, name: str) -> dict[str, str]:
    st = c.nodes[name].query("status") or {"members": []}
    return {m["name"]: m["state"] for m in st["members"]}


def test_nat_hosts_are_full_members_through_their_links(tmp_path):
    c = LocalCluster(
        tmp_path / "c", 4, gossip_interval=0.25, roles=ROLES, tls=True, hosts={n: {"nat_blocked": True} for n in NAT}
    )
    elsewhere = dict(zip(NAT, (f"127.0.0.1:{p}" for p in free_ports(len(NAT)))))  # the file's address is dead
    try:
        for n in c.nodes:
            c.start(n, args=("--listen", elsewhere[n]) if n in elsewhere else ())
        for n in c.nodes:
            c.wait_ready(n, 30)

        def linked():
            st = {n: c.nodes[n].query("status") for n in c.nodes}
            return all(s and sorted(s["links"].get("up", [])) == ["node1", "node2"] for n, s in st.items() if n in NAT)

        wait_for(linked, 30, what="each NAT'd host linked to both reachable hosts")
        wait_for(
            lambda: all((s := c.nodes[n].query("status")) and s["leader"] in ("node1", "node2") for n in c.nodes),
            30,
            what="one public leader known everywhere",
        )
        rounds = {n: c.nodes[n].query("status")["gossip_rounds"] for n in c.nodes}
        wait_for(
            lambda: all(c.nodes[n].query("status")["gossip_rounds"] > rounds[n] + 8 for n in c.nodes),
            30,
            what="a few gossip rounds",
        )
        for n in c.nodes:
            assert set(_members(c, n).values()) == {"alive"}, (n, _members(c, n))
        st3 = c.nodes["node3"].query("status")
        assert st3["counters"].get("calls_via_links", 0) > 0 and st3["counters"].get("rejected_identity", 0) == 0
        assert {m["name"]: m["nat_blocked"] for m in st3["members"]} == {
            "node1": False,
            "node2": False,
            "node3": True,
            "node4": True,
        }

        shown = render(st3)
        assert "LINKS" in shown and "2 of 2 up" in shown and "NAT'd, via" in shown, shown
        assert "relaying for node3, node4" in render(c.nodes["node1"].query("status"))
        doctor = {
            n: {ch.name: ch for ch in run_checks(str(c.config_path), n, c.nodes[n].data_dir)}
            for n in ("node1", "node3")
        }
        assert doctor["node3"]["links"].status == "ok", doctor["node3"]["links"]
        assert doctor["node1"]["peer node3"].status == "ok" and "not dialled" in doctor["node1"]["peer node3"].detail
        assert doctor["node3"]["peer node1"].status == "ok", "a NAT'd host dials out"

        # a model only a NAT'd host holds reaches the others: they fetch it over its links
        model = tmp_path / "canonical_hex8_2p.pth"
        model.write_bytes(hashlib.sha256(b"seed").digest() * (3 << 15))  # 3 MiB
        with c.nodes["node3"].client() as cl:
            digest = cl.put(model, "model", broadcast=True)["digest"]
        wait_for(lambda: _holders(c, "node1", digest) >= {"node1", "node3", "node4"}, 60, what="the model everywhere")
        relayed = sum(c.nodes[n].query("status")["counters"].get("relayed_bytes", 0) for n in ("node1", "node2"))
        assert relayed >= model.stat().st_size, "the chunks came through a relay"

        # games from a NAT'd host: durable (acks come back over its links) and on both game hosts
        source = tmp_path / "selfplay_hex8_2p.db"
        selfplay.generate_games(source, 4, config_key="hex8_2p", seed=3, moves=(20, 30))
        records, _ = gamedb.read_completed_games(source)
        with c.nodes["node4"].client() as cl:
            assert cl.publish_games("hex8_2p", records) == [1, 2, 3, 4]
            assert cl.wait_durable("hex8_2p", 4, timeout=30)
        dbs = [c.nodes[n].data_dir / "games" / "hex8_2p.db" for n in ("node1", "node2")]
        wait_for(lambda: all(p.exists() and gamedb.count_games(p) == 4 for p in dbs), 30, what="games on game hosts")

        # a relay dies: the NAT'd hosts keep the other link, and nobody thinks them dead
        c.signal("node2", signal.SIGKILL)
        wait_for(
            lambda: all(c.nodes[n].query("status")["links"]["up"] == ["node1"] for n in NAT),
            20,
            what="node2's link lost",
        )
        deadline = time.monotonic() + 6  # several probe periods and suspicion timeouts
        while time.monotonic() < deadline:
            seen = _members(c, "node1")
            assert seen["node3"] == seen["node4"] == "alive", seen
            time.sleep(0.1)  # a sample every 0.1 s (not a wait for anything)
        assert _members(c, "node3")["node4"] == "alive", "NAT'd to NAT'd, through node1"
        links = {ch.name: ch for ch in run_checks(str(c.config_path), "node3", c.nodes["node3"].data_dir)}["links"]
        assert links.status == "warn" and "1 of 2 links up (node1)" in links.detail, links
    finally:
        codes = c.stop_all()
        assert all(code in (0, None, -9) for code in codes.values()), codes


def test_a_host_the_file_does_not_mark_finds_out_nobody_can_dial_it(tmp_path):
    roles = {"node1": "training", "node2": "training", "node3": "selfplay"}
    c = LocalCluster(tmp_path / "c", 3, gossip_interval=0.25, roles=roles, own={"unreachable_after_seconds": 3})
    (elsewhere,) = free_ports(1)
    try:
        for n in c.nodes:
            c.start(n, args=("--listen", f"127.0.0.1:{elsewhere}") if n == "node3" else ())
        for n in c.nodes:
            c.wait_ready(n, 30)
        wait_for(
            lambda: (
                (c.nodes["node3"].query("status") or {}).get("links", {}).get("up") is not None
                and sorted(c.nodes["node3"].query("status")["links"]["up"]) == ["node1", "node2"]
            ),
            30,
            what="node3 linked out on its own",
        )
        wait_for(
            lambda: all(
                (s := c.nodes[n].query("status")) and set(_members(c, n).values()) == {"alive"} and s["leader"]
                for n in c.nodes
            ),
            30,
            what="everyone alive, a leader",
        )
        st = {n: c.nodes[n].query("status") for n in c.nodes}
        assert st["node3"]["counters"].get("found_unreachable") == 1
        assert st["node3"]["counters"].get("calls_via_links", 0) > 0
        assert all(st[n]["counters"].get("found_unreachable", 0) == 0 for n in ("node1", "node2")), "they are reachable"
        assert {s["leader"] for s in st.values()} <= {"node1", "node2"}
        assert next(m for m in st["node1"]["members"] if m["name"] == "node3")["nat_blocked"] is True
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values()), codes
