"""Feature state storage: RocksDB (rocksdict) or memory, per partition, behind a write-back cache.

The feature engine (``features``) only sees :class:`features.store.StateStore`; this package
implements it::

    store = open_store("rocksdb", partition_path(settings.state_dir, topic, partition))
    engine = FeatureEngine(feature_set, store)
    ...
    changes = store.flush()   # at commit: encoded state written since the last flush
"""

from stream.state.cache import CachedStore
from stream.state.errors import (StateClosedError, StateCorruptionError, StateError,
                                 StateLockedError, rocksdb_error, translate)
from stream.state.memory import MemoryBackend
from stream.state.rocks import RocksBackend, RocksOptions, open_rocksdb
from stream.state.store import BACKENDS, open_store, partition_path

__all__ = [
    "BACKENDS",
    "CachedStore",
    "MemoryBackend",
    "RocksBackend",
    "RocksOptions",
    "StateClosedError",
    "StateCorruptionError",
    "StateError",
    "StateLockedError",
    "open_rocksdb",
    "open_store",
    "partition_path",
    "rocksdb_error",
    "translate",
]
