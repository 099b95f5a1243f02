"""Opening feature state: one store per Kafka partition, RocksDB or in memory."""

from __future__ import annotations

import os
from pathlib import Path

from stream.state.cache import CachedStore
from stream.state.memory import MemoryBackend
from stream.state.rocks import RocksBackend, RocksOptions

__all__ = ["BACKENDS", "open_store", "partition_path"]

BACKENDS = ("rocksdb", "memory")


def partition_path(state_dir: str | os.PathLike[str], topic: str, partition: int) -> Path:
    """Where the state of ``topic``'s ``partition`` lives under ``state_dir``."""
    return Path(state_dir) / f"{topic}-{partition}"


def open_store(backend: str = "rocksdb", path: str | os.PathLike[str] | None = None, *,
               options: RocksOptions = RocksOptions(), cache_entries: int = 200_000,
               batch_size: int = 10_000, keep: int = 0, changelog: bool = True) -> CachedStore:
    """Open one partition's state behind a write-back cache.

    ``backend="rocksdb"`` needs ``path`` (see :func:`partition_path`); every open, new or
    existing, goes through ``options``. ``backend="memory"`` ignores ``path``. ``batch_size``
    and ``keep`` (the write-behind window), ``changelog`` (whether ``flush`` returns the
    changes since the previous one): see :class:`CachedStore`.
    """
    if backend == "rocksdb":
        if path is None:
            raise ValueError("the rocksdb backend needs a path")
        store = RocksBackend(path, options)
    elif backend == "memory":
        store = MemoryBackend()
    else:
        raise ValueError(f"unknown state backend {backend!r} (expected one of {BACKENDS})")
    return CachedStore(store, capacity=cache_entries, batch_size=batch_size, keep=keep,
                       changelog=changelog)
