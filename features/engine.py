"""The feature engine: fold events and labels into per-entity state, read feature dicts out.

Pure: state comes from a :class:`~features.store.StateStore` and goes back to it; time comes from
the events. The same engine runs in the streaming worker (one engine and store per partition), in
the offline ``features compute`` and in unit tests.

>>> from features.definitions import Feature, FeatureSet
>>> fs = FeatureSet([Feature("count", entity="user_id", window="1h"),
...                  Feature("sum", entity="user_id", field="amount", window="1h"),
...                  Feature("time_since_last", entity="user_id")])
>>> engine = FeatureEngine(fs)
>>> engine.process({"event_id": "e1", "event_time": 0, "user_id": "u1", "amount": 5.0})
{'user_count_1h': 1, 'user_sum_amount_1h': 5.0, 'user_time_since_last': -1.0}
>>> engine.process({"event_id": "e2", "event_time": 90_000, "user_id": "u1", "amount": 2.5})
{'user_count_1h': 2, 'user_sum_amount_1h': 7.5, 'user_time_since_last': 90.0}
>>> engine.process({"event_id": "e3", "event_time": 3_600_000, "user_id": "u1", "amount": 1.0})
{'user_count_1h': 2, 'user_sum_amount_1h': 3.5, 'user_time_since_last': 3510.0}
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from collections.abc import Mapping
from typing import Any, Callable, Iterable

from features.definitions import (EVENT_AGGREGATIONS, LABEL_AGGREGATIONS, VALUE_AGGREGATIONS,
                                  Feature, FeatureSet)
from features.exceptions import FeatureError
from features._kernel import EventReaders, GroupKernel, Groups, decode_index, index_entry
from features._kernel import extract as _extract
from features.store import DictStore, StateStore

__all__ = ["FeatureEngine", "EngineStats", "INDEX_PREFIX"]

#: Key prefix of the label index (event id -> event time, the entity keys it was folded into and
#: its label). The value is stored as bytes (``features._kernel.index_entry``, format 3), built
#: by the compiled loop; entries written before (format 1: ``[t, pairs, label]``) are still read.
INDEX_PREFIX = b"\x00ix/"


@dataclass
class EngineStats:
    """Counters since the engine was created (not persisted)."""

    events: int = 0
    late: int = 0
    labels: int = 0
    labels_applied: int = 0
    labels_unmatched: int = 0


class _Group:
    """Features sharing one entity key and event-type filter: one state object per entity."""

    __slots__ = ("index", "entity", "types", "prefix", "rings", "prev_readers", "last_fields",
                 "label_rings", "kernel")

    def __init__(self, index: int, entity: tuple[str, ...], types: tuple[str, ...]) -> None:
        self.index = index
        self.entity = entity
        self.types = frozenset(types) if types else None
        #: Per ring: (length_ms, delay_ms, resolution_ms, value fields, distinct fields, readers).
        self.rings: list[tuple] = []
        self.prev_readers: list[tuple[str, int]] = []   # (name, -1 = time since last | field idx)
        self.last_fields: list[str] = []
        self.label_rings: list[int] = []
        self.prefix = b""
        self.kernel: GroupKernel | None = None


def _accessor(event: Any) -> Callable[[str], Any]:
    if type(event) is dict or isinstance(event, Mapping):  # dict: skip the ABC check
        attrs = event.get("attributes") or {}
        get = event.get
        return lambda name: v if (v := get(name)) is not None else attrs.get(name)
    attrs = getattr(event, "attributes", None) or {}
    return lambda name: (v if (v := getattr(event, name, None)) is not None
                         else attrs.get(name))


class FeatureEngine:
    """Computes a feature set over events, keeping per-entity state in ``store``.

    ``store`` defaults to a :class:`~features.store.DictStore`. Call :meth:`process` once per event
    in arrival order and :meth:`process_label` once per label; the returned dict has one key per
    feature, in definition order.
    """

    def __init__(self, feature_set: FeatureSet, store: StateStore | None = None) -> None:
        self.feature_set = feature_set
        self.store: StateStore = store if store is not None else DictStore()
        self.stats = EngineStats()
        #: Highest event time seen (epoch ms), for callers that expire idle state.
        self.watermark = -1
        self._grace = feature_set.grace_ms
        self._ttl = feature_set.ttl_ms
        self._groups: list[_Group] = []
        self._event_features: list[tuple[str, str, str | None]] = []
        self._template: dict[str, Any] = {}
        self._fields: tuple[str, ...] = ()
        self._compile(feature_set)

    @property
    def names(self) -> list[str]:
        return list(self._template)

    # ------------------------------------------------------------------ compilation
    def _compile(self, fs: FeatureSet) -> None:
        groups: dict[tuple, _Group] = {}
        rings: dict[tuple, dict] = {}
        for f in fs.features:
            self._template[f.name] = _default(f)
            if f.agg in EVENT_AGGREGATIONS:
                self._event_features.append((f.name, f.agg, f.field))
                continue
            gkey = (f.entity, tuple(sorted(f.event_types)))
            g = groups.get(gkey)
            if g is None:
                g = groups[gkey] = _Group(len(groups), f.entity, gkey[1])
            if f.agg == "time_since_last":
                g.prev_readers.append((f.name, -1))
                continue
            if f.agg == "last":
                if f.field not in g.last_fields:
                    g.last_fields.append(f.field)
                g.prev_readers.append((f.name, g.last_fields.index(f.field)))
                continue
            w = f.spec
            r = rings.setdefault((gkey, w.length_ms, w.delay_ms, w.resolution_ms),
                                 {"group": g, "window": w, "values": [], "distinct": [],
                                  "minmax": False, "labels": False, "features": []})
            if f.agg in VALUE_AGGREGATIONS and f.field not in r["values"]:
                r["values"].append(f.field)
            if f.agg == "distinct" and f.field not in r["distinct"]:
                r["distinct"].append(f.field)
            r["minmax"] |= f.agg in ("min", "max")
            r["labels"] |= f.agg in LABEL_AGGREGATIONS
            r["features"].append(f)
        for r in rings.values():
            g, w = r["group"], r["window"]
            if r["labels"]:
                g.label_rings.append(len(g.rings))
            g.rings.append((w.length_ms, w.delay_ms, w.resolution_ms, tuple(r["values"]),
                            tuple(r["distinct"]),
                            [(f.name, f.agg, f.field) for f in r["features"]]))
        fields = {"event_time", "event_type", "event_id"}
        for g in groups.values():
            # The kernel's state format is part of the layout: a new format never reads old state.
            layout = repr(("kernel-2", g.entity, sorted(g.types or ()), g.last_fields,
                           [ring[:5] for ring in g.rings]))
            digest = blake2b(layout.encode(), digest_size=3).hexdigest()
            alias = "_".join(e[:-3] if e.endswith("_id") else e for e in g.entity)
            g.prefix = f"{alias}.{digest}/".encode()
            fields.update(g.entity, g.last_fields)
            for ring in g.rings:
                fields.update(ring[3], ring[4])
        for f in fs.features:
            if f.field:
                fields.add(f.field)
        self._groups = list(groups.values())
        for g in self._groups:
            g.kernel = GroupKernel(g.rings, g.last_fields, g.prev_readers, g.types,
                                   fs.distinct_capacity, fs.grace_ms, g.label_rings)
        self._loop = Groups([g.kernel for g in self._groups], [g.prefix for g in self._groups],
                            [g.entity for g in self._groups],
                            [g.index if g.label_rings else None for g in self._groups],
                            self._ttl, self.store.get, self.store.put,
                            getattr(self.store, "touch", None),
                            getattr(self.store, "live", False) is True, INDEX_PREFIX,
                            _objects(self.store), getattr(self.store, "hit_counts", None))
        self._fill_event_features = EventReaders(self._event_features).fill
        self._fields = tuple(sorted(fields))
        self._numeric = tuple(sorted({name for g in groups.values() for ring in g.rings
                                      for name in ring[3]}))
        self._keyed = tuple(sorted({name for g in groups.values()
                                    for name in (*g.entity, *(f for ring in g.rings
                                                              for f in ring[4]))}))
        self._labels = any(g.label_rings for g in self._groups)
        # A store may take an already-encoded value without the generic put (see
        # ``stream.state.CachedStore.put_encoded``).
        put_encoded = getattr(self.store, "put_encoded", None)
        self._put_index = put_encoded if put_encoded is not None else (
            lambda key, raw: self.store.put(key, raw, cache=False))

    # ------------------------------------------------------------------ events
    def process(self, event: Mapping[str, Any] | Any) -> dict[str, Any]:
        """Fold one event into the state and return its feature dict.

        ``event`` is a mapping (``Event.to_dict()`` or a decoded JSON object) or an object with
        the fields as attributes (``stream.events.Event``); fields not found at top level are
        looked up in its ``attributes``.
        """
        if type(event) is dict:
            vals = _extract(event, self._fields, self._numeric, self._keyed)
        else:
            vals = _extract(self._extract(event), self._fields, self._numeric, self._keyed)
        t = vals["event_time"]
        self.stats.events += 1
        if t > self.watermark:
            self.watermark = t
        out = dict(self._template)
        self._fill_event_features(vals, out)
        loop = self._loop
        entry = loop.process(vals, t, out, self._labels)
        if loop.late:
            self.stats.late += 1
        if entry is not None:  # (key, encoded value): stored as it is
            self._put_index(entry[0], entry[1])
        return out

    def _extract(self, event: Any) -> dict[str, Any]:
        """Field values of an event object (dict events go through the kernel's extract)."""
        get = _accessor(event)
        return {name: get(name) for name in self._fields}

    def process_batch(self, events: Iterable[Any]) -> list[dict[str, Any]]:
        """:meth:`process` each event in order (a convenience; batching changes nothing)."""
        return [self.process(e) for e in events]

    # ------------------------------------------------------------------ labels
    def process_label(self, label: Mapping[str, Any] | Any) -> bool:
        """Fold a label (``event_id``, ``is_fraud``, optional ``label_time``) into the windows.

        The label counts for the windows that hold the labelled event's time, in every
        label-aware entity the event was folded into. A later label for the same event replaces
        the earlier one. Returns whether any state changed: labels for unknown (never seen, or
        older than ``ttl``) events and repeated identical labels change nothing.
        """
        get = _accessor(label)
        self.stats.labels += 1
        eid, verdict = get("event_id"), get("is_fraud")
        if eid is None or verdict is None:
            raise FeatureError("a label needs event_id and is_fraud")
        if type(verdict) is not bool and verdict not in (0, 1):
            raise FeatureError(f"is_fraud must be true or false, got {verdict!r}")
        verdict = bool(verdict)
        ikey = INDEX_PREFIX + str(eid).encode()
        entry = self.store.get(ikey) if self._labels else None
        if entry is None:
            self.stats.labels_unmatched += 1
            return False
        # Bytes as written by the engine; a list when written before format 3 (or decoded so).
        event_t, pairs, prev = decode_index(entry) if type(entry) is bytes else entry
        label_time = get("label_time")
        if type(label_time) is int and label_time - event_t > self._ttl:
            self.stats.labels_unmatched += 1
            return False
        if prev is not None and bool(prev) == verdict:
            return False
        labeled = 0 if prev is not None else 1
        fraud = int(verdict) - (int(prev) if prev is not None else 0)
        for gi, key in pairs:
            g = self._groups[gi]
            st = self.store.get(key)
            if st is None or event_t < st.t - self._ttl:
                continue  # the entity expired since (a later life must not see this label)
            g.kernel.fold_label(st, event_t, labeled, fraud)
            self.store.put(key, st)
        self.store.put(ikey, index_entry(event_t, pairs, verdict), cache=False)
        self.stats.labels_applied += 1
        return True


def _objects(store: Any) -> dict | None:
    """The store's dict of live objects (``objects``), when it has one: the engine's loop looks
    states up there before it calls ``get`` (``features.store.StateStore``)."""
    objects = getattr(store, "objects", None)
    return objects if type(objects) is dict else None


# ---------------------------------------------------------------------- defaults
def _default(f: Feature) -> Any:
    if f.agg in ("count", "distinct", "fraud_count"):
        return 0
    if f.agg == "time_since_last":
        return -1.0
    if f.agg == "last":
        return None
    return 0.0
