"""Backtest benchmark: events per second of ``fraudstream backtest`` on a simulated log.

Simulates ``--events`` events over ``--days`` (``stream.simulate``, labels included) into a
temporary directory, then runs :func:`stream.backtest.run_backtest` once per ``--model`` and
reports wall and CPU events/s of the scoring phase (features, model, labels) and of the whole run
(loading and validating the logs included). ``--profile`` runs each model once more under cProfile
and attributes the scoring phase's own time (tottime) to the code it is spent in: the feature
engine, the online models (River included), the contract decoder, the backtest loop.

    .venv/bin/python bench/bench_backtest.py                          # 100k events, default model
    .venv/bin/python bench/bench_backtest.py --models heuristic,default --profile

Not part of the test suite. Figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

from stream.backtest import BacktestOptions, run_backtest
from stream.settings import Settings
from stream.simulate import SimConfig, simulate, write_jsonl

# Where a function's own time goes, by the first matching piece of its file path.
_BUCKETS = (
    ("features/", "feature engine (features/)"),
    ("online_models/", "online models (online_models/)"),
    ("river/", "River (inside the models)"),
    ("stream/events.py", "contract decode (stream/events.py)"),
    ("stream/runtime/", "runtime scorer (stream/runtime/)"),
    ("stream/backtest.py", "backtest loop and stage routing (stream/backtest.py)"),
    ("stream/wire.py", "wire encoding between stages"),
)


def _bucket(path: str, name: str) -> str:
    for piece, label in _BUCKETS:
        if piece in path:
            return label
    if "orjson" in name:
        return "wire encoding between stages"
    return "other (builtins, stdlib)"


def _breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Own time per bucket. Builtins and stdlib functions (dict.get, isinstance, ipaddress, ...)
    are charged to the buckets of their callers, in proportion to the time spent per caller."""
    table = stats.stats  # type: ignore[attr-defined]
    memo: dict = {}

    def shares(func: tuple, seen: frozenset) -> dict[str, float]:
        """How one second of ``func``'s own time divides over buckets."""
        if func in memo:
            return memo[func]
        path, _, name = func
        own = _bucket(path, name)
        callers = table.get(func, (0, 0, 0, 0, {}))[4]
        if not own.startswith("other") or not callers or func in seen:
            return {own: 1.0}
        total = sum(c[2] for c in callers.values()) or 1.0
        out: dict[str, float] = {}
        for caller, c in callers.items():
            for bucket, w in shares(caller, seen | {func}).items():
                out[bucket] = out.get(bucket, 0.0) + w * c[2] / total
        memo[func] = out
        return out

    out: dict[str, float] = {}
    for func, (_, _, tottime, _, _) in table.items():
        for bucket, w in shares(func, frozenset()).items():
            out[bucket] = out.get(bucket, 0.0) + tottime * w
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for pkg in ("river", "orjson", "numpy"):
        try:
            out[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - informational only
            out[pkg] = "?"
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"],
                                       capture_output=True, text=True,
                                       check=False).stdout.strip()
    except OSError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--days", type=float, default=28.0)
    ap.add_argument("--fraud-rate", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--models", default="default", help="comma-separated --model names")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs per model, alternating models; figures are medians (this VM's "
                         "run-to-run noise reaches 30 %%)")
    ap.add_argument("--profile", action="store_true", help="also profile one run per model")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()

    settings = Settings.load(env={})
    results: dict = {"events": args.events, "days": args.days, "partitions": args.partitions,
                     "versions": _versions(), "date": time.strftime("%Y-%m-%d"),
                     "machine": f"{platform.machine()}, {platform.processor() or '?'}",
                     "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-backtest-") as tmp:
        ev, lab = Path(tmp) / "events.jsonl.gz", Path(tmp) / "labels.jsonl.gz"
        sim = simulate(SimConfig(events=args.events, days=args.days, fraud_rate=args.fraud_rate,
                                 seed=args.seed))
        write_jsonl(sim.iter_events(), ev)
        n_labels = write_jsonl(sim.iter_labels(), lab)
        results["labels"] = n_labels
        samples: dict[str, list[dict]] = {m: [] for m in args.models.split(",")}
        for _ in range(max(1, args.repeat)):
            for model in samples:
                opts = BacktestOptions(log=ev, labels=lab, model=model,
                                       partitions=args.partitions)
                cpu0 = time.process_time()
                r = run_backtest(opts, settings)
                cpu = time.process_time() - cpu0
                samples[model].append({
                    "scoring_wall_s": r.run_seconds, "scoring_cpu_s": r.run_cpu_seconds,
                    "load_wall_s": r.load_seconds, "events_per_s_wall": len(r) / r.run_seconds,
                    "events_per_s_cpu": len(r) / r.run_cpu_seconds,
                    "end_to_end_events_per_s_cpu": len(r) / cpu,
                    "us_per_event_cpu": 1e6 * r.run_cpu_seconds / len(r)})
        for model, runs in samples.items():
            opts = BacktestOptions(log=ev, labels=lab, model=model, partitions=args.partitions)
            med = {key: statistics.median(x[key] for x in runs) for key in runs[0]}
            run = {"scoring_wall_s": round(med["scoring_wall_s"], 2),
                   "scoring_cpu_s": round(med["scoring_cpu_s"], 2),
                   "load_wall_s": round(med["load_wall_s"], 2),
                   "events_per_s_wall": round(med["events_per_s_wall"]),
                   "events_per_s_cpu": round(med["events_per_s_cpu"]),
                   "end_to_end_events_per_s_cpu": round(med["end_to_end_events_per_s_cpu"]),
                   "us_per_event_cpu": round(med["us_per_event_cpu"], 1)}
            if len(runs) > 1:
                run["runs"] = len(runs)
                run["events_per_s_cpu_each"] = [round(x["events_per_s_cpu"]) for x in runs]
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                run_backtest(opts, settings)
                prof.disable()
                parts = _breakdown(pstats.Stats(prof))
                total = sum(parts.values())
                run["profile_share"] = {k: round(v / total, 3) for k, v in parts.items()}
            results["runs"][model] = run
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{args.events:,} events, {n_labels:,} labels, {args.days:g} days, "
          f"{args.partitions} partition(s); {results['versions']}")
    for model, run in results["runs"].items():
        print(f"\n[{model}]")
        for key, value in run.items():
            if key != "profile_share":
                print(f"  {key:30} {value}")
        for part, share in run.get("profile_share", {}).items():
            print(f"  {share:6.1%}  {part}")


if __name__ == "__main__":
    sys.exit(main())
