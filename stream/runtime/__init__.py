"""The streaming runtime: a chain of keyed stages with exactly-once state (see ``worker.py``)."""

from stream.runtime.emitter import Emitter
from stream.runtime.topology import Stage, Topology
from stream.runtime.worker import Worker, WorkerStats, decide

__all__ = ["Emitter", "Stage", "Topology", "Worker", "WorkerStats", "decide"]
