"""A deterministic discrete-event simulator that drives the unchanged `ringmesh.core` peers.

`python -m sim gossip --nodes N --seed S [--json]` runs the gossip scenario;
`python -m sim run SCENARIO --seed S` a scenario of `sim/scenarios/` (workload, a fault plan,
the checkers of `sim/invariants/`, then heal and converge); `python -m sim sweep` many seeds.
One seed reproduces a run exactly: every random choice comes from a `random.Random` derived
from it.
"""

from .checkers import Rumour, VectorConvergence
from .cluster import Cluster, node_ids
from .gossip import GossipParams, run_gossip, theory_rounds
from .network import LinkModel, Network, Route
from .traffic import Traffic, message_size
from .world import SimulationError, World

__all__ = [
    "Cluster",
    "GossipParams",
    "LinkModel",
    "Network",
    "Route",
    "Rumour",
    "SimulationError",
    "Traffic",
    "VectorConvergence",
    "World",
    "message_size",
    "node_ids",
    "run_gossip",
    "theory_rounds",
]
