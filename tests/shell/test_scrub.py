"""Data at rest on real peers (loopback): a copy that rots on disk is found (by a read to serve
it, or by the scrub), no longer served or counted, and repaired from the other holders; a file
changed behind ringmesh's back is kept or adopted, as configured."""

from __future__ import annotations

import filecmp
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

from ringmesh.ops.doctor import run_checks
from ringmesh.ops.localcluster import LocalCluster, wait_for
from tests.shell.conftest import serving

CHUNK = 4 * 1024 * 1024
TRAINING = {f"node{i}": "training" for i in range(1, 5)}


def rot_every_chunk(path, n: int = 4096) -> None:
    """4 KiB flipped in every 4 MiB, size and mtime kept: what a failing disk does."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        for off in range(CHUNK // 2, st.st_size, CHUNK):
            f.seek(off)
            old = f.read(n)
            f.seek(off)
            f.write(bytes(b ^ 0xFF for b in old))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size


def status(c: LocalCluster, name: str) -> dict:
    return c.nodes[name].query("status") or {}


def holders(c: LocalCluster, asker: str, digest: str) -> list[str]:
    doc = c.nodes[asker].query("ls") or {"items": []}
    return next((it["holders"] for it in doc["items"] if it["digest"] == digest), [])


def installed(c: LocalCluster, name: str, f) -> str:
    return str(c.nodes[name].data_dir / "files" / "npz" / f.name)


def put(c: LocalCluster, tmp_path, size: int = 4 * CHUNK + 17):
    f = tmp_path / "hex8_2p.npz"
    f.write_bytes(os.urandom(size))
    with c.nodes["node1"].client() as cl:
        return f, cl.put(f, "npz")["digest"]


def test_a_rotten_copy_is_caught_serving_repaired_and_a_new_host_still_gets_a_good_copy(tmp_path):
    c = LocalCluster(tmp_path / "c", 4, gossip_interval=0.2, roles=TRAINING)
    try:
        for name in ("node1", "node2", "node3"):
            c.start(name)
        for name in ("node1", "node2", "node3"):
            c.wait_ready(name)
        f, digest = put(c, tmp_path)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2", "node3"], 60, what="three holders")
        rot_every_chunk(installed(c, "node2", f))
        c.start("node4")  # pulls from all three meanwhile: node2's check refuses every chunk
        c.wait_ready("node4")
        observed = []  # (node2 holds it by its own account, its file is good), while it is damaged

        def repaired():
            sc = status(c, "node2").get("scrub") or {}
            if sc.get("found", {}).get("files"):
                observed.append(
                    ("node2" in holders(c, "node2", digest), filecmp.cmp(f, installed(c, "node2", f), False))
                )
            return sc.get("repaired", {}).get("files") == 1 and "node4" in holders(c, "node1", digest)

        wait_for(repaired, 60, what="node2's copy repaired and node4's pull done")
        assert filecmp.cmp(f, installed(c, "node4", f), shallow=False)
        assert filecmp.cmp(f, installed(c, "node2", f), shallow=False)
        assert all(good for held, good in observed if held), observed  # a holder again only once repaired
        sc = status(c, "node2")["scrub"]
        assert sc["unrepaired"] == [] and sc["recent"][-1]["kind"] == "corrupt"
        assert sc["recent"][-1]["outcome"] == "re-pulled"
        assert status(c, "node2")["counters"]["chunks_refused_damaged"] >= 1
        log2 = c.nodes["node2"].log_tail(300)
        assert "is corrupt" in log2 and "no longer served" in log2 and "repaired" in log2, log2
        wait_for(
            lambda: sorted(holders(c, "node3", digest)) == ["node1", "node2", "node3", "node4"], 30, what="4 holders"
        )
    finally:
        codes = c.stop_all()
        assert all(code in (0, None) for code in codes.values())


def scrub_now(c: LocalCluster, name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ringmesh",
            "scrub",
            "--now",
            "--timeout",
            "60",
            "--data-dir",
            str(c.nodes[name].data_dir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )


def metric(c: LocalCluster, name: str, sample: str) -> float | None:
    listen = status(c, name)["metrics"]["listen"]
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
    return None


def test_scrub_now_finds_rot_nobody_read_and_the_copy_is_repaired(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=TRAINING, own={"metrics_listen": "127.0.0.1:0"})
    with serving(c):
        f, digest = put(c, tmp_path)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        clean = scrub_now(c, "node2")
        assert clean.returncode == 0, clean.stderr + clean.stdout
        assert "damage found/repaired: files 0/0, games 0/0, manifest 0/0" in clean.stdout, clean.stdout
        rot_every_chunk(installed(c, "node2", f))
        t0 = time.monotonic()
        found = scrub_now(c, "node2", "--item", "npz/hex8_2p.npz")
        assert found.returncode in (0, 1), found.stderr
        assert "files 1/" in found.stdout, found.stdout
        wait_for(lambda: status(c, "node2")["scrub"]["repaired"]["files"] == 1, 60, what="the repair")
        took = time.monotonic() - t0
        assert filecmp.cmp(f, installed(c, "node2", f), shallow=False)
        print(f"rot to repair with scrub --now: {took:.2f} s for {f.stat().st_size} bytes")
        assert metric(c, "node2", 'ringmesh_corruptions_found_total{type="files"}') == 1
        assert metric(c, "node2", 'ringmesh_corruptions_repaired_total{type="files"}') == 1
        assert metric(c, "node2", "ringmesh_corruptions_unrepaired") == 0
        assert metric(c, "node2", 'ringmesh_scrub_verified_bytes_total{type="files"}') >= f.stat().st_size
        # the schedule and the findings survive a restart: nothing is due again, nothing forgotten
        before = status(c, "node2")["scrub"]
        assert before["last_full_scrub"] is not None and before["bytes_verified"]["files"] >= f.stat().st_size
        assert c.signal("node2", signal.SIGTERM) == 0
        c.start("node2")
        c.wait_ready("node2")
        after = status(c, "node2")["scrub"]
        assert after["last_full_scrub"] == before["last_full_scrub"] and after["never_verified"] == 0
        assert after["bytes_verified"] == before["bytes_verified"]
        assert (after["found"], after["repaired"]) == (before["found"], before["repaired"])


def test_the_scheduled_scrub_finds_rot_within_its_interval_at_the_default_budget(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=TRAINING, own={"scrub_interval_seconds": 2})
    with serving(c):
        f, digest = put(c, tmp_path, size=2 * CHUNK)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        wait_for(lambda: status(c, "node2")["scrub"]["last_full_scrub"], 30, what="a first full scrub")
        rot_every_chunk(installed(c, "node2", f))
        t0 = time.monotonic()
        # bound: the interval (2 s) + 8 MiB at the default 4 MB/s (~2.1 s) + the re-pull
        wait_for(lambda: status(c, "node2")["scrub"]["repaired"]["files"] == 1, 60, what="the scheduled scrub's repair")
        print(f"rot to repair by the scheduled scrub: {time.monotonic() - t0:.2f} s")
        assert filecmp.cmp(f, installed(c, "node2", f), shallow=False)
        assert status(c, "node2")["scrub"]["rate_bytes_per_s"] == 4_000_000


def test_a_file_changed_in_place_is_moved_aside_and_the_version_pulled_again(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=TRAINING, own={"rescan_seconds": 0.3})
    with serving(c):
        f, digest = put(c, tmp_path, size=CHUNK + 5)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        path = installed(c, "node2", f)
        with open(path, "r+b") as out:  # a job writing into the installed file
            out.write(b"operator's edit")
        wait_for(lambda: status(c, "node2")["scrub"]["repaired"]["files"] == 1, 30, what="the version back")
        assert filecmp.cmp(f, path, shallow=False)
        (aside,) = [p for p in os.listdir(os.path.dirname(path)) if p.startswith(f.name + ".changed-")]
        assert open(os.path.join(os.path.dirname(path), aside), "rb").read(15) == b"operator's edit"
        assert status(c, "node2")["scrub"]["recent"][-1]["kind"] == "changed"
        assert "changed behind ringmesh's back" in c.nodes["node2"].log_tail(200)


def test_with_adopt_a_file_changed_in_place_is_published_as_a_new_version(tmp_path):
    c = LocalCluster(
        tmp_path / "c",
        2,
        gossip_interval=0.2,
        roles=TRAINING,
        own={"rescan_seconds": 0.3, "changed_files": {"npz": "adopt"}},
    )
    with serving(c):
        f, digest = put(c, tmp_path, size=CHUNK + 5)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        new = os.urandom(2 * CHUNK)
        with open(installed(c, "node1", f), "wb") as out:  # training writes the model in place
            out.write(new)

        def adopted():
            doc = c.nodes["node2"].query("ls") or {"items": []}
            it = next((it for it in doc["items"] if it["name"] == "hex8_2p.npz"), None)
            return it if it and it["digest"] != digest and sorted(it["holders"]) == ["node1", "node2"] else None

        it = wait_for(adopted, 30, what="the changed file published and pulled")
        assert open(installed(c, "node2", f), "rb").read() == new
        assert it["size_bytes"] == len(new)
        assert status(c, "node1")["counters"]["files_adopted"] == 1
        assert not [p for p in os.listdir(os.path.dirname(installed(c, "node1", f))) if ".changed-" in p]


def test_a_rotten_manifest_store_is_rewritten_from_memory_and_a_restart_reads_it(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=TRAINING)
    with serving(c):
        f, digest = put(c, tmp_path, size=CHUNK)
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        data = c.nodes["node2"].data_dir
        db = sqlite3.connect(data / "state.db")  # the rot, as if the disk did it under the daemon
        n = db.execute("UPDATE facts SET value = X'c0' WHERE origin = 'node1' AND key LIKE 'h/%'").rowcount
        db.commit()
        db.close()
        assert n == 1
        r = scrub_now(c, "node2", "--item", "manifest")
        assert r.returncode == 0 and "manifest 1/1" in r.stdout, r.stdout + r.stderr
        assert len(list(data.glob("state.db.corrupt-*"))) == 1
        assert "the manifest store is rewritten" in c.nodes["node2"].log_tail(100)
        assert c.signal("node2", signal.SIGTERM) == 0
        c.start("node2")
        c.wait_ready("node2")
        assert sorted(holders(c, "node2", digest)) == ["node1", "node2"]  # read back whole, at once
        clean = scrub_now(c, "node2", "--item", "manifest")
        assert clean.returncode == 0 and "manifest 1/1" in clean.stdout, clean.stdout


def test_put_link_publishes_at_once_and_the_store_makes_its_own_copy(tmp_path):
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=TRAINING)
    with serving(c):
        f = tmp_path / "hex8_2p.npz"
        data = os.urandom(2 * CHUNK + 3)
        f.write_bytes(data)
        with c.nodes["node1"].client() as cl:
            digest = cl.put(f, "npz", link=True)["digest"]
        wait_for(lambda: status(c, "node1")["counters"].get("puts_copied_after") == 1, 30, what="the store's copy")
        assert os.stat(installed(c, "node1", f)).st_ino != os.stat(f).st_ino
        with open(f, "r+b") as out:  # the next epoch written in place: the published version stays
            out.write(b"next epoch")
        wait_for(lambda: sorted(holders(c, "node1", digest)) == ["node1", "node2"], 60, what="two holders")
        assert open(installed(c, "node2", f), "rb").read() == data
        assert open(installed(c, "node1", f), "rb").read() == data
        assert status(c, "node1")["scrub"]["found"]["files"] == 0


def test_rot_of_the_only_copy_is_a_loud_unrepaired_loss_and_doctor_fails(tmp_path):
    roles = {"node1": "training", "node2": "selfplay"}  # an NPZ goes to training hosts only: one copy
    c = LocalCluster(tmp_path / "c", 2, gossip_interval=0.2, roles=roles)
    with serving(c):
        f, digest = put(c, tmp_path, size=CHUNK + 1)
        rot_every_chunk(installed(c, "node1", f))
        r = scrub_now(c, "node1")
        assert r.returncode == 1 and "DAMAGED files npz/hex8_2p.npz" in r.stdout, r.stdout + r.stderr
        sc = status(c, "node1")["scrub"]
        assert [d["last_copy"] for d in sc["unrepaired"]] == [True]
        assert sc["below_min_copies"] == ["npz/hex8_2p.npz"]
        assert "DATA LOSS: the only copy of npz/hex8_2p.npz" in c.nodes["node1"].log_tail(100)
        assert holders(c, "node1", digest) == []  # served to nobody, counted nowhere
        checks = {ch.name: ch for ch in run_checks(str(c.config_path), "node1", c.nodes["node1"].data_dir)}
        assert checks["at rest"].status == "FAIL" and "npz/hex8_2p.npz" in checks["at rest"].detail
