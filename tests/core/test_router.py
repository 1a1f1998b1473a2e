"""Router laws: never an excluded host, a host over the cap, or two members of one NFS group;
the same answer for the same inputs; min_copies met whenever enough eligible hosts exist."""

from hypothesis import given
from hypothesis import strategies as st

from ringmesh.core.router import (
    EXCLUDED,
    NFS_COVERED,
    NO_ROOM,
    OVER_CAP,
    WRONG_ROLE,
    DataType,
    HostInfo,
    place,
    replication_targets,
)

ROLES = ["training", "selfplay", "coordinator", "backup"]


@st.composite
def clusters(draw):
    n = draw(st.integers(1, 12))
    hosts = []
    for i in range(n):
        hosts.append(
            HostInfo(
                name=f"h{i:02d}",
                role=draw(st.sampled_from(ROLES)),
                ephemeral=draw(st.booleans()),
                excluded=draw(st.booleans()),
                alive=draw(st.booleans()),
                nfs_group=draw(st.sampled_from([None, None, "g1", "g2"])),
                disk_used_percent=draw(st.one_of(st.none(), st.floats(0, 100))),
                disk_free_bytes=draw(st.one_of(st.none(), st.integers(0, 10**12))),
            )
        )
    return hosts


params = dict(
    dt=st.sampled_from(list(DataType)),
    size=st.integers(0, 10**11),
    copies=st.integers(1, 4),
    cap=st.floats(1, 100),
)


@given(hosts=clusters(), **params)
def test_never_an_ineligible_host_nor_two_of_one_nfs_group(hosts, dt, size, copies, cap):
    p = place(dt, hosts, item_size=size, min_copies=copies, cap_percent=cap)
    by = {h.name: h for h in hosts}
    for t in p.targets:
        h = by[t]
        assert not h.excluded and h.alive
        assert h.disk_used_percent is None or h.disk_used_percent <= cap
        assert h.disk_free_bytes is None or h.disk_free_bytes >= size
        if dt is DataType.CHECKPOINT:
            assert not h.ephemeral
    groups = [by[t].nfs_group for t in p.targets if by[t].nfs_group]
    assert len(groups) == len(set(groups))
    assert set(p.targets).isdisjoint(p.left_out) and set(p.targets).isdisjoint(p.covered)
    assert set(p.targets) | set(p.left_out) | set(p.covered) == set(by), "every host is accounted for"


@given(hosts=clusters(), **params)
def test_deterministic_whatever_the_order(hosts, dt, size, copies, cap):
    a = place(dt, hosts, item_size=size, min_copies=copies, cap_percent=cap)
    b = place(dt, list(reversed(hosts)), item_size=size, min_copies=copies, cap_percent=cap)
    assert a == b


@given(hosts=clusters(), **params)
def test_min_copies_met_when_enough_eligible_hosts_exist(hosts, dt, size, copies, cap):
    p = place(dt, hosts, item_size=size, min_copies=copies, cap_percent=cap)
    eligible_groups = set()
    for h in hosts:
        if h.name in p.targets or h.name in p.covered:
            eligible_groups.add(h.nfs_group or h.name)
    if len(eligible_groups) >= copies:
        assert len(p.targets) >= copies
    if dt is DataType.CHECKPOINT:
        assert len(p.targets) <= copies


def test_roles_and_reasons():
    hosts = [
        HostInfo(name="train-a", role="training", disk_free_bytes=10**12),
        HostInfo(name="train-b", role="training", excluded=True),
        HostInfo(name="self-a", role="selfplay", ephemeral=True),
        HostInfo(name="self-b", role="selfplay", disk_used_percent=85.0),
        HostInfo(name="backup", role="backup", disk_free_bytes=10),
        HostInfo(name="nfs-1", role="training", nfs_group="g"),
        HostInfo(name="nfs-2", role="training", nfs_group="g"),
    ]
    p = place("npz", hosts, item_size=1000)
    assert p.targets == ("train-a", "nfs-1")
    assert p.covered == {"nfs-2": "nfs-1"}
    assert p.left_out["train-b"] == EXCLUDED and p.left_out["self-a"] == WRONG_ROLE
    m = place("model", hosts, item_size=1000)
    assert set(m.targets) == {"train-a", "self-a", "nfs-1"} and m.left_out["self-b"] == OVER_CAP
    g = place("game", hosts, item_size=1000)
    assert g.left_out["backup"] == NO_ROOM
    c = place("checkpoint", hosts, item_size=1000, min_copies=2)
    assert c.targets == ("train-a", "nfs-1")  # persistent, most free disk first, one per NFS group


def test_a_cap_that_blocks_every_target_is_reported():
    hosts = [HostInfo(name=f"t{i}", role="training", disk_used_percent=90.0) for i in range(3)]
    p = place("npz", hosts, cap_percent=70)
    assert p.targets == () and p.blocked and p.shortfall == 2
    assert set(p.left_out.values()) == {OVER_CAP}
    assert not place("npz", [HostInfo(name="s", role="selfplay")]).blocked, "no host of the role: nothing blocked"


def test_replication_targets_rank_with_reasons():
    hosts = [
        HostInfo(name="a", role="training", disk_free_bytes=5 * 10**9),
        HostInfo(name="b", role="backup", disk_free_bytes=9 * 10**9),
        HostInfo(name="c", role="training", nfs_group="g"),
        HostInfo(name="d", role="training", nfs_group="g"),
    ]
    ranked = replication_targets("checkpoint", hosts, min_copies=2, holders=["c"])
    assert [(r.host, r.rank) for r in ranked[:2]] == [("c", 1), ("a", 2)]
    reasons = {r.host: r.reason for r in ranked}
    assert reasons["c"] == "already holds it" and reasons["d"].startswith(NFS_COVERED)
    assert "5.0 GB free" in reasons["a"] and reasons["b"] == "enough copies elsewhere"


def test_a_host_may_take_more_types_than_its_role_says():
    hosts = [
        HostInfo(name="drive", role="backup", also_takes=frozenset({"model"})),
        HostInfo(name="b", role="backup"),
        HostInfo(name="s", role="selfplay"),
    ]
    assert place(DataType.MODEL, hosts).targets == ("s", "drive")
    assert place(DataType.MODEL, hosts).left_out == {"b": WRONG_ROLE}
    assert place(DataType.NPZ, hosts).left_out == {"drive": WRONG_ROLE, "b": WRONG_ROLE, "s": WRONG_ROLE}
