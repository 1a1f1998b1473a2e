"""ringmesh: one identical peer per host replicating a self-play/training cluster's data."""

__version__ = "0.1.0"
