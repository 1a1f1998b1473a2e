"""The pieces behind `status`, metrics, logs, progress bars and the data-dir lock, in-process."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest

from ringmesh.config import ConfigError
from ringmesh.core.manifest import Manifest, OriginState
from ringmesh.node.state import DataDirBusy, DataDirLock, holder
from ringmesh.node.telemetry import Telemetry
from ringmesh.ops.logs import GRPC_LOGGER, JsonFormatter, about, setup
from ringmesh.ops.metrics import listen_setting
from ringmesh.ops.progress import Progress
from ringmesh.ops.statusview import bar, duration, render, size, visible_len


def _status(**over):
    doc = {
        "node": "a",
        "address": "127.0.0.1:1",
        "incarnation": 7,
        "uptime_s": 75.0,
        "fingerprint": "f" * 16,
        "gossip_rounds": 3,
        "items": 1,
        "disk": {"used_percent": 12.5, "free_bytes": 3 << 30},
        "leader": "b",
        "term": 4,
        "local_health": 0,
        "metrics": None,
        "election": {"role": "follower", "is_leader": False, "lease_left_s": 0.0, "elections_started": 0},
        "members": [
            {
                "name": "a",
                "state": "alive",
                "role": "training",
                "voter": True,
                "ephemeral": False,
                "incarnation": 7,
                "last_heard_s": 0.5,
                "address": "127.0.0.1:1",
                "breaker": {"state": "closed"},
                "lag_changes": 0,
                "lag_s": 0.0,
            },
            {
                "name": "bbbbbbbb",
                "state": "dead",
                "role": "selfplay",
                "voter": False,
                "ephemeral": True,
                "incarnation": None,
                "last_heard_s": None,
                "address": None,
                "lag_changes": 3,
                "lag_s": 12.0,
                "breaker": {"state": "open", "consecutive_failures": 5},
            },
        ],
        "freshness": {"hex8_2p": {"games": 10, "streams": 2, "newest_age_s": 1.5, "hosts_behind": ["bbbbbbbb"]}},
        "games": {"streams": {"a.7/hex8_2p": 6, "b.1/hex8_2p": 4}, "durable_through": {"hex8_2p": 6}},
        "transfers": [
            {
                "item": "npz/x.npz",
                "digest": "d" * 32,
                "size_bytes": 64 << 20,
                "running_s": 2.0,
                "priority": "critical",
                "chunks": 16,
                "chunks_verified": 4,
            }
        ],
        "broadcasts": [
            {
                "item": "model/m.pth",
                "digest": "e" * 32,
                "size_bytes": 10,
                "publisher": "a",
                "term": 4,
                "leader": "b",
                "state": "delivering",
                "delivered": 1,
                "eligible": 2,
                "hosts": {"a": "delivered", "bbbbbbbb": "pulling"},
                "ineligible": {"c": "excluded"},
            }
        ],
        "events": [{"at": 0.0, "kind": "declared-dead", "subject": "bbbbbbbb", "detail": ""}],
        "blocked_items": [],
    }
    doc.update(over)
    return doc


CLUSTER = {
    "items": [
        {
            "item": "npz/x.npz",
            "digest": "d" * 32,
            "size_bytes": 64 << 20,
            "copies": 1,
            "wanted_copies": 2,
            "targets": ["a", "b"],
            "hosts_behind": ["a"],
            "blocked": False,
        },
        {
            "item": "model/m.pth",
            "digest": "e" * 32,
            "size_bytes": 10,
            "copies": 2,
            "wanted_copies": 2,
            "targets": ["a", "b"],
            "hosts_behind": [],
            "blocked": False,
        },
    ]
}


def test_status_view_has_every_section_in_aligned_columns():
    text = render(_status(), CLUSTER)
    assert "\x1b[" not in text
    for part in (
        "MEMBERS",
        "1 alive, 1 dead",
        "GAMES PER CONFIG",
        "ITEMS UNDER-REPLICATED  1 of 2 item(s)",
        "TRANSFERS",
        "[#####...............]  25 %  4/16 chunks",
        "BROADCASTS",
        "broadcast model/m.pth eeeeeeeeeeee (term 4 by b): 1/2 delivered, delivering",
        "not eligible: excluded",
        "3 change(s), 12.0 s",
        "open (5 failed)",
        "up 1m15s",
        "64.0 MiB",
        "declared-dead",
    ):
        assert part in text, part
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.strip().startswith("MEMBER "))
    col = lines[head].index("STATE")
    assert lines[head + 1][col:].startswith("alive") and lines[head + 2][col:].startswith("dead")
    games = next(ln for ln in lines if ln.strip().startswith("hex8_2p"))
    assert games.split()[:5] == ["hex8_2p", "10", "2", "1.5", "s"] and "bbbbbbbb" in games
    coloured = render(_status(), CLUSTER, color=True)
    assert "\x1b[31mdead\x1b[0m" in coloured
    assert [visible_len(ln) for ln in coloured.splitlines()] == [len(ln) for ln in lines]


def test_status_view_of_a_lone_new_peer():
    doc = _status(
        members=_status()["members"][:1],
        freshness={},
        transfers=[],
        broadcasts=[],
        events=[],
        disk={},
        leader=None,
        games={},
    )
    text = render(doc, {"items": []})
    assert "no game streams yet" in text and "(none known)" in text and "disk not measured yet" in text
    assert "PAUSED" not in text
    paused = render(_status(paused="cannot write state: database or disk is full"), CLUSTER)
    assert "PAUSED: cannot write state: database or disk is full" in paused


def test_units():
    assert [size(0), size(1023), size(1536), size(64 << 20), size(3 << 30)] == [
        "0 B",
        "1023 B",
        "1.50 KiB",
        "64.0 MiB",
        "3.00 GiB",
    ]
    assert [duration(0.4), duration(65), duration(7260), duration(90000)] == ["0.4 s", "1m05s", "2h01m", "1d01h"]
    assert bar(399, 400).endswith(" 99 %") and bar(0, 0).endswith("  0 %")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_draws_only_on_a_terminal():
    pipe = io.StringIO()
    with Progress("x", 100, stream=pipe) as p:
        p.update(50)
    assert pipe.getvalue() == ""
    tty = _Tty()
    p = Progress("importing m.pth", 4 << 20, stream=tty)
    p.update(1 << 20)
    p.update(2 << 20)  # within 0.1 s of the last draw: skipped
    p.update(4 << 20, "done", force=True)
    p.close()
    out = tty.getvalue()
    assert out.startswith("\rimporting m.pth  [#####...............]  25 %  1.00 MiB of 4.00 MiB")
    last = out.rsplit("\r", 1)[1]
    assert last.startswith("importing m.pth  [####################] 100 %  4.00 MiB of 4.00 MiB  ")
    assert last.endswith("/s  done\x1b[K\n")
    assert out.count("\r") == 3


def test_json_log_lines_carry_host_peer_and_item():
    rec = logging.LogRecord("ringmesh.node.runtime", logging.WARNING, __file__, 1, "got %s from %s", ("x", "b"), None)
    for k, v in about(peer="b", item="model/x", digest=None).items():
        setattr(rec, k, v)
    doc = json.loads(JsonFormatter("gh200-a").format(rec))
    assert doc["host"] == "gh200-a" and doc["level"] == "WARNING" and doc["message"] == "got x from b"
    assert doc["peer"] == "b" and doc["item"] == "model/x" and "digest" not in doc and doc["time"].endswith("Z")
    with pytest.raises(TypeError):
        about(host="x")


def test_grpc_peer_gone_noise_is_one_debug_line_and_other_grpc_errors_pass():
    from grpc._cython.cygrpc import ExecuteBatchError

    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup("h1", stream=out)
        grpc_log = logging.getLogger(GRPC_LOGGER)
        for verbose in (False, True):
            root.setLevel(logging.DEBUG if verbose else logging.INFO)
            try:
                raise ExecuteBatchError('Failed "execute_batch": (<grpc._cython.cygrpc.SendMessageOperation>,)')
            except ExecuteBatchError:
                grpc_log.exception(
                    "ExecuteBatchError raised in core by servicer method [%s]", "/ringmesh.v1.Peer/Gossip"
                )
            try:
                raise ValueError("a real fault")
            except ValueError:
                grpc_log.exception(
                    "Unexpected [%s] raised by servicer method [%s]", "ValueError", "/ringmesh.v1.Peer/Sync"
                )
        lines = out.getvalue()
        assert "ExecuteBatchError raised" not in lines and "cygrpc.ExecuteBatchError:" not in lines, lines
        assert lines.count("Traceback") == 2, lines
        assert lines.count("ERROR h1 grpc._cython.cygrpc: Unexpected [ValueError]") == 2
        assert (
            lines.count(
                "DEBUG h1 grpc._cython.cygrpc: the caller went away before the answer to "
                "[/ringmesh.v1.Peer/Gossip] was sent"
            )
            == 1
        )  # shown only at DEBUG (--verbose)
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])


def test_lag_is_what_an_origin_reported_that_we_lack_and_for_how_long():
    m = Manifest("me", 1)
    m.load("o", OriginState(5, max_counter=10))
    t = Telemetry()
    t.reported("o", 5, 10, m, now=100.0)  # held already: nothing to wait for
    assert t.lag("o", m, 100.0) == (0, 0.0)
    t.reported("o", 5, 12, m, now=100.0)
    t.reported("o", 5, 15, m, now=101.0)
    assert t.lag("o", m, 103.0) == (5, 3.0)
    m.origins["o"].max_counter = 12  # the first report is met
    t.sample(m, 104.0)
    assert t.lag("o", m, 104.0) == (3, 3.0) and t.catch_up["o"] == [1, 4.0]
    m.origins["o"].max_counter = 15
    t.sample(m, 105.0)
    assert t.lag("o", m, 105.0) == (0, 0.0) and t.catch_up["o"] == [2, 8.0]
    t.reported("o", 6, 1, m, now=106.0)  # a new life: every one of its changes is missing
    assert t.lag("o", m, 107.0) == (1, 1.0)


def test_metrics_listen_setting():
    assert listen_setting(None, env={}) is None
    assert listen_setting("127.0.0.1:9464", env={}) == "127.0.0.1:9464"
    assert listen_setting("127.0.0.1:9464", env={"RINGMESH_METRICS_LISTEN": "0.0.0.0:0"}) == "0.0.0.0:0"
    assert listen_setting("127.0.0.1:9464", "[::1]:9000", env={}) == "[::1]:9000"
    with pytest.raises(ConfigError, match="--metrics-listen"):
        listen_setting(None, "9464", env={})


def test_data_dir_lock_names_its_holder(tmp_path):
    first = DataDirLock(tmp_path)
    first.acquire()
    assert holder(tmp_path) == os.getpid()
    with pytest.raises(DataDirBusy, match=f"pid {os.getpid()} holds"):
        DataDirLock(tmp_path).acquire()
    first.release()
    assert holder(tmp_path) is None
    (tmp_path / "lock").write_text("999999\n")  # a dead daemon's pid: no obstacle
    again = DataDirLock(tmp_path)
    again.acquire()
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    again.release()
