"""The names of fraudstream's Prometheus metrics and HTTP endpoints, shared by both sides.

The worker's and trainer's metrics server registers exactly these metrics; the Grafana dashboard
(``deploy/grafana/``), the Prometheus configuration, the Kubernetes probes and docs/operations.md
use them. ``tests/unit/test_observability.py`` checks every metric a dashboard panel queries is
defined here. This module only describes: it imports no Prometheus client and has no side effects,
so tests and tools can read it without one installed.

>>> METRICS["fraudstream_scores_total"].labels
('decision',)
>>> metric_for_series("fraudstream_processing_seconds_bucket").kind
'histogram'
>>> metric_for_series("fraudstream_no_such_thing") is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Metric", "METRICS", "metric_for_series",
    "METRICS_PATH", "LIVENESS_PATH", "READINESS_PATH", "DEFAULT_METRICS_PORT",
    "LATENCY_BUCKETS", "COMMIT_BUCKETS", "RESTORE_PROGRESS_RECORDS",
]

# HTTP endpoints served on ``Settings.metrics_host``:``Settings.metrics_port``.
DEFAULT_METRICS_PORT = 9400
METRICS_PATH = "/metrics"
# Liveness: the process loop is alive (a restore in progress is alive). Never checks Kafka: a broker
# outage must not restart every worker.
LIVENESS_PATH = "/healthz"
# Readiness: every assigned task is restored from its changelog and processing.
READINESS_PATH = "/readyz"

# Seconds. Per-record processing is sub-millisecond; end-to-end includes the commit interval and
# the transaction commit, so it reaches into seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
COMMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# A restore publishes its progress gauges after this many records, or a second, whichever is first.
RESTORE_PROGRESS_RECORDS = 50_000

_KINDS = ("counter", "gauge", "histogram", "info")


@dataclass(frozen=True)
class Metric:
    """One metric family: its name as exposed, kind, label names and help text.

    ``name`` is the sample name a query uses. For ``info`` it already ends in ``_info``
    (prometheus_client's ``Info`` takes it without that suffix and adds it back).
    """

    name: str
    kind: str
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] | None = None

    def series(self) -> tuple[str, ...]:
        """Every sample name this family exposes (histograms: _bucket, _sum, _count)."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


_ALL = (
    # ------------------------------------------------------------------ worker: throughput
    Metric("fraudstream_events_consumed_total", "counter", ("stage", "partition"),
           "Records consumed per stage and input partition (events and forwarded records). "
           "Counted at each commit."),
    Metric("fraudstream_scores_total", "counter", ("decision",),
           "Scores produced, by decision (approve, review, block). Counted at each commit."),
    Metric("fraudstream_labels_total", "counter", ("stage",),
           "Labels routed to a stage."),
    Metric("fraudstream_forwards_total", "counter", ("path",),
           "Events forwarded to the next stage: through its repartition topic (path=topic) or "
           "handed to this worker's own task of that stage (path=handoff, docs/runtime.md). "
           "Counted at each commit."),
    Metric("fraudstream_dead_letters_total", "counter", ("reason",),
           "Records sent to the dead-letter topic, by reason (decode, validation, too_large...)."),
    Metric("fraudstream_late_events_total", "counter", ("stage",),
           "Events older than the grace period behind their entity's latest event: scored with "
           "the current state, not folded in (docs/features.md)."),
    Metric("fraudstream_consumer_lag", "gauge", ("topic", "partition"),
           "Records between the consumer position and the high watermark, per assigned partition."),
    # ------------------------------------------------------------------ worker: latency
    Metric("fraudstream_processing_seconds", "histogram", ("stage",),
           "Time to process one record in a stage (features, scoring, produce); one record "
           "in 8 is timed.",
           LATENCY_BUCKETS),
    Metric("fraudstream_end_to_end_seconds", "histogram", (),
           "From the event's append to the events topic to its score's commit.",
           LATENCY_BUCKETS),
    Metric("fraudstream_commit_seconds", "histogram", (),
           "Duration of one commit (flush changelogs, send offsets, commit the transaction).",
           COMMIT_BUCKETS),
    Metric("fraudstream_commits_total", "counter", (),
           "Commits (transactions under exactly_once) completed."),
    Metric("fraudstream_recoveries_total", "counter", ("reason",),
           "Aborted transactions after which state was rebuilt to the last commit."),
    # ------------------------------------------------------------------ worker: state
    Metric("fraudstream_state_entities", "gauge", ("stage",),
           "Entries (entity states, label index, stored snapshots) in the local state stores of "
           "a stage, as the store estimates them."),
    Metric("fraudstream_state_bytes", "gauge", ("stage",),
           "Bytes of the local state stores of a stage (RocksDB: SST files plus memtables)."),
    Metric("fraudstream_restore_records_total", "counter", ("stage",),
           "Changelog records replayed into local state stores."),
    Metric("fraudstream_restoring_partitions", "gauge", ("stage",),
           "Assigned tasks still restoring from their changelog (not ready while above 0)."),
    # Per task while it is assigned: a restore publishes at most every second (or every
    # RESTORE_PROGRESS_RECORDS records); remaining is 0 once done, both go when the task closes.
    Metric("fraudstream_restore_restored_records", "gauge", ("stage", "partition"),
           "Changelog records replayed so far by the task's latest restore."),
    Metric("fraudstream_restore_remaining_records", "gauge", ("stage", "partition"),
           "Changelog offsets the task's restore has still to read (end offset minus position; "
           "0 when done)."),
    Metric("fraudstream_assigned_partitions", "gauge", ("stage",),
           "Tasks (stage partitions) assigned to this worker."),
    # ------------------------------------------------------------------ models and trainer
    Metric("fraudstream_model_version_info", "info", ("model", "version"),
           "The model version in use (value 1; the labels carry the identity)."),
    # Rolling quality, progressive validation: each label is judged against the score stored when
    # its event was scored. model: final (the score decided on), global, merchant, challenger.
    # The worker pools the last labels of each partition it scores and recomputes every
    # quality_metrics_interval_s; the trainer exports the global model over all partitions.
    # Unset (absent) while undefined, e.g. AUC before both classes were seen.
    Metric("fraudstream_quality_auc", "gauge", ("model",),
           "Rolling ROC AUC of a model over its latest labelled events."),
    Metric("fraudstream_quality_average_precision", "gauge", ("model",),
           "Rolling average precision of a model over its latest labelled events."),
    Metric("fraudstream_quality_precision_at_budget", "gauge", ("model",),
           "Share of fraud among the top review_budget of the latest labelled events by score."),
    Metric("fraudstream_quality_recall_at_budget", "gauge", ("model",),
           "Share of the fraud among the latest labelled events caught in the top review_budget."),
    Metric("fraudstream_quality_window_labels", "gauge", ("model",),
           "Labelled events the rolling quality figures of a model are computed over."),
    Metric("fraudstream_label_delay_mean_seconds", "gauge", (),
           "Mean time from an event to its label, over the labels joined on this worker's "
           "partitions since they were assigned (NaN before the first)."),
    Metric("fraudstream_drift_alarms_total", "counter", ("model",),
           "Concept-drift alarms (ADWIN on a model's per-label log loss)."),
)

METRICS: dict[str, Metric] = {m.name: m for m in _ALL}


def metric_for_series(sample: str) -> Metric | None:
    """The family a sample name (e.g. ``..._bucket`` of a histogram) belongs to, if any."""
    for metric in _ALL:
        if sample in metric.series():
            return metric
    return None
