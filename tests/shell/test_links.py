"""Links: one channel per address; a host's old address is let go when it moves."""

import asyncio

from ringmesh.node.wire import links as links_mod
from ringmesh.node.wire.links import Links


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_a_host_that_moves_leaves_no_channel_behind(monkeypatch):
    monkeypatch.setattr(links_mod, "RETIRE_GRACE", 0.0)
    where = {"a": "127.0.0.1:1", "b": "127.0.0.1:2"}

    async def scenario():
        ln = Links(where.get)
        assert ln.stub("a") is not None and ln.stub("b") is not None
        for port in range(3, 103):  # "a" replaced 100 times, each time at a new address
            where["a"] = f"127.0.0.1:{port}"
            assert ln.stub("a") is not None
            ln.stub("b")
        assert sorted(k for k, _ in ln._channels) == ["127.0.0.1:102", "127.0.0.1:2"]
        await asyncio.sleep(0.05)
        assert not ln._retiring  # the old channels are closed, not just forgotten
        await ln.close()
        assert ln._channels == {}

    run(scenario())


def test_an_address_another_host_still_uses_is_kept():
    where = {"a": "127.0.0.1:1", "b": "127.0.0.1:1"}  # two names, one address (plaintext: one channel)

    async def scenario():
        ln = Links(where.get)
        ln.stub("a")
        ln.stub("b")
        assert len(ln._channels) == 1
        where["a"] = "127.0.0.1:5"
        ln.stub("a")
        assert sorted(k for k, _ in ln._channels) == ["127.0.0.1:1", "127.0.0.1:5"]  # "b" still dials :1
        where["a"] = None
        assert ln.stub("a") is None
        await ln.close()

    run(scenario())


def test_close_closes_channels_still_in_their_grace():
    where = {"a": "127.0.0.1:1"}

    async def scenario():
        ln = Links(where.get)  # RETIRE_GRACE: 30 s
        ln.stub("a")
        where["a"] = "127.0.0.1:2"
        ln.stub("a")
        assert len(ln._retiring) == 1
        await ln.close()
        await asyncio.sleep(0)
        assert not ln._retiring

    run(scenario())
