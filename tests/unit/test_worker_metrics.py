"""The helpers that set the worker's expensive or frequent metrics at a bounded cadence:
rolling model quality with drift alarms, and restore progress. Real registries, real monitors."""

from __future__ import annotations

import math
import random

import pytest

from online_models.metrics import QualityMonitor, pooled_quality
from stream.observability import QualityGauges, RestoreProgress, WorkerMetrics


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------- restore progress
def test_restore_progress_publishes_at_a_bounded_cadence():
    m = WorkerMetrics()
    clock = Clock()
    p = RestoreProgress(m, "user", 3, start=100, end=1100, every_records=300, every_s=1.0,
                        clock=clock)
    gauges = {"stage": "user", "partition": "3"}
    assert value(m, "fraudstream_restore_restored_records", **gauges) == 0
    assert value(m, "fraudstream_restore_remaining_records", **gauges) == 1000
    p.advance(100, 200)  # neither 300 records nor a second since the last publish
    assert value(m, "fraudstream_restore_remaining_records", **gauges) == 1000
    assert value(m, "fraudstream_restore_records_total", stage="user") == 0
    p.advance(250, 480)
    assert value(m, "fraudstream_restore_restored_records", **gauges) == 350
    assert value(m, "fraudstream_restore_remaining_records", **gauges) == 620
    assert value(m, "fraudstream_restore_records_total", stage="user") == 350
    m.last_beat = 0.0
    p.advance(0, -1)  # an empty batch moves nothing...
    clock.now += 1.5
    p.advance(10, 500)  # ...but a second later the gauges catch up, and the process is live
    assert value(m, "fraudstream_restore_restored_records", **gauges) == 360
    assert m.last_beat > 0.0
    assert p.finish() == 360
    assert value(m, "fraudstream_restore_remaining_records", **gauges) == 0
    assert value(m, "fraudstream_restore_records_total", stage="user") == 360
    RestoreProgress.forget(m, "user", 3)
    assert value(m, "fraudstream_restore_restored_records", **gauges) is None
    assert value(m, "fraudstream_restore_remaining_records", **gauges) is None
    assert value(m, "fraudstream_restore_records_total", stage="user") == 360
    RestoreProgress.forget(m, "user", 3)  # twice is fine


def test_nothing_to_restore_is_done_at_once():
    m = WorkerMetrics()
    p = RestoreProgress(m, "merchant", 0, start=42, end=42)
    assert p.finish() == 0
    assert value(m, "fraudstream_restore_remaining_records", stage="merchant", partition="0") == 0
    assert value(m, "fraudstream_restore_restored_records", stage="merchant", partition="0") == 0


# ---------------------------------------------------------------------- quality
def _labelled(mon: QualityMonitor, rng: random.Random, n: int, models: tuple[str, ...],
              inverted: bool = False) -> None:
    for i in range(n):
        y = rng.random() < 0.2
        score = min(1.0, max(0.0, rng.gauss(0.7 if y != inverted else 0.3, 0.15)))
        for name in models:
            mon.update_model(name, score, y, event_time=i, label_time=i + 5000)
        mon.delay.update(5000)


FIGURES = {"fraudstream_quality_auc": "roc_auc",
           "fraudstream_quality_average_precision": "average_precision",
           "fraudstream_quality_precision_at_budget": "precision_at_budget",
           "fraudstream_quality_recall_at_budget": "recall_at_budget",
           "fraudstream_quality_window_labels": "window"}


def test_quality_gauges_pool_the_tasks_and_follow_the_models():
    m = WorkerMetrics()
    assert math.isnan(value(m, "fraudstream_label_delay_mean_seconds"))  # not 0: unknown
    rng = random.Random(3)
    a, b = QualityMonitor(budget=0.05), QualityMonitor(budget=0.05)
    _labelled(a, rng, 400, ("final", "global", "merchant"))
    _labelled(b, rng, 300, ("final", "global", "challenger"))
    gauges = QualityGauges(m)
    assert gauges.update({"merchant-0": a, "merchant-1": b}, budget=0.05) == {}
    pooled = pooled_quality([a, b], 0.05)["models"]
    assert set(pooled) == {"final", "global", "merchant", "challenger"}
    for model, figures in pooled.items():
        for family, key in FIGURES.items():
            assert value(m, family, model=model) == pytest.approx(figures[key]), (family, model)
    assert value(m, "fraudstream_quality_window_labels", model="final") == 700
    assert value(m, "fraudstream_quality_window_labels", model="challenger") == 300
    assert 0.9 < value(m, "fraudstream_quality_auc", model="final") <= 1.0
    assert value(m, "fraudstream_label_delay_mean_seconds") == 5.0

    # The partition with the challenger left this worker: its series go, the others follow.
    gauges.update({"merchant-0": a}, budget=0.05)
    assert value(m, "fraudstream_quality_auc", model="challenger") is None
    assert value(m, "fraudstream_quality_window_labels", model="challenger") is None
    assert value(m, "fraudstream_quality_window_labels", model="final") == 400
    gauges.update({}, budget=0.05)
    assert value(m, "fraudstream_quality_window_labels", model="final") is None
    assert math.isnan(value(m, "fraudstream_label_delay_mean_seconds"))


def test_undefined_figures_have_no_series():
    m = WorkerMetrics()
    mon = QualityMonitor()
    for i in range(50):  # no fraud yet: AUC and AP are undefined, precision is 0
        mon.update_model("global", 0.1 + i / 100, False, event_time=i, label_time=i)
    QualityGauges(m).update({"merchant-0": mon}, budget=0.1)
    assert value(m, "fraudstream_quality_auc", model="global") is None
    assert value(m, "fraudstream_quality_average_precision", model="global") is None
    assert value(m, "fraudstream_quality_recall_at_budget", model="global") is None
    assert value(m, "fraudstream_quality_precision_at_budget", model="global") == 0.0
    assert value(m, "fraudstream_quality_window_labels", model="global") == 50


def test_drift_alarms_are_counted_once_per_monitor():
    m = WorkerMetrics()
    gauges = QualityGauges(m)
    rng = random.Random(11)
    mon = QualityMonitor(window=500)
    _labelled(mon, rng, 1500, ("global",))
    assert gauges.update({"merchant-0": mon}, budget=0.01) == {}
    _labelled(mon, rng, 1500, ("global",), inverted=True)  # the model turns bad
    raised = mon.drift_counts()["global"]
    assert raised >= 1
    assert gauges.update({"merchant-0": mon}, budget=0.01) == {"global": raised}
    assert gauges.update({"merchant-0": mon}, budget=0.01) == {}  # not counted twice
    assert value(m, "fraudstream_drift_alarms_total", model="global") == raised

    # The task reopens (a rebalance, a recovery): a new monitor under the same key counts from 0.
    fresh = QualityMonitor(window=500)
    _labelled(fresh, rng, 1500, ("global",))
    _labelled(fresh, rng, 1500, ("global",), inverted=True)
    again = fresh.drift_counts()["global"]
    # Alarms between the last update and the task's close still count.
    assert gauges.retire("merchant-0", fresh) == {"global": again}
    assert value(m, "fraudstream_drift_alarms_total", model="global") == raised + again
    gauges.update({}, budget=0.01)
    assert value(m, "fraudstream_drift_alarms_total", model="global") == raised + again


def test_the_trainer_sets_its_window_alone():
    m = WorkerMetrics()
    figures = {"window": 20, "roc_auc": 0.8, "average_precision": 0.4,
               "precision_at_budget": 1.0, "recall_at_budget": 0.25}
    QualityGauges(m).set_models({"global": figures})
    for family, key in FIGURES.items():
        assert value(m, family, model="global") == figures[key]
    assert value(m, "fraudstream_quality_auc", model="final") is None
