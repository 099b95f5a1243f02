"""The changelog record layout: how a task's state changes become records, and back.

Every state key changed since the last commit becomes one record of the stage's compacted
changelog topic, keyed by the state key, whose value is the encoded state (``None``: deleted)
-- except for the two entries the last stage keeps per scored *event*, which always change
together: the feature engine's label-index entry (``features.engine.INDEX_PREFIX`` + event id)
and the scorer's snapshot for delayed labels (``snap:`` + event id). Those two travel as one
*event record* keyed ``EVENT_PREFIX`` + event id, whose value holds both encoded entries::

    value = LAYOUT byte + marshal((label-index entry bytes or None, snapshot bytes or None))

(marshal, like the state values themselves: ``features.store``; a third of the cost of
length-prefixed framing.) The snapshot bytes are the store's encoded value as it is: its vectors
carry a layout id instead of feature names, and the layouts are ordinary state keys
(``SnapshotStore.layout_prefix``), changelogged as their own records (``online_models.labels``).

An event record holds the current value of both entries (one that did not change in the commit
is read back from the store), so compaction can keep only the latest one; when both are gone
the record is a tombstone. That is one record per scored event instead of two, on the
throughput path.

Changelogs written before this layout (per-entry records keyed ``\\x00ix/...`` and ``snap:...``)
are migrated: :func:`apply` restores them as before and reports their event ids, and the task
rewrites each as an event record plus tombstones of the two old keys in its next transactions
(:func:`records`, ``migrate``). A task whose migration has not finished writes no checkpoint,
so its next owner replays the whole changelog and finishes it.
"""

from __future__ import annotations

import marshal
from typing import Callable, Iterable, Iterator

from features.engine import INDEX_PREFIX
from online_models.labels import SnapshotStore
from stream.exceptions import ChangelogFormatError

__all__ = ["EVENT_PREFIX", "LAYOUT", "apply", "records", "pack", "unpack"]

#: Key prefix of event records (label-index entry and snapshot of one event).
EVENT_PREFIX = b"\x00ev/"
#: First byte of an event record's value.
LAYOUT = 1
_SNAPSHOT_PREFIX: bytes = SnapshotStore.prefix
_ENTRIES = (INDEX_PREFIX, _SNAPSHOT_PREFIX)
_GROUPED = tuple(_ENTRIES)
_LAYOUT_BYTE = bytes([LAYOUT])
_MARSHAL_VERSION = 4
_UNSET = object()


def pack(index: bytes | None, snapshot: bytes | None) -> bytes:
    """An event record's value (see the module docstring)."""
    return _LAYOUT_BYTE + marshal.dumps((index, snapshot), _MARSHAL_VERSION)


def unpack(value: bytes) -> tuple[bytes | None, bytes | None]:
    """(label-index entry, snapshot) of an event record's value; ``None`` for an absent one."""
    if not value or value[0] != LAYOUT:
        raise ChangelogFormatError(f"event record of layout {value[:1]!r}, expected {LAYOUT}")
    try:
        entries = marshal.loads(memoryview(value)[1:])
    except (ValueError, EOFError, TypeError):
        entries = None
    if (type(entries) is not tuple or len(entries) != 2
            or not all(e is None or type(e) is bytes for e in entries)):
        raise ChangelogFormatError(f"event record of layout {LAYOUT} is malformed "
                                   f"({len(value)} bytes)")
    return entries[0], entries[1]


def records(changes: dict[bytes, bytes | None], current: Callable[[bytes], bytes | None],
            migrate: set[bytes] | None = None, limit: int = 10_000
            ) -> Iterator[tuple[bytes, bytes | None]]:
    """The changelog records (key, value) for a task's ``changes`` since the last commit.

    ``current(key)``: the stored encoded value of an entry (the other half of an event whose
    label-index entry or snapshot alone changed). ``migrate``: event ids restored from old
    per-entry records; up to ``limit`` of them are rewritten now (and removed from the set).
    """
    events: dict[bytes, list] = {}
    n_index, n_snapshot = len(INDEX_PREFIX), len(_SNAPSHOT_PREFIX)
    for key, value in changes.items():
        if not key.startswith(_GROUPED):
            yield key, value
            continue
        # INDEX_PREFIX is the one of the two that starts with a zero byte.
        slot, eid = (0, key[n_index:]) if key[0] == 0 else (1, key[n_snapshot:])
        entry = events.get(eid)
        if entry is None:
            events[eid] = entry = [_UNSET, _UNSET]
        entry[slot] = value
    if migrate:
        for _ in range(min(limit, len(migrate))):
            eid = migrate.pop()
            events.setdefault(eid, [_UNSET, _UNSET])
            for prefix in _ENTRIES:
                yield prefix + eid, None
    for eid, (index, snapshot) in events.items():
        if index is _UNSET:
            index = current(INDEX_PREFIX + eid)
        if snapshot is _UNSET:
            snapshot = current(_SNAPSHOT_PREFIX + eid)
        yield EVENT_PREFIX + eid, (None if index is None and snapshot is None
                                   else pack(index, snapshot))


def apply(records_: Iterable[tuple[bytes, bytes | None]], puts: dict[bytes, bytes],
          deletes: set[bytes], legacy: set[bytes]) -> None:
    """Restore changelog records into pending ``puts`` and ``deletes`` of state keys; event ids
    of old-layout per-entry records go into ``legacy`` (to migrate)."""
    for key, value in records_:
        if key.startswith(EVENT_PREFIX):
            eid = key[len(EVENT_PREFIX):]
            entries = (None, None) if value is None else unpack(value)
            for prefix, raw in zip(_ENTRIES, entries):
                _set(prefix + eid, raw, puts, deletes)
            continue
        if value is not None and key.startswith(_GROUPED):
            # An old-layout entry (its tombstones, the migration's own included, need nothing).
            prefix = INDEX_PREFIX if key.startswith(INDEX_PREFIX) else _SNAPSHOT_PREFIX
            legacy.add(key[len(prefix):])
        _set(key, value, puts, deletes)


def _set(key: bytes, value: bytes | None, puts: dict[bytes, bytes],
         deletes: set[bytes]) -> None:
    if value is None:
        puts.pop(key, None)
        deletes.add(key)
    else:
        deletes.discard(key)
        puts[key] = value
