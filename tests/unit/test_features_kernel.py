"""The compiled kernel's own contracts: state encoding, corrupt input, the distinct hash map."""

from __future__ import annotations

import gc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features._kernel import INDEX_FORMAT, decode_index, hash_value, index_entry
from features.definitions import Feature, FeatureSet
from features.engine import FeatureEngine
from features.exceptions import FeatureError
from features.default import default_feature_set
from features.store import DictStore, decode, encode, entry_time

H = 3_600_000


def _ev(i, t, user="u1", merchant="m1", amount=10.0, **kw):
    return {"event_id": f"e{i}", "event_type": "transaction", "event_time": t, "user_id": user,
            "merchant_id": merchant, "amount": amount, "card_id": f"c{i % 7}",
            "device_id": f"d{i % 5}", "ip": f"10.0.{i % 3}.1", "country": "FR", **kw}


class _RoundTripStore(DictStore):
    """Encodes and decodes every value on every access, as a cold RocksDB read would."""

    def get(self, key):
        raw = self.data.get(key)
        return None if raw is None else decode(raw)

    def put(self, key, value, *, cache=True):
        self.data[key] = encode(value)


def test_encoded_state_round_trips_to_identical_features():
    events = [_ev(i, i * 37_000 + (i % 5) * 1000, user=f"u{i % 3}", merchant=f"m{i % 4}",
                  amount=1.25 * (i % 13)) for i in range(600)]
    live = FeatureEngine(default_feature_set())
    cold = FeatureEngine(default_feature_set(), _RoundTripStore())
    for i, e in enumerate(events):
        assert live.process(e) == cold.process(e), i
        if i % 50 == 0:
            label = {"event_id": e["event_id"], "is_fraud": i % 100 == 0}
            assert live.process_label(label) == cold.process_label(label)
    # Entity states (format 2) encode canonically: equal states give equal bytes, whatever
    # their history in memory; so do label index entries (format 3, stored as built).
    index = {k: raw for k, raw in cold.store.data.items() if raw[0] == INDEX_FORMAT}
    assert len(index) == len(events) and index == {k: live.store.data[k] for k in index}
    states = {k: raw for k, raw in cold.store.data.items() if raw[0] == 2}
    assert len(states) > 20
    for key, raw in states.items():
        assert encode(live.store.data[key]) == raw
        assert entry_time(raw) == live.store.data[key][0]
        assert encode(decode(memoryview(raw))) == encode(decode(bytearray(raw))) == raw
    # Millions of cached states must cost the cyclic GC nothing: none is tracked.
    assert not any(gc.is_tracked(live.store.data[key]) for key in states)


def test_corrupt_state_is_a_feature_error():
    engine = FeatureEngine(default_feature_set())
    engine.process(_ev(1, 0))
    raw = next(encode(v) for k, v in engine.store.data.items() if k.startswith(b"user."))
    for bad in (raw[:-1], raw + b"\x00", raw[:12], bytes([9]) + raw[1:]):
        with pytest.raises(FeatureError):
            decode(bad)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_damaged_state_never_crashes(data):
    """Truncated, extended or bit-flipped encodings decode to a state or fail cleanly."""
    engine = FeatureEngine(default_feature_set())
    for i in range(40):
        engine.process(_ev(i, i * 61_000, merchant=f"m{i % 2}"))
    raws = [encode(v) for k, v in sorted(engine.store.data.items()) if not k.startswith(b"\x00")]
    raw = bytearray(data.draw(st.sampled_from(raws)))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(9, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    raw = bytes(raw[:data.draw(st.integers(10, len(raw)))])
    try:
        state = decode(raw)
    except FeatureError:
        return
    encode(state)   # a state that decoded is whole enough to encode again


def test_hash_is_stable_and_nonzero():
    # Pinned: the hash is part of the stored format (and of distinct sampling).
    assert hash_value("u1") == hash_value("u1") != hash_value("u2")
    assert hash_value(7) == hash_value("7")
    assert all(hash_value(i) for i in range(10_000))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3_000)), min_size=1,
                max_size=400))
def test_distinct_map_matches_brute_force_under_churn(steps):
    """Many values entering and leaving a window (map growth and deletes), no sampling."""
    fs = FeatureSet([Feature("distinct", entity="merchant_id", field="user_id", window="10s",
                             resolution="1s")], grace=0, distinct_capacity=100_000)
    engine = FeatureEngine(fs)
    t = 0
    seen: list[tuple[int, int]] = []
    for dt, user in steps:
        t += dt
        seen.append((t, user))
        got = engine.process(_ev(len(seen), t, user=f"u{user}"))["merchant_distinct_user_10s_res1s"]
        # (t - 10s, t] at 1 s resolution: buckets (t//1000 - 10, t//1000]
        want = len({u for x, u in seen if t // 1000 - 10 < x // 1000 <= t // 1000})
        assert got == want


def test_layouts_the_encoding_cannot_hold_are_config_errors():
    from features.exceptions import FeatureConfigError
    many_fields = [Feature("sum", entity="user_id", field=f"x{i}", window="1h") for i in range(65)]
    with pytest.raises(FeatureConfigError, match="at most 64 numeric"):
        FeatureEngine(FeatureSet(many_fields))
    many_windows = [Feature("count", entity="user_id", window=f"{m}m") for m in range(1, 257)]
    with pytest.raises(FeatureConfigError, match="at most 255 distinct windows"):
        FeatureEngine(FeatureSet(many_windows))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535), st.binary(max_size=40)), max_size=5),
       st.integers(-2**63, 2**63 - 1), st.sampled_from([None, False, True]), st.data())
def test_label_index_entry_round_trips_and_damage_never_crashes(pairs, t, label, data):
    raw = index_entry(t, pairs, label)
    assert decode_index(raw) == [t, pairs, label] and entry_time(raw) == t
    assert decode(encode(raw)) == raw                   # the store keeps it as it is
    bad = bytearray(raw)
    if data.draw(st.booleans()):
        del bad[data.draw(st.integers(0, len(bad) - 1)):]
    else:
        bad[data.draw(st.integers(0, len(bad) - 1))] = data.draw(st.integers(0, 255))
    try:
        t2, pairs2, _ = decode_index(bytes(bad))
    except FeatureError:
        return
    assert type(t2) is int and all(type(k) is bytes for _, k in pairs2)


def test_decoded_and_new_states_outgrow_their_block_and_stay_equal():
    """A decoded state holds its parts in one block (``State``'s arena) sized to what it holds;
    folding more into it moves each growing part (distinct sets, buckets, maps) to a block of
    its own. Entities here go through a two-entry cache, so they are decoded, then folded into
    several times (new buckets, sets and maps that outgrow the block) before being evicted and
    encoded again: the features and bytes must equal those of states never encoded."""
    from stream.state import CachedStore, MemoryBackend

    fs = FeatureSet([Feature("distinct", entity="merchant_id", field="user_id", window="1h"),
                     Feature("distinct", entity="merchant_id", field="device_id", window="lifetime"),
                     Feature("sum", entity="merchant_id", field="amount", window="10m"),
                     Feature("count", entity="user_id", window="5m")],
                    grace="10m", distinct_capacity=64)
    live = FeatureEngine(fs)
    cold_store = CachedStore(MemoryBackend(), capacity=2, batch_size=7)
    cold = FeatureEngine(fs, cold_store)
    for i in range(3_000):
        # Bursts per merchant: a merchant's state, once read back, takes many events in a row.
        e = _ev(i, i * 1_700 - (i % 11) * 900, user=f"u{(i * 7) % 301}",
                merchant=f"m{(i // 40) % 5}", amount=0.5 * (i % 17))
        e["device_id"] = f"d{(i * 13) % 997}"
        assert live.process(e) == cold.process(e), i
    cold_store.flush()
    for key, raw in cold_store.backend.items():
        if raw[0] == 2:
            assert encode(live.store.data[key]) == raw
            assert encode(decode(raw)) == raw


def test_a_new_state_outlives_its_engine():
    """A state's block is its own: it stays whole after the engine and its store are gone."""
    engine = FeatureEngine(default_feature_set())
    for i in range(30):
        engine.process(_ev(i, i * 50_000))
    states = dict(engine.store.data)
    raws = {k: encode(v) for k, v in states.items() if not k.startswith(b"\x00")}
    del engine
    gc.collect()
    assert {k: encode(states[k]) for k in raws} == raws


# A user's state as main at 89e2c20 (before states were carved out of one block) encoded it:
# the stored format did not change, and state stored by that version must read back the same.
_STORED_BY_89E2C20 = bytes.fromhex(
    "020000019b771abe4003090000005b010000007a026d3000010000066ec10100000000060000000000000000"
    "0018400000000000000000000000000000000000000000000018400000000000803f40000000000098694000"
    "0000000000f87f000000000000f87fcb6dc10100000000d76dc10100000000e36dc10100000000ee6dc10100"
    "000000fa6dc10100000000066ec10100000000000000000000f03f0000000000000000000000000000000000"
    "0000000000f03f000000000000f83f0000000000000240000000000000f83f000000000000f83f0000000000"
    "00f03f00000000000000000000000000000000000000000000f03f0000000000000840000000000000224000"
    "000000000008400000000000000840000000000000f03f000000000000000000000000000000000000000000"
    "00f03f0000000000001240000000000040344000000000000012400000000000001240000000000000f03f00"
    "000000000000000000000000000000000000000000f03f000000000000184000000000000042400000000000"
    "0018400000000000001840000000000000f03f00000000000000000000000000000000000000000000f03f00"
    "00000000001e400000000000204c400000000000001e400000000000001e40000000000000f03f0000000000"
    "0000000000000000000000000000000000f03f00000000000022400000000000405440000000000000224000"
    "000000000022400000010044f61d000000000005000000000000000000001c40000000000000000000000000"
    "0000000003000000d8aa9710b434721a02000000f3e82dffede955540200000054ec63ff421610a003000000"
    "40f61d000000000041f61d000000000042f61d000000000043f61d000000000044f61d000000000000000000"
    "0000004000000000000000000000000000000000000000000000f03f00000000000000000000000000000000"
    "000000000000f03f000000000000000000000000000000000000000000000040000000000000000000000000"
    "00000000000000000000f03f000000000000000000000000000000000200000054ec63ff421610a0f3e82dff"
    "ede9555401000000d8aa9710b434721a0100000054ec63ff421610a002000000f3e82dffede95554d8aa9710"
    "b434721a0100000054ec63ff421610a001000100ffffffffffffffff00000000000000000000001c40000000"
    "0000000000000000000000000003000000d8aa9710b434721a01000000f3e82dffede955540100000054ec63"
    "ff421610a001000000")


def test_state_stored_by_the_previous_version_reads_back_the_same():
    fs = FeatureSet([Feature("count", entity="user_id", window="1h"),
                     Feature("sum", entity="user_id", field="amount", window="1h"),
                     Feature("distinct", entity="user_id", field="merchant_id", window="24h"),
                     Feature("distinct", entity="user_id", field="merchant_id", window="lifetime"),
                     Feature("last", entity="user_id", field="merchant_id")], grace="10m")
    t0 = 1_767_225_600_000

    def event(i, merchant, amount):
        return {"event_id": f"e{i}", "event_time": t0 + i * 700_000, "user_id": "u1",
                "merchant_id": merchant, "amount": amount}

    live = FeatureEngine(fs)
    for i in range(7):
        live.process(event(i, f"m{i % 3}", 1.5 * i))
    (key, state), = live.store.data.items()
    assert encode(state) == _STORED_BY_89E2C20
    stored = FeatureEngine(fs)
    stored.store.data[key] = decode(_STORED_BY_89E2C20)
    assert encode(stored.store.data[key]) == _STORED_BY_89E2C20
    want = {"user_count_1h": 4, "user_sum_amount_1h": 24.5, "user_distinct_merchant_24h": 4,
            "user_distinct_merchant_lifetime": 4, "user_last_merchant": "m0"}
    assert stored.process(event(9, "m7", 2.0)) == live.process(event(9, "m7", 2.0)) == want
    assert encode(stored.store.data[key]) == encode(live.store.data[key])


@given(st.integers(-(2 ** 62), 2 ** 62), st.one_of(st.none(), st.integers(-10 ** 6, 10 ** 6),
                                                  st.floats(allow_nan=False), st.booleans()))
def test_event_readers_match_python_calendar_arithmetic(t, value):
    # UTC calendar features of epoch ms, before 1970 too (floor division, Monday = 0).
    from features._kernel import EventReaders
    out = {}
    EventReaders([("v", "value", "amount"), ("night", "is_night", None),
                  ("dow", "day_of_week", None), ("hour", "hour_of_day", None),
                  ("weekend", "is_weekend", None)]).fill({"event_time": t, "amount": value}, out)
    hour, dow = (t // H) % 24, (t // (24 * H) + 3) % 7
    assert out == {"v": 0.0 if value is None else float(value), "night": int(hour < 6),
                   "dow": dow, "hour": hour, "weekend": int(dow >= 5)}
    assert list(out) == ["v", "night", "dow", "hour", "weekend"]
    assert all(type(out[k]) is int for k in ("night", "dow", "hour", "weekend"))


def test_event_readers_take_only_event_aggregations():
    from features._kernel import EventReaders
    from features.exceptions import FeatureConfigError
    with pytest.raises(FeatureConfigError, match="'count' is not read from the event"):
        EventReaders([("c", "count", None)])
