"""Laws of the relay choice for hosts nobody can dial (core/reach.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ringmesh.core.reach import choose_relays

names = st.sampled_from([f"h{i}" for i in range(12)])
candidates = st.dictionaries(names, st.sampled_from(["aws", "gcp", "lambda", "vast"]), max_size=12)


@given(me=names, pool=candidates, k=st.integers(1, 5), keep=st.lists(names, max_size=4))
def test_relays_are_distinct_candidates_spread_over_providers(me, pool, k, keep):
    chosen = choose_relays(me, pool, k, keep)
    assert len(chosen) == len(set(chosen)) == min(k, len(set(pool) - {me}))
    assert me not in chosen and set(chosen) <= set(pool)
    providers = [pool[c] for c in chosen]
    kept = [c for c in dict.fromkeys(keep) if c in pool and c != me][:k]
    assert chosen[: len(kept)] == kept, "links that are up stay chosen"
    if not kept:  # from scratch: one per provider while providers last
        assert len(set(providers)) == min(len(chosen), len({p for c, p in pool.items() if c != me}))


@given(me=names, pool=candidates, gone=names)
def test_losing_one_relay_replaces_only_that_one(me, pool, gone):
    before = choose_relays(me, pool)
    rest = {c: p for c, p in pool.items() if c != gone}
    after = choose_relays(me, rest, keep=before)
    assert [c for c in before if c != gone] == after[: len([c for c in before if c != gone])]


def test_hosts_spread_their_links_over_the_cluster():
    pool = {f"p{i}": "aws" for i in range(10)}
    load: dict[str, int] = {}
    for n in range(30):
        for r in choose_relays(f"nat{n}", pool):
            load[r] = load.get(r, 0) + 1
    assert len(load) >= 8 and max(load.values()) <= 20, load  # 90 links over 10 hosts, not 3 hosts × 30
