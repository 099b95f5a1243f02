"""State stores: both backends behind the write-back cache, the options object, RocksDB errors."""

from __future__ import annotations

import dataclasses
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import rocksdict

from features.definitions import Feature, FeatureSet
from features.engine import FeatureEngine
from features.store import decode, encode, entry_time
from stream.state import (CachedStore, MemoryBackend, RocksBackend, RocksOptions, StateClosedError,
                          StateCorruptionError, StateError, StateLockedError, open_store,
                          partition_path, rocksdb_error)
from stream.state import rocks as rocks_module


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request, tmp_path):
    b = MemoryBackend() if request.param == "memory" else RocksBackend(tmp_path / "db")
    yield b
    b.close()


def test_codec_round_trips_state_exactly():
    value = [123, ["a", None, 1.5], [[7, {7: [1, 0, 0, 1, 0.1, 0.01, 0.1, 0.1, {"x"}]},
                                      [1, 0, 0, 1, 0.1, 0.01, float("inf"), float("-inf"),
                                       {"x": 1}], [0]]]]
    blob = encode(value)
    assert decode(blob) == value and entry_time(blob) == 123


def test_cache_writes_back_in_batches_and_reports_changes(backend):
    store = CachedStore(backend, capacity=2, batch_size=3)
    for i in range(5):
        store.put(b"k%d" % i, [i, [], []])
    # three evicted so far (capacity 2): staged, one batch of 3 written
    assert backend.get(b"k0") is not None and backend.get(b"k4") is None
    obj = store.get(b"k4")
    obj[1].append("changed in place")
    store.put(b"k4", obj)
    store.delete(b"k1")
    changes = store.flush()
    assert set(changes) == {b"k0", b"k1", b"k2", b"k3", b"k4"} and changes[b"k1"] is None
    assert decode(backend.get(b"k4")) == [4, ["changed in place"], []]
    assert store.flush() == {}
    assert store.get(b"k0") == [0, [], []] and store.get(b"k1") is None
    assert store.hits >= 1 and store.misses >= 1


def test_feature_states_evicted_and_read_back_are_written_once_per_change(backend):
    # An evicted feature state is written by its dirty flag and its key stays in the list of
    # touched states: a flush must neither lose a later change nor write an unchanged state
    # again (nor twice, when the key is listed twice).
    fs = FeatureSet([Feature("count", entity="user_id", window="1h")])
    store = CachedStore(backend, capacity=1, batch_size=100)
    engine = FeatureEngine(fs, store)

    def event(i, user):
        return {"event_id": f"e{i}", "event_time": 1_000 * i, "user_id": user}

    engine.process(event(1, "u1"))
    engine.process(event(2, "u2"))          # evicts u1's state: written, key still dirty
    first = store.flush()
    (k1,) = [k for k in first if k.endswith(b"/u1")]
    (k2,) = [k for k in first if k.endswith(b"/u2")]
    assert store.get(k1).encode() == first[k1] == store.stored(k1)   # read back, unchanged
    engine.process(event(3, "u2"))          # evicts u1 (clean: not written), changes u2
    assert store.flush() == {k2: store.get(k2).encode()}
    assert engine.process(event(4, "u1"))["user_count_1h"] == 2
    engine.process(event(5, "u3"))          # evicts u1 again, changed
    changes = store.flush()                 # u1 (evicted, changed) and the new u3; not u2
    assert {k for k in changes if not k.endswith(b"/u3")} == {k1} and store.flush() == {}
    assert FeatureEngine(fs, store).process(event(6, "u1"))["user_count_1h"] == 3


def test_cold_puts_skip_the_cache(backend):
    store = CachedStore(backend, capacity=10, batch_size=100)
    store.put(b"ix", [5, [], None], cache=False)
    assert store.get(b"ix") == [5, [], None]      # read back from the staged batch
    store.flush()
    assert decode(backend.get(b"ix")) == [5, [], None]


def test_expire_deletes_idle_entries(backend):
    store = CachedStore(backend, capacity=10)
    store.put(b"old", [100, [], []])
    store.put(b"new", [200, [], []])
    assert store.expire(150) == 1
    assert store.get(b"old") is None and store.get(b"new") is not None
    assert len(store) == 1


def test_rocksdb_state_survives_reopen(tmp_path):
    path = partition_path(tmp_path, "fraudstream.events", 3)
    with open_store("rocksdb", path) as store:
        store.put(b"a", [1, ["x"], []])
    with open_store("rocksdb", path) as store:
        assert store.get(b"a") == [1, ["x"], []]
    assert path.name == "fraudstream.events-3"


def test_background_work_is_zero_once_rocksdb_is_idle(tmp_path):
    # bench_features waits for it before its clock starts; every property it sums must be
    # one RocksDB reports (an unknown one raises instead of counting as idle).
    backend = RocksBackend(tmp_path / "bg", RocksOptions(write_buffer_bytes=64 * 1024))
    assert backend.background_work() == 0          # a new, empty store
    for round_ in range(20):                         # several memtables' worth
        backend.write({b"k%d-%d" % (round_, i): b"x" * 200 for i in range(500)}, [])
    backend.flush()
    for _ in range(600):                             # compactions the flushes started
        if backend.background_work() == 0:
            break
        time.sleep(0.1)
    assert backend.background_work() == 0
    assert backend._db.property_int_value("rocksdb.num-files-at-level0") <= 4
    backend.close()


def test_store_without_wal_survives_a_clean_close(tmp_path):
    opts = RocksOptions(disable_wal=True)
    backend = RocksBackend(tmp_path / "nowal", opts)
    backend.write({b"k%d" % i: b"v%d" % i for i in range(1000)}, [])
    assert backend.entry_count() > 0
    backend.close()  # the memtables hold everything: close must flush them
    reopened = RocksBackend(tmp_path / "nowal", opts)
    try:
        assert reopened.get(b"k999") == b"v999" and reopened.get(b"k0") == b"v0"
        assert 900 <= reopened.entry_count() <= 1100  # RocksDB's estimate
    finally:
        reopened.close()


def test_every_open_goes_through_the_options_object(tmp_path, monkeypatch):
    seen = []
    real = RocksOptions.build

    def spy(self):
        seen.append(self)
        return real(self)
    monkeypatch.setattr(RocksOptions, "build", spy)
    opts = RocksOptions(block_cache_bytes=8 << 20, compression="zstd")
    RocksBackend(tmp_path / "db", opts).close()
    RocksBackend(tmp_path / "db", opts).close()   # reopen: same options again
    assert seen == [opts, opts]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.block_cache_bytes = 1  # type: ignore[misc]
    source = open(rocks_module.__file__).read()
    assert source.count("rocksdict.Rdict(") == 1


def _rocksdb_options_file(path) -> dict[str, str]:
    """The latest OPTIONS file RocksDB wrote for the store at ``path``, as name -> value."""
    latest = max(path.glob("OPTIONS-*"), key=lambda f: int(f.name.split("-")[1]))
    out: dict[str, str] = {}
    for line in latest.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep:
            out[name] = value
    return out


@pytest.mark.parametrize("opts", [RocksOptions(),
                                  RocksOptions(block_size=16 << 10, bloom_bits_per_key=6.0,
                                               write_buffer_bytes=8 << 20, compression="zstd")])
def test_every_rocksdb_option_reaches_rocksdb(tmp_path, opts):
    # A later call that replaced the table configuration once dropped block_size silently.
    RocksBackend(tmp_path / "db", opts).close()
    written = _rocksdb_options_file(tmp_path / "db")
    assert written["block_size"] == str(opts.block_size)
    assert written["write_buffer_size"] == str(opts.write_buffer_bytes)
    assert written["max_write_buffer_number"] == str(opts.max_write_buffers)
    assert written["compression"] == {"lz4": "kLZ4Compression",
                                      "zstd": "kZSTD"}[opts.compression]
    assert written["filter_policy"].startswith("bloomfilter")
    assert written["data_block_index_type"] == "kDataBlockBinaryAndHash"
    assert written["memtable_whole_key_filtering"] == "true"
    assert written["cache_index_and_filter_blocks"] == "false"


@pytest.mark.parametrize("cache_point_reads", [False, True])
def test_point_reads_fill_the_block_cache_only_when_asked(tmp_path, cache_point_reads):
    # Read options are not in the OPTIONS file: the block cache's usage shows what a get did.
    opts = RocksOptions(cache_point_reads=cache_point_reads)
    values = {b"k%06d" % i: bytes([i % 251]) * 100 for i in range(20_000)}
    backend = RocksBackend(tmp_path / "db", opts)
    backend.write(values)
    backend.flush()
    backend.close()
    backend = RocksBackend(tmp_path / "db", opts)   # reopened: the read settings again
    try:
        usage = backend._db.property_int_value("rocksdb.block-cache-usage")
        keys = list(values)[::7]
        assert [backend.get(k) for k in keys] == [values[k] for k in keys]
        assert backend.get(b"absent") is None
        grown = backend._db.property_int_value("rocksdb.block-cache-usage") - usage
        assert (grown > 100_000) if cache_point_reads else grown == 0
    finally:
        backend.close()


def test_row_cache_is_shared_and_reads_back_what_was_written(tmp_path):
    from stream.state.rocks import _shared_row_cache
    opts = RocksOptions(row_cache_bytes=4 << 20)
    a, b = RocksBackend(tmp_path / "a", opts), RocksBackend(tmp_path / "b", opts)
    try:
        a.write({b"k": b"va"})
        b.write({b"k": b"vb"})
        for _ in range(2):   # the second read is served by the row cache
            assert (a.get(b"k"), b.get(b"k"), a.get(b"x")) == (b"va", b"vb", None)
        a.write({b"k": b"va2"})   # a write invalidates the cached row
        assert a.get(b"k") == b"va2"
    finally:
        a.close()
        b.close()
    assert _shared_row_cache(4 << 20) is _shared_row_cache(4 << 20)


def test_second_open_of_a_locked_store_is_a_typed_error(tmp_path):
    first = RocksBackend(tmp_path / "db")
    try:
        with pytest.raises(StateLockedError):
            RocksBackend(tmp_path / "db")
    finally:
        first.close()
    closed = RocksBackend(tmp_path / "db2")
    db = closed._db
    closed.close()
    with pytest.raises(Exception) as info:
        db.get(b"x")
    assert isinstance(rocksdb_error(info.value), StateClosedError)


@pytest.mark.parametrize("message,kind", [
    ("IO error: While lock file: /x/LOCK: Resource temporarily unavailable", StateLockedError),
    ("IO error: lock hold by current process, acquire time 1", StateLockedError),
    ("Corruption: block checksum mismatch", StateCorruptionError),
    ("IO error: No space left on device", StateError),
    ("Invalid argument: Column family not found", StateError),
])
def test_rocksdb_error_recognition(message, kind):
    assert type(rocksdb_error(Exception(message))) is kind


@pytest.mark.parametrize("exc", [ValueError("Corruption: x"), Exception("something else"),
                                 KeyError("IO error")])
def test_non_rocksdb_errors_are_not_claimed(exc):
    assert rocksdb_error(exc) is None


def test_closed_error_class_is_recognised():
    assert isinstance(rocksdb_error(rocksdict.DbClosedError("closed")), StateClosedError)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError):
        open_store("leveldb", "/tmp/x")


def test_expire_keeps_unflushed_changes_and_reports_its_deletions(tmp_path):
    from features.store import encode
    from stream.state import open_store

    store = open_store("rocksdb", tmp_path / "db")
    store.put(b"old", [1_000, "a"])
    store.put(b"new", [9_000, "b"])
    assert set(store.flush()) == {b"old", b"new"}
    store.put(b"new", [9_500, "c"])            # dirty, not yet flushed
    assert store.expire(before_ms=5_000) == 1  # "old" is idle beyond the horizon
    changes = store.flush()                    # the changelog still gets both
    assert changes[b"old"] is None
    assert changes[b"new"] == encode([9_500, "c"])
    assert store.get(b"old") is None and store.get(b"new") == [9_500, "c"]
    store.close()


def test_write_behind_keeps_recent_writes_until_the_window_overflows(backend):
    store = CachedStore(backend, capacity=100, batch_size=4, keep=2)
    store.put(b"hot", [1, "a"])
    assert store.flush() == {b"hot": encode([1, "a"])}
    assert backend.get(b"hot") is None and store.stored(b"hot") == encode([1, "a"])
    store.put(b"hot", [2, "b"])        # rewritten while buffered: one write later, the latest
    assert store.flush() == {b"hot": encode([2, "b"])}
    for i in range(3):                 # cold writes push the buffer to batch_size
        store.put(b"c%d" % i, [i, "x"], cache=False)
    # the two oldest (first-written) went to the backend, the two most recent stay buffered
    assert decode(backend.get(b"hot")) == [2, "b"] and backend.get(b"c0") is not None
    assert backend.get(b"c1") is None and backend.get(b"c2") is None
    assert store.get(b"c2") == [2, "x"] and store.stored(b"c1") == encode([1, "x"])
    store.delete(b"c1")                # a delete is buffered like a put, and reported
    assert store.flush() == {b"c0": encode([0, "x"]), b"c1": None, b"c2": encode([2, "x"])}
    assert store.get(b"c1") is None and store.stored(b"c1") is None
    store.persist()
    assert decode(backend.get(b"c2")) == [2, "x"] and backend.get(b"c1") is None


def test_write_behind_is_written_out_by_close_and_expire(tmp_path):
    store = open_store("rocksdb", tmp_path / "db", batch_size=100, keep=50)
    store.put(b"old", [1_000, "a"])
    store.put(b"new", [9_000, "b"])
    store.flush()
    assert store.expire(before_ms=5_000) == 1   # sees the buffered entries
    store.flush()
    store.close()
    reopened = open_store("rocksdb", tmp_path / "db")
    assert reopened.get(b"new") == [9_000, "b"] and reopened.get(b"old") is None
    reopened.close()
    with pytest.raises(ValueError):
        CachedStore(MemoryBackend(), batch_size=10, keep=10)


def test_has_prefix_sees_the_backend_the_buffer_and_the_cache(backend):
    store = CachedStore(backend, capacity=10, batch_size=100, keep=50)
    assert not store.has_prefix(b"\x00pl/")
    store.put(b"\x00pl/e1", [1, {}], cache=False)
    assert store.has_prefix(b"\x00pl/") and not store.has_prefix(b"\x00pm/")
    store.persist()
    assert backend.has_prefix(b"\x00pl/") and not backend.has_prefix(b"\x00pm/")
    assert not backend.has_prefix(b"\x00pl/e2") and not backend.has_prefix(b"\x00pl/e1x")
    store.put(b"k", [2, "x"])                  # a cached, dirty object
    assert store.has_prefix(b"k") and not backend.has_prefix(b"k")


def test_size_estimates_count_the_writes_still_buffered(backend):
    # The worker's state gauges read these: with a write-behind window a partition's first
    # thousands of writes may not have reached the backend yet.
    store = CachedStore(backend, capacity=100, batch_size=100, keep=50)
    empty = backend.entry_count()
    for i in range(10):
        store.put(b"k%d" % i, [i, "x"])
    store.flush()
    assert backend.entry_count() == empty
    assert store.entry_count() == empty + 10
    assert store.size_bytes() - backend.size_bytes() > 10 * len(b"k0")
    store.persist()
    assert store.entry_count() == backend.entry_count() >= 10
    assert store.size_bytes() == backend.size_bytes() > 0
    store.delete(b"k0")                         # a buffered delete adds nothing
    assert store.entry_count() == backend.entry_count()


def _states(n):
    """``n`` distinct feature states (one event each)."""
    fs = FeatureSet([Feature("count", entity="user_id", window="1h")])
    engine = FeatureEngine(fs)
    for i in range(n):
        engine.process({"event_id": f"e{i}", "event_time": 1_000 * (i + 1), "user_id": f"u{i}"})
    return [v for _, v in sorted(engine.store.data.items())]


def test_eviction_gives_states_read_since_cached_a_second_chance(backend):
    # One dict with a reference bit (CLOCK): a hit only sets the state's ``ref`` flag; eviction
    # takes the front, moving a flagged state to the back (flag cleared) instead of evicting it.
    store = CachedStore(backend, capacity=3, batch_size=100)
    a, b, c, d, e = _states(5)
    for key, st in ((b"a", a), (b"b", b), (b"c", c)):
        store.put(key, st)
    assert not a.ref and store.get(b"a") is a and a.ref       # a hit sets the flag
    store.put(b"d", d)                  # evicts b (a is flagged: to the back)
    assert not a.ref and list(store._live) == [b"c", b"a", b"d"]
    assert store.stored(b"b") == b.encode() and not b.dirty   # written as it went
    store.put(b"e", e)                  # a's second chance is spent: c goes
    assert list(store._live) == [b"a", b"d", b"e"]
    store.get(b"d"), store.get(b"e")    # flags on d and e; a is next to go
    assert store.get(b"c").encode() == c.encode()              # read back: a evicted
    assert list(store._live) == [b"d", b"e", b"c"] and d.ref and e.ref
    assert store.hits == 3 and store.misses == 1


def test_eviction_ends_when_every_cached_state_is_flagged(backend):
    store = CachedStore(backend, capacity=4, batch_size=100)
    states = _states(5)
    for i, st in enumerate(states[:4]):
        store.put(b"k%d" % i, st)
        store.get(b"k%d" % i)
    assert all(st.ref for st in states[:4])
    store.put(b"k4", states[4])         # one trip round the dict clears every flag, then evicts
    assert len(store._live) == 4 and b"k4" in store._live
    assert sum(store.stored(b"k%d" % i) is not None for i in range(4)) == 1


def test_the_object_a_get_returns_is_not_evicted_by_that_get(backend):
    # Eviction makes room before the object goes in: the engine changes what get returned and
    # touches its key, which must still find it cached (else the change would be lost).
    store = CachedStore(backend, capacity=1, batch_size=100)
    a, b = _states(2)
    store.put(b"a", a)
    store.flush()
    store.put(b"b", b)
    store.get(b"b")                     # b flagged: a second chance, but only for b
    got = store.get(b"a")               # evicts b, not the state it returns
    assert list(store._live) == [b"a"] and store._live[b"a"] is got


def test_a_cold_put_replaces_a_cached_object(backend):
    store = CachedStore(backend, capacity=10, batch_size=100)
    (a,) = _states(1)
    store.put(b"k", a)
    store.put(b"k", [7, "cold"], cache=False)
    assert b"k" not in store._live and store.get(b"k") == [7, "cold"]
    assert store.flush()[b"k"] == encode([7, "cold"])


def test_one_eviction_looks_at_a_bounded_number_of_flagged_states(backend):
    # Every cached state flagged (a cache filling for the first time after a run of hits): one
    # eviction gives second chances to the first four times its count only, then evicts from the
    # front in order, instead of walking round the whole cache.
    n = 200
    store = CachedStore(backend, capacity=n, batch_size=1000)
    states = _states(n + 1)
    for i, st in enumerate(states[:n]):
        store.put(b"k%03d" % i, st)
        store.get(b"k%03d" % i)
    store.put(b"new", states[n])        # count = 3: k000-k011 move back, k012-k014 leave
    assert len(store._live) == n - 2
    kept = list(store._live)
    assert kept[:n - 15] == [b"k%03d" % i for i in range(15, n)]
    assert kept[n - 15:] == [b"k%03d" % i for i in range(12)] + [b"new"]
    assert all(store.stored(b"k%03d" % i) is not None for i in (12, 13, 14))
    assert all(states[i].ref for i in range(15, n)) and not any(states[i].ref for i in range(12))


def test_an_encoded_put_is_a_cold_put(backend):
    # The engine's label-index entry, bytes that are their own encoding, goes through
    # put_encoded: staged, reported by the next flush, and replacing a cached object.
    from features._kernel import index_entry
    store = CachedStore(backend, capacity=10, batch_size=2)
    raw = index_entry(5, [(0, b"us.x/u1")], None)
    store.put(b"ix1", [1, "cached"])
    store.put_encoded(b"ix1", raw)
    store.put_encoded(b"ix2", raw)          # the batch is full: written
    assert b"ix1" not in store._live and backend.get(b"ix1") == raw
    assert store.get(b"ix1") == raw and store.flush() == {b"ix1": raw, b"ix2": raw}
    assert store.flush() == {}


def test_a_state_touched_twice_between_flushes_is_written_once(backend):
    # Its key is listed twice (touched, evicted and written, read back, touched again): the
    # flush writes its latest value once; a state put directly is listed when it turns dirty.
    fs = FeatureSet([Feature("count", entity="user_id", window="1h")])
    store = CachedStore(backend, capacity=1, batch_size=100)
    engine = FeatureEngine(fs, store)
    engine.process({"event_id": "e1", "event_time": 1_000, "user_id": "u1"})
    store.flush()
    for i, user in enumerate(("u1", "u2", "u1"), start=2):
        engine.process({"event_id": f"e{i}", "event_time": 1_000 * i, "user_id": user})
    keys = [k for k in store._touched if k.endswith(b"/u1")]
    assert len(keys) == 2
    changes = store.flush()
    assert changes[keys[0]] == store.get(keys[0]).encode() and not store._touched
    roomy = CachedStore(backend, capacity=10, batch_size=100)
    st = roomy.get(keys[0])
    roomy.put(keys[0], st)
    roomy.put(keys[0], st)
    assert roomy._touched == [keys[0]] and st.dirty
    assert roomy.flush() == {keys[0]: st.encode()} and not st.dirty


def test_store_without_changelog_records_nothing_and_loses_nothing(backend):
    # ``features compute`` flushes only when it closes: a changelog would keep every value
    # written over the whole log. Without one, flush returns nothing and still writes all.
    fs = FeatureSet([Feature("count", entity="user_id", window="1h"),
                     Feature("fraud_count", entity="user_id", window="1h")])
    store = CachedStore(backend, capacity=2, batch_size=3, changelog=False)
    engine = FeatureEngine(fs, store)
    for i in range(20):
        engine.process({"event_id": f"e{i}", "event_time": 1_000 * (i + 1),
                        "user_id": f"u{i % 5}"})
    assert store._changes is None and store.flush() == {}
    reference = FeatureEngine(fs)
    for i in range(20):
        reference.process({"event_id": f"e{i}", "event_time": 1_000 * (i + 1),
                           "user_id": f"u{i % 5}"})
    assert {k: encode(v) for k, v in store.items()} == \
        {k: encode(v) for k, v in reference.store.data.items()}
    assert store.flush() == {}


def test_engine_serves_cached_states_itself_as_get_would(backend):
    # The engine's loop looks states up in the store's ``objects`` and serves a hit without
    # calling ``get``: the same bookkeeping (hit counted, ``ref`` flag set), the same features.
    fs = FeatureSet([Feature("count", entity="user_id", window="1h"),
                     Feature("distinct", entity="card_id", field="user_id", window="1h")])

    class Counted(CachedStore):
        calls = 0

        def get(self, key):
            self.calls += 1
            return super().get(key)

    class Plain(Counted):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.objects = None   # no look-up by the engine: every state through get()

    fast = Counted(backend, capacity=100, batch_size=1000)
    assert fast.objects is fast._live
    slow = Plain(MemoryBackend(), capacity=100, batch_size=1000)
    engines = FeatureEngine(fs, fast), FeatureEngine(fs, slow)
    for i in range(30):
        event = {"event_id": f"e{i}", "event_time": 1_000 * i, "user_id": f"u{i % 3}",
                 "card_id": f"c{i % 4}"}
        assert engines[0].process(event) == engines[1].process(event)
    assert (fast.hits, fast.misses) == (slow.hits, slow.misses) == (53, 7)  # 3 users, 4 cards
    assert (fast.calls, slow.calls) == (7, 60)
    assert all(st.ref for st in fast._live.values())
    assert fast.flush() == slow.flush()


def _reference_evict(live, count, dirty, pending, batch, written):
    """CachedStore's eviction as it was written in Python before it was compiled
    (``features._kernel.clock_evict``): the reference the compiled one must match."""
    from itertools import islice
    from features._kernel import State
    second_chance = True
    while count > 0 and live:
        for key in list(islice(live, 4 * count if second_chance else count)):
            if count == 0:
                break
            value = live.pop(key)
            if type(value) is State:
                if value.ref and second_chance:
                    value.ref = False
                    live[key] = value
                    continue
                count -= 1
                if not value.dirty:
                    continue
                value.dirty = False
            else:
                count -= 1
                if key in dirty:
                    dirty.remove(key)
                else:
                    continue
            pending[key] = encode(value)
            if len(pending) >= batch:
                written.append(dict(pending))
                pending.clear()
        second_chance = False


@given(st.lists(st.tuples(st.sampled_from(["state", "list"]), st.booleans(), st.booleans()),
                min_size=1, max_size=40),
       st.integers(1, 60), st.integers(1, 8))
@settings(max_examples=300, deadline=None)
def test_compiled_eviction_matches_the_python_one(entries, count, batch):
    # Any mix of feature states (ref and dirty flags) and other objects (dirty or not), any
    # count (more than there are entries too), any batch size: the same entries evicted in the
    # same order, the same flags left, the same writes in the same batches.
    from features._kernel import clock_evict
    base = _states(len(entries))

    def build():
        live, dirty = {}, set()
        for i, (kind, ref, dirty_flag) in enumerate(entries):
            key = b"k%02d" % i
            if kind == "state":
                value = decode(base[i].encode())
                value.ref, value.dirty = ref, dirty_flag
            else:
                value = [i, "x"]
                if dirty_flag:
                    dirty.add(key)
            live[key] = value
        return live, dirty

    live_a, dirty_a = build()
    written_a, pending_a = [], {}
    _reference_evict(live_a, count, dirty_a, pending_a, batch, written_a)
    live_b, dirty_b = build()
    written_b, pending_b = [], {}

    def write_batch():
        written_b.append(dict(pending_b))
        pending_b.clear()
        return pending_b

    clock_evict(live_b, count, dirty_b, pending_b, None, batch, encode, True, write_batch)
    assert list(live_a) == list(live_b) and dirty_a == dirty_b
    assert written_a == written_b and pending_a == pending_b
    flags = lambda live: [(v.ref, v.dirty) if not isinstance(v, list) else v
                          for v in live.values()]
    assert flags(live_a) == flags(live_b)
