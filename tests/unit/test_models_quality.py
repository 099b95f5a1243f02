"""Calibration, decisions, blending rule and metrics against hand-computed values."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings, strategies as st

from online_models.calibration import DecisionPolicy, PlattCalibrator, Thresholds
from online_models.exceptions import ModelConfigError
from online_models.merchant import BlendRule
from online_models.metrics import (QualityMonitor, average_precision, pooled_quality,
                                   precision_recall_at_budget, ranking_metrics, roc_auc)


def test_auc_ap_by_hand():
    s = [0.1, 0.4, 0.35, 0.8]
    y = [False, False, True, True]
    # pairs (pos, neg): (.35,.1) win, (.35,.4) lose, (.8,.1) win, (.8,.4) win -> 3/4
    assert roc_auc(s, y) == 0.75
    # ranking .8(T) .4(F) .35(T) .1(F): P@1=1 (R=.5), P@3=2/3 (R=1) -> .5*1 + .5*2/3
    assert average_precision(s, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties: one pos and one neg tied count half
    assert roc_auc([0.5, 0.5], [True, False]) == 0.5
    assert average_precision([0.5, 0.5, 0.1], [True, False, False]) == 0.5
    assert roc_auc([0.3], [True]) is None and average_precision([0.3], [False]) is None


def test_precision_recall_at_budget_by_hand():
    s = [i / 200 for i in range(200)]          # 200 events, top 1% = 2 events
    y = [i in (199, 150, 10) for i in range(200)]
    assert precision_recall_at_budget(s, y, 0.01) == (0.5, pytest.approx(1 / 3))
    # 5%: indices 190..199 -> 1 of 10; 25%: 150..199 -> 2 of 50
    assert precision_recall_at_budget(s, y, 0.05) == (0.1, pytest.approx(1 / 3))
    assert precision_recall_at_budget(s, y, 0.25) == (0.04, pytest.approx(2 / 3))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.booleans()),
                min_size=1, max_size=40))
def test_auc_matches_pairwise_definition(pairs):
    s = [p for p, _ in pairs]
    y = [b for _, b in pairs]
    pos = [a for a, b in pairs if b]
    neg = [a for a, b in pairs if not b]
    got = roc_auc(s, y)
    if not pos or not neg:
        assert got is None
        return
    brute = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert got == pytest.approx(brute / (len(pos) * len(neg)))


def test_monitor_reports_and_detects_drift():
    mon = QualityMonitor(budget=0.1, window=1000)
    rng = random.Random(1)
    drifts = []
    for i in range(3000):
        y = rng.random() < 0.2
        good = (0.8 if y else 0.1) if i < 1500 else (0.1 if y else 0.8)  # model turns bad
        d = mon.update_model("final", good, y, event_time=i, label_time=i + 10)
        mon.update_merchant("m1", good, y)
        mon.delay.update(10)
        if d:
            drifts.append(d)
    assert drifts and drifts[0].event_time > 1500 and drifts[0].model == "final"
    rep = mon.report()
    assert rep["models"]["final"]["window"] == 1000
    assert rep["models"]["final"]["roc_auc"] < 0.1      # the last 1000 are all inverted
    assert rep["label_delay"]["mean_ms"] == 10
    assert rep["merchants"]["m1"]["n"] == 3000


def _same(got, want):
    assert (got is None) == (want is None), (got, want)
    if want is not None:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.5, 0.5000001, 0.9, 1.0]), st.booleans()),
                max_size=60),
       st.sampled_from([0.01, 0.05, 0.3, 1.0]))
def test_ranking_metrics_match_the_pure_definitions(pairs, budget):
    # Few distinct scores: most pairs are tied, which is where the definitions can disagree.
    s = [p for p, _ in pairs]
    y = [b for _, b in pairs]
    got = ranking_metrics(s, y, budget)
    assert (got["window"], got["n_pos"]) == (len(s), sum(y))
    _same(got["roc_auc"], roc_auc(s, y))
    _same(got["average_precision"], average_precision(s, y))
    precision, recall = precision_recall_at_budget(s, y, budget)
    _same(got["precision_at_budget"], precision)
    _same(got["recall_at_budget"], recall)


def test_pooled_quality_is_the_union_of_the_windows():
    rng = random.Random(7)
    monitors = [QualityMonitor(budget=0.05, window=300) for _ in range(3)]
    everything: dict[str, tuple[list, list]] = {}
    for i, mon in enumerate(monitors):
        for j in range(200 + 150 * i):  # the last monitor overflows its window
            y = rng.random() < 0.15
            score = min(1.0, max(0.0, rng.gauss(0.6 if y else 0.3, 0.2)))
            models = ("final", "global") if i < 2 else ("final", "global", "challenger")
            for name in models:
                mon.update_model(name, score, y, event_time=j, label_time=j + 1)
            mon.delay.update(1000 * (i + 1))
            if j >= 200 + 150 * i - 300:  # what the window still holds
                for name in models:
                    s, ys = everything.setdefault(name, ([], []))
                    s.append(score)
                    ys.append(y)
    q = pooled_quality(monitors, budget=0.05)
    assert set(q["models"]) == {"final", "global", "challenger"}
    for name, (s, ys) in everything.items():
        got = q["models"][name]
        assert got["window"] == len(s)
        _same(got["roc_auc"], roc_auc(s, ys))
        _same(got["average_precision"], average_precision(s, ys))
    assert q["models"]["challenger"]["window"] == 300
    # Delay: weighted by labels seen (200 at 1 s, 350 at 2 s, 500 at 3 s).
    assert q["labels"] == 1050
    assert q["label_delay_mean_ms"] == pytest.approx((200 * 1000 + 350 * 2000 + 500 * 3000) / 1050)
    empty = pooled_quality([QualityMonitor()])
    assert empty == {"models": {}, "label_delay_mean_ms": None, "labels": 0}


def test_drift_counts_follow_the_detectors():
    mon = QualityMonitor(window=500)
    assert mon.drift_counts() == {}
    records = []
    for i in range(3000):
        y = i % 5 == 0
        good = (0.9 if y else 0.05) if i < 1500 else (0.05 if y else 0.9)
        for name in ("global", "final"):
            d = mon.update_model(name, good if name == "global" else 0.2, y, event_time=i,
                                 label_time=i)
            if d is not None:
                records.append(d.model)
    # Still counted long after the detection (river's own counter is not: see drift_counts).
    counts = mon.drift_counts()
    assert counts == {"global": records.count("global"), "final": 0}
    assert counts["global"] >= 1 and counts == mon.report()["drift_detections"]


def test_platt_calibration_recovers_a_known_mapping():
    rng = random.Random(7)
    cal = PlattCalibrator(min_labels=200, refit_every=200)
    for _ in range(40_000):
        z = rng.uniform(-4, 4)
        raw = 1 / (1 + math.exp(-z))
        y = rng.random() < 1 / (1 + math.exp(-(2.0 * z - 3.0)))
        cal.learn_one(raw, y)
    cal.refit()
    assert cal.a == pytest.approx(2.0, abs=0.15) and cal.b == pytest.approx(-3.0, abs=0.15)
    assert cal.predict_one(0.5) == pytest.approx(1 / (1 + math.exp(3.0)), abs=0.01)


def test_calibration_passes_through_until_fitted_and_never_inverts():
    cal = PlattCalibrator(min_labels=10, refit_every=5)
    assert cal.predict_one(0.3) == 0.3
    for i in range(40):  # anti-correlated labels would want a negative slope
        cal.learn_one(0.9 if i % 2 else 0.1, i % 2 == 0)
    assert cal.fitted and cal.a > 0
    assert cal.predict_one(0.9) >= cal.predict_one(0.1)


def test_thresholds_global_and_per_merchant():
    policy = DecisionPolicy(Thresholds(0.5, 0.9), {"m2": Thresholds(0.2, 0.4)})
    assert [policy.decide(p, "m1") for p in (0.49, 0.5, 0.89, 0.9)] == \
        ["approve", "review", "review", "block"]
    assert [policy.decide(p, "m2") for p in (0.19, 0.2, 0.4)] == ["approve", "review", "block"]
    assert policy.decide(0.6, None) == "review"
    with pytest.raises(ModelConfigError):
        Thresholds(0.9, 0.5)


def test_blend_rule_trusts_merchant_more_as_data_grows():
    rule = BlendRule(min_labels=100, half_trust=300)
    assert rule.weight(99) == 0.0
    assert rule.weight(100) == 0.25 and rule.weight(300) == 0.5 and rule.weight(900) == 0.75
    ws = [rule.weight(n) for n in range(100, 5000, 100)]
    assert ws == sorted(ws) and ws[-1] < 1.0
    # half of the merchant's correction, in log-odds: logit 0.2 = -1.386, logit 0.6 = 0.405
    assert rule.blend(0.2, 0.6, 300) == pytest.approx(1 / (1 + math.exp(-(-1.386 + 0.405) / 2)),
                                                      abs=1e-3)
    assert rule.blend(0.2, 0.6, 50) == 0.2
    assert rule.blend(0.2, 0.2, 900) == pytest.approx(0.2)  # no correction, no change


def test_label_delay_percentiles_cover_the_latest_window_mean_and_max_everything():
    from online_models.metrics import DelayStats
    d = DelayStats(window=100)
    assert d.report()["p50_ms"] is None
    for ms in range(1, 1001):          # 1..1000; the window keeps 901..1000
        d.update(ms)
    r = d.report()
    assert (r["n"], r["mean_ms"], r["max_ms"]) == (1000, 500.5, 1000)
    assert r["p50_ms"] == 950.5 and r["p95_ms"] == 995.05
