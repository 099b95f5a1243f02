"""Prometheus metrics and health endpoints for the worker (names in :mod:`stream.metrics_names`).

:class:`WorkerMetrics` owns one registry with exactly the metric families listed in
``metrics_names``; :class:`HealthServer` serves it on ``Settings.metrics_host``:``metrics_port``
(loopback by default) with ``/metrics``, ``/healthz`` (the processing loop has run recently) and
``/readyz`` (joined the consumer group, and no assigned task is still restoring its state). The
server runs on a daemon thread and never touches Kafka or the stores: it only reads what the
worker's loop records.

Two helpers set families whose values are expensive or frequent at a bounded cadence:
:class:`QualityGauges` (rolling model quality and drift alarms, from quality monitors) and
:class:`RestoreProgress` (one task's restore, from the restore loop).
"""

from __future__ import annotations

import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from online_models.metrics import QualityMonitor, pooled_quality
from stream.metrics_names import (LIVENESS_PATH, METRICS, METRICS_PATH, READINESS_PATH,
                                  RESTORE_PROGRESS_RECORDS)

__all__ = ["WorkerMetrics", "HealthServer", "QualityGauges", "RestoreProgress"]

# /healthz fails when the loop has not come round for this long (a restore of a large changelog
# still beats inside its loop, so this only catches a wedged process).
_LIVENESS_S = 120.0


class WorkerMetrics:
    """The worker's metric families, plus the liveness and readiness state the server reports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.families: dict[str, Any] = {}
        for m in METRICS.values():
            if m.kind == "counter":
                # prometheus_client appends _total itself.
                fam = Counter(m.name.removesuffix("_total"), m.help, m.labels,
                              registry=self.registry)
            elif m.kind == "gauge":
                fam = Gauge(m.name, m.help, m.labels, registry=self.registry)
            elif m.kind == "histogram":
                fam = Histogram(m.name, m.help, m.labels, buckets=m.buckets,
                                registry=self.registry)
            else:
                fam = Info(m.name.removesuffix("_info"), m.help, m.labels,
                           registry=self.registry)
            if m.kind == "gauge" and not m.labels:
                fam.set(math.nan)  # not measured yet; 0 would read as a measurement
            self.families[m.name] = fam
        self.started = False
        self.joined = False  # the consumer group gave this worker its first assignment
        self.restoring = 0
        self.last_beat = time.monotonic()

    def __getitem__(self, name: str) -> Any:
        return self.families[name]

    def remove(self, name: str, *labels: Any) -> None:
        """Drop one labelled series (absent is fine: older prometheus_client raise KeyError)."""
        try:
            self.families[name].remove(*[str(v) for v in labels])
        except KeyError:
            pass

    def beat(self) -> None:
        self.last_beat = time.monotonic()

    @property
    def live(self) -> bool:
        return time.monotonic() - self.last_beat < _LIVENESS_S

    @property
    def ready(self) -> bool:
        return self.started and self.joined and self.restoring == 0

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


# Gauge family -> key of the figures (online_models.metrics.ranking_metrics, QualityWindow.report).
_QUALITY_FIGURES = (
    ("fraudstream_quality_auc", "roc_auc"),
    ("fraudstream_quality_average_precision", "average_precision"),
    ("fraudstream_quality_precision_at_budget", "precision_at_budget"),
    ("fraudstream_quality_recall_at_budget", "recall_at_budget"),
    ("fraudstream_quality_window_labels", "window"),
)


class QualityGauges:
    """Rolling model quality and drift alarms, one series per model.

    The worker calls :meth:`update` with the quality monitors of its scoring tasks every
    ``quality_metrics_interval_s`` seconds, never per label: pooling sorts every window. The
    trainer calls :meth:`set_models` with its own window's figures. A figure that is undefined
    (AUC before both classes were seen) has no series rather than a made-up value, and a model no
    longer evaluated (every scoring partition left this worker) loses its series.

    There is deliberately no per-merchant series, although the monitors keep per-merchant windows:
    merchant ids are an open set (thousands, growing with the business), so a ``merchant`` label
    would make every quality family unbounded, and a top-N by label volume would still churn
    series as merchants move in and out of it, each churned series lingering in Prometheus. The
    figures of a small merchant's 2,000-label window are mostly noise anyway. Per-merchant quality
    belongs in the backtest report (per-merchant slices, docs/backtest.md).
    """

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics
        self._models: set[str] = set()
        # Task key -> (its monitor, the drift counts already exported for it).
        self._drifts: dict[str, tuple[QualityMonitor, dict[str, int]]] = {}

    def set_models(self, models: Mapping[str, Mapping[str, Any]]) -> None:
        """Set each model's gauges from its figures; drop the series of models not given."""
        m = self._metrics
        for model, figures in models.items():
            for family, key in _QUALITY_FIGURES:
                value = figures.get(key)
                if value is None:
                    m.remove(family, model)
                else:
                    m[family].labels(model).set(value)
        for model in self._models - set(models):
            for family, _ in _QUALITY_FIGURES:
                m.remove(family, model)
        self._models = set(models)

    def update(self, monitors: Mapping[str, QualityMonitor], budget: float) -> dict[str, int]:
        """Pool ``monitors`` (task key -> monitor) into the gauges; count new drift alarms.

        Returns the drift alarms raised since the previous call, per model.
        """
        quality = pooled_quality(monitors.values(), budget)
        self.set_models(quality["models"])
        delay = quality["label_delay_mean_ms"]
        self._metrics["fraudstream_label_delay_mean_seconds"].set(
            math.nan if delay is None else delay / 1000)
        new: dict[str, int] = {}
        for key, monitor in monitors.items():
            for model, n in self._count_drifts(key, monitor).items():
                new[model] = new.get(model, 0) + n
        for key in set(self._drifts) - set(monitors):
            del self._drifts[key]
        return new

    def retire(self, key: str, monitor: QualityMonitor) -> dict[str, int]:
        """A task closes: count the alarms its monitor raised since the last update, forget it."""
        new = self._count_drifts(key, monitor)
        self._drifts.pop(key, None)
        return new

    def _count_drifts(self, key: str, monitor: QualityMonitor) -> dict[str, int]:
        counts = monitor.drift_counts()
        seen_monitor, seen = self._drifts.get(key, (None, {}))
        if seen_monitor is not monitor:  # a reopened task starts a new monitor from zero
            seen = {}
        new = {}
        for model, n in counts.items():
            delta = n - seen.get(model, 0)
            if delta > 0:
                self._metrics["fraudstream_drift_alarms_total"].labels(model).inc(delta)
                new[model] = delta
        self._drifts[key] = (monitor, counts)
        return new


class RestoreProgress:
    """The progress gauges of one task's restore from its changelog.

    The restore loop calls :meth:`advance` once per batch it consumed; the gauges (and
    ``fraudstream_restore_records_total``) move only every ``every_records`` records or
    ``every_s`` seconds, whichever comes first, and :meth:`finish` leaves 0 remaining. Each
    publish is also a liveness beat: a long restore is a live process.
    """

    def __init__(self, metrics: WorkerMetrics, stage: str, partition: int, start: int, end: int,
                 every_records: int = RESTORE_PROGRESS_RECORDS, every_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._metrics = metrics
        self._restored = metrics["fraudstream_restore_restored_records"].labels(stage,
                                                                                str(partition))
        self._remaining = metrics["fraudstream_restore_remaining_records"].labels(stage,
                                                                                  str(partition))
        self._counter = metrics["fraudstream_restore_records_total"].labels(stage)
        self.end = end
        self.position = start
        self.records = 0
        self._every_records = every_records
        self._every_s = every_s
        self._clock = clock
        self._published = 0
        self._published_at = clock()
        self._publish()

    def advance(self, records: int, position: int) -> None:
        """``records`` more were read; ``position`` is the offset after the last one."""
        self.records += records
        self.position = max(self.position, position)
        if (self.records - self._published >= self._every_records
                or self._clock() - self._published_at >= self._every_s):
            self._publish()

    def finish(self) -> int:
        """The restore reached the end: publish 0 remaining; returns the records restored."""
        self.position = max(self.position, self.end)
        self._publish()
        return self.records

    @staticmethod
    def forget(metrics: WorkerMetrics, stage: str, partition: int) -> None:
        """The task closed: its gauges go (the counter stays, it is per stage)."""
        metrics.remove("fraudstream_restore_restored_records", stage, partition)
        metrics.remove("fraudstream_restore_remaining_records", stage, partition)

    def _publish(self) -> None:
        self._counter.inc(self.records - self._published)
        self._restored.set(self.records)
        self._remaining.set(max(0, self.end - self.position))
        self._published = self.records
        self._published_at = self._clock()
        self._metrics.beat()


class HealthServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` over HTTP on a daemon thread."""

    def __init__(self, metrics: WorkerMetrics, host: str, port: int) -> None:
        self.metrics = metrics
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.address = self._server.server_address
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    def start(self) -> "HealthServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(metrics: WorkerMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server API
            path = self.path.split("?", 1)[0]
            if path == METRICS_PATH:
                self._send(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == LIVENESS_PATH:
                ok = metrics.live
                self._send(200 if ok else 503, b"ok\n" if ok else b"loop stalled\n")
            elif path == READINESS_PATH:
                ok = metrics.ready
                body = b"ready\n" if ok else (b"restoring state\n" if metrics.joined
                                               else b"starting\n")
                self._send(200 if ok else 503, body)
            else:
                self._send(404, b"not found\n")

        def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:  # scrapes are not worth a log line each
            return

    return Handler
