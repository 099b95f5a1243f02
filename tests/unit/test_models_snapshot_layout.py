"""Stored scorer snapshots carry their vectors as (layout id, values) with the layout stored once
(online_models.labels.SnapshotStore): the round trip rebuilds the same dict (keys, order, types,
float bits), snapshots stored by name before still load, from the store and from the changelog,
and an unknown layout is a precise error."""

from __future__ import annotations

import math
import pickle
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.store import encode
from online_models.exceptions import SnapshotLayoutError
from online_models.labels import (DAY_MS, LAYOUT_TIME, MemoryKV, Snapshot, SnapshotStore,
                                  layout_id)
from online_models.scorer import Scorer
from stream.runtime import changelog
from stream.state.cache import CachedStore
from stream.state.memory import MemoryBackend


class NamedSnapshotStore(SnapshotStore):
    """Snapshots stored the way they were before layouts: vectors as dicts."""

    def _compact(self, vector):
        return vector


def _store() -> CachedStore:
    return CachedStore(MemoryBackend(), capacity=50, batch_size=7)


def _bits(value):
    if type(value) is float:
        return ("float", struct.pack("<d", value))
    return (type(value).__name__, value)


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and [_bits(v) for v in a.values()] == [_bits(v) for v in b.values()]


def _snapshot(eid: str, vector: dict, challenger: dict | None = None) -> Snapshot:
    return Snapshot(eid, "m1", 1_000, vector, 0.1, 0.2, "default-2.0", 0.1, None, 0,
                    "logreg-1.0" if challenger is not None else None, challenger,
                    0.3 if challenger is not None else None, 0.2)


values = st.one_of(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
                   st.integers(), st.booleans(), st.none(), st.text(max_size=5))
vectors = st.dictionaries(st.text(min_size=1, max_size=12), values, max_size=45)


@settings(max_examples=150, deadline=None)
@given(st.lists(vectors, min_size=1, max_size=6), st.booleans())
def test_round_trip_rebuilds_the_same_dict_through_the_codec(vecs, with_challenger):
    kv = _store()
    snaps = SnapshotStore(kv)
    for i, v in enumerate(vecs):
        snaps.put(_snapshot(f"e{i}", v, dict(reversed(v.items())) if with_challenger else None))
    kv.persist()
    kv.drop_cache()
    reader = SnapshotStore(kv)   # a fresh store object: layouts come from the store
    for i, v in enumerate(vecs):
        snap, status = reader.take(f"e{i}", 2_000)
        assert status == "joined"
        assert _same(snap.vector, v)
        if with_challenger:
            assert _same(snap.challenger_vector, dict(reversed(v.items())))


def test_special_floats_keep_their_bits():
    v = {"neg0": -0.0, "nan": float("nan"), "inf": -math.inf, "tiny": 5e-324, "big": 2**70,
         "flag": True, "none": None, "i": -3, "s": "x"}
    kv = _store()
    SnapshotStore(kv).put(_snapshot("e1", v))
    kv.persist()
    kv.drop_cache()
    assert _same(SnapshotStore(kv).get("e1").vector, v)


def test_a_record_carries_no_feature_names_and_the_layout_is_stored_once():
    kv = _store()
    snaps = SnapshotStore(kv)
    v = {"user_txn_count_1h": 1.0, "merchant_amount_mean_30d": 2.5}
    for i in range(3):
        snaps.put(_snapshot(f"e{i}", dict(v)))
    changes = kv.flush()
    lid = layout_id(tuple(v))
    layout_keys = [k for k in changes if k.startswith(b"snaplayout:")]
    assert layout_keys == [b"snaplayout:%d" % lid]
    assert kv.get(layout_keys[0]) == [LAYOUT_TIME, tuple(v)]
    for i in range(3):
        raw = changes[b"snap:e%d" % i]
        assert b"user_txn_count_1h" not in raw
        assert kv.get(b"snap:e%d" % i)[3] == (lid, (1.0, 2.5))


def test_the_layout_survives_expiry_of_old_entries():
    kv = _store()
    SnapshotStore(kv).put(_snapshot("e1", {"a": 1.0}))
    kv.persist()
    kv.drop_cache()
    assert kv.expire(10 * DAY_MS) == 1   # the snapshot (event time 1,000), not the layout
    snaps = SnapshotStore(kv)
    snaps.put(_snapshot("e2", {"a": 2.0}))
    assert snaps.get("e2").vector == {"a": 2.0}


def test_old_named_records_still_load_from_the_store():
    kv = _store()
    v = {"amount": 20.0, "n": 3, "flag": False}
    old = _snapshot("e1", v, {"amount": 20.0}).to_list()     # as stored before layouts
    kv.backend.write({b"snap:e1": encode(old)})
    snap, status = SnapshotStore(kv).take("e1", 2_000)
    assert status == "joined" and _same(snap.vector, v)
    assert snap.challenger_vector == {"amount": 20.0}


def test_old_named_records_still_load_from_the_changelog():
    v = {"amount": 20.0, "prior_logit": -3.75}
    old_value = encode(_snapshot("e1", v).to_list())
    records = [(changelog.EVENT_PREFIX + b"e1", changelog.pack(None, old_value))]
    puts, deletes, legacy = {}, set(), set()
    changelog.apply(records, puts, deletes, legacy)
    kv = _store()
    kv.backend.write(puts, deletes)
    snap, status = SnapshotStore(kv).take("e1", 2_000)
    assert status == "joined" and _same(snap.vector, v)


def test_a_layout_missing_from_the_store_is_a_precise_error():
    kv = _store()
    snaps = SnapshotStore(kv)
    snaps.put(_snapshot("e1", {"a": 1.0}))
    changes = kv.flush()
    other = _store()                      # only the event's record, not its layout
    other.backend.write({b"snap:e1": changes[b"snap:e1"]})
    lid = layout_id(("a",))
    with pytest.raises(SnapshotLayoutError, match=f"event 'e1': vector layout {lid} is not in"):
        SnapshotStore(other).take("e1", 2_000)


def test_a_vector_of_another_form_is_a_precise_error():
    kv = MemoryKV()
    kv.put(b"snap:e1", _snapshot("e1", [1.0, 2.0]).to_list())
    with pytest.raises(SnapshotLayoutError, match="event 'e1': vector of unknown form list"):
        SnapshotStore(kv).get("e1")
    kv.put(b"snap:e2", _snapshot("e2", (layout_id(("a",)), (1.0, 2.0))).to_list())
    kv.put(b"snaplayout:%d" % layout_id(("a",)), [LAYOUT_TIME, ("a",)])
    with pytest.raises(SnapshotLayoutError, match="2 values for layout .* of 1 keys"):
        SnapshotStore(kv).get("e2")


def test_a_layout_whose_id_is_taken_is_stored_by_name():
    kv = MemoryKV()
    lid = layout_id(("a", "b"))
    kv.put(b"snaplayout:%d" % lid, [LAYOUT_TIME, ("x", "y")])   # a (simulated) hash collision
    snaps = SnapshotStore(kv)
    snaps.put(_snapshot("e1", {"a": 1.0, "b": 2.0}))
    assert kv.get(b"snap:e1")[3] == {"a": 1.0, "b": 2.0}
    assert snaps.get("e1").vector == {"a": 1.0, "b": 2.0}


def _run(store_cls, kv) -> Scorer:
    scorer = Scorer.create("default", kv=kv, challenger="logreg")
    scorer.snapshots = store_cls(kv)
    for i in range(300):
        x = {"amount": float(i % 17) * 3.5, "user_txn_count_1h": float(i % 4),
             "merchant_fraud_rate_30d": (i % 7) / 10, "is_new_device": i % 3 == 0}
        scorer.score(x, f"m{i % 3}", f"e{i}", event_time=i)
        if i >= 20:
            scorer.learn(f"e{i - 20}", (i * 7) % 11 == 0, label_time=i + DAY_MS)
    return scorer


def test_learning_is_bit_identical_to_named_snapshots():
    named_kv, compact_kv = _store(), _store()
    named = _run(NamedSnapshotStore, named_kv)
    compact = _run(SnapshotStore, compact_kv)
    assert compact.global_model.n_learned == named.global_model.n_learned == 280
    assert compact.global_model.to_bytes() == named.global_model.to_bytes()
    assert pickle.dumps(compact.challenger.model) == pickle.dumps(named.challenger.model)
    # per-merchant models, as stored
    models = [{k: v for k, v in dict(kv.items()).items() if not k.startswith(b"snap")}
              for kv in (compact_kv, named_kv)]
    assert len(models[0]) == 3 and models[0] == models[1]


def test_a_layout_id_is_the_same_in_every_process():
    keys = ("user_txn_count_1h", "amount")
    rebuilt = tuple("".join(list(k)) for k in keys)     # equal strings, not the same objects
    assert layout_id(rebuilt) == layout_id(keys) == 1691411104
    assert layout_id(keys[::-1]) != layout_id(keys)      # the order is part of the layout
