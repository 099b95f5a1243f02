"""Microseconds per event for scoring and per label for learning, and an offline quality check.

    .venv/bin/python bench/bench_models.py                 # speed, default model
    .venv/bin/python bench/bench_models.py --spec logreg   # another registry spec
    .venv/bin/python bench/bench_models.py --quality       # online vs frozen, merchant vs global

Speed: a synthetic stream (``online_models.synthetic``: 42 features, every event labelled) is
replayed through a :class:`Scorer` (global + per-merchant models, calibration, snapshot store in
memory, quality monitor). After a warm-up replay the timed phase calls ``Scorer.score`` for a
block of events and then ``Scorer.learn`` for their labels, so each figure covers exactly one
side. Best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time

import river

from online_models.labels import DAY_MS
from online_models.metrics import average_precision, roc_auc
from online_models.replay import EventItem, merge_by_time, replay
from online_models.scorer import Scorer
from online_models.synthetic import generate


def speed(spec: str, n_warm: int, n_timed: int, repeat: int, write_through: bool) -> dict:
    events, labels = generate(n_events=n_warm + n_timed, seed=1)
    y = {lab.event_id: lab for lab in labels}
    best_s = best_l = float("inf")
    for _ in range(repeat):
        scorer = Scorer.create(spec, seed=1, write_through=write_through)
        warm = set(e.event_id for e in events[:n_warm])
        replay(scorer, merge_by_time(events[:n_warm], [lab for lab in labels
                                                          if lab.event_id in warm]))
        timed = events[n_warm:]
        t0 = time.perf_counter()
        for e in timed:
            scorer.score(e.features, e.merchant_id, e.event_id, e.event_time)
        t1 = time.perf_counter()
        for e in timed:
            lab = y[e.event_id]
            scorer.learn(lab.event_id, lab.is_fraud, lab.label_time)
        t2 = time.perf_counter()
        best_s = min(best_s, (t1 - t0) / len(timed) * 1e6)
        scorer.flush()  # merchant models are written once per flush (the commit's job)
        t3 = time.perf_counter()
        best_l = min(best_l, (t3 - t1) / len(timed) * 1e6)
    return {"score_us": best_s, "learn_us": best_l}


def _auc_ap(recs, y):
    s = [r.score for r in recs]
    lab = [y[r.event_id] for r in recs]
    return roc_auc(s, lab), average_precision(s, lab)


def quality(spec: str, n: int, freeze_day: float) -> None:
    events, labels = generate(n_events=n, seed=2)
    y = {lab.event_id: lab.is_fraud for lab in labels}
    after = 21 * DAY_MS  # the synthetic population drifts on day 21

    def run(**kw):
        recs = []
        scorer = Scorer.create(spec, seed=2, **{k: v for k, v in kw.items() if k != "freeze"})
        for item in merge_by_time(events, labels):
            if isinstance(item, EventItem):
                recs.append(scorer.score(item.features, item.merchant_id, item.event_id,
                                         item.event_time))
            else:
                if kw.get("freeze") and item.label_time > kw["freeze"]:
                    scorer.learn_global = False
                scorer.learn(item.event_id, item.is_fraud, item.label_time)
        return recs

    online = run(merchant_spec=None)
    frozen = run(merchant_spec=None, freeze=freeze_day * DAY_MS)
    merchant = run()
    late = lambda rs: [r for r in rs if r.event_time >= after]  # noqa: E731
    distinct = lambda rs: [r for r in rs if r.merchant_id in {"m0", "m1", "m2", "m3"}  # noqa: E731
                           and r.event_time >= 14 * DAY_MS]
    print(f"events={n} spec={spec} labels all delayed (fraud 1-20 d, legit 7 d)")
    print("| comparison | slice | ROC AUC | AP |\n| --- | --- | --- | --- |")
    for name, recs in (("online (global only)", online),
                       (f"frozen after day {freeze_day:g}", frozen)):
        auc, ap = _auc_ap(late(recs), y)
        print(f"| {name} | events from day 21 | {auc:.3f} | {ap:.3f} |")
    for name, recs in (("global only", online), ("global + per-merchant", merchant)):
        auc, ap = _auc_ap(distinct(recs), y)
        print(f"| {name} | distinct merchants m0-m3, from day 14 | {auc:.3f} | {ap:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="default")
    ap.add_argument("--warm", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quality", action="store_true")
    ap.add_argument("--write-through", action="store_true",
                    help="pickle the merchant model on every label instead of once per flush")
    ap.add_argument("--quality-events", type=int, default=40_000)
    ap.add_argument("--freeze-day", type=float, default=14.0)
    a = ap.parse_args()
    print(f"python {sys.version.split()[0]} river {river.__version__} {platform.machine()}")
    if a.quality:
        quality(a.spec, a.quality_events, a.freeze_day)
        return
    r = speed(a.spec, a.warm, a.events, a.repeat, a.write_through)
    print(f"spec={a.spec} write_through={a.write_through} warm={a.warm} timed={a.events} best of {a.repeat}: "
          f"score {r['score_us']:.1f} us/event, learn {r['learn_us']:.1f} us/label, "
          f"total {r['score_us'] + r['learn_us']:.1f} us")


if __name__ == "__main__":
    main()
