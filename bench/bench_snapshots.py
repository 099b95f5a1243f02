"""Micro-benchmark: the scorer's snapshots for delayed labels -- build + store (SnapshotStore.put
into the worker's CachedStore, encoded inline), the changelog event record (changelog.pack), and
load (SnapshotStore.take: decode + rebuild the vector); bytes per stored snapshot and per event
record (raw and LZ4 frame-compressed in batches of 1,000).

    python bench/bench_snapshots.py [--events 20000] [--repeat 7]

Prints one JSON line with medians (us per event, CPU time) and sizes."""
from __future__ import annotations

import argparse
import json
import statistics
import time

from features.default import default_feature_set
from features.engine import INDEX_PREFIX, FeatureEngine
from online_models.labels import Snapshot, SnapshotStore
from online_models.scorer import Scorer
from stream.demo import generate_events
from stream.runtime import changelog
from stream.state.cache import CachedStore
from stream.state.memory import MemoryBackend


def _inputs(n: int):
    events = generate_events(n, seed=7)
    fstore = CachedStore(MemoryBackend())
    engine = FeatureEngine(default_feature_set(), fstore)
    scorer = Scorer.create("default")
    model = scorer.global_model.model
    rows = []
    for e in events:
        x = engine.process(e)
        rows.append((e["event_id"], e["merchant_id"], e["event_time"], model.prepare_one(x)))
    index = {k[len(INDEX_PREFIX):].decode(): v for k, v in fstore.flush().items()
             if k.startswith(INDEX_PREFIX)}
    return rows, index


def _round(rows, index):
    store = CachedStore(MemoryBackend(), batch_size=len(rows) + 10)
    snaps = SnapshotStore(store)
    t0 = time.process_time()
    for eid, mid, t, v in rows:
        snaps.put(Snapshot(eid, mid, t, v, 0.25, 0.5, "default-1.0", 0.25, None, 0, None, None,
                           None, 0.5))
    changes = store.flush()
    pre = snaps.prefix
    recs = [changelog.pack(index.get(eid), changes[pre + eid.encode()]) for eid, *_ in rows]
    t1 = time.process_time()
    store.persist()
    store.drop_cache()
    t2 = time.process_time()
    for eid, _, t, _ in rows:
        snap, status = snaps.take(eid, t + 1)
    t3 = time.process_time()
    snap_bytes = [len(changes[pre + eid.encode()]) for eid, *_ in rows]
    return (t1 - t0) / len(rows) * 1e6, (t3 - t2) / len(rows) * 1e6, snap_bytes, recs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=7)
    a = ap.parse_args()
    rows, index = _inputs(a.events)
    puts, takes = [], []
    for _ in range(a.repeat):
        p, t, snap_bytes, recs = _round(rows, index)
        puts.append(p)
        takes.append(t)
    out = {"events": a.events, "features_in_vector": len(rows[-1][3]),
           "put_us": round(statistics.median(puts), 2),
           "take_us": round(statistics.median(takes), 2),
           "snapshot_bytes": round(statistics.mean(snap_bytes), 1),
           "event_record_bytes": round(statistics.mean(len(r) for r in recs), 1)}
    try:
        import lz4.frame
        chunks = [b"".join(recs[i:i + 1000]) for i in range(0, len(recs), 1000)]
        out["event_record_lz4_bytes"] = round(sum(len(lz4.frame.compress(c)) for c in chunks)
                                              / len(recs), 1)
    except ImportError:
        pass
    print(json.dumps(out))


if __name__ == "__main__":
    main()
