"""NetLab.loss with both_ways (a lossy link, not only a lossy receiver), used by the spot storm:
the drop rules sit at the receivers, one host's setting leaves another's alone, heal clears all."""

from __future__ import annotations

import pytest

from ringmesh.testing.netlab import NetLab, available, cleanup_stale
from tests.shell.test_netlab import eventually, reaches, start_server

REASON = available(("iptables",))
pytestmark = [pytest.mark.skipif(REASON is not None, reason=REASON or ""), pytest.mark.timeout(60)]
PREFIX = "rmcl"


def test_loss_both_ways_and_per_host_settings():
    cleanup_stale(PREFIX)
    with NetLab(3, prefix=PREFIX) as lab:
        for h in lab.hosts():
            start_server(lab, h, "echo")
        lab.loss(0, 1.0, both_ways=True)  # host 0's link drops everything, in and out
        assert lab.losses() == {(0, None): 1.0, (1, 0): 1.0, (2, 0): 1.0}
        assert not reaches(lab, 1, 0, timeout=0.5) and not reaches(lab, 0, 1, timeout=0.5)
        assert reaches(lab, 1, 2) and reaches(lab, 2, 1)
        lab.loss(2, 1.0)  # receiver-only loss on host 2 ...
        lab.loss(0, 0.0)  # ... stays when host 0's link is fixed
        assert lab.losses() == {(2, None): 1.0}
        assert eventually(lambda: reaches(lab, 1, 0)) and eventually(lambda: reaches(lab, 0, 1))
        assert not reaches(lab, 1, 2, timeout=0.5)
        lab.heal()
        assert lab.losses() == {} and eventually(lambda: reaches(lab, 1, 2))
    assert lab.leftovers() == []
