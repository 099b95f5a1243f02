"""Prometheus metrics and health endpoints for the worker (names in :mod:`stream.metrics_names`).

:class:`WorkerMetrics` owns one registry with exactly the metric families listed in
``metrics_names``; :class:`HealthServer` serves it on ``Settings.metrics_host``:``metrics_port``
(loopback by default) with ``/metrics``, ``/healthz`` (the processing loop has run recently) and
``/readyz`` (joined the consumer group, and no assigned task is still restoring its state). The
server runs on a daemon thread and never touches Kafka or the stores: it only reads what the
worker's loop records.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info,
                               generate_latest)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stream.metrics_names import LIVENESS_PATH, METRICS, METRICS_PATH, READINESS_PATH

__all__ = ["WorkerMetrics", "HealthServer"]

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
            self.families[m.name] = fam
        self.started = False
        self.joined = False  # the consumer group gave this worker its first assignment
        self.restoring = 0
        self.last_beat = time.monotonic()

    def __getitem__(self, name: str) -> Any:
        return self.families[name]

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
