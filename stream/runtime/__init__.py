"""The streaming runtime: a chain of keyed stages with exactly-once state (see ``worker.py``)."""

from stream.runtime.topology import Stage, Topology
from stream.runtime.worker import Worker, WorkerStats, decide

__all__ = ["Stage", "Topology", "Worker", "WorkerStats", "decide"]
