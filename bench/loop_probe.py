"""Run ``fraudstream worker`` with its main loop timed, to find what makes an iteration long.

    python bench/loop_probe.py OUT.json worker --instance-id w1     # the worker CLI's arguments

A diagnostic for latency tails (docs/benchmarks.md, "Runtime"), not part of the worker: it wraps
the loop's steps (taking records, handling them, committing, flushing changelogs, committing
at-least-once offsets, lag/quality/expiry/model-feed housekeeping, restoring) and Python's garbage
collector, and for every loop iteration longer than ``LONG_MS`` keeps what ran in it. When the
worker exits, ``OUT.json`` holds the iteration-time distribution, the total per step, and the
long iterations. ``bench_runtime.py --probe DIR`` starts its workers this way.
"""

from __future__ import annotations

import gc
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from stream import wire
from stream.runtime import worker as worker_mod

LONG_MS = 20.0
STEPS = ("_next_records", "_handle", "commit", "_flush_changelogs", "_flush_round_step",
         "_settle_commit",
         "_commit_delivered",
         "_drain_epochs", "_record_lag", "_record_quality", "_expire_state", "_restore_pending",
         "_apply_models", "_recover")

_now = time.perf_counter
_iter_start = 0.0
_current: dict[str, float] = defaultdict(float)
_counts: Counter = Counter()
_totals: dict[str, float] = defaultdict(float)
_iterations: list[float] = []
_long: list[dict] = []
_gc_started = 0.0
#: (what, wall-clock time) for each exactly-once commit's steps, to break an event's wait down
#: against the scores' produce timestamps (``bench_runtime.py --probe``): "enter" (commit()
#: called: the changelog flush starts), "start" (steps 4-5 handed to the call thread),
#: "txn" / "txn_end" (commit_transaction on the call thread: send_offsets_to_transaction has
#: returned / the transaction is committed), "settle" / "settled" (the loop takes the outcome
#: up, then has produced the held outputs into the next transaction).
_marks: list[tuple[str, float]] = []


def _timed(name: str, fn):
    def wrapper(*args, **kwargs):
        started = _now()
        try:
            return fn(*args, **kwargs)
        finally:
            took = _now() - started
            _current[name] += took
            _counts[name] += 1
    return wrapper


def _on_gc(phase: str, info: dict) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = _now()
    else:
        _current[f"gc{info['generation']}"] += _now() - _gc_started
        _counts[f"gc{info['generation']}"] += 1


def _beat(original):
    def beat(*args, **kwargs):
        global _iter_start
        now = _now()
        if _iter_start:
            took = now - _iter_start
            _iterations.append(took)
            for name, t in _current.items():
                _totals[name] += t
            if took * 1000 >= LONG_MS:
                steps = {k: round(v * 1000, 2) for k, v in _current.items() if v >= 0.0005}
                steps["counts"] = dict(_counts)
                _long.append({"at": round(time.monotonic(), 3), "ms": round(took * 1000, 2),
                              "steps": steps})
        _current.clear()
        _counts.clear()
        _iter_start = _now()
        return original(*args, **kwargs)
    return beat


def _marked(before: str, after: str | None, fn):
    def wrapper(*args, **kwargs):
        _marks.append((before, time.time()))
        try:
            return fn(*args, **kwargs)
        finally:
            if after is not None:
                _marks.append((after, time.time()))
    return wrapper


def install() -> None:
    W = worker_mod.Worker
    for name, before, after in (("commit", "enter", None), ("_start_commit", "start", None),
                                ("_commit_transaction", "txn", "txn_end"),
                                ("_settle_commit", "settle", "settled")):
        if hasattr(W, name):
            setattr(W, name, _marked(before, after, getattr(W, name)))
    for name in STEPS:
        if hasattr(W, name):  # a step another version of the worker does not have
            setattr(W, name, _timed(name, getattr(W, name)))
    guarded = W._guarded

    def _guarded(self, call, name):  # the transactional calls, each under its own name
        return _timed(name, guarded)(self, call, name)
    W._guarded = _guarded
    init = W.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.metrics.beat = _beat(self.metrics.beat)
    W.__init__ = __init__
    gc.callbacks.append(_on_gc)


def report(out: Path) -> None:
    its = sorted(_iterations)

    def q(p: float) -> float:
        return round(its[min(len(its) - 1, int(p * len(its)))] * 1000, 2) if its else 0.0

    out.write_bytes(wire.dumps({
        "iterations": len(its), "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": q(1.0), "total_s": round(sum(its), 3),
        "steps_s": {k: round(v, 3) for k, v in sorted(_totals.items(), key=lambda kv: -kv[1])},
        "long": _long, "marks": _marks}))


def main() -> None:
    out = Path(sys.argv[1])
    install()
    from stream.cli import main as cli

    try:
        cli.main(args=sys.argv[2:], prog_name="fraudstream", standalone_mode=False)
    finally:
        report(out)


if __name__ == "__main__":
    main()
