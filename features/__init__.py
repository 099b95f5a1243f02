"""Pure feature engineering: windowed per-entity features over event time.

No Kafka, no RocksDB driver, no clock: state comes in through :class:`StateStore` and goes back
out; time comes from the events. See ``docs/features.md``.
"""

from features.definitions import Feature, FeatureSet
from features.engine import EngineStats, FeatureEngine
from features.store import DictStore, StateStore

__all__ = ["DictStore", "EngineStats", "Feature", "FeatureEngine", "FeatureSet", "StateStore"]
