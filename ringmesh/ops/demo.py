"""`ringmesh demo`: the whole job on real peers (loopback), in under a minute.

Six `ringmesh serve` processes in the shape of the operators' file: two training hosts, three
self-play hosts (one of them a spot host), a coordinator. Each self-play host writes games
continuously into a self-play database in the operators' schema, which its daemon watches
(`ringmesh.watch_games`, as in production). Then, while the games flow:

1. the spot host is SIGKILLed mid-stream and replaced by a fresh one (a new, empty disk);
2. a model is promoted (`put --broadcast`) and waited for on every host (`put --wait`);
3. the leader is SIGKILLed; the others elect another; the old one comes back.

At the end every check must hold, or the exit status is 1: no game lost (every game of a host
alive at the end, and every game the spot host had reported durable before it died, is in both
training hosts' databases, once), the model byte-identical everywhere, one leader all agree on,
every daemon stopped cleanly. The summary gives the figures: games produced / durable / on every
training host / lost, publish -> durable and -> every training host p50/p99, the model's delivery
time, the failover time. `--json`: the same as one JSON document.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ringmesh.node.files.store import hash_file
from ringmesh.ops import delivery
from ringmesh.ops.demoview import Screen, live_lines, summary_lines
from ringmesh.ops.localcluster import LocalCluster
from ringmesh.ops.progress import Progress
from ringmesh.ops.selfplay import FixtureWriter

MiB = 1 << 20
CONFIG_KEY = "hex8_2p"
ROLES = {
    "node1": "training",
    "node2": "training",
    "node3": "selfplay",
    "node4": "selfplay",
    "node5": "selfplay",
    "node6": "coordinator",
}
SPOT = "node5"
TRAINING = ("node1", "node2")
SELFPLAY = ("node3", "node4", "node5")
GAME_EVERY = 0.25  # seconds between games on each self-play host
MOVES = (20, 40)


class Writer(threading.Thread):
    """A self-play process on one host: completed games into its database, each with the time
    it was committed. Stops when told, or when its host dies (`vanish`)."""

    def __init__(self, host: str, db: Path, seed: int) -> None:
        super().__init__(name=f"selfplay-{host}", daemon=True)
        self.host, self.db, self.seed = host, db, seed
        self.done: list[tuple[str, float]] = []  # (game_id, completed at, wall clock)
        self.stop_event = threading.Event()

    def run(self) -> None:
        self.db.parent.mkdir(parents=True, exist_ok=True)
        w = FixtureWriter(self.db, config_key=CONFIG_KEY, seed=self.seed)
        try:
            while not self.stop_event.is_set():
                g = w.start()
                w.play(g, w.rng.randint(*MOVES))
                w.finish(g)
                self.done.append((g.game_id, time.time()))
                self.stop_event.wait(GAME_EVERY)
        finally:
            w.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


def training_db(c: LocalCluster, host: str) -> Path:
    return c.nodes[host].data_dir / "games" / f"{CONFIG_KEY}.db"


class Arrivals:
    """When each game id first appears in each training host's database (polled)."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.first: dict[str, dict[str, float]] = {h: {} for h in TRAINING}
        self.rows: dict[str, int] = {h: 0 for h in TRAINING}

    def poll(self) -> None:
        now = time.time()
        for h in TRAINING:
            db = training_db(self.c, h)
            if not db.exists():
                continue
            try:
                con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                try:
                    ids = [g for (g,) in con.execute("SELECT game_id FROM games")]
                finally:
                    con.close()
            except sqlite3.Error:
                continue  # being created or written: next poll
            self.rows[h] = len(ids)
            seen = self.first[h]
            for g in ids:
                seen.setdefault(g, now)

    def everywhere(self, g: str) -> float | None:
        times = [self.first[h].get(g) for h in TRAINING]
        return None if None in times else max(t for t in times if t is not None)

    def somewhere(self, g: str) -> float | None:
        times = [t for h in TRAINING if (t := self.first[h].get(g)) is not None]
        return min(times) if times else None


class Demo:
    def __init__(self, root: Path, file_size: int, as_json: bool) -> None:
        self.root, self.file_size = root, file_size
        self.c = LocalCluster(
            root / "cluster",
            6,
            gossip_interval=0.25,
            roles=ROLES,
            routing={"ephemeral_hosts": [SPOT]},
            own={"watch_games": [str(root / "selfplay" / "{node}" / "*.db")], "watch_interval_seconds": 0.3},
        )
        self.screen = Screen(enabled=not as_json)
        self.say = (lambda text: None) if as_json else self.screen.say
        self.t0 = time.monotonic()
        self.phase = "starting"
        self.writers: dict[str, Writer] = {}
        self.retired: list[Writer] = []  # the spot host's writer of its first life
        self.arrivals = Arrivals(self.c)
        self.down: set[str] = set()
        self.s: dict[str, Any] = {"ok": False, "checks": {}}
        self._lives = {n: 1 for n in ROLES}
        self.delivery_note = ""

    # -- the live view ---------------------------------------------------------------------

    def tick(self) -> None:
        self.arrivals.poll()
        st = {n: self.c.nodes[n].query("status") if n not in self.down else None for n in ROLES}
        self.screen.show(live_lines(self, st))

    def wait(self, cond, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.tick()
            got = cond()
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout:.0f} s")
            time.sleep(0.1)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # -- the run ---------------------------------------------------------------------------

    def start_writer(self, host: str) -> None:
        life = self._lives[host]
        w = Writer(host, self.root / "selfplay" / host / f"selfplay_{CONFIG_KEY}.db", seed=100 * life + int(host[4:]))
        self.writers[host] = w
        w.start()

    def leader_view(self) -> tuple[str | None, set[str | None]]:
        views = {n: (self.c.nodes[n].query("status") or {}).get("leader") for n in ROLES if n not in self.down}
        leaders = set(views.values())
        return (next(iter(leaders)) if len(leaders) == 1 else None), leaders

    def run(self) -> None:
        c = self.c
        self.say(f"starting 6 peers on loopback: 2 training, 3 self-play (node5 a spot host), a coordinator ({c.root})")
        c.start_all()
        self.s["startup_s"] = round(self.elapsed(), 2)
        self.phase = "electing a leader"
        self.wait(lambda: self.leader_view()[0], 30, "one leader all agree on")
        self.phase = "self-play: games flowing"
        self.say("self-play hosts write games into their databases; their daemons watch them")
        for h in SELFPLAY:
            self.start_writer(h)
        self.wait(lambda: any(self.arrivals.first[h] for h in TRAINING), 30, "the first game on a training host")
        self.hold(4.0)
        self.kill_spot()
        self.hold(3.0)
        self.promote()
        self.hold(2.0)
        self.fail_over()
        self.hold(3.0)
        self.phase = "settling: the last games"
        for w in self.writers.values():
            w.stop()
        self.settle()
        self.check_model()
        self.phase = "stopping"
        self.tick()
        codes = c.stop_all()
        self.s["exit_codes"] = codes
        self.check("every daemon stopped cleanly (exit 0)", all(code == 0 for code in codes.values()), str(codes))
        self.s["ok"] = all(c["ok"] for c in self.s["checks"].values())
        self.s["seconds"] = round(self.elapsed(), 1)

    def hold(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick()
            time.sleep(0.1)

    def kill_spot(self) -> None:
        c = self.c
        st = c.nodes[SPOT].query("status") or {}
        durable = (st.get("games") or {}).get("durable_through", {}).get(CONFIG_KEY, 0)
        stream = next(
            (
                s
                for s in (st.get("games") or {}).get("streams", {})
                if s.endswith("/" + CONFIG_KEY) and s.startswith(SPOT)
            ),
            None,
        )
        self.phase = f"spot host {SPOT} SIGKILLed"
        self.say(f"SIGKILL the spot host {SPOT} mid-stream ({durable} of its games durable); replaced by a fresh host")
        c.signal(SPOT, signal.SIGKILL)
        self.down.add(SPOT)
        w = self.writers.pop(SPOT)
        w.stop()  # the host vanished: its self-play process with it
        self.retired.append(w)
        self.s["spot"] = {
            "durable_reported": durable,
            "stream": stream,
            "games_written": len(w.done),
            "killed_at": time.time(),
        }
        shutil.rmtree(c.nodes[SPOT].data_dir, ignore_errors=True)  # a new instance: an empty disk
        shutil.rmtree(self.root / "selfplay" / SPOT, ignore_errors=True)
        self._lives[SPOT] += 1
        c.start(SPOT)
        c.wait_ready(SPOT)
        self.down.discard(SPOT)
        self.start_writer(SPOT)

    def promote(self) -> None:
        model = self.root / "canonical_hex8_2p.pth"
        with open(model, "wb") as f:
            left = self.file_size
            while left:
                n = min(left, 4 * MiB)
                f.write(os.urandom(n))
                left -= n
        self.phase = "promoting a model: put --broadcast --wait"
        self.say(f"node1: ringmesh put {model.name} --type model --broadcast --wait ({self.file_size / MiB:.0f} MiB)")
        with self.c.nodes["node1"].client() as cl:
            t = time.monotonic()
            put = cl.put(model, "model", broadcast=True)
            self.s["model"] = {
                "digest": put["digest"],
                "size_bytes": self.file_size,
                "chunk_size": put["chunk_size_bytes"],
            }
            self.model_name = f"model/{model.name}"
            bar = _Ticking(self)
            out = delivery.wait_delivered(cl, self.model_name, put["digest"], broadcast=True, timeout=60, bar=bar)
        self.s["model"]["delivered_s"] = round(time.monotonic() - t, 2)
        self.s["model"]["hosts"] = out.hosts
        self.check("the model on every host (put --broadcast --wait)", out.done, json.dumps(out.missing))

    def fail_over(self) -> None:
        leader, _ = self.leader_view()
        if leader is None:
            leader = self.wait(lambda: self.leader_view()[0], 20, "one leader before the failover")
        self.phase = f"leader {leader} SIGKILLed"
        self.say(f"SIGKILL the leader {leader}")
        t = time.monotonic()
        self.c.signal(leader, signal.SIGKILL)
        self.down.add(leader)

        def new_leader():
            one, _ = self.leader_view()
            return one if one not in (None, leader) else None

        successor = self.wait(new_leader, 30, "a new leader all survivors agree on")
        self.s["failover"] = {"killed": leader, "successor": successor, "seconds": round(time.monotonic() - t, 2)}
        self.say(f"{successor} leads after {self.s['failover']['seconds']:.2f} s; {leader} restarts (same disk)")
        self.c.start(leader)
        self.c.wait_ready(leader)
        self.down.discard(leader)
        self.phase = f"{leader} back"
        one = self.wait(lambda: (v := self.leader_view())[0] and len(v[1]) == 1 and v[0], 30, "one leader after")
        self.check("one leader after the failover, all agree", bool(one), str(self.leader_view()[1]))

    # -- the end ---------------------------------------------------------------------------

    def settle(self) -> None:
        alive = [g for w in self.writers.values() for g, _ in w.done]
        try:
            self.wait(lambda: all(self.arrivals.everywhere(g) for g in alive), 45, "every game on every training host")
        except TimeoutError:
            pass  # the check below says which
        spot = self.s["spot"]
        first_life = [g for g, _ in self.retired[0].done]
        saved = [g for g in first_life if self.arrivals.everywhere(g)]
        # the durable prefix the spot host reported must be on both training hosts: their marks
        marks = []
        for h in TRAINING:
            streams = ((self.c.nodes[h].query("status") or {}).get("games") or {}).get("streams", {})
            marks.append(streams.get(spot["stream"] or "", 0))
        missing_alive = [g for g in alive if not self.arrivals.everywhere(g)]
        lost_durable = max(0, spot["durable_reported"] - min(marks)) if spot["stream"] else 0
        produced = len(alive) + len(first_life)
        on_every = len(alive) - len(missing_alive) + len(saved)
        lat_any, lat_all = [], []
        for w in [*self.writers.values(), *self.retired]:
            for g, t in w.done:
                if (a := self.arrivals.somewhere(g)) is not None:
                    lat_any.append(max(0.0, a - t))
                if (b := self.arrivals.everywhere(g)) is not None:
                    lat_all.append(max(0.0, b - t))
        self.s["games"] = {
            "produced": produced,
            "on_every_training_host": on_every,
            "lost": len(missing_alive) + lost_durable,
            "spot_first_life": {
                "written": len(first_life),
                "saved": len(saved),
                "died_with_the_host": len(first_life) - len(saved),
                "durable_reported": spot["durable_reported"],
                "training_marks": marks,
            },
            "publish_to_durable_s": _percentiles(lat_any),
            "publish_to_every_training_host_s": _percentiles(lat_all),
            "rows": dict(self.arrivals.rows),
        }
        self.check("no game lost", self.s["games"]["lost"] == 0, f"{missing_alive[:3]} ...; spot marks {marks}")
        once = all(self.arrivals.rows[h] == len(self.arrivals.first[h]) for h in TRAINING)
        self.check("each game once in each training database", once, json.dumps(self.arrivals.rows))

    def check_model(self) -> None:
        m = self.s["model"]
        bad = []
        for n in m.get("hosts", []):
            path = self.c.nodes[n].data_dir / "files" / "model" / "canonical_hex8_2p.pth"
            if not path.exists() or hash_file(path, m["chunk_size"]) != m["digest"]:
                bad.append(n)
        self.check("the model byte-identical on every host it is for (xxh3-128)", not bad, f"differs on {bad}")

    def check(self, what: str, ok: bool, detail: str = "") -> None:
        self.s["checks"][what] = {"ok": ok, "detail": "" if ok else detail}


class _Ticking(Progress):
    """The delivery wait's progress, shown in the live view instead of a bar of its own."""

    def __init__(self, demo: Demo) -> None:
        super().__init__("model", None, enabled=False)
        self.demo = demo

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        super().update(done, note, force)
        self.demo.delivery_note = note
        self.demo.tick()


def _percentiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"p50": None, "p99": None, "n": 0}
    xs = sorted(xs)
    return {"p50": round(xs[len(xs) // 2], 3), "p99": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))], 3), "n": len(xs)}


def run_demo(file_size: int = 16 * MiB, as_json: bool = False, keep: bool = False) -> int:
    root = Path(tempfile.mkdtemp(prefix="ringmesh-demo-"))
    demo = Demo(root, file_size, as_json)
    try:
        demo.run()
    except (TimeoutError, RuntimeError, OSError) as e:
        demo.s["error"] = str(e)
        for name, nd in demo.c.nodes.items():
            print(f"--- {name} log ---\n{nd.log_tail()}", file=sys.stderr)
    finally:
        for w in demo.writers.values():
            w.stop()
        demo.c.stop_all()
        demo.s["seconds"] = round(demo.elapsed(), 1)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    if as_json:
        print(json.dumps(demo.s, sort_keys=True, default=list))
    else:
        demo.screen.done()
        print("\n".join(summary_lines(demo.s, root if keep else None)))
    return 0 if demo.s["ok"] else 1
