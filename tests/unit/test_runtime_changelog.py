"""The changelog record layout (stream.runtime.changelog): one event record per scored event,
restore of both layouts, migration of old records, and checkpoints of the old layout."""

from __future__ import annotations

import pytest

from features.engine import INDEX_PREFIX
from stream.exceptions import ChangelogFormatError
from stream.runtime import changelog
from stream.runtime.changelog import EVENT_PREFIX
from stream.runtime.checkpoint import read_checkpoint, write_checkpoint

SNAP = b"snap:"


def restore(records):
    puts, deletes, legacy = {}, set(), set()
    changelog.apply(records, puts, deletes, legacy)
    return puts, deletes, legacy


def test_an_events_index_entry_and_snapshot_travel_as_one_record():
    changes = {b"us/u1": b"state", INDEX_PREFIX + b"e1": b"ix", SNAP + b"e1": b"snap"}
    out = list(changelog.records(changes, current=lambda key: pytest.fail("no read needed")))
    assert [k for k, _ in out] == [b"us/u1", EVENT_PREFIX + b"e1"]
    puts, deletes, legacy = restore(out)
    assert puts == changes and not deletes and not legacy


def test_a_half_changed_event_carries_the_stored_other_half():
    stored = {INDEX_PREFIX + b"e1": b"ix-old"}
    out = list(changelog.records({SNAP + b"e1": b"tomb"}, current=stored.get))
    assert out == [(EVENT_PREFIX + b"e1", changelog.pack(b"ix-old", b"tomb"))]
    assert restore(out)[0] == {INDEX_PREFIX + b"e1": b"ix-old", SNAP + b"e1": b"tomb"}


def test_an_event_with_both_entries_gone_is_a_tombstone():
    out = list(changelog.records({INDEX_PREFIX + b"e1": None, SNAP + b"e1": None},
                                 current=lambda key: None))
    assert out == [(EVENT_PREFIX + b"e1", None)]
    puts, deletes, _ = restore([(EVENT_PREFIX + b"e1", changelog.pack(b"a", b"b"))] + out)
    assert not puts and deletes == {INDEX_PREFIX + b"e1", SNAP + b"e1"}


def test_only_one_entry_present():
    value = changelog.pack(None, b"s")
    assert changelog.unpack(value) == (None, b"s")
    puts, deletes, _ = restore([(EVENT_PREFIX + b"e1", value)])
    assert puts == {SNAP + b"e1": b"s"} and deletes == {INDEX_PREFIX + b"e1"}


def test_old_layout_records_restore_and_are_rewritten_with_tombstones_for_the_old_keys():
    old = [(INDEX_PREFIX + b"e1", b"ix"), (SNAP + b"e1", b"s1"), (SNAP + b"e2", b"s2"),
           (SNAP + b"e3", b"s3"), (SNAP + b"e3", None), (b"us/u1", b"state")]
    puts, deletes, legacy = restore(old)
    assert puts == {INDEX_PREFIX + b"e1": b"ix", SNAP + b"e1": b"s1", SNAP + b"e2": b"s2",
                    b"us/u1": b"state"}
    assert deletes == {SNAP + b"e3"} and legacy == {b"e1", b"e2", b"e3"}
    # The task rewrites them (a few per commit), reading the store for what did not change.
    migrate = set(legacy)
    first = list(changelog.records({}, puts.get, migrate, limit=2))
    rest = list(changelog.records({}, puts.get, migrate, limit=2))
    assert not migrate
    replayed = restore(old + first + rest)
    assert replayed[0] == puts and replayed[1] >= {SNAP + b"e3"}
    # After compaction only the event records and the old keys' tombstones remain.
    latest = dict(old + first + rest)
    assert {k: v for k, v in latest.items() if v is not None} == {
        b"us/u1": b"state",
        EVENT_PREFIX + b"e1": changelog.pack(b"ix", b"s1"),
        EVENT_PREFIX + b"e2": changelog.pack(None, b"s2")}
    compacted = restore(sorted(latest.items(), key=lambda kv: kv[0].startswith(EVENT_PREFIX)))
    assert compacted[0] == puts and not compacted[2]


def test_an_unknown_event_record_layout_is_a_clear_error():
    with pytest.raises(ChangelogFormatError, match="layout"):
        restore([(EVENT_PREFIX + b"e1", b"\x07junk")])
    for bad in (b"\x01", b"\x01junk", b"\x01" + changelog.pack(b"a", None)[1:-2]):
        with pytest.raises(ChangelogFormatError, match="malformed"):
            restore([(EVENT_PREFIX + b"e1", bad)])


def test_the_two_entry_prefixes_differ_in_their_first_byte():
    # records() tells a label-index key from a snapshot key by its first byte alone.
    assert INDEX_PREFIX[0] == 0 and SNAP[0] != 0


def test_checkpoints_of_the_old_layout_are_not_trusted(tmp_path):
    path = tmp_path / "merchant-0.checkpoint"
    write_checkpoint(path, "g.merchant.changelog", 0, 42)
    assert read_checkpoint(path, "g.merchant.changelog", 0) == 42
    path.write_bytes(b'{"topic":"g.merchant.changelog","partition":0,"offset":42,"version":1}')
    assert read_checkpoint(path, "g.merchant.changelog", 0) is None


def test_engine_index_entries_round_trip_through_event_records():
    """The label-index entries the engine writes (format 3 bytes) restore from event records, in
    either layout, into a store where labels fold exactly as in the original."""
    from features.definitions import Feature, FeatureSet
    from features.engine import FeatureEngine
    from stream.state import CachedStore, MemoryBackend

    fs = FeatureSet([Feature("fraud_count", entity="merchant_id", window="7d")])
    events = [{"event_id": f"e{i}", "event_time": i * 1000, "merchant_id": f"m{i % 2}"}
              for i in range(6)]
    store = CachedStore(MemoryBackend(), capacity=2, batch_size=2)
    engine = FeatureEngine(fs, store)
    for e in events:
        engine.process(e)
    engine.process_label({"event_id": "e2", "is_fraud": True})
    changes = store.flush()
    out = list(changelog.records(changes, current=lambda key: None))
    assert sum(k.startswith(EVENT_PREFIX) for k, _ in out) == len(events)
    puts, deletes, _ = restore(out)
    assert puts == changes and all(k.startswith(SNAP) for k in deletes)   # no snapshots here
    restored = MemoryBackend()
    restored.write(puts)
    again = FeatureEngine(fs, CachedStore(restored, capacity=2, batch_size=2))
    for label in ({"event_id": "e4", "is_fraud": True}, {"event_id": "e2", "is_fraud": False}):
        assert again.process_label(label) == engine.process_label(label) is True
    probe = {"event_id": "p", "event_time": 9000, "merchant_id": "m0"}
    assert again.process(probe) == engine.process(probe) == {"merchant_fraud_count_7d": 1}
