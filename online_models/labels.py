"""Point-in-time correct delayed labels: the scored-vector store and the label join.

When an event is scored, the exact vector the models saw (the feature dict plus derived inputs such
as the anomaly score), the raw and calibrated scores and the model versions are stored under the
event id (:class:`SnapshotStore.put`). When its label arrives, days or weeks later,
:meth:`SnapshotStore.take` returns that snapshot and the models learn from it: never from features
recomputed at label time, which would leak what happened after the event.

Retention is in event time: a snapshot older than ``ttl_ms`` (default 120 days) when its label
arrives counts as *expired*. A label whose event was never scored here (or already purged by the
backend) counts as *unknown*; a second label for the same event as *duplicate* (a taken snapshot
leaves a small tombstone). :class:`JoinStats` exposes the counts; nothing is dropped silently.

The store talks to a minimal key-value protocol (:class:`KeyValue`: ``get``/``put``/``delete`` by
``bytes`` key) so the I/O layer can back it with its partitioned RocksDB state. Stored values are
plain lists whose first element is the event time (epoch ms), containing only ``str``, ``float``,
``int``, ``None`` and a ``dict`` of features, so any codec (marshal, orjson) can persist them and a
backend can expire entries by their first element. :class:`MemoryKV` is the in-memory backend for
tests and the backtest.

A stored snapshot's vectors (the model's vector and the challenger's) carry no feature names:
each is ``(layout id, values)``, its values in the order of a *layout* (the tuple of its keys)
that is stored once per store under ``layout_prefix`` + id, as ``[LAYOUT_TIME, keys]``
(``LAYOUT_TIME`` is far in the future so no expiry removes it). The id is a 31-bit hash of the
keys, so every task and machine derives the same id for the same layout; a layout whose id is
already taken by other keys (a hash collision) is stored by name. Reading rebuilds an equal dict:
the same keys in the same order, the values as the codec returned them (marshal: same types,
same float bits). Snapshots written before (their vectors are dicts) are read as they are; a
vector of another form, or naming a layout the store does not hold, is a
:class:`~online_models.exceptions.SnapshotLayoutError`. ``packed=True`` (in-memory backends only)
keeps vectors packed in C memory instead.

>>> store = SnapshotStore(MemoryKV(), ttl_ms=10 * DAY_MS)
>>> store.put(Snapshot("e1", "m1", 0, {"amount": 5.0}, raw=0.2, score=0.1,
...                    global_version="default-1.0"))
>>> snap, status = store.take("e1", label_time=3 * DAY_MS)
>>> status, snap.vector
('joined', {'amount': 5.0})
>>> store.take("e1", label_time=3 * DAY_MS)[1], store.take("nope", 0)[1]
('duplicate', 'unknown')
>>> store.stats.as_dict()
{'joined': 1, 'unknown': 1, 'expired': 0, 'duplicate': 1}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from features.store import DictStore
from online_models._linear import VectorPacker
from online_models.exceptions import SnapshotLayoutError

__all__ = ["KeyValue", "MemoryKV", "Snapshot", "SnapshotStore", "JoinStats", "Example",
           "DAY_MS", "DEFAULT_TTL_MS", "LAYOUT_TIME", "layout_id", "JOINED", "UNKNOWN",
           "EXPIRED", "DUPLICATE"]

DAY_MS = 86_400_000
DEFAULT_TTL_MS = 120 * DAY_MS
JOINED, UNKNOWN, EXPIRED, DUPLICATE = "joined", "unknown", "expired", "duplicate"
#: The "event time" a stored vector layout is kept under: never older than an expiry horizon.
LAYOUT_TIME = 2**62


def layout_id(keys: tuple) -> int:
    """The id of a vector layout (its keys in order): a 31-bit hash, the same in every process."""
    # repr, not marshal: marshal's bytes depend on reference counts and interning.
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


@runtime_checkable
class KeyValue(Protocol):
    """What the models need from a state store (the same shape as ``features.store.StateStore``)."""

    def get(self, key: bytes) -> Any | None: ...

    def put(self, key: bytes, value: Any, *, cache: bool = True) -> None:
        """``cache=False``: the value will rarely be read again (snapshots wait for labels)."""

    def delete(self, key: bytes) -> None: ...


#: :class:`KeyValue` over a dict: the feature engine's in-memory store serves the models too.
MemoryKV = DictStore


@dataclass(slots=True)
class Snapshot:
    """Everything needed to learn from an event later, as it was when the event was scored."""

    event_id: str
    merchant_id: str | None
    event_time: int
    vector: dict
    raw: float                      # the global model's raw score (what its calibrator learns)
    score: float                    # final score that was decided on
    global_version: str
    raw_global: float = 0.0
    raw_merchant: float | None = None  # global + merchant's full correction, if it was used
    merchant_n: int = 0             # labels the merchant model had learned at scoring time
    challenger_version: str | None = None
    challenger_vector: dict | None = None
    challenger_raw: float | None = None
    p_global: float | None = None   # the global model's calibrated score

    def to_list(self) -> list:
        return [self.event_time, self.event_id, self.merchant_id, self.vector, self.raw,
                self.score, self.global_version, self.raw_global, self.raw_merchant,
                self.merchant_n, self.challenger_version, self.challenger_vector,
                self.challenger_raw, self.p_global]

    @classmethod
    def from_list(cls, v: list) -> "Snapshot":
        return cls(v[1], v[2], v[0], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11],
                   v[12], v[13])


@dataclass(slots=True)
class Example:
    """A joined training example: the stored snapshot and its label (what the trainer learns)."""

    snapshot: Snapshot
    is_fraud: bool
    label_time: int

    @property
    def delay_ms(self) -> int:
        return self.label_time - self.snapshot.event_time

    def to_dict(self) -> dict:
        """A JSON-friendly dict (for the training-examples topic)."""
        return {"snapshot": self.snapshot.to_list(), "is_fraud": self.is_fraud,
                "label_time": self.label_time}

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        return cls(Snapshot.from_list(d["snapshot"]), bool(d["is_fraud"]), int(d["label_time"]))


@dataclass
class JoinStats:
    """Outcome counts of :meth:`SnapshotStore.take`."""

    joined: int = 0
    unknown: int = 0
    expired: int = 0
    duplicate: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"joined": self.joined, "unknown": self.unknown, "expired": self.expired,
                "duplicate": self.duplicate}


@dataclass
class SnapshotStore:
    """Snapshots by event id over a :class:`KeyValue` backend (see the module docstring).

    Vectors are stored as ``(layout id, values)`` with their layouts stored once under
    ``layout_prefix`` (see the module docstring). ``packed=True`` keeps the vectors of stored
    snapshots packed instead (:class:`online_models._linear.VectorPacker`: their values as C
    doubles, a fraction of a dict's memory, unpacked to an equal dict when read). For a backend
    that keeps objects in memory as they are (:class:`MemoryKV`, the backtest's): packed vectors
    do not serialise.
    """

    kv: KeyValue
    ttl_ms: int = DEFAULT_TTL_MS
    prefix: bytes = b"snap:"
    stats: JoinStats = field(default_factory=JoinStats)
    packed: bool = False
    layout_prefix: bytes = b"snaplayout:"
    _packer: VectorPacker | None = field(default=None, init=False, repr=False)
    # Layouts by id (known to be in the store, or read from it); the last one written.
    _layouts: dict = field(default_factory=dict, init=False, repr=False)
    _ids: dict = field(default_factory=dict, init=False, repr=False)   # keys -> id (-1: taken)
    _keys: tuple | None = field(default=None, init=False, repr=False)
    _id: int = field(default=-1, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.packed:
            self._packer = VectorPacker()

    def _key(self, event_id: str) -> bytes:
        return self.prefix + event_id.encode()

    def _compact(self, vector: dict) -> Any:
        """``(layout id, values)`` of a vector; the vector itself if its layout's id is taken."""
        keys = tuple(vector)
        if keys != self._keys:
            lid = self._ids.get(keys)
            if lid is None:
                lid = self._ids[keys] = self._register(keys)
            if lid < 0:
                return vector
            self._keys, self._id = keys, lid
        return (self._id, tuple(vector.values()))

    def _register(self, keys: tuple) -> int:
        """Store a layout once (it is changelogged with the snapshots that use it); its id, or
        -1 if another layout holds that id."""
        lid = layout_id(keys)
        known = self._layouts.get(lid)
        if known is None:
            key = self.layout_prefix + str(lid).encode()
            stored = self.kv.get(key)
            if stored is None:
                self.kv.put(key, [LAYOUT_TIME, keys])
                stored = [LAYOUT_TIME, keys]
            known = self._layouts[lid] = tuple(stored[1])
        return lid if known == keys else -1

    def _vector(self, v: Any, event_id: str) -> dict:
        """The dict of a stored vector (see the module docstring)."""
        if type(v) is dict:
            return v  # stored by name: written before layouts, or under a taken id
        if type(v) is not tuple or len(v) != 2 or type(v[0]) is not int:
            raise SnapshotLayoutError(f"snapshot of event {event_id!r}: vector of unknown form "
                                      f"{type(v).__name__}")
        lid, values = v
        keys = self._layouts.get(lid)
        if keys is None:
            stored = self.kv.get(self.layout_prefix + str(lid).encode())
            if stored is None:
                raise SnapshotLayoutError(f"snapshot of event {event_id!r}: vector layout {lid} "
                                          f"is not in the store")
            keys = self._layouts[lid] = tuple(stored[1])
        if len(values) != len(keys):
            raise SnapshotLayoutError(f"snapshot of event {event_id!r}: {len(values)} values for "
                                      f"layout {lid} of {len(keys)} keys")
        return dict(zip(keys, values))

    def put(self, snapshot: Snapshot) -> None:
        v = snapshot.to_list()
        if self._packer is not None:
            v[3] = self._packer.pack(v[3])
            if v[11] is not None:
                v[11] = self._packer.pack(v[11])
        else:
            v[3] = self._compact(v[3])
            if v[11] is not None:
                v[11] = self._compact(v[11])
        self.kv.put(self._key(snapshot.event_id), v, cache=False)

    def _snapshot(self, v: list) -> Snapshot:
        snap = Snapshot.from_list(v)
        if self._packer is not None:
            snap.vector = self._packer.unpack(snap.vector)
            if snap.challenger_vector is not None:
                snap.challenger_vector = self._packer.unpack(snap.challenger_vector)
        else:
            snap.vector = self._vector(snap.vector, snap.event_id)
            if snap.challenger_vector is not None:
                snap.challenger_vector = self._vector(snap.challenger_vector, snap.event_id)
        return snap

    def get(self, event_id: str) -> Snapshot | None:
        """The stored snapshot, without joining (``None`` if absent or already labelled)."""
        v = self.kv.get(self._key(event_id))
        return self._snapshot(v) if v is not None and len(v) > 1 else None

    def take(self, event_id: str, label_time: int) -> tuple[Snapshot | None, str]:
        """Join a label: ``(snapshot, "joined")`` or ``(None, "unknown"|"expired"|"duplicate")``.

        A joined snapshot is replaced by a one-element tombstone (its event time) so a repeated
        label is recognised; the backend expires the tombstone with the same TTL.
        """
        key = self._key(event_id)
        v = self.kv.get(key)
        if v is None:
            self.stats.unknown += 1
            return None, UNKNOWN
        if len(v) == 1:
            self.stats.duplicate += 1
            return None, DUPLICATE
        if label_time - v[0] > self.ttl_ms:
            self.kv.delete(key)
            self.stats.expired += 1
            return None, EXPIRED
        self.kv.put(key, [v[0]], cache=False)
        self.stats.joined += 1
        return self._snapshot(v), JOINED
