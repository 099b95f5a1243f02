"""The RocksDB backend (rocksdict), and the one options object every open goes through.

:class:`RocksOptions` is frozen and builds ``rocksdict.Options`` in :meth:`RocksOptions.build`;
:func:`open_rocksdb` is the only place that constructs an ``Rdict``, so a reopened store
gets the same block cache, bloom filter, compaction and read settings as a new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Mapping

import rocksdict

from stream.state.errors import translate

__all__ = ["RocksOptions", "RocksBackend", "open_rocksdb"]


@dataclass(frozen=True, slots=True)
class RocksOptions:
    """RocksDB tuning for per-partition feature state (small values, point lookups).

    Every field reaches RocksDB (``tests/unit/test_state_store.py`` reads them back from
    the OPTIONS file RocksDB writes). Point lookups get what RocksDB's ``OptimizeForPointLookup``
    sets, spelled out, because that call replaces the whole table configuration: a hash index
    inside each data block, and a bloom filter on the memtable.
    """

    block_cache_bytes: int = 64 * 1024 * 1024
    block_size: int = 4 * 1024
    bloom_bits_per_key: float = 10.0
    write_buffer_bytes: int = 32 * 1024 * 1024
    max_write_buffers: int = 3
    compression: str = "lz4"   # "none", "lz4", "zstd", "snappy"
    background_jobs: int = 2
    max_open_files: int = 512
    # Without a WAL, writes since the last memtable flush are lost in a crash; close() flushes.
    # For stores that a crash makes untrusted anyway (the worker's: rebuilt from the changelog).
    disable_wal: bool = False
    # RocksDB's row cache: recently read key-values, uncompressed. A read that misses the
    # write-back cache of live objects but hits here costs about 1 us instead of a block read
    # and decompression (about 10 us). One cache of this size per process, shared by every
    # store opened with it; 0 disables it.
    row_cache_bytes: int = 0
    # Whether a point read (get) keeps the data block it read in the block cache. Off: the
    # write-back cache of live objects in front already keeps what was read, and a block read
    # for one entity rarely serves another (keys are read at random), so inserting it only
    # churns the cache: 12.2 against 8.0 us of CPU per read of a stored key among 2 M values of
    # 300 bytes (docs/benchmarks.md, "Prefetch, point reads, huge pages"). Reads still use the
    # blocks already cached.
    cache_point_reads: bool = False

    def build(self) -> rocksdict.Options:
        """A fresh ``rocksdict.Options`` in raw (bytes) mode with these settings."""
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(self.block_cache_bytes))
        table.set_block_size(self.block_size)
        table.set_bloom_filter(self.bloom_bits_per_key, False)
        # Index and filter blocks stay in the table readers' memory rather than competing with
        # data blocks in the block cache: every point lookup reads them.
        table.set_cache_index_and_filter_blocks(False)
        table.set_data_block_index_type(rocksdict.DataBlockIndexType.binary_and_hash())
        table.set_data_block_hash_ratio(0.75)
        opts.set_block_based_table_factory(table)
        opts.set_memtable_prefix_bloom_ratio(0.02)
        opts.set_memtable_whole_key_filtering(True)
        opts.set_write_buffer_size(self.write_buffer_bytes)
        opts.set_max_write_buffer_number(self.max_write_buffers)
        opts.set_max_background_jobs(self.background_jobs)
        opts.set_max_open_files(self.max_open_files)
        opts.set_compression_type(_compression(self.compression))
        if self.row_cache_bytes > 0:
            opts.set_row_cache(_shared_row_cache(self.row_cache_bytes))
        return opts

    def read_options(self) -> rocksdict.ReadOptions:
        """The ``rocksdict.ReadOptions`` every read of a store opened with these settings uses."""
        read = rocksdict.ReadOptions()
        read.fill_cache(self.cache_point_reads)
        return read


@lru_cache(maxsize=None)
def _shared_row_cache(size: int) -> rocksdict.Cache:
    # One per size and process: the partitions of a worker share their row cache budget.
    return rocksdict.Cache(size)


#: Properties whose sum says whether RocksDB has background work (running or pending).
_BACKGROUND = ("rocksdb.num-running-flushes", "rocksdb.num-running-compactions",
               "rocksdb.mem-table-flush-pending", "rocksdb.compaction-pending")


def _compression(name: str) -> rocksdict.DBCompressionType:
    try:
        return getattr(rocksdict.DBCompressionType, {"none": "none", "lz4": "lz4",
                                                      "zstd": "zstd", "snappy": "snappy"}[name])()
    except KeyError:
        raise ValueError(f"compression: unknown {name!r} (none, lz4, zstd, snappy)") from None


def open_rocksdb(path: str | os.PathLike[str], options: RocksOptions) -> rocksdict.Rdict:
    """Open (or create) the RocksDB at ``path`` with ``options``: the only ``Rdict`` call."""
    os.makedirs(path, exist_ok=True)
    with translate(f"open {path}"):
        db = rocksdict.Rdict(str(path), options.build())
        db.set_read_options(options.read_options())
        return db


class RocksBackend:
    """Bytes-in, bytes-out RocksDB for one partition."""

    def __init__(self, path: str | os.PathLike[str], options: RocksOptions = RocksOptions()) -> None:
        self.path = str(path)
        self.options = options
        self._db = open_rocksdb(path, options)
        self._write_opts = rocksdict.WriteOptions()
        self._write_opts.disable_wal = options.disable_wal

    def get(self, key: bytes) -> bytes | None:
        try:  # no context manager here: this is on the per-event path
            return self._db.get(key)
        except Exception as exc:
            with translate(f"get from {self.path}"):
                raise exc from None
            raise  # not a RocksDB error

    def write(self, puts: Mapping[bytes, bytes], deletes: Iterator[bytes] | list[bytes] = ()) -> None:
        """Apply ``puts`` and ``deletes`` atomically (one RocksDB write batch)."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in puts.items():
            batch.put(key, value)
        for key in deletes:
            batch.delete(key)
        with translate(f"write to {self.path}"):
            self._db.write(batch, self._write_opts)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with translate(f"iterate {self.path}"):
            yield from self._db.items()

    def has_prefix(self, prefix: bytes) -> bool:
        """Whether a key starting with ``prefix`` is stored (one seek)."""
        with translate(f"seek in {self.path}"):
            it = self._db.iter()
            it.seek(prefix)
            return it.valid() and it.key().startswith(prefix)

    def flush(self) -> None:
        """Persist memtables (used before a checkpoint)."""
        with translate(f"flush {self.path}"):
            self._db.flush()

    def close(self) -> None:
        if self._db is not None:
            with translate(f"close {self.path}"):
                if self.options.disable_wal:
                    self._db.flush()  # nothing else holds what is in the memtables
                self._db.close()
            self._db = None  # type: ignore[assignment]

    def size_bytes(self) -> int:
        """Live data size on disk (SST files plus memtables), as RocksDB estimates it."""
        with translate(f"stats {self.path}"):
            sst = self._db.property_int_value("rocksdb.total-sst-files-size") or 0
            mem = self._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return sst + mem

    def background_work(self) -> int:
        """Flushes and compactions running or waiting (0: RocksDB is idle in the background)."""
        with translate(f"stats {self.path}"):
            values = [self._db.property_int_value(name) for name in _BACKGROUND]
        if None in values:  # a property this RocksDB does not know
            raise RuntimeError(f"RocksDB does not report {_BACKGROUND[values.index(None)]}")
        return sum(values)

    def entry_count(self) -> int:
        """Keys in the store, as RocksDB estimates them (exact only after compaction)."""
        with translate(f"stats {self.path}"):
            return self._db.property_int_value("rocksdb.estimate-num-keys") or 0
