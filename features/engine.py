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
from marshal import dumps as _dumps
from marshal import loads as _loads
from hashlib import blake2b
from math import inf, sqrt
from typing import Any, Callable, Iterable, Mapping

from features.definitions import (EVENT_AGGREGATIONS, LABEL_AGGREGATIONS, VALUE_AGGREGATIONS,
                                  Feature, FeatureSet)
from features.exceptions import FeatureError
from features.rings import BUCKET_HEAD, V_WIDTH, RingSpec, sampled
from features.store import DictStore, StateStore

__all__ = ["FeatureEngine", "EngineStats", "INDEX_PREFIX"]

#: Key prefix of the label index (event id -> event time and the entity keys it was folded into).
INDEX_PREFIX = b"\x00ix/"
_KEY_SEP = "\x1f"
_EMPTY: tuple = ()
_SCALARS = (str, int, float, bool)
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
# Variances below this fraction of the mean square are rounding noise (sum-of-squares formula).
_VAR_EPS = 1e-9

Reader = Callable[[list, list, dict], Any]


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

    __slots__ = ("index", "entity", "types", "prefix", "specs", "ring_readers", "prev_readers",
                 "last_fields", "vfields", "dfields", "label_rings", "single", "plan",
                 "empty")

    def __init__(self, index: int, entity: tuple[str, ...], types: tuple[str, ...]) -> None:
        self.index = index
        self.entity = entity
        self.single = entity[0] if len(entity) == 1 else None
        self.types = frozenset(types) if types else None
        self.specs: list[RingSpec] = []
        self.ring_readers: list[tuple[Callable, Callable]] = []
        self.plan: list[tuple] = []
        self.prev_readers: list[tuple[str, int]] = []   # (name, -1 = time since last | field idx)
        self.last_fields: list[str] = []
        self.vfields: list[tuple[str, ...]] = []
        self.dfields: list[tuple[str, ...]] = []
        self.label_rings: list[int] = []
        self.prefix = b""

    def new_state(self) -> list:
        # One C call builds the nested lists, dicts and sets faster than Python code does.
        return _loads(self.empty)

    def compile_empty(self) -> None:
        self.empty = _dumps([-1, [None] * len(self.last_fields),
                             [s.new_ring() for s in self.specs]])


def _accessor(event: Any) -> Callable[[str], Any]:
    if isinstance(event, Mapping):
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
        self._event_readers: list[tuple[str, Reader]] = []
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
                self._event_readers.append((f.name, _event_reader(f)))
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
            spec = RingSpec(w.length_ms, w.delay_ms, w.resolution_ms, len(r["values"]),
                            len(r["distinct"]), r["minmax"], fs.distinct_capacity, fs.grace_ms)
            if r["labels"]:
                g.label_rings.append(len(g.specs))
            g.specs.append(spec)
            g.vfields.append(tuple(r["values"]))
            g.dfields.append(tuple(r["distinct"]))
            g.ring_readers.append(_compile_ring(r["features"], spec, r["values"], r["distinct"]))
        fields = {"event_time", "event_type", "event_id"}
        for g in groups.values():
            layout = repr((g.entity, sorted(g.types or ()), g.last_fields,
                           [(s.n, s.d, s.res, s.lifetime) for s in g.specs], g.vfields, g.dfields))
            digest = blake2b(layout.encode(), digest_size=3).hexdigest()
            alias = "_".join(e[:-3] if e.endswith("_id") else e for e in g.entity)
            g.prefix = f"{alias}.{digest}/".encode()
            fields.update(g.entity, g.last_fields)
            for vf in g.vfields:
                fields.update(vf)
            for df in g.dfields:
                fields.update(df)
        for f in fs.features:
            if f.field:
                fields.add(f.field)
        self._groups = list(groups.values())
        for g in self._groups:
            g.plan = [(i, *g.ring_readers[i]) for i in range(len(g.specs))]
            g.compile_empty()
        self._fields = tuple(sorted(fields))
        self._numeric = tuple(sorted({name for g in groups.values() for vf in g.vfields
                                      for name in vf}))
        self._keyed = tuple(sorted({name for g in groups.values()
                                    for name in (*g.entity, *(f for df in g.dfields for f in df))}))
        self._labels = any(g.label_rings for g in self._groups)

    # ------------------------------------------------------------------ events
    def process(self, event: Mapping[str, Any] | Any) -> dict[str, Any]:
        """Fold one event into the state and return its feature dict.

        ``event`` is a mapping (``Event.to_dict()`` or a decoded JSON object) or an object with
        the fields as attributes (``stream.events.Event``); fields not found at top level are
        looked up in its ``attributes``.
        """
        vals = self._extract(event)
        t = vals["event_time"]
        for name in self._numeric:
            v = vals[name]
            if v is not None and type(v) is not float and type(v) is not int:
                raise FeatureError(f"{name} must be a number, got {v!r}")
        for name in self._keyed:  # validated before any state changes
            v = vals[name]
            if v is not None and type(v) not in _SCALARS:
                raise FeatureError(f"{name} must be a string or number to key or count "
                                   f"distinct values, got {type(v).__name__}")
        if type(t) is not int:
            raise FeatureError(f"event_time must be epoch milliseconds (int), got {t!r}")
        self.stats.events += 1
        if t > self.watermark:
            self.watermark = t
        out = dict(self._template)
        for name, read in self._event_readers:
            out[name] = read(None, None, vals)
        index: list | None = [] if self._labels else None
        late = False
        for g in self._groups:
            late |= self._process_group(g, vals, t, out, index)
        if late:
            self.stats.late += 1
        if index:
            eid = vals["event_id"]
            if eid is not None:
                self.store.put(INDEX_PREFIX + str(eid).encode(), [t, index, None], cache=False)
        return out

    def _extract(self, event: Any) -> dict[str, Any]:
        if type(event) is dict:
            get = event.get
            vals = {name: get(name) for name in self._fields}
            attrs = get("attributes")
            if attrs and None in vals.values():
                for name, v in vals.items():
                    if v is None:
                        vals[name] = attrs.get(name)
            return vals
        get = _accessor(event)
        return {name: get(name) for name in self._fields}

    def process_batch(self, events: Iterable[Any]) -> list[dict[str, Any]]:
        """:meth:`process` each event in order (a convenience; batching changes nothing)."""
        return [self.process(e) for e in events]

    def _process_group(self, g: _Group, vals: dict, t: int, out: dict,
                       index: list | None) -> bool:
        if g.single is not None:
            kv = vals[g.single]
            if kv is None:
                return False
            key = g.prefix + (kv.encode() if type(kv) is str else str(kv).encode())
        else:
            parts = [vals[e] for e in g.entity]
            if None in parts:
                return False
            key = g.prefix + _KEY_SEP.join(map(str, parts)).encode()
        st = self.store.get(key)
        if st is None or t - st[0] > self._ttl:
            st = g.new_state()
        prev_t = st[0]
        for name, i in g.prev_readers:
            if i >= 0:
                out[name] = st[1][i]
            elif prev_t >= 0:
                out[name] = (t - prev_t) / 1000.0 if t > prev_t else 0.0
        late = prev_t >= 0 and t < prev_t - self._grace
        folds = not late and (g.types is None or vals["event_type"] in g.types)
        rings = st[2]
        if folds:
            if t >= prev_t:
                st[0] = t
                last = st[1]
                for i, name in enumerate(g.last_fields):
                    last[i] = vals[name]
            max_t = st[0]
            for i, step, view in g.plan:
                step(rings[i], t, max_t, vals, out)
        else:
            read_t = prev_t if late else t
            for i, step, view in g.plan:
                view(rings[i], read_t, vals, out)
        if folds:
            self.store.put(key, st)
            if index is not None and g.label_rings:
                index.append((g.index, key))
        return late

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
        event_t, pairs, prev = entry
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
            if st is None or event_t < st[0] - self._ttl:
                continue  # the entity expired since (a later life must not see this label)
            for ri in g.label_rings:
                g.specs[ri].fold_label(st[2][ri], event_t, st[0], labeled, fraud)
            self.store.put(key, st)
        self.store.put(ikey, [event_t, pairs, verdict], cache=False)
        self.stats.labels_applied += 1
        return True


# ---------------------------------------------------------------------- readers
def _default(f: Feature) -> Any:
    if f.agg in ("count", "distinct", "fraud_count"):
        return 0
    if f.agg == "time_since_last":
        return -1.0
    if f.agg == "last":
        return None
    return 0.0


def _event_reader(f: Feature) -> Reader:
    agg = f.agg
    if agg == "hour_of_day":
        return lambda row, lv, vals: (vals["event_time"] // _HOUR_MS) % 24
    if agg == "day_of_week":  # Monday = 0; 1970-01-01 was a Thursday
        return lambda row, lv, vals: (vals["event_time"] // _DAY_MS + 3) % 7
    if agg == "is_weekend":
        return lambda row, lv, vals: int((vals["event_time"] // _DAY_MS + 3) % 7 >= 5)
    if agg == "is_night":  # 00:00-05:59 UTC
        return lambda row, lv, vals: int((vals["event_time"] // _HOUR_MS) % 24 < 6)
    name = f.field

    def value(row: list, lv: list, vals: dict) -> float:
        v = vals[name]
        return float(v) if v is not None else 0.0
    return value


def _mean_std(n: int, s: float, q: float) -> tuple[float, float]:
    if not n:
        return 0.0, 0.0
    mean = s / n
    var = q / n - mean * mean
    if var <= _VAR_EPS * (q / n):
        return mean, 0.0
    return mean, sqrt(var)


def _std(n: int, s: float, q: float) -> float:
    return _mean_std(n, s, q)[1]


def _zscore(v: float | None, n: int, s: float, q: float) -> float:
    if v is None:
        return 0.0
    mean, std = _mean_std(n, s, q)
    return (v - mean) / std if std else 0.0


def _ratio(v: float | None, n: int, s: float) -> float:
    if v is None or not n or not s:
        return 0.0
    return v * n / s


_READER_GLOBALS = {"_std": _std, "_zscore": _zscore, "_ratio": _ratio, "inf": inf}


def _compile_ring(features: list[Feature], spec: RingSpec, values: list[str],
                  distinct: list[str]) -> tuple[Callable, Callable]:
    """Generate ``step`` (advance, fold one event, write features) and ``view`` (write features
    as seen from a time without folding) for one ring.

    The generic logic lives in :class:`~features.rings.RingSpec`; this inlines its in-order
    fast path with the ring's constants and writes every feature of the ring in the same call,
    which is what keeps the engine within its per-event budget in CPython. The property tests
    hold both paths to the brute-force reference. Names are identifiers; fields go through
    ``repr``.
    """
    readers = []
    for f in features:
        name, agg = repr(f.name), f.agg
        if agg == "count":
            expr = "row[0]"
        elif agg == "fraud_count":
            expr = "row[2]"
        elif agg == "fraud_rate":
            expr = "row[2] / row[1] if row[1] else 0.0"
        elif agg == "distinct":
            k = distinct.index(f.field)
            expr = f"len(row[{spec.doffs[k]}]) << ring[3][{k}]"
        else:
            o = BUCKET_HEAD + V_WIDTH * values.index(f.field)
            n, s, q, lo, hi = o, o + 1, o + 2, o + 3, o + 4
            v = f"vals[{f.field!r}]"
            expr = {
                "sum": f"row[{s}]",
                "mean": f"row[{s}] / row[{n}] if row[{n}] else 0.0",
                "std": f"_std(row[{n}], row[{s}], row[{q}])",
                "min": f"row[{lo}] if row[{n}] else 0.0",
                "max": f"row[{hi}] if row[{n}] else 0.0",
                "ratio_to_mean": f"_ratio({v}, row[{n}], row[{s}])",
                "zscore": f"_zscore({v}, row[{n}], row[{s}], row[{q}])",
            }[agg]
        readers.append(f"    out[{name}] = {expr}")

    view = ["def view(ring, t, vals, out):", "    row = spec.read(ring, t)", *readers]
    step = ["def step(ring, t, max_t, vals, out):"]
    if spec.lifetime:
        step += ["    row = run = ring[2]", "    run[0] += 1"]
    else:
        step += [f"    if max_t // {spec.res} > ring[0]:",
                 "        advance(ring, max_t)",
                 f"    b = t // {spec.res}",
                 "    bk = ring[1]",
                 "    bucket = bk.get(b)",
                 "    if bucket is None:",
                 "        bk[b] = bucket = template[:]"]
        step += [f"        bucket[{o}] = set()" for o in spec.doffs]
        step += ["    head = ring[0]",
                 "    run = ring[2]",
                 "    bucket[0] += 1",
                 f"    inrun = head - {spec.d + spec.n} < b <= head - {spec.d}",
                 "    if inrun:",
                 "        run[0] += 1"]
    for j, fname in enumerate(values):
        o = spec.voffs[j]
        step += [f"    v = vals[{fname!r}]", "    if v is not None:", "        sq = v * v"]
        if spec.lifetime:
            step += [f"        run[{o}] += 1", f"        run[{o + 1}] += v",
                     f"        run[{o + 2}] += sq",
                     f"        if v < run[{o + 3}]:", f"            run[{o + 3}] = v",
                     f"        if v > run[{o + 4}]:", f"            run[{o + 4}] = v"]
        else:
            step += [f"        bucket[{o}] += 1", f"        bucket[{o + 1}] += v",
                     f"        bucket[{o + 2}] += sq",
                     f"        if v < bucket[{o + 3}]:", f"            bucket[{o + 3}] = v",
                     f"        if v > bucket[{o + 4}]:", f"            bucket[{o + 4}] = v",
                     "        if inrun:", f"            run[{o}] += 1",
                     f"            run[{o + 1}] += v", f"            run[{o + 2}] += sq",
                     f"            if run[{o + 3}] is not None:",
                     f"                if v < run[{o + 3}]:", f"                    run[{o + 3}] = v",
                     f"                if v > run[{o + 4}]:", f"                    run[{o + 4}] = v"]
    for k, fname in enumerate(distinct):
        o = spec.doffs[k]
        step += [f"    v = vals[{fname!r}]", "    if v is not None:"]
        if spec.lifetime:
            step += [f"        m = run[{o}]",
                     f"        if v not in m and (not ring[3][{k}] or sampled(v, ring[3][{k}])):",
                     "            m[v] = 1",
                     f"            if len(m) > {spec.capacity}:",
                     f"                raise_level(ring, {k})"]
        else:
            step += [f"        s = bucket[{o}]",
                     f"        if v not in s and (not ring[3][{k}] or sampled(v, ring[3][{k}])):",
                     "            s.add(v)",
                     "            if inrun:",
                     f"                m = run[{o}]",
                     "                m[v] = m.get(v, 0) + 1",
                     f"                if len(m) > {spec.capacity}:",
                     f"                    raise_level(ring, {k})",
                     "                    run = ring[2]",
                     f"            elif len(s) > {spec.capacity}:",
                     f"                raise_level(ring, {k})",
                     "                run = ring[2]"]
    if not spec.lifetime:
        if spec.minmax:
            step.append("    row = ring[2] if b == ring[0] and None not in ring[2] "
                        "else spec.read(ring, t)")
        else:
            step.append("    row = ring[2] if b == ring[0] else spec.read(ring, t)")
    elif distinct:
        step.append("    row = ring[2]")
    step += readers
    namespace = {"_std": _std, "_zscore": _zscore, "_ratio": _ratio, "spec": spec,
                 "advance": spec.advance, "raise_level": spec._raise_level,
                 "template": spec.template, "sampled": sampled}
    source = "\n".join(step) + "\n\n" + "\n".join(view)
    where = f"<features ring {'/'.join(f.name for f in features)[:60]}>"
    exec(compile(source, where, "exec"), namespace)  # noqa: S102
    return namespace["step"], namespace["view"]
