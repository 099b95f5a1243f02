"""Backtest evidence for the default model: specs compared, online against frozen, per-merchant
models against the global model alone, over several simulated streams.

Every figure comes from :func:`stream.backtest.run_backtest` (the worker's event path, the same
code ``fraudstream backtest`` runs) on a stream from :func:`stream.simulate.simulate` with its
delayed labels (legitimate events labelled after a 14-day maturity, fraud confirmed days to weeks
later, some never), and :func:`stream.backtest.compute_report` (its metrics). Each seed is one
simulated stream; tables give the mean and the standard deviation over seeds.

    .venv/bin/python bench/bench_model_evidence.py specs      # default vs registry and ablations
    .venv/bin/python bench/bench_model_evidence.py frozen     # online vs frozen (--freeze-after)
    .venv/bin/python bench/bench_model_evidence.py merchants  # per-merchant vs global only

``specs`` compares global models alone (no per-merchant models) so that the rows differ only in
the global model; the other two run the default as configured. Ablations the registry does not
carry are registered here for the run only: the default's learned correction without the prior, and the default with the merchant fraud rate delayed 7 days
(the feature set before 2026-11-28; ``blend`` on those features is the default as it was then).

Merchants with distinct behaviour (``merchants``): the simulator's distinct merchants (fraud of
their own signature, ``Simulation.distinct_merchant_ids``), those its compromised-merchant
scenario hit (both from the stream's ground truth), and those whose labelled fraud rate is at
least three times the stream's (with at least 100 labelled events), from the labels.

Not part of the test suite; the figures go to ``docs/models.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import river

from features.default import DEFAULT_FEATURES
from features.definitions import FeatureSet
from features.windows import parse_duration
from online_models import registry
from online_models.prior import WEIGHTS, RulePrior
from stream.backtest import BacktestOptions, compute_report, run_backtest
from stream.settings import Settings
from stream.simulate import SimConfig, simulate, write_jsonl

DAY_MS = 86_400_000
_RATE = "merchant_txn_fraud_rate_30d_delay15d"
_RATE_7D = "merchant_txn_fraud_rate_30d_delay7d"


# ---------------------------------------------------------------------- ablations
def _register_ablations() -> None:
    specs = (
        ("ablation-no-prior", "the default's learned correction alone (prior log-odds 0)",
         lambda n, v, s: registry.PriorLogReg(n, v, prior=RulePrior({}, bias=0.0), lr=0.0003)),
        ("ablation-rate-7d", "the default with its prior on the 7-day-delayed fraud rate",
         lambda n, v, s: registry.PriorLogReg(n, v, prior=RulePrior(_weights_7d()), lr=0.0003)),
    )
    for name, what, factory in specs:
        registry.register(registry.ModelSpec(name, f"{name}-1", what, factory))


def _weights_7d() -> dict[str, float]:
    return {(_RATE_7D if k == _RATE else k): w for k, w in WEIGHTS.items()}


def _features_7d() -> FeatureSet:
    """The default feature set with the merchant fraud rate delayed 7 days (before 2026-11-28)."""
    feats = tuple(dataclasses.replace(f, name="", delay="7d") if f.name == _RATE else f
                  for f in DEFAULT_FEATURES)
    return FeatureSet(feats, grace="1h", ttl="90d")


#: Rows of ``specs``: label -> (--model, feature set: None = default, "7d" = the old rate).
SPEC_ROWS: dict[str, tuple[str, str | None]] = {
    "**default** (default-2: prior + learned correction)": ("default", None),
    "default + Platt calibrator (`calibrated`)": ("calibrated", None),
    "learned correction alone (no prior)": ("ablation-no-prior", None),
    "heuristic (the prior alone, no learning)": ("heuristic", None),
    "logreg": ("logreg", None),
    "blend (default-1 recipe)": ("blend", None),
    "hat": ("hat", None),
    "hst": ("hst", None),
    "river-logreg": ("river-logreg", None),
    "default, fraud rate delayed 7 d": ("ablation-rate-7d", "7d"),
    "blend, fraud rate delayed 7 d (the default on main before)": ("blend", "7d"),
}


# ---------------------------------------------------------------------- one stream
@dataclasses.dataclass
class Stream:
    seed: int
    events: Path
    labels: Path
    compromised: set[str]
    distinct: set[str]


def make_stream(seed: int, n_events: int, days: float, mix: dict[str, float] | None,
                work: Path) -> Stream:
    cfg = SimConfig(events=n_events, days=days, seed=seed,
                    **({"mix": mix} if mix is not None else {}))
    sim = simulate(cfg)
    ev, lab = work / f"events-{seed}.jsonl.gz", work / f"labels-{seed}.jsonl.gz"
    write_jsonl(sim.iter_events(), ev)
    write_jsonl(sim.iter_labels(), lab)
    compromised = {e["merchant_id"] for e in sim.iter_events()
                   if e["attributes"].get("scenario") == "compromised_merchant"}
    return Stream(seed, ev, lab, compromised, set(sim.distinct_merchant_ids))


def _high_fraud_merchants(result: Any, factor: float = 3.0, min_labelled: int = 100) -> set[str]:
    known = result.labels >= 0
    y = result.labels[known].astype(bool)
    merchants = np.array([m or "" for m in result.merchant_ids], dtype=object)[known]
    rate = y.mean() if len(y) else 0.0
    out = set()
    for m in set(merchants.tolist()) - {""}:
        sel = merchants == m
        if sel.sum() >= min_labelled and y[sel].mean() >= factor * rate:
            out.add(m)
    return out


def run(stream: Stream, model: str, features: str | None = None,
        evaluate_from_ms: int | None = None, **opts: Any) -> dict:
    """One backtest (``opts``: :class:`BacktestOptions` fields): ``compute_report``'s report with
    the merchant slices and, with ``evaluate_from_ms``, the metrics from that point on."""
    fs = _features_7d() if features == "7d" else None
    t0 = time.process_time()
    result = run_backtest(BacktestOptions(log=stream.events, labels=stream.labels, model=model,
                                          feature_set=fs, partitions=1, **opts),
                          Settings.load(env={}))
    since = None
    if evaluate_from_ms is not None:
        since = int(result.event_times.min()) + evaluate_from_ms
    report = compute_report(result, budgets=(0.01,), top_merchants=0, since=since,
                            merchant_slices={"distinct": stream.distinct,
                                             "compromised": stream.compromised,
                                             "high_fraud": _high_fraud_merchants(result)})
    report["cpu_seconds"] = time.process_time() - t0
    return report


# ---------------------------------------------------------------------- tables
def _metrics(block: dict) -> dict[str, float | None]:
    return {"auc": block["roc_auc"], "ap": block["average_precision"],
            "p_at_budget": block["budgets"][0]["precision"] if block["budgets"] else None}


def _cell(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def _table(title: str, rows: list[tuple[str, list[dict]]], columns: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join([title] + [c for c, _ in columns]) + " |"
    out = [head, "|" + " --- |" * (len(columns) + 1)]
    for label, per_seed in rows:
        out.append("| " + " | ".join([label] + [_cell([m[key] for m in per_seed])
                                                for _, key in columns]) + " |")
    return "\n".join(out)


_COLS = [("ROC AUC", "auc"), ("AP", "ap"), ("precision@1%", "p_at_budget")]


def specs(streams: list[Stream]) -> tuple[str, dict]:
    raw: dict[str, list[dict]] = {}
    for label, (model, features) in SPEC_ROWS.items():
        for st in streams:
            rep = run(st, model, features, merchant_models=False)
            m = _metrics(rep["overall"])
            # From the third week on, the model has had labels of both classes.
            m["ap_from_week3"] = _mean_ap(rep["weekly"][2:])
            m["cpu"] = rep["cpu_seconds"]
            raw.setdefault(label, []).append(m)
            print(f"  specs seed={st.seed} {label}: {m}", file=sys.stderr, flush=True)
    cols = _COLS + [("mean weekly AP, weeks 3+", "ap_from_week3"), ("CPU s", "cpu")]
    return _table("global model (no per-merchant models)", list(raw.items()), cols), raw


def _mean_ap(weeks: list[dict]) -> float | None:
    vals = [w["average_precision"] for w in weeks if w["average_precision"] is not None]
    return statistics.mean(vals) if vals else None


def frozen(streams: list[Stream], freeze_after_ms: int) -> tuple[str, dict]:
    raw: dict[str, list[dict]] = {}
    label_days = freeze_after_ms / DAY_MS
    for st in streams:
        for label, freeze in (("online (learning throughout)", None),
                              (f"frozen after {label_days:g} days", freeze_after_ms)):
            rep = run(st, "default", evaluate_from_ms=freeze_after_ms, freeze_after_ms=freeze)
            after, overall = _metrics(rep["since"]), _metrics(rep["overall"])
            row = {f"after_{k}": v for k, v in after.items()}
            row.update({f"all_{k}": v for k, v in overall.items()})
            raw.setdefault(label, []).append(row)
            print(f"  frozen seed={st.seed} {label}: {row}", file=sys.stderr, flush=True)
    cols = [(f"{c} after day {label_days:g}", f"after_{k}") for c, k in _COLS] + \
           [(f"{c} overall", f"all_{k}") for c, k in _COLS]
    return _table("default model", list(raw.items()), cols), raw


def merchants(streams: list[Stream]) -> tuple[str, dict]:
    raw: dict[str, list[dict]] = {}
    for st in streams:
        for label, mm in (("global + per-merchant models", True), ("global only", False)):
            rep = run(st, "default", merchant_models=mm)
            row = {f"all_{k}": v for k, v in _metrics(rep["overall"]).items()}
            for name in ("distinct", "compromised", "high_fraud"):
                row.update({f"{name}_{k}": v
                            for k, v in _metrics(rep["merchant_slices"][name]).items()})
                row[f"{name}_n"] = rep["merchant_slices"][name]["merchants"]
            raw.setdefault(label, []).append(row)
            print(f"  merchants seed={st.seed} {label}: {row}", file=sys.stderr, flush=True)
    cols = [("ROC AUC overall", "all_auc"), ("AP overall", "all_ap"),
            ("precision@1% overall", "all_p_at_budget"),
            ("ROC AUC distinct", "distinct_auc"), ("AP distinct", "distinct_ap"),
            ("ROC AUC compromised", "compromised_auc"), ("AP compromised", "compromised_ap"),
            ("ROC AUC high-fraud", "high_fraud_auc"), ("AP high-fraud", "high_fraud_ap")]
    return _table("default model", list(raw.items()), cols), raw


# ---------------------------------------------------------------------- main
def _versions() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=False).stdout.strip() or "?"
    except OSError:
        commit = "?"
    return (f"python {platform.python_version()}, river {river.__version__}, numpy "
            f"{np.__version__}, commit {commit}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["specs", "frozen", "merchants", "all"])
    ap.add_argument("--seeds", default="1,2,3", help="one simulated stream per seed")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--days", type=float, default=56.0)
    ap.add_argument("--mix", help="scenario mix for simulate, e.g. compromised_merchant=1")
    ap.add_argument("--freeze-after", default="28d")
    ap.add_argument("--json", type=Path, help="write every per-seed figure here")
    a = ap.parse_args(argv)
    from stream.simulate import parse_mix

    seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
    mix = parse_mix(a.mix) if a.mix else None
    _register_ablations()
    print(f"{len(seeds)} simulated streams (seeds {a.seeds}): {a.events:,} events over "
          f"{a.days:g} days{', mix ' + a.mix if a.mix else ''}; {_versions()}")
    out: dict[str, Any] = {"seeds": seeds, "events": a.events, "days": a.days, "mix": a.mix,
                           "versions": _versions()}
    with tempfile.TemporaryDirectory(prefix="fs-evidence-") as tmp:
        streams = [make_stream(s, a.events, a.days, mix, Path(tmp)) for s in seeds]
        if a.what in ("specs", "all"):
            table, out["specs"] = specs(streams)
            print("\n" + table)
        if a.what in ("frozen", "all"):
            table, out["frozen"] = frozen(streams, parse_duration(a.freeze_after))
            print("\n" + table)
        if a.what in ("merchants", "all"):
            table, out["merchants"] = merchants(streams)
            print("\n" + table)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
