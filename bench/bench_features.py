"""Feature engine benchmark: microseconds per event for the default set, RocksDB state.

Warm-up gives every one of ``--users`` users (with its own card and device) one event at a random
one of ``--merchants`` merchants, so RocksDB holds state for all of them. Then ``--warm-events``
events warm the write-back cache and ``--events`` more are measured, all with skewed users (90 %
from the hottest 5 %, the rest uniform). The warm-up defaults to three events per hot user, so
about 93 % of the hot users' states are cached before the clock starts (until 2026-11-29 it was
a fifth of ``--events``, which left a third of them to be loaded from RocksDB while measured).
The measured phase reports CPU and wall microseconds per event, cache hit
rate, and state bytes per entity (encoded values in RocksDB, per entity group, plus the analytic
worst case per entity for the default set). Before the clock starts it waits for RocksDB's
background compaction of the warm-up's million entities to end (``compaction_wait_s``); the
measured events' own flushes and compactions are counted. The store is set up as the worker's
(no write-ahead log: ``--wal`` for one), without a changelog (the worker's is flushed at every
commit and stays small; never flushed here, it would hold every value written).

It runs with malloc on transparent huge pages, as the worker image does (``Dockerfile``:
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``; the benchmark starts itself again with it when it is
not set); ``--no-huge-pages`` measures without. What the host allows is in
``/sys/kernel/mm/transparent_hugepage/enabled`` (``madvise`` or ``always``) and in the result.

    .venv/bin/python bench/bench_features.py                       # full size: 1M users, 100k merchants
    .venv/bin/python bench/bench_features.py --users 20000 --merchants 2000 --events 50000

Not part of the test suite. Figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
import gc
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import rocksdict

from features.default import default_feature_set
from features.engine import INDEX_PREFIX, FeatureEngine
from features.store import encode
from stream.runtime.worker import TASK_ROCKS
from stream.state import RocksOptions, open_store

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
#: The worker image's malloc setting (``Dockerfile``): glibc 2.35+ backs its heap with
#: transparent huge pages where the host's mode is ``madvise`` or ``always``.
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_on() -> bool:
    return HUGE_PAGES_TUNABLE in os.environ.get("GLIBC_TUNABLES", "").split(":")


def run_with_huge_pages() -> None:
    """Start this benchmark again with the image's malloc tunable (glibc reads tunables only
    when a process starts); returns only when it is set already."""
    if huge_pages_on():
        return
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t]
    env = dict(os.environ, GLIBC_TUNABLES=":".join([*tunables, HUGE_PAGES_TUNABLE]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def thp_mode() -> str:
    """The host's transparent huge page mode (the bracketed word), or "unknown"."""
    try:
        text = THP_MODE.read_text()
    except OSError:
        return "unknown"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def _event(i: int, t: int, user: int, merchant: int, rng: random.Random) -> dict:
    return {"event_id": f"e{i}", "event_type": "transaction", "event_time": t,
            "user_id": f"u{user:07d}", "merchant_id": f"m{merchant:06d}",
            "amount": round(rng.lognormvariate(3.5, 1.0), 2), "currency": "EUR",
            "card_id": f"c{user:07d}", "device_id": f"d{user:07d}",
            "ip": f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "country": rng.choice(("FR", "FR", "FR", "DE", "ES", "US"))}


def warmup_events(users: int, merchants: int, rng: random.Random, span_ms: int):
    step = max(1, span_ms // max(users, 1))
    order = list(range(users))
    rng.shuffle(order)
    for i, user in enumerate(order):
        yield _event(i, T0 + i * step, user, rng.randrange(merchants), rng)


def hot_users(users: int) -> int:
    """How many users (the lowest numbers) get 90 % of the measured events: 5 %."""
    return max(1, users // 20)


def measured_events(n: int, users: int, merchants: int, rng: random.Random, start_t: int,
                    rate_per_s: float) -> list[dict]:
    hot = hot_users(users)
    out, t = [], start_t
    gap = 1000.0 / rate_per_s
    for i in range(n):
        t += int(rng.expovariate(1.0 / gap))
        user = rng.randrange(hot) if rng.random() < 0.9 else rng.randrange(users)
        merchant = min(int(merchants * rng.random() ** 2), merchants - 1)  # popular merchants
        out.append(_event(10_000_000 + i, t, user, merchant, rng))
    return out


def worst_case_bytes(engine: FeatureEngine, id_len: int = 16) -> dict[str, int]:
    """Encoded size of each entity group's state with every retained bucket full.

    Every bucket a ring can hold (window + delay + grace, plus one) is present, and every
    distinct set and running map holds ``distinct_capacity`` value hashes (the sketch's cap);
    keys and ``last`` values are ``id_len`` characters. Real entities are far smaller (see
    measured sizes).
    """
    out = {}
    for g in engine._groups:
        st = g.kernel.worst_case_state(T0, "x" * id_len)
        out[g.prefix.decode().split(".")[0]] = len(g.prefix) + id_len + len(encode(st))
    return out


def settle(backend, timeout_s: float) -> float | None:
    """Wait until the backend's background flushes and compactions are over (two polls in a
    row), at most ``timeout_s``; return the seconds waited (None for a backend without)."""
    work = getattr(backend, "background_work", None)
    if work is None or timeout_s <= 0:
        return None
    t0 = time.perf_counter()
    idle = 0
    while idle < 2 and time.perf_counter() - t0 < timeout_s:
        idle = idle + 1 if work() == 0 else 0
        if idle < 2:
            time.sleep(0.5)
    waited = time.perf_counter() - t0
    if idle < 2:
        print(f"warning: RocksDB still busy after {waited:.0f} s; measuring anyway",
              file=sys.stderr)
    return round(waited, 1)


def hot_us_per_event(n: int, cached: bool = False) -> float:
    """``cached``: the state behind the worker's write-back cache over memory instead of a dict,
    so each event's label-index entry is encoded and written (every entity still hot)."""
    store = open_store("memory", None, cache_entries=1_000_000) if cached else None
    engine = FeatureEngine(default_feature_set(), store)
    rng = random.Random(0)
    events = [dict(_event(i, T0 + i * 1000, 1, 1, rng), ip="10.0.0.1")
              for i in range(n + n // 4)]
    for e in events[:n // 4]:
        engine.process(e)
    c0 = time.process_time()
    for e in events[n // 4:]:
        engine.process(e)
    return (time.process_time() - c0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--merchants", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=300_000, help="measured events")
    ap.add_argument("--warm-events", type=int, default=None,
                    help="events that warm the write-back cache before the measured ones "
                         "(default: three per hot user, the hottest 5 %% of --users)")
    ap.add_argument("--cache-entries", type=int, default=600_000)
    ap.add_argument("--row-cache-mb", type=int, default=0,
                    help="RocksDB row cache behind the live-object cache (0: none)")
    ap.add_argument("--compression", default=RocksOptions().compression,
                    help="RocksDB compression (none, lz4, zstd, snappy)")
    ap.add_argument("--block-cache-mb", type=int, default=RocksOptions().block_cache_bytes >> 20,
                    help="RocksDB block cache, MiB")
    ap.add_argument("--backend", choices=("rocksdb", "memory"), default="rocksdb")
    ap.add_argument("--wal", action=argparse.BooleanOptionalAction, default=False,
                    help="RocksDB write-ahead log (default off: the store has the worker's "
                         "options, stream.runtime.worker.TASK_ROCKS; its changelog topic is "
                         "the durable copy)")
    ap.add_argument("--path", default=None, help="RocksDB directory (default: a temp dir)")
    ap.add_argument("--gc", choices=("default", "frozen", "off"), default="off",
                    help="cyclic GC during the run: 'default'; 'frozen' (gc.freeze() after "
                         "warm-up, higher thresholds); 'off' (gc.disable(): feature state holds "
                         "no reference cycles, so a worker can run without the cyclic collector)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settle-timeout", type=float, default=600.0,
                    help="seconds to wait at most, before the clock starts, for RocksDB's "
                         "background flushes and compactions of the warm-up to end (0: none)")
    ap.add_argument("--huge-pages", action=argparse.BooleanOptionalAction, default=True,
                    help="malloc on transparent huge pages, as in the worker image "
                         "(GLIBC_TUNABLES=%s; default on)" % HUGE_PAGES_TUNABLE.replace("%", "%%"))
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    ap.add_argument("--hot", action="store_true",
                    help="only time the engine with every entity hot (one user, merchant, card, "
                         "device and IP; state in a dict): the compute floor")
    ap.add_argument("--hot-cached", action="store_true",
                    help="as --hot, with the state behind the write-back cache over memory (the "
                         "label-index entry of every event encoded and written)")
    args = ap.parse_args()
    if args.huge_pages:
        run_with_huge_pages()
    if args.hot or args.hot_cached:
        gc.disable()
        us = hot_us_per_event(args.events, cached=args.hot_cached)
        print(f"hot entities{', cached store' if args.hot_cached else ''}: {us:.2f} CPU us/event")
        return

    rng = random.Random(args.seed)
    if args.gc == "off":
        gc.disable()
    tmp = None
    path = args.path
    if args.backend == "rocksdb" and path is None:
        tmp = tempfile.mkdtemp(prefix="fs-bench-")
        path = str(Path(tmp) / "state")
    # No changelog, as in ``features compute``: the worker's store keeps one, but flushes it
    # at every commit, so it stays small; never flushed here, it would grow by every write.
    store = open_store(args.backend, path, cache_entries=args.cache_entries, changelog=False,
                       options=replace(TASK_ROCKS, disable_wal=not args.wal,
                                       row_cache_bytes=args.row_cache_mb << 20,
                                       compression=args.compression,
                                       block_cache_bytes=args.block_cache_mb << 20))
    engine = FeatureEngine(default_feature_set(), store)
    try:
        warm_span = 24 * 3_600_000
        t0 = time.perf_counter()
        for e in warmup_events(args.users, args.merchants, rng, warm_span):
            engine.process(e)
        store.flush()
        warm_s = time.perf_counter() - t0
        split = 3 * hot_users(args.users) if args.warm_events is None else args.warm_events
        events = measured_events(split + args.events, args.users, args.merchants, rng,
                                 T0 + warm_span, rate_per_s=200.0)
        # Warm the write-back cache with the first ``split``, measure the rest.
        for e in events[:split]:
            engine.process(e)
        # The warm-up loaded a million entities at once; RocksDB compacts them for a minute or
        # so after, on its own threads, and that CPU is no measured event's (the measured
        # events' own flushes and compactions are counted).
        settle_s = settle(store.backend, args.settle_timeout)
        if args.gc == "frozen":
            gc.collect()
            gc.freeze()
            gc.set_threshold(100_000, 50, 100)
        hits0, misses0 = store.hits, store.misses
        measured = events[split:]
        chunk = max(1, len(measured) // 10)
        cpu_us, wall_us, main_us = [], [], []
        for k in range(0, len(measured), chunk):
            part = measured[k:k + chunk]
            c0, w0, m0 = time.process_time(), time.perf_counter(), time.thread_time()
            for e in part:
                engine.process(e)
            cpu_us.append((time.process_time() - c0) / len(part) * 1e6)
            wall_us.append((time.perf_counter() - w0) / len(part) * 1e6)
            main_us.append((time.thread_time() - m0) / len(part) * 1e6)
        c0 = time.process_time()
        store.flush()
        flush_s = time.process_time() - c0
        hits, misses = store.hits - hits0, store.misses - misses0

        sizes: dict[str, list[int]] = defaultdict(list)
        index_bytes = index_n = 0
        for key, raw in store.backend.items():
            if key.startswith(INDEX_PREFIX):
                index_bytes += len(key) + len(raw)
                index_n += 1
            else:
                sizes[key.split(b".")[0].decode()].append(len(key) + len(raw))
        on_disk = store.backend.size_bytes()
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(),
            "rocksdict": getattr(rocksdict, "__version__", _pkg_version("rocksdict")),
            "commit": _git_sha(),
            "cpu": platform.processor() or platform.machine(),
            "malloc_huge_pages": huge_pages_on(), "thp_mode": thp_mode(),
            "backend": args.backend,
            "users": args.users, "merchants": args.merchants,
            "features": len(engine.names),
            "warmup_events": args.users, "warmup_s": round(warm_s, 1),
            "compaction_wait_s": settle_s,
            "cache_warm_events": split, "measured_events": len(measured), "gc": args.gc,
            "cpu_us_per_event_median": round(statistics.median(cpu_us), 1),
            "wall_us_per_event_median": round(statistics.median(wall_us), 1),
            "cpu_us_per_event_chunks": [round(x, 1) for x in cpu_us],
            # The rest of the CPU time is RocksDB's background flushes and compactions.
            "main_thread_cpu_us_per_event_median": round(statistics.median(main_us), 1),
            "flush_s": round(flush_s, 2),
            "cache_entries": args.cache_entries, "row_cache_mb": args.row_cache_mb,
            "compression": args.compression, "block_cache_mb": args.block_cache_mb,
            "wal": args.wal,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10,
            "cache_hit_rate": round(hits / max(1, hits + misses), 3),
            "entities": {k: len(v) for k, v in sizes.items()},
            "state_bytes_mean": {k: round(statistics.fmean(v)) for k, v in sizes.items()},
            "state_bytes_max": {k: max(v) for k, v in sizes.items()},
            "label_index_entries": index_n,
            "label_index_bytes_mean": round(index_bytes / max(1, index_n)),
            "rocksdb_size_bytes": on_disk,
            "worst_case_bytes_per_entity": worst_case_bytes(engine),
        }
        if args.json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:32} {v}")
    finally:
        store.close()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _pkg_version(name: str) -> str:
    from importlib.metadata import version
    return version(name)


def _git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
