"""Offline backtest: the streaming event path run over a log, prequentially, with no broker.

``run_backtest`` loads an event log (and a label log) with the replay loader
(:func:`stream.replay.load_log`: JSON Lines, ``.gz`` or CSV, the same ``--map``/``--set``
mapping and validation), puts events and labels on replay's timeline
(:func:`stream.replay.build_timeline`: by time, events before labels at equal times, then file
order) and feeds every item through the same code objects the worker runs:

1. an event is decoded from the bytes replay would send
   (:func:`stream.events.decode_event_dict`), exactly as the worker's first stage decodes it from
   Kafka;
2. the topology comes from :meth:`stream.runtime.topology.Topology.build`; each stage computes its
   features with one :class:`features.engine.FeatureEngine` per (stage, partition) over an
   in-memory store (:class:`features.store.DictStore`), the partition being librdkafka's default
   for the stage key (``consistent_random``: CRC-32 of the key bytes modulo the partition count,
   :func:`stream.replay.partition_for`). Between stages a later stage sees what it would read
   from the repartition topic (the worker's ``{"e": event, "f": features}`` JSON, whose round trip
   leaves these values unchanged, so the backtest passes a copy); features of entities without a stage key (card, device, ip) therefore only
   see the events of the same user partition, as in the stream;
3. the merged vector is scored by the last stage's scorer for that partition, made by the
   runtime's :func:`stream.runtime.scoring.make_scorer` from the model name, as the worker makes
   it: ``heuristic`` is the fixed :class:`~stream.runtime.scoring.HeuristicScorer`; ``default``
   or any :mod:`online_models.registry` name is :class:`~stream.runtime.scoring.ModelScorer`
   (online_models' ``Scorer`` with per-merchant models and scored snapshots in the task's store),
   sharing one global model. Prequentially: each event is scored, each label learned when its
   time comes on the timeline (the order of :func:`online_models.replay.merge_by_time`); the
   joined example is learned into the global model at once, where the stream's trainer would
   learn it and publish a snapshot later (``learn_global=False``: no trainer);
4. a label goes where the worker routes it: to every later stage that receives labels (keyed by
   the stage key, else ``merchant_id``), where label-aware features fold it and the last stage's
   scorer learns from it.

Each event's score is recorded with its ids and time; the *ground truth* of an event is the last
verdict its labels give (label log, ``is_fraud``). Events without a label are scored but left out
of every metric. Metrics (:func:`compute_report`): ROC AUC, average precision, precision and
recall at review budgets, user-level precision at top-k per day, and the same per ISO week and
per merchant (the largest by volume).

With one partition per stage the order every stage sees is the log's timeline, in the stream and
here, so scores are equal event by event (``tests/integration/test_parity.py``: the heuristic
scorer, and the default model with ``learn_global=False`` when labels reach the worker at a fixed
point). With more partitions each (stage, partition) engine sees
the same events in both, but a later stage interleaves its input partitions in whatever order the
consumer delivers them. A learning model also depends on when labels arrive relative to events
(the stream interleaves the labels topic with the others as the consumer delivers them) and, for
the global model, on when the trainer publishes.
"""

from __future__ import annotations

import gc
import math
import time
from array import array
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from features.default import default_feature_set
from features.definitions import FeatureSet
from features.engine import FeatureEngine
from features.store import DictStore
from stream.events import DEFAULT_MAX_BYTES, decode_event_dict, decode_label_dict
from stream.exceptions import ConfigError
from stream.replay import (IDENTITY, LoadedLog, RecordMapping, Rejects, build_timeline,
                           load_log, partition_for)
from stream.runtime.scoring import make_scorer
from stream.runtime.topology import Topology
from stream.settings import Settings

__all__ = [
    "HEURISTIC",
    "BacktestOptions",
    "BacktestResult",
    "model_names",
    "run_backtest",
    "compute_report",
    "roc_auc",
    "average_precision",
    "precision_recall_at_budget",
    "roc_curve",
    "pr_curve",
    "user_topk_per_day",
]

#: ``--model`` name of the runtime's fixed heuristic scorer.
HEURISTIC = "heuristic"
_DAY_MS = 86_400_000
_WEEK_MS = 7 * _DAY_MS
# 1970-01-01 was a Thursday: shift so that weeks start on Monday 00:00 UTC.
_MONDAY_OFFSET_MS = 3 * _DAY_MS
# The state key prefix under which the worker parks a label that overtook its event.
_PARKED = b"\x00pl/"


def model_names() -> list[str]:
    """Every ``--model`` name: ``heuristic`` and the online_models registry."""
    from online_models.registry import names

    return [HEURISTIC, *names()]


@dataclass(frozen=True)
class BacktestOptions:
    """What to backtest and how."""

    log: Path
    labels: Path | None = None
    mapping: RecordMapping = IDENTITY
    labels_mapping: RecordMapping | None = None   # default: ``mapping``
    fmt: str | None = None                        # "jsonl" | "csv"; None: by name, then content
    feature_set: FeatureSet | None = None         # None: the default set
    model: str = "default"
    partitions: int = 1
    seed: int = 42                                # online models' seed
    learn_global: bool = True                     # False: global model as created (no trainer)
    # Stop all model learning (global and per-merchant models, their calibrators) this long after
    # the first event: labels from then on still join, count and reach the features.
    freeze_after_ms: int | None = None
    merchant_models: bool | None = None           # None: the ``merchant_models`` setting
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass
class BacktestResult:
    """Per-event records (parallel, in scoring order) and how the run went."""

    event_ids: list[str]
    user_ids: list[str]
    merchant_ids: list[str | None]
    event_times: np.ndarray        # int64 epoch ms
    scores: np.ndarray             # float64
    labels: np.ndarray             # int8: 1 fraud, 0 legitimate, -1 no label
    model: str
    model_version: str
    partitions: int
    stages: list[dict[str, Any]]
    events_read: int = 0
    events_rejected: int = 0
    labels_read: int = 0
    labels_rejected: int = 0
    labels_applied: int = 0
    load_seconds: float = 0.0
    run_seconds: float = 0.0
    run_cpu_seconds: float = 0.0   # process CPU time of the scoring phase
    learn_stats: dict[str, Any] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.event_ids)

    @property
    def events_per_second(self) -> float:
        """Scoring throughput: features + model per event (labels included), loading excluded."""
        return len(self) / self.run_seconds if self.run_seconds > 0 else 0.0

    def label_of(self, i: int) -> bool | None:
        y = int(self.labels[i])
        return None if y < 0 else bool(y)


# ---------------------------------------------------------------------- scorers
class _Scoring:
    """The last stage's scorers, made as the worker makes them, plus the trainer's part.

    Every (last stage, partition) task gets its scorer from the runtime's
    :func:`stream.runtime.scoring.make_scorer` on the task's store, with one shared global model.
    In the stream the workers send each joined example to the trainer, which learns the global
    model and publishes snapshots from time to time; here the "trainer" learns every example into
    the shared global model at once (:meth:`online_models.scorer.GlobalModel.learn`, the
    trainer's call), so the next event is scored with it: prequential, with no publishing delay.
    ``learn_global=False`` keeps the global model as created (a stream without a trainer).
    :meth:`freeze` stops all learning from then on (``--freeze-after``): the shared global model
    and every task's per-merchant models, including tasks made later.
    """

    def __init__(self, name: str, seed: int, settings: Settings,
                 learn_global: bool = True, merchant_models: bool = False) -> None:
        if name not in model_names():
            raise ConfigError(f"--model: unknown model {name!r} "
                              f"(one of {', '.join(model_names())})")
        self.name = name
        self.settings = settings
        self.global_model = None
        if name != HEURISTIC:
            from online_models.scorer import GlobalModel

            self.global_model = GlobalModel.create(name, seed)
        self.learn_global = learn_global and self.global_model is not None
        self.merchant_models = merchant_models
        self.frozen_at: int | None = None
        self.version = HEURISTIC if self.global_model is None else self.global_model.version
        # Labels park like the worker's (stream.runtime.worker): not for the heuristic.
        self.parks_labels = name != HEURISTIC
        self.statuses: dict[str, int] = {}
        self.parked = 0
        self._scorers: list[Any] = []

    def for_store(self, store: Any) -> Any:
        """The scorer of one last-stage task (``store`` is the task's store)."""
        s = self.settings
        # No reason codes and no quality monitor: the backtest records scores only and computes
        # its own metrics. Scored vectors wait for their labels packed: weeks of event time of
        # them stay in memory, and as dicts they are cold (cache misses) when their labels come.
        # The scores are the worker's (make_scorer; the store holds the same values).
        scorer = make_scorer(self.name, store, s.review_threshold, s.block_threshold,
                             self.global_model, s.merchant_threshold_map(),
                             merchant_models=self.merchant_models, reasons=False,
                             evaluate=False, packed_snapshots=True)
        if self.frozen_at is not None:
            scorer.freeze()
        self._scorers.append(scorer)
        return scorer

    def freeze(self, at: int) -> None:
        """From event-time ``at`` on, nothing learns: the global model (the trainer's part) and
        every task's per-merchant models. Labels still join and reach the features."""
        self.frozen_at = at
        for scorer in self._scorers:
            scorer.freeze()

    def score(self, scorer: Any, merged: dict, event: dict) -> float:
        out = scorer.score(merged, event)
        self.version = out.version
        return out.score

    def learn(self, scorer: Any, label: dict) -> str:
        """Let a task's scorer learn a label; its status (``unknown``: no such event scored)."""
        status, example = scorer.learn_joined(label)
        if self.global_model is None:
            return status
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if example is not None and self.learn_global and self.frozen_at is None:
            self.global_model.learn(example)
        return status

    def stats(self) -> dict[str, Any]:
        for scorer in self._scorers:
            scorer.flush()
        if self.global_model is None:
            return {}
        return {"labels": dict(sorted(self.statuses.items())), "parked": self.parked,
                "global_model": self.global_model.version,
                "global_learning": self.learn_global,
                "merchant_models": self.merchant_models,
                "frozen_at": None if self.frozen_at is None else _iso_time(self.frozen_at)}


# ---------------------------------------------------------------------- the event path
class _EventPath:
    """The worker's per-event path (stage features -> merged dict -> scorer), without Kafka."""

    def __init__(self, topology: Topology, partitions: int, scoring: Any) -> None:
        if partitions < 1:
            raise ConfigError(f"--partitions must be at least 1, got {partitions}")
        self.stages = topology.stages
        self.partitions = partitions
        self.scoring = scoring
        self._last = len(self.stages) - 1
        # (stage, partition) -> (engine or None, store, scorer or None); made when first used.
        self._tasks: dict[tuple[int, int], tuple[FeatureEngine | None, Any, Any]] = {}
        # Labels parked and not yet applied (an upper bound: a label parked twice for one event
        # counts twice). While none is, an event has no parked label to look up.
        self._parked_now = 0

    def _task(self, stage: int, key: Any) -> tuple[FeatureEngine | None, Any, Any]:
        p = partition_for(str(key).encode(), self.partitions) if self.partitions > 1 else 0
        task = self._tasks.get((stage, p))
        if task is None:
            fs = self.stages[stage].features
            # Live objects, no serialisation: features do not depend on the backend (the
            # engine's tests hold memory and RocksDB bit for bit), and this is the fast one.
            store = DictStore()
            scorer = self.scoring.for_store(store) if stage == self._last else None
            task = self._tasks[(stage, p)] = (FeatureEngine(fs, store) if fs else None, store,
                                              scorer)
        return task

    def event(self, event: dict[str, Any]) -> float:
        stages, last = self.stages, self._last
        # Stage 0 reads the events topic, keyed by user_id (EventPublisher, replay).
        engine, store, scorer = self._task(0, event["user_id"])
        merged = engine.process(event) if engine is not None else {}
        for i in range(1, last + 1):
            # Forward as the worker does, keyed by the next stage's field. The worker sends
            # {event, features} as JSON; for these values (str, int, finite float, None, lists
            # and dicts of them) orjson's round trip is the identity, and no stage changes the
            # event or keeps the feature dicts it returns, so the objects themselves stand in
            # for it: the later stage's features are added to the dict the earlier ones made,
            # in the worker's order (tests/integration/test_parity.py holds the scores equal to
            # the worker's).
            engine, store, scorer = self._task(i, event.get(stages[i].key_field)
                                               or event["user_id"])
            if engine is not None:
                features = engine.process(event)
                if merged:
                    merged.update(features)
                else:
                    merged = features
        score = self.scoring.score(scorer, merged, event)
        if self._parked_now:
            key = _PARKED + event["event_id"].encode()
            parked = store.get(key)
            if parked is not None:  # its label overtook it: learn now that the vector exists
                store.delete(key)
                self._parked_now -= 1
                self._apply_label((engine, store, scorer), parked[1])
        return score

    def label(self, label: dict[str, Any]) -> None:
        if self._last == 0:
            # One stage: no repartition topic; the worker applies labels to the labels topic's
            # partition (keyed by merchant_id) of stage 0.
            self._apply_label(self._task(0, label["merchant_id"]), label)
            return
        for stage in self.stages[1:]:
            if stage.receives_labels:
                self._apply_label(self._task(stage.index, label.get(stage.key_field)
                                             or label["merchant_id"]), label)

    def _apply_label(self, task: tuple[FeatureEngine | None, Any, Any],
                     label: dict[str, Any]) -> None:
        """As ``Worker._apply_label``: the scorer learns (a label for an event not scored yet is
        parked in the task's state until it is), then the stage's features fold it."""
        engine, store, scorer = task
        if scorer is not None:
            status = self.scoring.learn(scorer, label)
            if status == "unknown" and self.scoring.parks_labels:
                store.put(_PARKED + str(label["event_id"]).encode(),
                          [int(label["label_time"]), label], cache=False)
                self.scoring.parked += 1
                self._parked_now += 1
                return
        if engine is not None:
            engine.process_label(label)


# ---------------------------------------------------------------------- running
def _load(opts: BacktestOptions) -> tuple[LoadedLog, LoadedLog | None, Rejects]:
    rejects = Rejects(None)
    events = load_log(opts.log, "event", fmt=opts.fmt, mapping=opts.mapping,
                      max_bytes=opts.max_bytes, rejects=rejects)
    labels = None
    if opts.labels is not None:
        labels = load_log(opts.labels, "label", fmt=opts.fmt,
                          mapping=opts.labels_mapping or opts.mapping,
                          max_bytes=opts.max_bytes, rejects=rejects)
    return events, labels, rejects


def run_backtest(opts: BacktestOptions, settings: Settings | None = None,
                 on_progress: Callable[[int, int, int], None] | None = None,
                 progress_every: int = 8192) -> BacktestResult:
    """Score every event of ``opts.log`` prequentially (see the module docstring).

    ``on_progress(done, total, event_time)`` is called every ``progress_every`` timeline items.
    """
    settings = settings or Settings.load(env={})
    started = time.perf_counter()
    events, labels, rejects = _load(opts)
    timeline = build_timeline(events, labels)
    fs = opts.feature_set or default_feature_set()
    topology = Topology.build(settings, fs)
    merchant_models = (settings.merchant_models if opts.merchant_models is None
                       else opts.merchant_models)
    scoring = _Scoring(opts.model, opts.seed, settings, opts.learn_global, merchant_models)
    path = _EventPath(topology, opts.partitions, scoring)
    freeze_at = None
    if opts.freeze_after_ms is not None and len(events):
        freeze_at = int(np.frombuffer(events.times, dtype=np.int64).min()) + opts.freeze_after_ms
    n_events = len(events)
    event_ids: list[str] = []
    user_ids: list[str] = []
    merchant_ids: list[str | None] = []
    times = array("q")
    scores = array("d")
    verdict: dict[str, bool] = {}
    load_seconds = time.perf_counter() - started

    # No cyclic collection while scoring. What the scoring phase keeps (feature state, label
    # index entries, scored vectors waiting for their labels) holds no reference cycles and
    # lives for weeks of event time, so every collection would traverse it, cold, for nothing:
    # about 10 % of the CPU with the default model at 100k events, after the vectors were packed.
    # It makes next to no cyclic garbage either: a gc.collect() after a 100k-event run finds
    # none (default, heuristic), a few dozen objects over 20k events with river-logreg. Reference
    # counting still frees everything else at once; the collector is back on afterwards.
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    run_started = time.perf_counter()
    cpu_started = time.process_time()
    max_bytes = opts.max_bytes
    total = len(timeline)
    kinds, payloads, item_times = timeline.kinds, timeline.payloads, timeline.times
    score_event, learn_label = path.event, path.label
    try:
        for i in range(total):
            if freeze_at is not None and item_times[i] >= freeze_at:
                scoring.freeze(freeze_at)
                freeze_at = None
            if kinds[i] == 0:
                event = decode_event_dict(payloads[i], max_bytes)
                score = score_event(event)
                event_ids.append(event["event_id"])
                user_ids.append(event["user_id"])
                merchant_ids.append(event.get("merchant_id"))
                times.append(event["event_time"])
                scores.append(score)
            else:
                label = decode_label_dict(payloads[i], max_bytes)
                learn_label(label)
                verdict[label["event_id"]] = label["is_fraud"]  # the latest verdict wins
            if on_progress is not None and not (i + 1) % progress_every:
                on_progress(i + 1, total, item_times[i])
        if on_progress is not None:
            on_progress(total, total, item_times[-1] if total else 0)
    finally:
        # What the run made joins the oldest generation untraversed (freeze, then unfreeze),
        # like everything loaded before it: enabled with all of it young, the collector would
        # traverse it at once on the next allocation.
        gc.freeze()
        gc.unfreeze()
        if gc_was_enabled:
            gc.enable()
    run_seconds = time.perf_counter() - run_started
    run_cpu_seconds = time.process_time() - cpu_started
    y = np.fromiter((-1 if (v := verdict.get(e)) is None else int(v) for e in event_ids),
                    dtype=np.int8, count=len(event_ids))
    return BacktestResult(
        event_ids=event_ids, user_ids=user_ids, merchant_ids=merchant_ids,
        event_times=np.frombuffer(times, dtype=np.int64).copy(),
        scores=np.frombuffer(scores, dtype=np.float64).copy(), labels=y,
        model=opts.model, model_version=scoring.version, partitions=opts.partitions,
        stages=[{"name": st.name, "key": st.key_field, "features": len(st.feature_names)}
                for st in topology.stages],
        events_read=events.read, events_rejected=events.rejected,
        labels_read=labels.read if labels is not None else 0,
        labels_rejected=labels.rejected if labels is not None else 0,
        labels_applied=len(timeline) - n_events,
        load_seconds=load_seconds, run_seconds=run_seconds, run_cpu_seconds=run_cpu_seconds,
        learn_stats=scoring.stats(),
        rejects=list(rejects.first))


# ---------------------------------------------------------------------- metrics
# Same definitions as online_models.metrics (which the models' own progressive validation uses),
# vectorised for whole backtests.
def roc_auc(scores: Any, labels: Any) -> float | None:
    """ROC AUC (Mann-Whitney, mid-ranks for tied scores); ``None`` unless both classes occur.

    >>> roc_auc([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    0.75
    >>> roc_auc([0.5, 0.5, 0.5], [1, 0, 0])       # all tied: chance
    0.5
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)                       # 1-based rank of each group's last member
    mid = ends - (counts - 1) / 2.0
    rank_sum = float(mid[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: Any, labels: Any) -> float | None:
    """``sum_n (R_n - R_{n-1}) * P_n`` over distinct thresholds, highest first (ties grouped);
    ``None`` without positives.

    >>> average_precision([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0])
    0.8333333333333333
    """
    precision, recall, _ = pr_curve(scores, labels)
    if recall is None:
        return None
    return float(np.sum(np.diff(recall) * precision[1:]))


def pr_curve(scores: Any, labels: Any) -> tuple[Any, Any, Any]:
    """Precision and recall at every distinct threshold (highest first), starting at recall 0
    (precision 1), and the thresholds; ``(None, None, None)`` without positives."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return None, None, None
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]  # end of each tie group
    tp = np.cumsum(y_sorted)[last]
    seen = last + 1
    precision = np.r_[1.0, tp / seen]
    recall = np.r_[0.0, tp / n_pos]
    return precision, recall, s_sorted[last]


def roc_curve(scores: Any, labels: Any) -> tuple[Any, Any]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1);
    ``(None, None)`` unless both classes occur."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None, None
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def precision_recall_at_budget(scores: Any, labels: Any, budget: float
                               ) -> tuple[int, float | None, float | None, float | None]:
    """Review the top ``k = max(1, ceil(budget * n))`` scores (ties: earlier events first):
    ``(k, precision, recall, lowest reviewed score)``; recall is ``None`` without positives.

    >>> precision_recall_at_budget([0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0], 0.5)
    (2, 0.5, 0.5, 0.8)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    n = len(s)
    if n == 0:
        return 0, None, None, None
    k = max(1, math.ceil(budget * n - 1e-9))
    top = np.lexsort((np.arange(n), -s))[:k]
    tp = int(y[top].sum())
    n_pos = int(y.sum())
    return k, tp / k, (tp / n_pos if n_pos else None), float(s[top[-1]])


def user_topk_per_day(times: Any, users: list[str], scores: Any, labels: Any,
                      k: int) -> dict[str, Any]:
    """User-level precision at top-k per UTC day.

    Per day, each user with labelled events that day gets the highest score among them and is
    fraudulent if any of them is; the ``k`` users with the highest scores (ties: user id) are
    flagged. ``precision`` per day is fraudulent flagged users / flagged users;
    ``mean_precision`` averages the days, ``precision`` pools them (hits / flagged).

    >>> r = user_topk_per_day([0, 1, 2, 86_400_000], ["a", "b", "a", "c"],
    ...                       [0.9, 0.8, 0.1, 0.5], [0, 1, 1, 1], k=1)
    >>> r["days"][0]["top"], r["days"][0]["hits"], r["mean_precision"]
    (['a'], 1, 1.0)
    """
    t = np.asarray(times, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    best: dict[int, dict[str, list]] = {}
    for i in np.nonzero(y >= 0)[0].tolist():
        day = int(t[i] // _DAY_MS)
        per_user = best.setdefault(day, {})
        cur = per_user.get(users[i])
        if cur is None:
            per_user[users[i]] = [s[i], bool(y[i])]
        else:
            cur[0] = max(cur[0], s[i])
            cur[1] = cur[1] or bool(y[i])
    days = []
    for day in sorted(best):
        ranked = sorted(best[day].items(), key=lambda item: (-item[1][0], item[0]))
        top = ranked[:k]
        hits = sum(1 for _, (_, fraud) in top if fraud)
        days.append({"day": _iso_day(day * _DAY_MS), "users": len(ranked),
                     "fraud_users": sum(1 for _, (_, fraud) in ranked if fraud),
                     "flagged": len(top), "hits": hits,
                     "precision": hits / len(top), "top": [u for u, _ in top]})
    flagged = sum(d["flagged"] for d in days)
    hits = sum(d["hits"] for d in days)
    return {"k": k, "days": days,
            "mean_precision": (sum(d["precision"] for d in days) / len(days)) if days else None,
            "precision": hits / flagged if flagged else None, "flagged": flagged, "hits": hits}


def _iso_day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")


def _slice_metrics(s: np.ndarray, y: np.ndarray, budgets: tuple[float, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(s)), "fraud": int(y.sum()),
                           "roc_auc": roc_auc(s, y), "average_precision": average_precision(s, y)}
    out["budgets"] = []
    for b in budgets:
        k, p, r, thr = precision_recall_at_budget(s, y, b)
        out["budgets"].append({"budget": b, "k": k, "precision": p, "recall": r,
                               "threshold": thr})
    return out


def compute_report(result: BacktestResult, budgets: tuple[float, ...] = (0.01, 0.005),
                   top_k: tuple[int, ...] = (10,), top_merchants: int = 10,
                   merchant_slices: Mapping[str, Collection[str]] | None = None,
                   since: int | None = None) -> dict[str, Any]:
    """Every metric of the backtest as a JSON-ready dict (see docs/backtest.md).

    ``merchant_slices`` (name -> merchant ids) adds ``report["merchant_slices"][name]``: the
    overall metrics on the labelled events of those merchants. ``since`` (epoch ms) adds
    ``report["since"]``: the overall metrics on labelled events at or after that event time.
    """
    known = result.labels >= 0
    s, y = result.scores[known], result.labels[known].astype(bool)
    t = result.event_times[known]
    report: dict[str, Any] = {
        "model": result.model, "model_version": result.model_version,
        "partitions": result.partitions, "stages": result.stages,
        "events": {"read": result.events_read, "rejected": result.events_rejected,
                   "scored": len(result), "labelled": int(known.sum()),
                   "fraud": int(y.sum()), "legitimate": int((~y).sum()),
                   "unlabelled": int((~known).sum())},
        "labels": {"read": result.labels_read, "rejected": result.labels_rejected,
                   "applied": result.labels_applied},
        "period": ({"from": _iso_time(int(result.event_times.min())),
                    "to": _iso_time(int(result.event_times.max()))} if len(result) else None),
        "overall": _slice_metrics(s, y, budgets),
        "speed": {"events": len(result), "load_seconds": round(result.load_seconds, 3),
                  "run_seconds": round(result.run_seconds, 3),
                  "run_cpu_seconds": round(result.run_cpu_seconds, 3),
                  "events_per_second": round(result.events_per_second, 1),
                  "end_to_end_events_per_second": round(
                      len(result) / (result.load_seconds + result.run_seconds), 1)
                  if result.run_seconds > 0 else None},
        "learning": result.learn_stats,
    }
    users = [u for u, keep in zip(result.user_ids, known.tolist()) if keep]
    report["user_topk"] = [user_topk_per_day(t, users, s, y.astype(np.int64), k) for k in top_k]
    weeks = (t + _MONDAY_OFFSET_MS) // _WEEK_MS
    report["weekly"] = []
    for w in np.unique(weeks).tolist():
        mask = weeks == w
        row = {"week_start": _iso_day(w * _WEEK_MS - _MONDAY_OFFSET_MS)}
        row.update(_slice_metrics(s[mask], y[mask], budgets[:1]))
        report["weekly"].append(row)
    merchants = np.array([m or "" for m in result.merchant_ids], dtype=object)
    if merchant_slices:
        report["merchant_slices"] = {}
        for name, ids in merchant_slices.items():
            mask = np.isin(merchants[known], list(ids))
            row = {"merchants": len(set(ids))}
            row.update(_slice_metrics(s[mask], y[mask], budgets))
            report["merchant_slices"][name] = row
    if since is not None:
        report["since"] = {"from": _iso_time(since)}
        report["since"].update(_slice_metrics(s[t >= since], y[t >= since], budgets))
    volume: dict[str, int] = {}
    for m in result.merchant_ids:
        if m is not None:
            volume[m] = volume.get(m, 0) + 1
    ranked = sorted(volume.items(), key=lambda item: (-item[1], item[0]))[:top_merchants]
    known_merchants = merchants[known]
    report["merchants"] = []
    for m, n in ranked:
        mask = known_merchants == m
        row = {"merchant_id": m, "events": n}
        row.update(_slice_metrics(s[mask], y[mask], budgets[:1]))
        report["merchants"].append(row)
    return report


def _iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
