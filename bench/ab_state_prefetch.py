"""Paired measurement of the kernel's state prefetch (``features._kernel._prefetch``) in one process.

Builds the state of ``bench/bench_features.py`` (same warm-up and measured events, RocksDB
behind the write-back cache), then processes the measured events in chunks whose prefetch level
alternates A B B A (``_set_prefetch``: 0 off, 1 the rings' first blocks, 2 also the distinct sets
and maps, 3 also the state's arena, its first ``BYTES`` when a level is given as ``3:BYTES``):
both levels share the cache, the RocksDB and the machine's noise. Prints main-thread
CPU us/event per level (median over its chunks) and the median of the paired differences.

    .venv/bin/python bench/ab_state_prefetch.py --users 200000 --merchants 20000 --events 200000 \
        --cache-entries 500000 --chunk 2000 --levels 0,2

Not part of the test suite. Figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import gc
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_features import T0, measured_events, warmup_events
from features import _kernel
from features.default import default_feature_set
from features.engine import FeatureEngine
from stream.state import open_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--merchants", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=200_000, help="measured events")
    ap.add_argument("--cache-entries", type=int, default=500_000)
    ap.add_argument("--chunk", type=int, default=2_000)
    ap.add_argument("--levels", default="2,3",
                    help="two prefetch levels to alternate (LEVEL or 3:ARENA_BYTES)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    a, b = args.levels.split(",")
    rng = random.Random(args.seed)
    tmp = tempfile.mkdtemp(prefix="fs-ab-")
    store = open_store("rocksdb", str(Path(tmp) / "state"), cache_entries=args.cache_entries,
                       changelog=False)
    engine = FeatureEngine(default_feature_set(), store)
    try:
        for e in warmup_events(args.users, args.merchants, rng, 24 * 3_600_000):
            engine.process(e)
        store.flush()
        events = measured_events(args.events, args.users, args.merchants, rng,
                                 T0 + 24 * 3_600_000, rate_per_s=200.0)
        split = len(events) // 5
        for e in events[:split]:
            engine.process(e)
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        times: dict[str, list[float]] = {a: [], b: []}
        measured = events[split:]
        for i, k in enumerate(range(0, len(measured), args.chunk)):
            level = (a, b, b, a)[i % 4]
            part = measured[k:k + args.chunk]
            _kernel._set_prefetch(*(int(x) for x in level.split(":")))
            c0 = time.thread_time()
            for e in part:
                engine.process(e)
            times[level].append((time.thread_time() - c0) / len(part) * 1e6)
        for level, us in times.items():
            print(f"level {level}: {len(us)} chunks, median {statistics.median(us):.2f} "
                  f"main-thread CPU us/event")
        diffs = [y - x for x, y in zip(times[a], times[b])]
        print(f"paired median, level {b} - level {a}: {statistics.median(diffs):+.2f} us/event")
    finally:
        _kernel._set_prefetch(3)
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
