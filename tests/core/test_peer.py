"""The Peer state machine, driven in memory: every Send is handed to the other peer at once
(like h11's ConnectionPair), timers are fired by the test, nothing sleeps."""

from __future__ import annotations

import random
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringmesh.core import catalog, keys, streams
from ringmesh.core.errors import LocalProtocolError
from ringmesh.core.manifest import MIN_BUDGET, OriginDigest
from ringmesh.core.messages import (
    CancelTransfer,
    Envelope,
    FetchRequested,
    FileDamaged,
    FilePublished,
    FileStored,
    GamesCorrupt,
    GamesLost,
    GamesRead,
    GamesStored,
    ItemKey,
    MessageReceived,
    Persist,
    PullGames,
    ReadGames,
    Send,
    SetTimer,
    StartTransfer,
    StoreGames,
    Syn,
    SynAck,
    Timer,
    TimerFired,
    TransferFailed,
)
from ringmesh.core.peer import Peer, PeerConfig

ITEM = ItemKey("model", "canonical_hex8_2p.pth")
D1 = "11111111111111111111111111111111"
D2 = "22222222222222222222222222222222"
CS = 4 << 20


class Mesh:
    """Peers wired in memory. `drop` decides, per Send, whether it is lost (default: never)."""

    def __init__(self, *peers: Peer, drop=lambda send: False) -> None:
        self.peers = {p.me: p for p in peers}
        self.now = 0.0
        self.effects: dict[str, list] = {p.me: [] for p in peers}
        self.drop = drop
        self.sent = 0

    def feed(self, name: str, effects) -> list:
        """Interpret effects: deliver Sends (and what they cause) now; keep the rest."""
        mine = []
        queue = deque((name, e) for e in effects)
        while queue:
            src, e = queue.popleft()
            self.sent += isinstance(e, Send)
            assert self.sent < 100_000, "message storm"
            if isinstance(e, Send):
                assert e.envelope.sender == src and e.to != src
                if e.to in self.peers and not self.drop(e):
                    out = self.peers[e.to].handle(MessageReceived(envelope=e.envelope), self.now)
                    queue.extend((e.to, x) for x in out)
            else:
                self.effects[src].append(e)
                if src == name:
                    mine.append(e)
        return mine

    def start(self) -> None:
        for name, p in self.peers.items():
            self.feed(name, p.start(self.now))

    def tick(self, dt: float = 1.0, only: str | None = None) -> None:
        self.now += dt
        for name, p in self.peers.items():
            if only in (None, name):
                self.feed(name, p.handle(TimerFired(name=Timer.GOSSIP), self.now))

    def event(self, name: str, ev) -> list:
        return self.feed(name, self.peers[name].handle(ev, self.now))

    def of(self, name: str, kind) -> list:
        return [e for e in self.effects[name] if isinstance(e, kind)]


def peer(name: str, seeds=(), seed: int = 0, incarnation: int = 1, **config) -> Peer:
    return Peer(
        name,
        incarnation=incarnation,
        rng=random.Random(seed),
        seeds=seeds,
        node_record={"addr": f"{name}:7070", "role": "training"},
        config=PeerConfig(**config),
    )


def pair(**config) -> Mesh:
    m = Mesh(peer("a", ["b"], 1, **config), peer("b", ["a"], 2, **config))
    m.start()
    return m


def published(digest: str = D1) -> FilePublished:
    return FilePublished(item=ITEM, digest=digest, size=10 << 20, chunk_size=CS, attrs={"elo": "1500"})


# -- gossip -------------------------------------------------------------------------------------------


def upserted_keys(effects) -> list[str]:
    return [f.key for e in effects if isinstance(e, Persist) for ch in e.changes for f in ch.upserts]


def test_start_writes_the_node_record_and_sets_the_gossip_timer():
    p = peer("a")
    out = p.start(5.0)
    assert keys.NODE in upserted_keys(out)
    (timer,) = [e for e in out if isinstance(e, SetTimer) and e.name == Timer.GOSSIP]
    assert 5.0 <= timer.at <= 6.0
    assert catalog.node_record(p.manifest, "a") == {"addr": "a:7070", "role": "training"}
    assert keys.NODE not in upserted_keys(p.start(6.0))  # same record: nothing to write


def test_recover_sets_every_periodic_timer_again_and_persists_our_facts_whole():
    p = Peer(
        "a",
        incarnation=1,
        rng=random.Random(0),
        seeds=["b", "c"],
        voters=["a", "b", "c"],
        node_record={"addr": "a:7070", "role": "training"},
    )
    p.start(0.0)
    out = p.recover(10.0)
    timers = {e.name: e.at for e in out if isinstance(e, SetTimer)}
    assert set(timers) >= {Timer.GOSSIP, "probe", "election"} and all(10.0 <= at <= 11.0 for at in timers.values())
    (persist,) = [e for e in out if isinstance(e, Persist)]
    (snap,) = persist.changes
    assert snap.origin == "a" and snap.reset and {f.key for f in snap.upserts} == set(p.manifest.own.facts)


def test_an_ephemeral_host_with_backup_schedules_arms_and_rearms_the_retention_and_backup_timers():
    from ringmesh.core.messages import Timer
    from ringmesh.core.peerconfig import PeerConfig

    RETENTION, BACKUP = Timer.RETENTION, Timer.BACKUP

    config = PeerConfig(retention_seconds=60.0, backup_schedules=(None, "@every 30s"))
    p = Peer("a", incarnation=1, rng=random.Random(0), config=config, node_record={"ephemeral": True})
    timers = {e.name: e.at for e in p.start(0.0) if isinstance(e, SetTimer)}
    assert timers[RETENTION] == 5.0 and timers[BACKUP] == 30.0
    timers = {e.name: e.at for e in p.recover(10.0) if isinstance(e, SetTimer)}
    assert timers[RETENTION] == 15.0 and timers[BACKUP] == 30.0
    out = p.handle(TimerFired(name=BACKUP), 30.0)  # not the leader: the slot passes, the next is set
    assert [(type(e).__name__, e.at) for e in out] == [("SetTimer", 60.0)]
    persistent = Peer("b", incarnation=1, rng=random.Random(0), config=config, node_record={"ephemeral": False})
    assert RETENTION not in {e.name for e in persistent.start(0.0) if isinstance(e, SetTimer)}


def test_games_held_back_are_published_and_withdrawn():
    from ringmesh.core.messages import GamesHeld

    p = peer("a")
    p.start(0.0)
    out = p.handle(GamesHeld(config_key="hex8_2p", held={"o.1": (9, 4)}), 1.0)
    assert catalog.fact_value(p.manifest, "a", "gh/hex8_2p") == {"s": {"o.1": [4, 9]}} and out
    assert p.handle(GamesHeld(config_key="hex8_2p", held={"o.1": (4, 9)}), 2.0) == []  # unchanged: nothing written
    p.handle(GamesHeld(config_key="hex8_2p", held={}), 3.0)
    assert p.manifest.get("a", "gh/hex8_2p") is None


def test_a_nat_hosts_relays_reach_its_peers_through_its_node_record():
    from ringmesh.core.messages import LinksChanged

    m = pair()
    m.tick()
    a = m.peers["a"]
    assert m.feed("a", a.handle(LinksChanged(relays=("r1", "r2")), m.now)) is not None
    assert a.handle(LinksChanged(relays=("r1", "r2")), m.now) == [], "unchanged: nothing written"
    for _ in range(2):
        m.tick()
    assert catalog.relays_of(m.peers["b"].manifest, "a") == ["r1", "r2"]
    assert catalog.node_record(m.peers["b"].manifest, "a")["role"] == "training", "the rest of the record kept"
    m.feed("a", a.handle(LinksChanged(relays=()), m.now))
    m.tick()
    assert catalog.relays_of(m.peers["b"].manifest, "a") == []


def test_two_peers_converge_after_a_few_rounds():
    m = pair()
    for _ in range(3):
        m.tick()
    a, b = m.peers["a"].manifest, m.peers["b"].manifest
    assert a.content() == b.content()
    assert catalog.node_record(b, "a") == {"addr": "a:7070", "role": "training"}
    assert catalog.node_record(a, "b") == {"addr": "b:7070", "role": "training"}
    # every manifest change learnt from gossip was handed to the shell to persist
    assert any(ch.origin == "a" for p in m.of("b", Persist) for ch in p.changes)


def test_a_timer_round_sends_syn_to_known_peers_and_rearms():
    p = peer("a", ["b", "c", "d", "e"], fanout=2)
    p.start(0.0)
    out = p.handle(TimerFired(name=Timer.GOSSIP), 1.0)
    sends = [e for e in out if isinstance(e, Send) and isinstance(e.envelope.body, Syn)]
    assert 2 <= len(sends) <= 3 and len({s.to for s in sends}) == len(sends)  # fanout (+ maybe one presumed dead)
    assert all(s.to in "bcde" for s in sends)
    (timer,) = [e for e in out if isinstance(e, SetTimer) and e.name == Timer.GOSSIP]
    assert 1.9 <= timer.at <= 2.1
    with pytest.raises(LocalProtocolError, match="unknown str: 'other'"):
        p.handle(TimerFired(name="other"), 1.0)


def test_the_same_seed_gives_the_same_run():
    def run():
        m = pair()
        m.event("a", published())
        for _ in range(4):
            m.tick(0.7)
        return m.effects

    assert run() == run()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(3, 4),
    st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=12),
    st.lists(st.booleans(), max_size=200),
    st.integers(0, 2**32),
)
def test_peers_converge_despite_lost_messages(n, publishes, losses, seed):
    """Hypothesis decides which Sends are lost while peers publish and gossip; then, with no
    more losses, a few rounds bring every manifest to the same content."""
    names = ["a", "b", "c", "d"][:n]
    lost = iter(losses)
    mesh = Mesh(*(peer(x, names, seed + i) for i, x in enumerate(names)), drop=lambda s: next(lost, False))
    mesh.start()
    for i, (who, new) in enumerate(publishes):
        mesh.event(names[who % n], published(D2 if new else D1))
        mesh.tick(only=names[i % n])
    mesh.drop = lambda s: False
    for _ in range(6):
        mesh.tick()
    contents = [p.manifest.content() for p in mesh.peers.values()]
    assert all(c == contents[0] for c in contents)


# -- incarnations -----------------------------------------------------------------------------------


def syn_from(sender: str, digest) -> MessageReceived:
    return MessageReceived(envelope=Envelope(sender=sender, hlc=0, body=Syn(digest=digest)))


def test_hearing_of_an_older_higher_incarnation_of_ourselves_reincarnates_above_it():
    p = peer("a", ["x"])
    p.start(0.0)
    out = p.handle(syn_from("x", {"a": OriginDigest(5, 40, 3, 0)}), 1.0)
    (persist,) = [e for e in out if isinstance(e, Persist)]
    (ch,) = persist.changes
    assert ch.reset and ch.incarnation == 6 and ch.origin == "a"
    assert p.manifest.own.incarnation == 6
    assert catalog.node_record(p.manifest, "a") is not None  # live facts carried over
    (reply,) = [e for e in out if isinstance(e, Send)]
    assert reply.to == "x" and isinstance(reply.envelope.body, SynAck)
    assert reply.envelope.body.digest["a"].incarnation == 6
    (od,) = [od for od in reply.envelope.body.delta.origins if od.origin == "a"]
    assert od.reset and od.incarnation == 6


def test_hearing_of_our_own_incarnation_with_more_facts_than_we_have_reincarnates():
    p = peer("a", ["x"])
    p.start(0.0)
    p.handle(syn_from("x", {"a": OriginDigest(1, 0, p.manifest.own.max_counter + 1, 0)}), 1.0)
    assert p.manifest.own.incarnation == 2


@pytest.mark.parametrize("inc, hb, behind", [(1, 0, 0), (1, 99, 1), (0, 0, -50)])
def test_an_older_or_equal_view_of_ourselves_changes_nothing(inc, hb, behind):
    p = peer("a", ["x"])
    p.start(0.0)
    seen = OriginDigest(inc, hb, p.manifest.own.max_counter - behind, 0)
    out = p.handle(syn_from("x", {"a": seen}), 1.0)
    assert not [e for e in out if isinstance(e, Persist)]
    assert p.manifest.own.incarnation == 1


def test_a_host_back_with_a_wiped_disk_takes_a_new_incarnation_and_its_old_facts_vanish():
    m = pair()
    m.event("a", published())
    for _ in range(3):
        m.tick()
    assert catalog.newest_versions(m.peers["b"].manifest)[ITEM].origin == "a"
    # a comes back with nothing: same name, incarnation 1 again, an empty manifest
    m.peers["a"] = peer("a", ["b"], 7)
    m.effects["a"] = []
    m.feed("a", m.peers["a"].start(m.now))
    for _ in range(4):
        m.tick()
    a, b = m.peers["a"].manifest, m.peers["b"].manifest
    assert a.own.incarnation == 2 and b.origins["a"].incarnation == 2
    assert ITEM not in catalog.newest_versions(b)  # the old life's version is gone
    assert catalog.node_record(b, "a") is not None  # the new life's record is there
    assert a.content() == b.content()


# -- files ------------------------------------------------------------------------------------------


def test_a_published_file_is_pulled_by_the_other_peer_from_the_publisher():
    m = pair()
    out = m.event("a", published())
    assert [e for e in out if isinstance(e, Persist)]
    assert catalog.holdings(m.peers["a"].manifest, "a") == {ITEM: D1}
    for _ in range(3):
        m.tick()
    (start,) = m.of("b", StartTransfer)
    assert start.sources == ("a",)
    v = start.version
    assert (v.item, v.digest, v.size, v.chunk_size, v.origin, dict(v.attrs)) == (
        ITEM,
        D1,
        10 << 20,
        CS,
        "a",
        {"elo": "1500"},
    )
    assert not m.of("a", StartTransfer)  # the publisher holds it
    m.tick()
    assert len(m.of("b", StartTransfer)) == 1  # one transfer at a time per version


def test_a_failed_transfer_backs_off_before_it_is_retried():
    m = pair(retry_base=2.0, retry_cap=10.0)
    m.event("a", published())
    for _ in range(3):
        m.tick()
    assert len(m.of("b", StartTransfer)) == 1
    out = m.event("b", TransferFailed(item=ITEM, digest=D1, reason="peer went away"))
    assert not [e for e in out if isinstance(e, StartTransfer)]  # no immediate restart
    m.tick(0.9)  # < 0.5 * retry_base
    m.tick(0.05)
    assert len(m.of("b", StartTransfer)) == 1
    m.tick(1.2)  # > retry_base since the failure
    assert len(m.of("b", StartTransfer)) == 2
    # failures in a row back off exponentially (with jitter in [0.5, 1]), up to the cap
    step = 0.05
    for failures in range(2, 8):
        m.event("b", TransferFailed(item=ITEM, digest=D1, reason="again"))
        failed_at, started = m.now, len(m.of("b", StartTransfer))
        while len(m.of("b", StartTransfer)) == started:
            m.tick(step, only="b")
            assert m.now - failed_at < 11.0, "never retried"
        nominal = min(10.0, 2.0 * 2 ** (failures - 1))
        assert 0.5 * nominal <= m.now - failed_at <= nominal + step, (failures, m.now - failed_at)


def test_a_stored_file_is_published_as_a_holding_and_not_pulled_again():
    m = pair()
    m.event("a", published())
    for _ in range(3):
        m.tick()
    out = m.event("b", FileStored(item=ITEM, digest=D1))
    (persist,) = [e for e in out if isinstance(e, Persist)]
    facts = {f.key: f for ch in persist.changes for f in ch.upserts}
    assert sorted(facts) == [catalog.holding_key(ITEM), catalog.pulling_key(ITEM)]
    assert facts[catalog.pulling_key(ITEM)].tombstone  # no longer pulling it
    b = m.peers["b"]
    assert catalog.holders(b.manifest, keys.PULLING) == {}
    assert catalog.holdings(b.manifest, "b") == {ITEM: D1}
    assert b.wanted() == []
    for _ in range(3):
        m.tick()
    assert catalog.holders(m.peers["a"].manifest)[(ITEM, D1)] == ["a", "b"]
    assert len(m.of("b", StartTransfer)) == 1
    assert m.event("b", FileStored(item=ITEM, digest=D1)) == []  # already announced


def test_a_newer_version_cancels_the_transfer_of_the_older_one():
    m = pair()
    m.event("a", published(D1))
    for _ in range(3):
        m.tick()
    m.tick()
    m.event("a", published(D2))
    for _ in range(3):
        m.tick()
    assert m.of("b", CancelTransfer) == [CancelTransfer(item=ITEM, digest=D1)]
    assert [s.version.digest for s in m.of("b", StartTransfer)] == [D1, D2]


def test_transfers_are_limited():
    m = pair(max_transfers=2)
    for i in range(4):
        m.event("a", FilePublished(item=ItemKey("npz", f"f{i}.npz"), digest=D1, size=1, chunk_size=CS))
    for _ in range(3):
        m.tick()
    assert len(m.of("b", StartTransfer)) == 2
    m.event("b", FileStored(item=m.of("b", StartTransfer)[0].version.item, digest=D1))
    assert len(m.of("b", StartTransfer)) == 3  # a slot freed: the next one starts


def test_publishing_a_bad_name_is_a_local_error():
    p = peer("a")
    with pytest.raises(LocalProtocolError):
        p.handle(FilePublished(item=ItemKey("model", "../etc/passwd"), digest=D1, size=1, chunk_size=CS), 0.0)


@pytest.mark.parametrize(
    "config",
    [dict(gossip_interval=0), dict(fanout=0), dict(delta_budget=MIN_BUDGET - 1), dict(max_transfers=0)],
)
def test_bad_config_is_a_local_error(config):
    with pytest.raises(LocalProtocolError):
        PeerConfig(**config)
    PeerConfig(delta_budget=MIN_BUDGET)


def test_an_unknown_event_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        peer("a").handle(object(), 0.0)  # type: ignore[arg-type]


def test_a_pull_is_announced_while_it_runs_and_retracted_when_it_fails():
    m = pair()
    m.event("a", published())
    for _ in range(3):
        m.tick()
    assert m.of("b", StartTransfer)
    b = m.peers["b"]
    assert catalog.holders(b.manifest, keys.PULLING) == {(ITEM, D1): ["b"]}
    for _ in range(3):
        m.tick()
    # the others learn it by gossip, so that they can ask b for the chunks it verified
    assert catalog.holders(m.peers["a"].manifest, keys.PULLING) == {(ITEM, D1): ["b"]}
    m.event("b", TransferFailed(item=ITEM, digest=D1, reason="source gone"))
    assert catalog.holders(b.manifest, keys.PULLING) == {}


# -- a copy that went bad ------------------------------------------------------------------------


def trio(**config) -> Mesh:
    m = Mesh(*(peer(n, [o for o in "abc" if o != n], i, **config) for i, n in enumerate("abc")))
    m.start()
    return m


def held_by_three(**config) -> Mesh:
    """a publishes D1 of ITEM; b and c store it; everyone knows."""
    m = trio(**config)
    m.event("a", published())
    for _ in range(3):
        m.tick()
    for n in "bc":
        m.event(n, FileStored(item=ITEM, digest=D1))
    for _ in range(3):
        m.tick()
    return m


def test_a_damaged_copy_is_no_longer_held_and_is_pulled_again_from_a_good_holder():
    m = held_by_three(min_copies=3)
    assert catalog.holders(m.peers["a"].manifest)[(ITEM, D1)] == ["a", "b", "c"]
    pulls_before = len(m.of("b", StartTransfer))
    out = m.event("b", FileDamaged(item=ITEM, digest=D1))
    written = [f for e in out if isinstance(e, Persist) for ch in e.changes for f in ch.upserts]
    assert [f.tombstone for f in written if f.key == catalog.holding_key(ITEM)] == [True]
    (start,) = [e for e in out if isinstance(e, StartTransfer)]  # at once: no back-off, no gossip round
    assert set(start.sources) == {"a", "c"} and "b" not in start.sources
    assert start.priority == "critical"  # two good copies left, three wanted
    assert len(m.of("b", StartTransfer)) == pulls_before + 1
    for _ in range(3):
        m.tick()
    assert catalog.holders(m.peers["a"].manifest)[(ITEM, D1)] == ["a", "c"]  # nobody asks b for it
    m.event("b", FileStored(item=ITEM, digest=D1))
    for _ in range(3):
        m.tick()
    assert catalog.holders(m.peers["c"].manifest)[(ITEM, D1)] == ["a", "b", "c"]
    assert m.peers["b"].repairing == set()


def test_a_repair_with_enough_good_copies_left_keeps_its_usual_class():
    m = held_by_three(min_copies=1)
    out = m.event("b", FileDamaged(item=ITEM, digest=D1))
    (start,) = [e for e in out if isinstance(e, StartTransfer)]
    assert start.priority == "normal"


def test_damage_to_a_version_we_do_not_hold_changes_nothing():
    m = trio()
    m.event("a", published())
    assert [e for e in m.event("c", FileDamaged(item=ITEM, digest=D2)) if isinstance(e, Persist)] == []


# -- ringmesh get ---------------------------------------------------------------------------------

NPZ = ItemKey("npz", "hex8_2p.npz")


def selfplay_pair() -> Mesh:
    a = peer("a", ["b"], 1)
    b = Peer(
        "b",
        incarnation=1,
        rng=random.Random(2),
        seeds=["a"],
        node_record={"addr": "b:7070", "role": "selfplay"},
        config=PeerConfig(),
    )
    m = Mesh(a, b)
    m.start()
    return m


def npz(digest: str) -> FilePublished:
    return FilePublished(item=NPZ, digest=digest, size=10 << 20, chunk_size=CS, attrs={})


def test_get_pulls_a_version_the_router_does_not_place_here_once():
    m = selfplay_pair()
    m.event("a", npz(D1))
    for _ in range(3):
        m.tick()
    assert m.of("b", StartTransfer) == []  # npz files go to training hosts
    out = m.event("b", FetchRequested(item=NPZ))
    (start,) = [e for e in out if isinstance(e, StartTransfer)]
    assert (start.version.item, start.version.digest, start.sources) == (NPZ, D1, ("a",))
    m.event("b", FileStored(item=NPZ, digest=D1))
    assert m.peers["b"].requested == set()
    m.event("a", npz(D2))  # a newer version is not pulled: the get was for one
    for _ in range(3):
        m.tick()
    assert [s.version.digest for s in m.of("b", StartTransfer)] == [D1]


def test_get_of_a_bad_name_is_a_local_error():
    m = selfplay_pair()
    with pytest.raises(LocalProtocolError):
        m.event("b", FetchRequested(item=ItemKey("npz", "../etc/passwd")))


# -- games that rotted -----------------------------------------------------------------------


class GameMesh(Mesh):
    """A Mesh whose peers have stream logs (`logs[node][stream] = {seq: payload}`) that carry
    out StoreGames, ReadGames and GamesLost at once, as the daemon does."""

    def __init__(self, *peers: Peer) -> None:
        super().__init__(*peers)
        self.logs: dict[str, dict[tuple[str, str], dict[int, bytes]]] = {p.me: {} for p in peers}
        self.lost: dict[str, dict[tuple[str, str], set[int]]] = {p.me: {} for p in peers}
        self.pulls: list[tuple[str, PullGames]] = []

    def hw(self, node: str, stream: tuple[str, str]) -> int:
        log, lost, q = self.logs[node].get(stream, {}), self.lost[node].get(stream, set()), 0
        while q + 1 in log or q + 1 in lost:
            q += 1
        return q

    def feed(self, name: str, effects) -> list:
        effects = list(effects)
        self.pulls += [
            (e.to, e.envelope.body) for e in effects if isinstance(e, Send) and isinstance(e.envelope.body, PullGames)
        ]
        return self._feed(name, effects)

    def _feed(self, name: str, effects) -> list:
        out = super().feed(name, effects)
        for node in list(self.peers):
            todo, self.effects[node] = self.effects[node], []
            for e in todo:
                stream = (getattr(e, "origin", ""), getattr(e, "config_key", ""))
                if isinstance(e, StoreGames):
                    self.logs[node].setdefault(stream, {}).update(e.games)
                    ev = GamesStored(
                        origin=e.origin,
                        config_key=e.config_key,
                        seqs=tuple(q for q, _ in e.games),
                        hw=self.hw(node, stream),
                        ack_to=e.ack_to,
                    )
                    self.feed(node, self.peers[node].handle(ev, self.now))
                elif isinstance(e, ReadGames):
                    log = self.logs[node].get(stream, {})
                    games = tuple((q, log[q]) for q in range(e.first, e.last + 1) if q in log)
                    ev2 = GamesRead(origin=e.origin, config_key=e.config_key, games=games, reply_to=e.reply_to)
                    self.feed(node, self.peers[node].handle(ev2, self.now))
                elif isinstance(e, GamesLost):
                    self.lost[node].setdefault(stream, set()).update(e.seqs)
                    ev3 = GamesStored(origin=e.origin, config_key=e.config_key, seqs=(), hw=self.hw(node, stream))
                    self.feed(node, self.peers[node].handle(ev3, self.now))
                else:
                    self.effects[node].append(e)
        return out

    def rot(self, node: str, stream: tuple[str, str], seqs) -> list:
        """`node`'s copies of `seqs` went bad and its shell found so."""
        for q in seqs:
            self.logs[node][stream].pop(q)
        ev = GamesCorrupt(origin=stream[0], config_key=stream[1], seqs=tuple(seqs), hw=self.hw(node, stream))
        return self.event(node, ev)


K8 = "hex8_2p"


def games_trio(**config) -> tuple[GameMesh, tuple[str, str]]:
    """a, b and c, each holding games 1..5 of a's stream."""
    m = GameMesh(*(peer(n, [o for o in "abc" if o != n], i, **config) for i, n in enumerate("abc")))
    m.start()
    for _ in range(3):
        m.tick()
    stream = (m.peers["a"].replication.origin, K8)
    games = tuple((q, f"game{q}".encode()) for q in range(1, 6))
    m.logs["a"][stream] = dict(games)
    m.event("a", GamesStored(origin=stream[0], config_key=K8, seqs=(1, 2, 3, 4, 5), hw=5, games=games))
    for _ in range(3):
        m.tick()
    assert all(m.hw(n, stream) == 5 for n in "abc")
    return m, stream


def mark_of(m: GameMesh, seen_by: str, holder: str, stream) -> int:
    return streams.marks(m.peers[seen_by].manifest).get(stream, {}).get(holder, 0)


def test_a_rotten_game_lowers_our_mark_and_is_pulled_again_from_a_good_holder():
    m, stream = games_trio()
    out = m.rot("b", stream, [3])
    assert mark_of(m, "b", "b", stream) == 2  # at once, in our own fact
    assert any(
        f.key == streams.hw_key(stream) for e in out if isinstance(e, Persist) for ch in e.changes for f in ch.upserts
    )
    for _ in range(2):
        m.tick()
    assert any(to != "b" and p.first <= 3 <= p.last for to, p in m.pulls)
    assert m.logs["b"][stream][3] == b"game3" and m.hw("b", stream) == 5
    assert mark_of(m, "a", "b", stream) == 5 and m.peers["b"].replication.repairing == {}


def test_the_origin_pulls_its_own_rotten_game_back_and_its_durability_falls_meanwhile():
    m, stream = games_trio(min_copies=3)
    a = m.peers["a"].replication
    assert a.durability.durable_through(K8) == 5
    m.rot("a", stream, [2])
    assert a.durability.durable_through(K8) == 1  # a no longer counts for 2: two copies, three asked
    for _ in range(3):
        m.tick()
    assert m.logs["a"][stream][2] == b"game2" and mark_of(m, "c", "a", stream) == 5
    assert a.durability.durable_through(K8) == 5 and a.repairing == {}


def test_a_mark_that_falls_elsewhere_lowers_the_origins_durability_and_does_not_crash():
    m, stream = games_trio(min_copies=3)
    a = m.peers["a"].replication
    m.feed("b", m.peers["b"].handle(GamesCorrupt(origin=stream[0], config_key=K8, seqs=(4,), hw=3), m.now))
    m.logs["b"][stream].pop(4)
    m.tick(only="b")
    assert a.durability.durable_through(K8) == 3 and not a.durability.is_durable(K8, 4)


def test_a_game_rotten_on_every_holder_is_lost_listed_and_skipped_by_every_mark():
    m, stream = games_trio()
    for n in "abc":
        m.rot(n, stream, [3])
    m.tick()
    assert all(mark_of(m, "a", n, stream) == 2 for n in "abc")
    lost_after = m.peers["a"].replication.lost_after
    m.tick(1.0)
    assert not any(isinstance(e, GamesLost) for n in "abc" for e in m.effects[n])
    for _ in range(int(lost_after) + 3):
        m.tick()
    facts = {n: streams.decode_lost(m.peers["c"].manifest.get(n, streams.lost_key(stream))) for n in "abc"}
    assert set().union(*facts.values()) == {3}  # listed, by whoever found it first
    assert all(m.lost[n][stream] == {3} for n in "abc")
    assert all(mark_of(m, "c", n, stream) == 5 for n in "abc")  # the stream goes on past the hole
    a = m.peers["a"].replication
    assert a.durability.durable_through(K8) == 5 and not a.durability.is_durable(K8, 3)
    assert all(m.peers[n].replication.repairing == {} for n in "abc")


def test_a_game_still_held_elsewhere_is_never_declared_lost():
    m, stream = games_trio()
    m.rot("b", stream, [3])
    m.rot("c", stream, [3])
    lost_after = m.peers["a"].replication.lost_after
    for _ in range(int(lost_after) + 3):
        m.tick()
    assert all(m.peers["c"].manifest.get(n, streams.lost_key(stream)) is None for n in "abc")
    assert all(m.hw(n, stream) == 5 and stream not in m.lost[n] for n in "abc")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sets(st.tuples(st.sampled_from("abc"), st.integers(1, 5)), max_size=4), st.integers(0, 3)),
        min_size=1,
        max_size=5,
    )
)
def test_rot_is_repaired_while_a_good_copy_is_left_and_declared_lost_only_when_none_is(steps):
    """Law: whatever copies rot, when and where, a game ends up held again by every host if a
    good copy was left at every moment, and lost (listed, skipped by every mark) exactly if at
    some moment none was; every mark ends at the top of the stream. (Marks say only "1..n, no
    gap": a game above another host's hole is found lost only once that hole is resolved.)"""
    m, stream = games_trio()
    gone: set[int] = set()
    for batch, ticks in steps:
        for node, q in sorted(batch):
            if q in m.logs[node][stream]:
                m.rot(node, stream, [q])
        for _ in range(ticks + 1):
            gone |= {q for q in range(1, 6) if not any(q in m.logs[n][stream] for n in "abc")}
            m.tick()
    for _ in range(6 * (int(m.peers["a"].replication.lost_after) + 2)):  # holes found lost one after another
        m.tick()
    listed = set().union(*(streams.decode_lost(m.peers["a"].manifest.get(n, streams.lost_key(stream))) for n in "abc"))
    assert listed == gone
    for n in "abc":
        assert m.lost[n].get(stream, set()) == gone
        assert set(m.logs[n][stream]) == set(range(1, 6)) - gone, n
        assert mark_of(m, "a", n, stream) == 5 and m.peers[n].replication.repairing == {}
