"""The state-store protocol the feature engine talks to, and the codec for what it stores.

The engine keeps one state object per entity (a :class:`features._kernel.State`: compiled,
in C memory) under a ``bytes`` key. It asks the store for the object, updates it in place and
hands it back with :meth:`StateStore.put` (or, when the store has one, ``touch``); the store
decides when to serialise it with
:func:`encode` (``stream.state`` does so in batches behind a write-back cache, in front of RocksDB
or memory). Everything stored starts with its event time so a store can expire idle entries
without decoding them (:func:`entry_time`).

:class:`DictStore` is the protocol over a plain dict (no serialisation, no expiry) for doctests
and pure callers that keep state in memory for one run.

>>> blob = encode([1_767_225_600_000, [None], []])
>>> entry_time(blob), decode(blob)
(1767225600000, [1767225600000, [None], []])
"""

from __future__ import annotations

import marshal
import struct
from typing import Any, Iterator, Protocol, runtime_checkable

from features._kernel import FORMAT as _KERNEL_FORMAT
from features._kernel import INDEX_FORMAT as _INDEX_FORMAT
from features._kernel import State as _State
from features._kernel import decode_state as _decode_state
from features.exceptions import FeatureError

__all__ = ["StateStore", "DictStore", "encode", "decode", "entry_time", "FORMAT_VERSION"]

#: First byte of every encoded value; bump when the state layout changes incompatibly.
FORMAT_VERSION = 1
_HEADER = struct.Struct(">Bq")
# marshal format 4 has been stable since Python 3.4; state is local and never crosses trust lines.
_MARSHAL_VERSION = 4


@runtime_checkable
class StateStore(Protocol):
    """What the engine needs from a state store (one per Kafka partition)."""

    def get(self, key: bytes) -> Any | None:
        """The object stored under ``key``, or ``None``. The caller may modify it in place."""

    def put(self, key: bytes, value: Any, *, cache: bool = True) -> None:
        """Store ``value`` (possibly the object :meth:`get` returned, modified).

        ``cache=False`` hints that the value will rarely be read again (label index entries):
        a cached store writes it without keeping it among its hot entries.
        """

    def delete(self, key: bytes) -> None:
        """Remove ``key`` if present."""

    # Optional: ``touch(key)``, "the object get(key) returned was changed in place", which a
    # store can do cheaper than a put of that same object. The engine uses it when present, once
    # per change of a state since the store last wrote it: it sets the state's ``dirty`` flag
    # and touches only a clean state, so a store with ``touch`` must clear the flag
    # (``state.dirty = False``) whenever it encodes the state for a write.
    # Optional: ``put_encoded(key, raw)``, the same as ``put(key, raw, cache=False)`` for bytes
    # that are their own encoding (the label-index entry the engine writes with every event).
    # Optional: ``objects``, the dict holding every object ``get`` would return (keyed as in
    # ``get``). The engine looks each entity key up there first and takes a feature state it
    # finds as ``get``'s answer without calling it (a miss, or another kind of object, goes to
    # ``get``). It then does what the store's ``get`` does on a hit: sets the state's ``ref``
    # flag and, when the store has ``hit_counts`` (an int64 array), adds one to
    # ``hit_counts[0]``.


class DictStore:
    """:class:`StateStore` over a dict: objects are kept as they are, nothing expires."""

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}
        plain = type(self).get is DictStore.get and type(self).put is DictStore.put
        #: ``get`` hands out the stored objects themselves, so an object changed in place needs
        #: no ``put`` (the engine skips it). False for subclasses that copy or encode.
        self.live = plain
        #: The dict the engine may look states up in before calling ``get`` (see
        #: :class:`StateStore`); None for subclasses that copy or encode.
        self.objects = self.data if plain else None
        if plain:  # the dict's own bound method: no Python frame per lookup
            self.get = self.data.get  # type: ignore[method-assign]

    def get(self, key: bytes) -> Any | None:
        return self.data.get(key)

    def put(self, key: bytes, value: Any, *, cache: bool = True) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)

    def expire(self, before_ms: int) -> int:
        """Delete entries whose event time (first element) is older than ``before_ms``."""
        old = [k for k, v in self.data.items()
               if (entry_time(v) if type(v) is bytes else v[0]) < before_ms]
        for k in old:
            del self.data[k]
        return len(old)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.data)


def encode(value: Any) -> bytes:
    """Serialise an entity's feature state (:class:`features._kernel.State`, format 2) or any
    other stored list (scorer snapshots, label index entries of earlier versions; format 1,
    marshal): version byte, event time, payload. A label index entry is built encoded
    (``features._kernel.index_entry``, format 3): ``bytes`` of that format are stored as they are.
    """
    if type(value) is _State:
        return value.encode()
    if type(value) is bytes and value and value[0] == _INDEX_FORMAT:
        return value
    return _HEADER.pack(FORMAT_VERSION, value[0]) + marshal.dumps(value, _MARSHAL_VERSION)


def decode(data: bytes | memoryview) -> Any:
    """Inverse of :func:`encode` (a format-3 label index entry stays ``bytes``)."""
    fmt = data[0] if data else None
    if fmt == FORMAT_VERSION:
        return marshal.loads(memoryview(data)[_HEADER.size:])
    if fmt == _INDEX_FORMAT:
        return bytes(data)
    if fmt == _KERNEL_FORMAT:
        try:
            return _decode_state(data)
        except ValueError as exc:
            raise FeatureError(f"corrupt feature state: {exc}") from None
    raise FeatureError(f"state value has format {fmt!r}, expected {FORMAT_VERSION}, "
                       f"{_KERNEL_FORMAT} or {_INDEX_FORMAT}")


def entry_time(data: bytes | memoryview) -> int:
    """The event time (epoch ms) an encoded value was last updated at, without decoding it."""
    return _HEADER.unpack_from(data)[1]
