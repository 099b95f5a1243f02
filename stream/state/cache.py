"""Write-back cache: hot entity state as live objects, written to the backend in batches.

:class:`CachedStore` implements :class:`features.store.StateStore` over a bytes backend (RocksDB or
memory). ``get`` returns the cached object itself; the engine changes it in place and calls
``put``, which only marks it dirty. Dirty objects are encoded (:func:`features.store.encode`) when
they are evicted or on :meth:`CachedStore.flush`, and written as one write batch.

Eviction approximates least-recently-used with one dict in insertion order and a reference bit
(CLOCK, or "second chance"): an object read or written goes to the back when it enters the cache; a
hit on a feature state only sets its ``ref`` flag (no dict is touched, so a hit costs one lookup).
When the cache is full, objects are evicted from the front; a feature state whose flag is set is
moved to the back instead, with its flag cleared, within a bounded look-ahead (see ``_evict``).
Other objects (label-index entries, parked labels) leave in insertion order. Every miss costs one
lookup and one insertion in that dict, and a write of an object that is not cached (a label-index
entry) one lookup: with millions of cached entities each lookup in it is a cache miss of the CPU,
so their number per event is what the cache is designed around. A changed feature state is
known by its ``dirty`` flag, its key appended to a list when the flag goes up (no set of every
key changed since the last flush to insert into). :meth:`CachedStore.flush` returns
every key written since the previous flush with its encoded value (``None`` for a delete): exactly
what a changelog topic needs.

Encoded writes wait in a pending buffer (reads see it) until ``batch_size`` of them are there,
and :meth:`CachedStore.flush` writes the whole buffer to the backend, unless the store keeps a
write-behind window (``keep``): then a flush leaves the buffer in memory, and whenever it reaches
``batch_size`` entries the oldest are written until ``keep`` remain. A key written again while
pending replaces its buffered value, so hot state changed in every commit (the worker flushes
once per commit, for the changelog) reaches the backend once per window instead of once per
commit. :meth:`CachedStore.persist` (and :meth:`CachedStore.close`) write everything.
"""

from __future__ import annotations

from array import array
from itertools import islice
from typing import Any, Callable, Protocol

from features._kernel import State as _State
from features._kernel import clock_evict as _clock_evict
from features.store import decode as _decode
from features.store import encode as _encode
from features.store import entry_time

__all__ = ["Backend", "CachedStore"]

_MISSING = object()


class Backend(Protocol):
    path: str

    def get(self, key: bytes) -> bytes | None: ...
    def write(self, puts: dict[bytes, bytes], deletes: Any = ()) -> None: ...
    def items(self) -> Any: ...
    def has_prefix(self, prefix: bytes) -> bool: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def size_bytes(self) -> int: ...
    def entry_count(self) -> int: ...


class CachedStore:
    """A :class:`~features.store.StateStore` with a write-back cache over ``backend``.

    ``capacity`` is the number of live objects kept; ``batch_size`` the number of encoded writes
    (evictions, cold puts, deletes) buffered before they go to the backend in one batch;
    ``keep`` (less than ``batch_size``) the most recent of them kept buffered across flushes
    and batches (the write-behind window, see the module docstring; 0: none).
    ``changelog``: whether :meth:`flush` returns the changes since the previous flush (the
    worker's changelog topic needs them). Without it nothing is recorded, so a store that is
    never flushed until it closes (an offline run over a whole log) does not keep every value
    written since it opened.
    """

    def __init__(self, backend: Backend, capacity: int = 200_000, batch_size: int = 10_000,
                 encode: Callable[[Any], bytes] = _encode,
                 decode: Callable[[bytes], Any] = _decode, keep: int = 0,
                 changelog: bool = True) -> None:
        if capacity < 1 or batch_size < 1:
            raise ValueError("capacity and batch_size must be at least 1")
        if not 0 <= keep < batch_size:
            raise ValueError("keep must be at least 0 and less than batch_size")
        self.backend = backend
        self.capacity = capacity
        self.batch_size = batch_size
        self.keep = keep
        self._encode, self._decode = encode, decode
        self._live: dict[bytes, Any] = {}     # cached objects, in eviction order
        self._dirty: set[bytes] = set()       # keys of changed objects other than feature states
        # Keys of feature states changed since the last flush, in order, appended when a
        # state's ``dirty`` flag goes up (a key may appear more than once: its state written by
        # an eviction, read back and changed again). A list, not a set: an append touches no
        # table of millions of keys, and the flag says whether the state still needs writing.
        self._touched: list[bytes] = []
        self._pending: dict[bytes, bytes | None] = {}   # encoded, not yet in the backend
        # Written since the last flush(); None when the store keeps no changelog.
        self._changes: dict[bytes, bytes | None] | None = {} if changelog else None
        #: The cached objects, for the feature engine's loop to look into before it calls
        #: :meth:`get`: a feature state found there is served as a hit without a call, the
        #: engine doing what :meth:`get` does for one (its ``ref`` flag set, a hit counted in
        #: :attr:`hit_counts`). Read only: the store alone adds and removes entries.
        self.objects = self._live
        #: ``hit_counts[0]``: hits, counted by :meth:`get` and by the engine's loop.
        self.hit_counts = array("q", [0])
        self.misses = 0

    @property
    def hits(self) -> int:
        """Lookups answered from the cache (by :meth:`get` or the engine's loop)."""
        return self.hit_counts[0]

    # ------------------------------------------------------------------ StateStore
    def get(self, key: bytes) -> Any | None:
        value = self._live.get(key)
        if value is not None:
            self.hit_counts[0] += 1
            if type(value) is _State:
                value.ref = True   # a second chance when eviction reaches it (see _evict)
            return value
        self.misses += 1
        raw = self._pending.get(key, _MISSING)
        if raw is _MISSING:
            raw = self.backend.get(key)
        if raw is None:
            return None
        value = self._decode(raw)
        live = self._live
        if len(live) >= self.capacity:
            self._evict()
        live[key] = value
        return value

    def put(self, key: bytes, value: Any, *, cache: bool = True) -> None:
        if cache:
            # One store: a key already cached keeps its place (and the new object), a new one
            # goes to the back.
            live = self._live
            if len(live) >= self.capacity:
                self._evict()
            live[key] = value
            if type(value) is _State:
                if not value.dirty:  # evictions and flushes go by the flag (see _evict)
                    value.dirty = True
                    self._touched.append(key)
            else:
                self._dirty.add(key)
        else:
            if type(value) is _State:
                value.dirty = False
            self.put_encoded(key, self._encode(value))

    def put_encoded(self, key: bytes, raw: bytes) -> None:
        """``put(key, raw, cache=False)`` for a value that is its own encoding (a label-index
        entry, ``features.store.encode`` of it is ``raw``): the engine writes one per event.

        A key that is almost never cached: one lookup. A key left in the dirty set or the
        touched list without its object is skipped by ``_write_dirty``."""
        if self._live.pop(key, None) is not None:
            self._dirty.discard(key)
        pending = self._pending
        pending[key] = raw
        if self._changes is not None:
            self._changes[key] = raw
        if len(pending) >= self.batch_size:
            self._write_batch()

    def touch(self, key: bytes) -> None:
        """The feature state :meth:`get` just returned for ``key`` was changed in place: mark it
        dirty (a :meth:`put` of the same object, without looking it up again).

        The engine touches a feature state only while its ``dirty`` flag is clear and sets the
        flag; the store clears it whenever it encodes the state for a write (eviction, flush).
        Other objects go through :meth:`put`.
        """
        self._touched.append(key)

    def delete(self, key: bytes) -> None:
        self._live.pop(key, None)
        self._dirty.discard(key)
        self._stage(key, None)

    # ------------------------------------------------------------------ batching
    def _evict(self) -> None:
        """Make room for one more object. Called before the object goes in, so the object a
        ``get`` returns is never evicted by that same call: the engine changes it next and
        touches its key, which must find it cached."""
        live = self._live
        # Evict in chunks of 1/64 of the capacity so eviction cost is amortised.
        count = max(len(live) + 1 - self.capacity, self.capacity // 64, 1)
        # The first pass looks at up to four times the count, moving flagged states to the back
        # (flag cleared); what it leaves to evict, the next pass takes from the front in order,
        # flagged or not. So one call does bounded work even when nearly every cached state is
        # flagged (the first time a cache fills, after a long run of hits): a whole trip round
        # millions of entries would stall the loop for a good part of a second.
        # Encoding clears a feature state's dirty flag: the engine touches it (once) again when
        # it next changes it (the same in _write_dirty and put). A feature state tells by its
        # flag whether it changed since it was last written, so its key stays in the touched
        # list (_write_dirty skips it). Other objects are known dirty by the dirty set.
        _clock_evict(live, count, self._dirty, self._pending, self._changes, self.batch_size,
                     self._encode, self._encode is _encode, self._next_pending)

    def _next_pending(self) -> dict[bytes, bytes | None]:
        """The pending buffer reached the batch size during an eviction: write (some of) it,
        and return the buffer to go on with."""
        self._write_batch()
        return self._pending

    def _stage(self, key: bytes, raw: bytes | None) -> None:
        self._pending[key] = raw
        if self._changes is not None:
            self._changes[key] = raw
        if len(self._pending) >= self.batch_size:
            self._write_batch()

    def _write_batch(self) -> None:
        """The pending buffer is full: write it, or (write-behind) its oldest entries down to
        ``keep``. A dict keeps first-insertion order, so a key rewritten while pending keeps its
        place and goes when it is among the oldest, with its latest value."""
        if not self.keep:
            self._write_pending()
            return
        pending = self._pending
        count = len(pending) - self.keep
        if count <= 0:
            return
        oldest = {key: pending.pop(key) for key in list(islice(pending, count))}
        self._write(oldest)

    def _write_pending(self) -> None:
        """Write the whole pending buffer to the backend."""
        if not self._pending:
            return
        pending = self._pending
        self._pending = {}
        self._write(pending)

    def _write(self, entries: dict[bytes, bytes | None]) -> None:
        if None in entries.values():
            puts = {k: v for k, v in entries.items() if v is not None}
            self.backend.write(puts, [k for k, v in entries.items() if v is None])
        else:  # the usual batch (label-index entries, evictions): no copy
            self.backend.write(entries)

    def flush(self) -> dict[bytes, bytes | None]:
        """Write every dirty object; return all changes since the last flush (for a changelog;
        an empty dict when the store keeps none).

        With a write-behind window (``keep``) the writes may stay buffered in memory (see the
        module docstring); :meth:`persist` puts everything in the backend.
        """
        self._write_dirty()
        if self.keep:
            if len(self._pending) >= self.batch_size:
                self._write_batch()
        else:
            self._write_pending()
        changes = self._changes
        if changes is None:
            return {}
        self._changes = {}
        return changes

    def persist(self) -> None:
        """Write every dirty object and every buffered write to the backend (the changes are
        still returned by the next :meth:`flush`)."""
        self._write_dirty()
        self._write_pending()

    def stored(self, key: bytes) -> bytes | None:
        """The encoded value of ``key`` as last written (buffered or in the backend), without
        dirty objects: what the changelog holds after a :meth:`flush`."""
        raw = self._pending.get(key, _MISSING)
        return self.backend.get(key) if raw is _MISSING else raw

    def has_prefix(self, prefix: bytes) -> bool:
        """Whether some key starting with ``prefix`` may be stored (a buffered delete still
        counts: never a false no). Looks through the cached objects and buffered writes: for
        opening a store, not for the per-event path."""
        return (any(key.startswith(prefix) for part in (self._live, self._pending)
                    for key in part)
                or self.backend.has_prefix(prefix))

    def entry_count(self) -> int:
        """Entries stored, as estimated: the backend's estimate plus the puts still buffered
        (write-behind). A buffered overwrite of a stored key counts twice, as RocksDB's own
        estimate counts overwrites still in its memtables."""
        return self.backend.entry_count() + sum(1 for raw in self._pending.values()
                                                if raw is not None)

    def size_bytes(self) -> int:
        """Bytes stored: the backend's size plus the keys and values still buffered."""
        return self.backend.size_bytes() + sum(len(key) + len(raw)
                                               for key, raw in self._pending.items()
                                               if raw is not None)

    def _write_dirty(self) -> None:
        """Stage every dirty object's encoded value, recorded as a change for the next flush."""
        live, pending, changes = self._live, self._pending, self._changes
        encode = self._encode
        # Every commit encodes each entity changed since the last one (three or so per event):
        # a feature state encodes itself, as features.store.encode would ask it to, without
        # the two Python calls in between.
        native = encode is _encode
        for key in self._touched:
            value = live.get(key)
            # Not cached: evicted (and written) since it changed; clean: written by an
            # eviction since, then read back unchanged, or listed twice.
            if type(value) is _State and value.dirty:
                value.dirty = False
                pending[key] = raw = value.encode() if native else encode(value)
                if changes is not None:
                    changes[key] = raw
        self._touched.clear()
        for key in self._dirty:
            value = live.get(key)
            if value is None:  # evicted (and written) since it changed
                continue
            if type(value) is _State:
                if not value.dirty:  # replaced by a feature state, written above
                    continue
                value.dirty = False
                raw = value.encode() if native else encode(value)
            else:
                raw = encode(value)
            pending[key] = raw
            if changes is not None:
                changes[key] = raw
        self._dirty.clear()

    def drop_cache(self) -> None:
        """Flush, then forget every cached object (reads go to the backend again)."""
        self.flush()
        self._live.clear()

    # ------------------------------------------------------------------ maintenance
    def expire(self, before_ms: int) -> int:
        """Delete entries whose event time is older than ``before_ms``; return how many.

        Scans the whole backend: run it from the worker's maintenance step, never inside a
        rebalance callback. The deletions (and anything written before) are among the changes
        the next :meth:`flush` returns, so they reach the changelog.
        """
        self.persist()
        dead = [key for key, raw in self.backend.items() if entry_time(raw) < before_ms]
        for key in dead:
            self.delete(key)
        self._write_pending()
        return len(dead)

    def items(self):
        """Every stored (key, decoded value), after a flush."""
        self.flush()
        self._write_pending()
        for key, raw in self.backend.items():
            yield key, self._decode(raw)

    def __len__(self) -> int:
        self.flush()
        self._write_pending()
        return sum(1 for _ in self.backend.items())

    def close(self) -> None:
        self.flush()
        self._write_pending()
        self._live.clear()
        self.backend.close()

    def __enter__(self) -> "CachedStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
