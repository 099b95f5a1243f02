"""Progressive-validation quality metrics and drift detection on the loss.

Every label is scored *before* the model learns from it (the score stored at scoring time), so
these are progressive-validation (prequential) figures. Per model and per merchant a
:class:`QualityWindow` keeps the last ``size`` ``(score, label)`` pairs; the ranking metrics are
computed exactly over that window when read (O(n log n) on read, O(1) per label):

- ROC AUC: Mann-Whitney with mid-ranks for tied scores (:func:`roc_auc`);
- average precision: ``sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds, highest
  first, ties grouped (scikit-learn's definition, :func:`average_precision`);
- precision and recall at a review budget: the top ``ceil(budget * n)`` scores are flagged, ties
  broken by arrival order, earlier first (:func:`precision_recall_at_budget`).

:func:`ranking_metrics` gives the same three figures from one vectorised sort, and
:func:`pooled_quality` applies it to the union of several monitors' windows (a worker holds one
monitor per partition and exports their union).

Cumulative log loss is a running mean of the per-label loss the drift detector also sees
(probabilities clamped to [1e-15, 1 - 1e-15], as river's ``LogLoss``); label delays keep a
running mean and maximum and the latest 10,000 delays for the median and 95th percentile.
Drift: ``river.drift.ADWIN`` watches each model's per-label log loss; when it fires,
:meth:`QualityMonitor.update` returns a :class:`DriftRecord` for the I/O layer to publish, and
counts it.

>>> roc_auc([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
0.75
>>> average_precision([0.9, 0.8, 0.7, 0.6], [True, False, True, False])
0.8333333333333333
>>> precision_recall_at_budget([0.9, 0.8, 0.7, 0.6], [True, False, True, False], budget=0.5)
(0.5, 0.5)
>>> r = ranking_metrics([0.9, 0.8, 0.7, 0.6], [True, False, True, False], budget=0.5)
>>> r["roc_auc"], r["average_precision"], r["precision_at_budget"], r["recall_at_budget"]
(0.75, 0.8333333333333333, 0.5, 0.5)
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from river import drift, stats

__all__ = ["roc_auc", "average_precision", "precision_recall_at_budget", "ranking_metrics",
           "QualityWindow", "DriftRecord", "DelayStats", "QualityMonitor", "pooled_quality"]


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Exact ROC AUC with mid-ranks for ties; ``None`` unless both classes are present."""
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        mid = (i + j) / 2.0 + 1.0  # ranks are 1-based
        rank_sum += mid * sum(1 for t in range(i, j + 1) if labels[order[t]])
        i = j + 1
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Average precision (ties grouped); ``None`` without positives."""
    n_pos = sum(1 for y in labels if y)
    if n_pos == 0:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    ap = 0.0
    tp = seen = 0
    prev_recall = 0.0
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for t in range(i, j + 1):
            seen += 1
            if labels[order[t]]:
                tp += 1
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / seen)
        prev_recall = recall
        i = j + 1
    return ap


def precision_recall_at_budget(scores: Sequence[float], labels: Sequence[bool],
                               budget: float = 0.01) -> tuple[float | None, float | None]:
    """Precision and recall when the top ``ceil(budget * n)`` scores are reviewed."""
    n = len(scores)
    if n == 0:
        return None, None
    k = max(1, math.ceil(budget * n - 1e-9))
    order = sorted(range(n), key=lambda i: (-scores[i], i))[:k]
    tp = sum(1 for i in order if labels[i])
    n_pos = sum(1 for y in labels if y)
    return tp / k, (tp / n_pos if n_pos else None)


def ranking_metrics(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray,
                    budget: float = 0.01) -> dict:
    """ROC AUC, average precision and precision/recall at ``budget`` from one sort.

    The definitions of :func:`roc_auc`, :func:`average_precision` and
    :func:`precision_recall_at_budget` (``None`` where they give ``None``), vectorised: a worker
    reads the pooled windows of all its partitions, hundreds of thousands of pairs, on its
    processing thread, where the three pure functions would take about a second.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n = len(s)
    n_pos = int(np.count_nonzero(y))
    n_neg = n - n_pos
    out: dict = {"window": n, "n_pos": n_pos, "roc_auc": None, "average_precision": None,
                 "precision_at_budget": None, "recall_at_budget": None}
    if n == 0:
        return out
    order = np.argsort(-s, kind="stable")  # highest first; equal scores keep arrival order
    s_sorted = s[order]
    tp_cum = np.cumsum(y[order])
    k = max(1, math.ceil(budget * n - 1e-9))
    tp_k = int(tp_cum[min(k, n) - 1])
    out["precision_at_budget"] = tp_k / k
    out["recall_at_budget"] = tp_k / n_pos if n_pos else None
    if not n_pos:
        return out
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])  # end of each tie group
    tp = tp_cum[last]
    seen = last + 1
    pos_in_group = np.diff(tp, prepend=0)
    out["average_precision"] = float(np.sum(pos_in_group * (tp / seen)) / n_pos)
    if n_neg:
        fp = seen - tp
        neg_in_group = np.diff(fp, prepend=0)
        # A positive outranks every negative of a lower group and half of those tied with it.
        wins = np.sum(pos_in_group * (n_neg - fp)) + 0.5 * np.sum(pos_in_group * neg_in_group)
        out["roc_auc"] = float(wins / (n_pos * n_neg))
    return out


class QualityWindow:
    """The last ``size`` ``(score, label)`` pairs of one model (or merchant), plus totals."""

    def __init__(self, size: int = 10_000, budget: float = 0.01) -> None:
        self.size = size
        self.budget = budget
        self._scores: deque[float] = deque(maxlen=size)
        self._labels: deque[bool] = deque(maxlen=size)
        self.loss_sum = 0.0   # log loss summed over every update (not only the window)
        self.n = 0
        self.n_pos = 0

    def update(self, score: float, y: bool, loss: float | None = None) -> None:
        """Add one labelled score (``loss``: its log loss, when the caller has it already)."""
        self._scores.append(score)
        self._labels.append(y)
        self.loss_sum += _log_loss(score, y) if loss is None else loss
        self.n += 1
        self.n_pos += bool(y)

    def report(self) -> dict:
        s, y = list(self._scores), list(self._labels)
        precision, recall = precision_recall_at_budget(s, y, self.budget)
        return {"n": self.n, "n_pos": self.n_pos, "window": len(s),
                "roc_auc": roc_auc(s, y), "average_precision": average_precision(s, y),
                "budget": self.budget, "precision_at_budget": precision,
                "recall_at_budget": recall,
                "log_loss": self.loss_sum / self.n if self.n else 0.0}


@dataclass(frozen=True)
class DriftRecord:
    """ADWIN detected a change in a model's loss (for the I/O layer to publish)."""

    model: str
    n_labels: int           # labels this model had been evaluated on when drift was detected
    event_time: int         # of the label's event
    label_time: int
    loss_estimate: float    # ADWIN's mean loss over its (shrunk) window
    window: int

    def to_dict(self) -> dict:
        return {"kind": "drift", "model": self.model, "n_labels": self.n_labels,
                "event_time": self.event_time, "label_time": self.label_time,
                "loss_estimate": self.loss_estimate, "window": self.window}


class DelayStats:
    """Label delay (label time minus event time), in milliseconds: mean and maximum over every
    label, median and 95th percentile over the latest ``window`` (computed when reported, so a
    label costs an append)."""

    def __init__(self, window: int = 10_000) -> None:
        self.mean = stats.Mean()
        self.max = 0
        self._recent: deque[int] = deque(maxlen=window)

    def update(self, delay_ms: int) -> None:
        self.mean.update(delay_ms)
        self._recent.append(delay_ms)
        if delay_ms > self.max:
            self.max = delay_ms

    def report(self) -> dict:
        n = self.mean.n
        if not n:
            return {"n": 0, "mean_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None}
        p50, p95 = np.percentile(np.fromiter(self._recent, dtype=np.float64), [50, 95])
        return {"n": int(n), "mean_ms": self.mean.get(), "p50_ms": float(p50),
                "p95_ms": float(p95), "max_ms": self.max}


def _log_loss(p: float, y: bool) -> float:
    p = min(1.0 - 1e-15, max(1e-15, p))
    return -math.log(p if y else 1.0 - p)


class QualityMonitor:
    """Windows per model and per merchant, label delays, and ADWIN per model on the loss."""

    def __init__(self, budget: float = 0.01, window: int = 10_000, merchant_window: int = 2_000,
                 drift_delta: float = 0.002) -> None:
        self.budget = budget
        self.window = window
        self.merchant_window = merchant_window
        self.drift_delta = drift_delta
        self.models: dict[str, QualityWindow] = {}
        self.merchants: dict[str, QualityWindow] = {}
        self.delay = DelayStats()
        self._adwin: dict[str, drift.ADWIN] = {}
        # Counted here: river's ADWIN.n_detections goes back to 0 on the update after a detection.
        self._detections: dict[str, int] = {}
        self.drifts: list[DriftRecord] = []

    def update_model(self, model: str, score: float, y: bool, event_time: int,
                     label_time: int) -> DriftRecord | None:
        """Fold one label into ``model``'s window and drift detector."""
        w = self.models.get(model)
        if w is None:
            w = self.models[model] = QualityWindow(self.window, self.budget)
            self._adwin[model] = drift.ADWIN(delta=self.drift_delta)
            self._detections[model] = 0
        loss = _log_loss(score, y)
        w.update(score, y, loss)
        adwin = self._adwin[model]
        adwin.update(loss)
        if adwin.drift_detected:
            self._detections[model] += 1
            rec = DriftRecord(model, w.n, event_time, label_time, float(adwin.estimation),
                              int(adwin.width))
            self.drifts.append(rec)
            del self.drifts[:-100]  # keep the latest; the I/O layer publishes them as they come
            return rec
        return None

    def update_merchant(self, merchant_id: str, score: float, y: bool) -> None:
        w = self.merchants.get(merchant_id)
        if w is None:
            w = self.merchants[merchant_id] = QualityWindow(self.merchant_window, self.budget)
        w.update(score, y)

    def drift_counts(self) -> dict[str, int]:
        """Drift alarms per model since this monitor was created."""
        return dict(self._detections)

    def report(self, merchants: bool = True) -> dict:
        out = {"models": {k: w.report() for k, w in self.models.items()},
               "label_delay": self.delay.report(),
               "drift_detections": self.drift_counts()}
        if merchants:
            out["merchants"] = {k: w.report() for k, w in self.merchants.items()}
        return out


def pooled_quality(monitors: Iterable[QualityMonitor], budget: float = 0.01) -> dict:
    """Quality over the union of several monitors' windows, per model; mean label delay.

    A worker keeps one monitor per partition it scores; this is what it exports: per model, the
    :func:`ranking_metrics` of the last ``window`` labels of every partition together (equal
    scores rank in monitor order, then label order), and the label delay averaged over all the
    labels the monitors have seen. Models no monitor has seen are absent.

    >>> a, b = QualityMonitor(), QualityMonitor()
    >>> for mon, (score, y) in ((a, (0.9, True)), (a, (0.8, False)), (b, (0.7, True)),
    ...                         (b, (0.6, False))):
    ...     _ = mon.update_model("global", score, y, event_time=0, label_time=1)
    ...     mon.delay.update(1000 if mon is a else 3000)
    >>> q = pooled_quality([a, b], budget=0.5)
    >>> q["models"]["global"]["roc_auc"], q["models"]["global"]["window"], q["label_delay_mean_ms"]
    (0.75, 4, 2000.0)
    """
    windows: dict[str, list[QualityWindow]] = {}
    delay_sum = 0.0
    delay_n = 0
    for mon in monitors:
        for name, w in mon.models.items():
            windows.setdefault(name, []).append(w)
        n = mon.delay.mean.n
        if n:
            delay_sum += mon.delay.mean.get() * n
            delay_n += int(n)
    models = {}
    for name, ws in windows.items():
        count = sum(len(w._scores) for w in ws)
        scores = np.fromiter(itertools.chain.from_iterable(w._scores for w in ws),
                             dtype=np.float64, count=count)
        labels = np.fromiter(itertools.chain.from_iterable(w._labels for w in ws),
                             dtype=bool, count=count)
        models[name] = ranking_metrics(scores, labels, budget)
    return {"models": models, "label_delay_mean_ms": delay_sum / delay_n if delay_n else None,
            "labels": delay_n}
