"""Feature engine behaviour pinned by hand: labels, TTL, distinct sketch, batching determinism."""

from __future__ import annotations

import random

import pytest

from features.definitions import Feature, FeatureSet
from features.engine import INDEX_PREFIX, FeatureEngine
from features.exceptions import FeatureConfigError, FeatureError
from features._kernel import decode_index, index_entry, sampled
from features.store import DictStore, encode
from features.default import default_feature_set
from stream.state import CachedStore, MemoryBackend, RocksBackend, open_store

H = 3_600_000
D = 24 * H


def _ev(i, t, user="u1", merchant="m1", amount=10.0, **kw):
    return {"event_id": f"e{i}", "event_type": "transaction", "event_time": t, "user_id": user,
            "merchant_id": merchant, "amount": amount, **kw}


@pytest.fixture(params=["memory", "rocksdb"])
def store(request, tmp_path):
    s = open_store(request.param, tmp_path / "state", cache_entries=2, batch_size=2)
    yield s
    s.close()


def test_relabel_replaces_the_earlier_verdict(store):
    fs = FeatureSet([Feature("fraud_count", entity="merchant_id", window="7d"),
                     Feature("fraud_rate", entity="merchant_id", window="7d")])
    engine = FeatureEngine(fs, store)
    engine.process(_ev(1, 0))
    engine.process(_ev(2, 1000))
    assert engine.process_label({"event_id": "e1", "is_fraud": True})
    assert not engine.process_label({"event_id": "e1", "is_fraud": True})   # repeat: no change
    out = engine.process(_ev(3, 2000))
    assert (out["merchant_fraud_count_7d"], out["merchant_fraud_rate_7d"]) == (1, 1.0)
    assert engine.process_label({"event_id": "e1", "is_fraud": False})     # review overturned
    assert engine.process_label({"event_id": "e2", "is_fraud": False})
    out = engine.process(_ev(4, 3000))
    assert (out["merchant_fraud_count_7d"], out["merchant_fraud_rate_7d"]) == (0, 0.0)
    assert engine.process_label({"event_id": "e2", "is_fraud": True})
    out = engine.process(_ev(5, 4000))
    assert (out["merchant_fraud_count_7d"], out["merchant_fraud_rate_7d"]) == (1, 0.5)
    assert not engine.process_label({"event_id": "nope", "is_fraud": True})
    assert engine.stats.labels_unmatched == 1


def test_delayed_label_window_only_sees_old_events(store):
    fs = FeatureSet([Feature("fraud_rate", entity="merchant_id", window="1d", delay="1d")])
    engine = FeatureEngine(fs, store)
    engine.process(_ev(1, 0))
    engine.process_label({"event_id": "e1", "is_fraud": True, "label_time": H})
    assert engine.process(_ev(2, 2 * H))["merchant_fraud_rate_24h_delay24h"] == 0.0
    assert engine.process(_ev(3, D + H))["merchant_fraud_rate_24h_delay24h"] == 1.0
    assert engine.process(_ev(4, 2 * D + H))["merchant_fraud_rate_24h_delay24h"] == 0.0


def test_idle_entity_expires_after_ttl(store):
    fs = FeatureSet([Feature("count", entity="user_id"),
                     Feature("time_since_last", entity="user_id")], ttl="2d")
    engine = FeatureEngine(fs, store)
    assert engine.process(_ev(1, 0))["user_count_lifetime"] == 1
    assert engine.process(_ev(2, 2 * D))["user_count_lifetime"] == 2       # exactly ttl: kept
    out = engine.process(_ev(3, 4 * D + 1))
    assert (out["user_count_lifetime"], out["user_time_since_last"]) == (1, -1.0)
    store.flush()
    assert store.expire(4 * D) == 0 and store.expire(4 * D + 2) == 1


def test_label_for_an_expired_life_is_ignored(store):
    fs = FeatureSet([Feature("fraud_count", entity="user_id")], ttl="2d")
    engine = FeatureEngine(fs, store)
    engine.process(_ev(1, 0))
    engine.process(_ev(2, 3 * D))                      # more than ttl later: a new life
    engine.process_label({"event_id": "e1", "is_fraud": True})
    assert engine.process(_ev(3, 3 * D + 1))["user_fraud_count_lifetime"] == 0
    engine.process_label({"event_id": "e2", "is_fraud": True})
    assert engine.process(_ev(4, 3 * D + 2))["user_fraud_count_lifetime"] == 1


def test_distinct_count_is_exact_then_sampled():
    fs = FeatureSet([Feature("distinct", entity="merchant_id", field="user_id", window="1h"),
                     Feature("distinct", entity="merchant_id", field="user_id")],
                    distinct_capacity=64)
    engine = FeatureEngine(fs)
    outs = [engine.process(_ev(i, i * 10, user=f"u{i}")) for i in range(2000)]
    assert [o["merchant_distinct_user_1h"] for o in outs[:64]] == list(range(1, 65))
    for o in outs[-100:]:
        for name in ("merchant_distinct_user_1h", "merchant_distinct_user_lifetime"):
            assert abs(o[name] - 2000) / 2000 < 0.5, o   # 4 sigma at capacity 64
    assert sampled("anything", 0)


def test_late_events_are_scored_with_current_state_not_folded():
    fs = FeatureSet([Feature("count", entity="user_id", window="1d")], grace="1h")
    engine = FeatureEngine(fs)
    engine.process(_ev(1, 10 * H))
    assert engine.process(_ev(2, 9 * H + 1))["user_count_24h"] == 1      # the 10h one is later
    assert engine.process(_ev(3, 8 * H))["user_count_24h"] == 2          # late: not folded
    assert engine.process(_ev(4, 10 * H))["user_count_24h"] == 3
    assert engine.stats.late == 1


def test_event_objects_and_attributes_are_read():
    from stream.events import Event
    fs = FeatureSet([Feature("distinct", entity="user_id", field="shop", window="1h"),
                     Feature("sum", entity="user_id", field="amount", window="1h")])
    engine = FeatureEngine(fs)
    e = Event(event_id="e1", event_type="transaction", event_time=0, user_id="u1",
              merchant_id="m1", amount=2.0, currency="EUR", attributes={"shop": "web"})
    assert engine.process(e) == {"user_distinct_shop_1h": 1, "user_sum_amount_1h": 2.0}
    assert engine.process(e.to_dict())["user_distinct_shop_1h"] == 1
    with pytest.raises(FeatureError):
        engine.process({"event_time": "yesterday", "user_id": "u1"})
    with pytest.raises(FeatureError):
        engine.process({"event_time": 1, "user_id": "u1", "amount": "12"})
    with pytest.raises(FeatureError):
        engine.process({"event_time": 1, "user_id": "u1", "shop": {"nested": 1}})
    with pytest.raises(FeatureError):
        engine.process_label({"event_id": "e1", "is_fraud": "false"})


def test_bad_definitions_are_rejected():
    with pytest.raises(FeatureConfigError, match="needs a 'field'"):
        Feature("sum", entity="user_id", window="1h")
    with pytest.raises(FeatureConfigError, match="not a multiple"):
        Feature("count", entity="user_id", window="1h", delay="30s")
    with pytest.raises(FeatureConfigError, match="ttl"):
        FeatureSet([Feature("count", entity="user_id", window="30d")], ttl="7d")
    with pytest.raises(FeatureConfigError, match="cannot read"):
        Feature("count", entity="user_id", window="soon")


def _stream(n: int, seed: int = 7) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    t, out = 1_767_225_600_000, []
    for i in range(n):
        t += rng.choice([0, 0, 250, 1_000, 30_000, 600_000])
        back = rng.choice([0, 0, 0, 0, 120_000, 5_000_000])
        out.append(("event", {
            "event_id": f"e{i}", "event_type": rng.choice(["transaction", "login"]),
            "event_time": t - back, "user_id": f"u{rng.randrange(20)}",
            "merchant_id": f"m{rng.randrange(5)}", "amount": round(rng.uniform(1, 500), 2),
            "device_id": rng.choice([None, "d1", "d2", "d3"]), "country": rng.choice(["FR", "DE"]),
            "card_id": f"c{rng.randrange(25)}", "ip": f"10.0.0.{rng.randrange(9)}"}))
        if rng.random() < 0.2:
            out.append(("label", {"event_id": f"e{rng.randrange(i + 1)}",
                                  "is_fraud": rng.random() < 0.3}))
    return out


def _run(stream, backend, path, batch):
    """Process in batches; after each batch flush and drop the cache, reopening RocksDB (a
    restart from local state)."""
    outs, memory = [], MemoryBackend()
    for start in range(0, len(stream), batch):
        raw = RocksBackend(path) if backend == "rocksdb" else memory
        store = CachedStore(raw, capacity=50, batch_size=16)
        engine = FeatureEngine(default_feature_set(), store)
        for kind, item in stream[start:start + batch]:
            if kind == "event":
                outs.append(engine.process(item))
            else:
                engine.process_label(item)
        store.close()
    return outs


def test_replay_in_different_batch_sizes_is_bit_identical(tmp_path):
    stream = _stream(600)
    a = _run(stream, "rocksdb", tmp_path / "a", batch=1000)
    b = _run(stream, "rocksdb", tmp_path / "b", batch=37)
    m = _run(stream, "memory", None, batch=1)
    plain_engine = FeatureEngine(default_feature_set(), DictStore())
    plain = []
    for kind, item in stream:
        if kind == "event":
            plain.append(plain_engine.process(item))
        else:
            plain_engine.process_label(item)
    assert len(a) == 600
    assert a == b == m == plain
    assert any(o["user_txn_count_1h"] > 1 for o in a)
    assert any(o["merchant_txn_fraud_count_30d_delay7d"] == 0 for o in a)


@pytest.mark.parametrize("capacity", [3, 50, 10_000])
def test_flushes_between_events_lose_no_change(capacity):
    """A worker flushes at every commit and keeps its live objects: a state changed again after a
    flush is written again (the engine touches a cached state once per write, then relies on the
    store clearing the state's dirty flag when it writes it)."""
    stream = _stream(400)
    raw = MemoryBackend()
    store = CachedStore(raw, capacity=capacity, batch_size=16)
    engine = FeatureEngine(default_feature_set(), store)
    plain = FeatureEngine(default_feature_set(), DictStore())
    for n, (kind, item) in enumerate(stream):
        if kind == "event":
            assert engine.process(item) == plain.process(item)
        else:
            assert engine.process_label(item) == plain.process_label(item)
        if n % 7 == 0:
            store.flush()
    store.flush()
    stored = dict(raw.items())
    assert stored.keys() == plain.store.data.keys()
    for key, value in plain.store.data.items():
        # Feature states encode canonically; label index entries are stored as built.
        assert stored[key] == encode(value)


def _label_fs():
    return FeatureSet([Feature("fraud_count", entity="merchant_id", window="7d"),
                       Feature("fraud_rate", entity="user_id", window="7d"),
                       Feature("count", entity="card_id", window="1h")])


def test_label_index_entry_is_built_encoded(store):
    engine = FeatureEngine(_label_fs(), store)
    engine.process(_ev(1, 5_000, card_id="c1"))
    engine.process({**_ev(2, 6_000, user="u2"), "event_id": 2})      # an int id: keyed str(id)
    engine.process({**_ev(3, 7_000), "event_id": None})               # no id: no entry
    store.flush()
    raw = store.get(INDEX_PREFIX + b"e1")
    t, pairs, label = decode_index(raw)
    # Only the label-aware groups (user, merchant), not the card's count.
    assert (t, label) == (5_000, None) and sorted(key[:2] for _, key in pairs) == [b"me", b"us"]
    assert raw == index_entry(5_000, pairs, None)
    assert engine.process_label({"event_id": "e1", "is_fraud": True})
    assert store.get(INDEX_PREFIX + b"e1") == index_entry(5_000, pairs, True)
    assert engine.process_label({"event_id": 2, "is_fraud": True})
    assert not engine.process_label({"event_id": "e3", "is_fraud": True})
    assert engine.process(_ev(4, 8_000))["merchant_fraud_count_7d"] == 2


def test_label_index_entries_of_the_previous_format_are_still_read(tmp_path):
    """Entries written before format 3 (a marshal list ``[t, [(group, key), ...], label]``,
    format 1) are read after a restart; a relabel rewrites them in format 3."""
    events = [_ev(i, i * 60_000, user=f"u{i % 3}", merchant=f"m{i % 2}") for i in range(12)]
    labels = [{"event_id": f"e{i}", "is_fraud": i % 3 == 0} for i in range(0, 12, 2)]
    results = []
    for legacy in (False, True):
        store = open_store("rocksdb", tmp_path / str(legacy), cache_entries=4, batch_size=3)
        engine = FeatureEngine(_label_fs(), store)
        for e in events:
            engine.process(e)
        store.flush()
        if legacy:  # what the previous version wrote for the same events
            old = {key: encode(decode_index(raw)) for key, raw in store.backend.items()
                   if key.startswith(INDEX_PREFIX)}
            assert old and all(raw[0] == 1 for raw in old.values())
            store.backend.write(old)
        store.close()
        store = open_store("rocksdb", tmp_path / str(legacy), cache_entries=4, batch_size=3)
        engine = FeatureEngine(_label_fs(), store)
        applied = [engine.process_label(label) for label in labels]
        applied.append(engine.process_label(labels[0]))     # a repeat changes nothing
        out = engine.process(_ev(99, 13 * 60_000, merchant="m0"))
        store.flush()
        index = {k: raw for k, raw in store.backend.items() if k.startswith(INDEX_PREFIX)}
        # The labelled entries, rewritten in format 3 (the others stay as they were).
        results.append((applied, out, {k: raw for k, raw in index.items()
                                       if raw[0] == 3 and decode_index(raw)[2] is not None}))
        store.close()
    assert results[0] == results[1]
    assert results[0][0] == [True] * 6 + [False] and results[0][1]["merchant_fraud_count_7d"] == 2


def test_a_corrupt_label_index_entry_is_a_feature_error():
    engine = FeatureEngine(_label_fs())
    engine.process(_ev(1, 0))
    key = INDEX_PREFIX + b"e1"
    engine.store.data[key] = engine.store.data[key][:-1]
    with pytest.raises(FeatureError, match="label index"):
        engine.process_label({"event_id": "e1", "is_fraud": True})


def test_dict_store_expires_label_index_entries_by_event_time():
    engine = FeatureEngine(_label_fs())
    engine.process(_ev(1, 0))
    engine.process(_ev(2, D, user="u2", merchant="m2", card_id="c2"))
    assert engine.store.expire(1) == 3                  # e1's entry, its user and merchant
    assert {k[:4] for k in engine.store.data} == {INDEX_PREFIX, b"user", b"merc", b"card"}
