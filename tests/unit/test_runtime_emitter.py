"""The last stage's emitter: a one-stage worker produces what the emitter shapes, not scores.

No broker: the worker's clients point at a closed local port (librdkafka queues what is
produced), the task's store is a real in-memory store, and records go through the worker's own
record handler, as the consumer would hand them over.
"""

from __future__ import annotations

from typing import Any, Mapping

from confluent_kafka import Message

from features.definitions import Feature, FeatureSet
from stream import wire
from stream.runtime import Worker
from stream.runtime.worker import Task
from stream.settings import Settings
from stream.state import open_store

T0 = 1_767_225_600_000  # on a minute boundary


class Capture:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: Mapping[str, Any], features: Mapping[str, Any]
             ) -> tuple[bytes | None, bytes]:
        self.calls.append((event["event_id"], dict(features)))
        return event["user_id"].encode(), wire.dumps(features)


def _event(i: int, user: str, t: int) -> bytes:
    return wire.dumps({"event_id": f"e{i}", "event_type": "transaction", "event_time": t,
                       "user_id": user, "merchant_id": "m1", "amount": 1.0, "currency": "EUR"})


def test_one_stage_worker_emits_each_event_with_its_features(tmp_path) -> None:
    settings = Settings.load(env={}, overrides={
        "bootstrap_servers": "127.0.0.1:9", "processing_guarantee": "at_least_once",
        "state_dir": str(tmp_path), "metrics_port": 0, "topic_scores": "out",
        "kafka": {"socket.connection.setup.timeout.ms": 1000}})
    count = Feature("count", entity="user_id", window="1m", resolution="1m")
    capture = Capture()
    worker = Worker(settings, instance_id="emit", feature_set=FeatureSet((count,), grace="10s"),
                    stage_keys=("user_id",), emitter=capture)
    try:
        assert [(s.name, s.feature_names) for s in worker.topology.stages] == \
            [("user", [count.name])]
        stage = worker.topology.last
        task = Task(stage, 0, open_store("memory"))
        metrics = worker.metrics
        task.consumed_metric = metrics["fraudstream_events_consumed_total"].labels("user", "0")
        task.processing_metric = metrics["fraudstream_processing_seconds"].labels("user")
        worker._tasks[(0, 0)] = task
        stream = [("u1", T0), ("u2", T0 + 1), ("u1", T0 + 59_999), ("u1", T0 + 60_000)]
        for i, (user, t) in enumerate(stream):
            worker._handle([Message(topic=settings.topic_events, partition=0, offset=i,
                                    key=user.encode(), value=_event(i, user, t),
                                    timestamp=(1, t))])
        # The count at a one-window resolution is the tumbling-window count.
        assert capture.calls == [("e0", {count.name: 1}), ("e1", {count.name: 1}),
                                 ("e2", {count.name: 2}), ("e3", {count.name: 1})]
        assert task.scorer is None
        assert (worker.stats.emitted, worker.stats.scored) == (4, 0)
        assert worker._undelivered[worker._epoch] == 4  # one output per event, awaiting delivery
    finally:
        worker._producer.purge()
        worker._consumer.close()
