"""Every aggregation and window held against a brute-force reference, on both state backends.

The reference keeps every event and recomputes each feature from the definition in
``docs/features.md``: window membership via :meth:`features.windows.Window.contains`, the late
policy, event-type filters, TTL, labels (latest label wins, only labels that arrive after their
event). Streams are random, with equal timestamps, out-of-order events within the grace period and
late ones beyond it. Amounts are multiples of 0.25 so sums are exact in binary floating point and
compared with ``==``; derived statistics are compared to 1e-9 relative.
"""

from __future__ import annotations

import math
from fractions import Fraction
from itertools import count

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.definitions import Feature, FeatureSet
from features.engine import FeatureEngine
from stream.state import open_store

GRACE_MS = 120_000


def _features() -> list[Feature]:
    out: list[Feature] = [Feature(a) for a in ("hour_of_day", "day_of_week", "is_weekend",
                                                 "is_night")]
    out.append(Feature("value", field="amount"))
    windows = [dict(window="10s"), dict(window="2m"), dict(window="5m"),
               dict(window="30s", delay="20s"), dict(window="1h", resolution="1s"),
               dict(window="1h"), dict(window="lifetime")]
    entities = [("user_id", ()), (("user_id", "merchant_id"), ()),
                ("merchant_id", ("transaction",))]
    for entity, types in entities:
        out.append(Feature("time_since_last", entity=entity, event_types=types))
        out.append(Feature("last", entity=entity, field="amount", event_types=types))
        out.append(Feature("last", entity=entity, field="device_id", event_types=types))
        for w in windows:
            for agg in ("count", "fraud_count", "fraud_rate"):
                out.append(Feature(agg, entity=entity, event_types=types, **w))
            for agg in ("sum", "mean", "std", "min", "max", "ratio_to_mean", "zscore"):
                out.append(Feature(agg, entity=entity, field="amount", event_types=types, **w))
            out.append(Feature("distinct", entity=entity, field="device_id", event_types=types,
                               **w))
    return out


FEATURES = FeatureSet(_features(), grace=GRACE_MS, ttl="1d")


# ---------------------------------------------------------------------- the reference
class Reference:
    """Recomputes every feature from the full history, one event at a time."""

    def __init__(self, fs: FeatureSet) -> None:
        self.fs = fs
        self.entities: dict[tuple, list[dict]] = {}   # (group, key) -> folded events
        self.labels: dict[str, bool] = {}             # event id -> latest verdict
        self.known: set[str] = set()                  # events folded into a label group
        self.seq = count()

    def process(self, e: dict) -> dict:
        out = {}
        t = e["event_time"]
        folded_into: dict[tuple, list[dict]] = {}
        for f in self.fs.features:
            out[f.name] = self._feature(f, e, t, folded_into)
        for gk, evs in folded_into.items():
            self.entities[gk] = evs
        if any(f.agg in ("fraud_count", "fraud_rate") and gk[0] == (f.entity, f.event_types)
               for f in self.fs.features for gk in folded_into):
            self.known.add(e["event_id"])
        return out

    def label(self, lab: dict) -> None:
        if lab["event_id"] in self.known:
            self.labels[lab["event_id"]] = lab["is_fraud"]

    def _feature(self, f: Feature, e: dict, t: int, folded_into: dict):
        if f.agg == "hour_of_day":
            return (t // 3_600_000) % 24
        if f.agg == "day_of_week":
            return (t // 86_400_000 + 3) % 7
        if f.agg == "is_weekend":
            return int((t // 86_400_000 + 3) % 7 >= 5)
        if f.agg == "is_night":
            return int((t // 3_600_000) % 24 < 6)
        if f.agg == "value":
            return float(e["amount"]) if e.get("amount") is not None else 0.0
        parts = tuple(e.get(x) for x in f.entity)
        if None in parts:
            return _default(f)
        gk = ((f.entity, f.event_types), parts)
        view = self.entities.get(gk, [])
        if view and t - max(v["event_time"] for v in view) > self.fs.ttl_ms:
            view = []
        prev_t = max((v["event_time"] for v in view), default=-1)
        if f.agg == "time_since_last":
            return -1.0 if prev_t < 0 else max(0, t - prev_t) / 1000.0
        if f.agg == "last":
            if not view:
                return None
            latest = [v for v in view if v["event_time"] == prev_t][-1]
            return latest.get(f.field)
        late = prev_t >= 0 and t < prev_t - self.fs.grace_ms
        folds = not late and (not f.event_types or e["event_type"] in f.event_types)
        if folds:
            folded_into[gk] = view + [e]
        events = view + [e] if folds else view
        read_t = prev_t if late else t
        inside = [v for v in events if f.spec.contains(t=read_t, x=v["event_time"])]
        return _aggregate(f, inside, e, self.labels)


def _default(f: Feature):
    return {"count": 0, "distinct": 0, "fraud_count": 0, "time_since_last": -1.0,
            "last": None}.get(f.agg, 0.0)


def _aggregate(f: Feature, inside: list[dict], e: dict, labels: dict[str, bool]):
    if f.agg == "count":
        return len(inside)
    if f.agg in ("fraud_count", "fraud_rate"):
        known = [labels[v["event_id"]] for v in inside if v["event_id"] in labels]
        fraud = sum(known)
        if f.agg == "fraud_count":
            return fraud
        return fraud / len(known) if known else 0.0
    if f.agg == "distinct":
        return len({v[f.field] for v in inside if v.get(f.field) is not None})
    xs = [v[f.field] for v in inside if v.get(f.field) is not None]
    if f.agg == "sum":
        return float(sum(Fraction(x) for x in xs)) if xs else 0.0
    if f.agg == "min":
        return min(xs) if xs else 0.0
    if f.agg == "max":
        return max(xs) if xs else 0.0
    n = len(xs)
    mean = sum(Fraction(x) for x in xs) / n if n else Fraction(0)
    var = sum((Fraction(x) - mean) ** 2 for x in xs) / n if n else Fraction(0)
    std = math.sqrt(var)
    if f.agg == "mean":
        return float(mean)
    if f.agg == "std":
        return std
    cur = e.get(f.field)
    if f.agg == "ratio_to_mean":
        return float(cur / mean) if cur is not None and n and mean else 0.0
    return float((cur - mean) / Fraction(std)) if cur is not None and std else 0.0


def assert_same(got: dict, want: dict, where: str) -> None:
    assert list(got) == list(want), where
    for name, w in want.items():
        g = got[name]
        if isinstance(w, float) and isinstance(g, float):
            assert math.isclose(g, w, rel_tol=1e-9, abs_tol=1e-9), (where, name, g, w)
        else:
            assert g == w and type(g) is type(w), (where, name, g, w)


# ---------------------------------------------------------------------- random streams
_amounts = st.one_of(st.none(), st.integers(0, 4000).map(lambda q: q / 4))
_event = st.fixed_dictionaries({
    "kind": st.just("event"),
    "user_id": st.sampled_from(["u1", "u1", "u2"]),
    "merchant_id": st.one_of(st.none(), st.sampled_from(["m1", "m2"])),
    "event_type": st.sampled_from(["transaction", "transaction", "login"]),
    "amount": _amounts,
    "device_id": st.one_of(st.none(), st.sampled_from(["d1", "d2", "d3", "d4", "d5"])),
    # clock step: often zero (equal timestamps), sometimes big jumps past windows
    "step": st.one_of(st.just(0), st.integers(0, 3_000), st.integers(0, 3_000),
                      st.integers(0, 15_000), st.integers(0, 400_000)),
    # lateness relative to the clock: mostly in order, some within grace, some beyond it
    "back": st.one_of(st.just(0), st.just(0), st.integers(0, GRACE_MS),
                      st.integers(GRACE_MS, 3 * GRACE_MS)),
})
_label = st.fixed_dictionaries({
    "kind": st.just("label"),
    "which": st.integers(0, 10_000),
    "is_fraud": st.booleans(),
})
streams = st.lists(st.one_of(_event, _event, _label), min_size=1, max_size=80)


def materialise(ops: list[dict], start: int = 1_767_225_600_000) -> list[tuple[str, dict]]:
    clock, out, ids = start, [], []
    for i, op in enumerate(ops):
        if op["kind"] == "event":
            clock += op["step"]
            e = {k: v for k, v in op.items() if k not in ("kind", "step", "back")}
            e["event_id"] = f"e{i}"
            e["event_time"] = clock - op["back"]
            ids.append(e["event_id"])
            out.append(("event", e))
        elif ids:
            out.append(("label", {"event_id": ids[op["which"] % len(ids)],
                                  "is_fraud": op["is_fraud"]}))
    return out


BACKENDS = [("memory", 1), ("memory", 10_000), ("rocksdb", 1), ("rocksdb", 10_000)]


@pytest.mark.parametrize("backend,cache", BACKENDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])
@given(ops=streams)
def test_every_feature_matches_brute_force(backend, cache, ops, tmp_path_factory):
    path = tmp_path_factory.mktemp("state") if backend == "rocksdb" else None
    store = open_store(backend, path, cache_entries=cache, batch_size=3)
    try:
        engine = FeatureEngine(FEATURES, store)
        ref = Reference(FEATURES)
        for i, (kind, item) in enumerate(materialise(ops)):
            if kind == "event":
                assert_same(engine.process(item), ref.process(item), f"op {i}")
            else:
                engine.process_label(item)
                ref.label(item)
    finally:
        store.close()


def test_reference_sees_late_and_out_of_order_events():
    """Guard against a generator that silently stopped producing the hard cases."""
    ops = [dict(kind="event", user_id="u1", merchant_id="m1", event_type="transaction",
                amount=1.0, device_id="d1", step=s, back=b)
           for s, b in [(0, 0), (0, 0), (5_000, 3_000), (1_000, 0), (0, GRACE_MS + 10_000)]]
    engine = FeatureEngine(FEATURES)
    ref = Reference(FEATURES)
    outs = [(engine.process(e), ref.process(e)) for _, e in materialise(ops)]
    for got, want in outs:
        assert_same(got, want, "fixed")
    assert engine.stats.late == 1
    assert outs[1][0]["user_count_10s"] == 2          # equal timestamps both count
    assert outs[2][0]["user_count_10s"] == 3          # out of order, within grace
    assert outs[4][0]["user_count_lifetime"] == 4     # late: scored, not folded
