"""Helpers for integration tests: read a topic back the way a downstream reader would."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, TopicPartition

from stream.settings import Settings


def read_topic(settings: Settings, topic: str, expected: int | None = None,
               timeout: float = 60.0, idle: float = 3.0) -> list[Message]:
    """Every committed record of ``topic`` (read_committed, from the beginning).

    Returns once ``expected`` records were read (then waits ``idle`` more seconds to catch any
    extra, so tests can assert "exactly"), or when ``timeout`` passes.
    """
    consumer = Consumer(settings.consumer_config(f"reader-{uuid.uuid4().hex[:8]}"))
    try:
        md = consumer.list_topics(topic, timeout=10)
        parts = [TopicPartition(topic, p, 0) for p in md.topics[topic].partitions]
        consumer.assign(parts)
        out: list[Message] = []
        deadline = time.monotonic() + timeout
        extra_until = None
        while time.monotonic() < deadline:
            if expected is not None and len(out) >= expected and extra_until is None:
                extra_until = time.monotonic() + idle
            if extra_until is not None and time.monotonic() >= extra_until:
                break
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    out.append(msg)
        return out
    finally:
        consumer.close()


def group_offsets(settings: Settings, topic: str) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offsets of ``settings.group_id``, end offsets) per partition of ``topic``."""
    c = Consumer(settings.consumer_config(settings.group_id))
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.partitions)]
        committed = {tp.partition: tp.offset for tp in c.committed(parts, timeout=10)}
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(settings.partitions)}
    finally:
        c.close()
    return committed, ends


def headers_of(msg: Message) -> dict[str, bytes]:
    return {k: v for k, v in (msg.headers() or [])}


# What a worker, trainer or CLI subprocess must share with the test that starts it.
PROCESS_SETTINGS = ("bootstrap_servers", "topic_events", "topic_labels", "topic_scores",
                    "topic_dead_letter", "topic_training", "topic_models", "partitions",
                    "group_id", "state_dir")


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a ``fraudstream`` subprocess using ``settings``' broker, topics and group.

    Inherited FRAUDSTREAM_* variables are dropped so the test decides every setting; ``extra``
    adds more (``extra={"FRAUDSTREAM_X": ...}`` style names).
    """
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env.update(settings.environment(*PROCESS_SETTINGS))
    env["FRAUDSTREAM_METRICS_PORT"] = "0"  # several workers share this host: no fixed port
    env.update(extra)
    return env


# Killed members hold their partitions until their session times out: keep that short in tests.
FAST_FAILOVER = {"FRAUDSTREAM_KAFKA__SESSION_TIMEOUT_MS": "6000",
                 "FRAUDSTREAM_KAFKA__HEARTBEAT_INTERVAL_MS": "1000"}


def count_scores(settings: Settings, topic: str | None = None) -> int:
    """How many committed records the scores topic holds now (sum of partition end offsets is
    not enough under transactions: commit markers take offsets too)."""
    return len(read_topic(settings, topic or settings.topic_scores, timeout=2, idle=0))


def scores_by_event(settings: Settings, topic: str, expected: int) -> dict[str, list[float]]:
    """Every committed score of ``topic`` by event id (a list: an event scored twice has two)."""
    from stream.events import decode_score

    out: dict[str, list[float]] = {}
    for m in read_topic(settings, topic, expected=expected, timeout=240, idle=3):
        sc = decode_score(m.value())
        out.setdefault(sc.event_id, []).append(sc.score)
    return out


def assert_reference_scores(got: dict[str, list[float]], expected: dict[str, list[float]],
                            event_ids: set[str]) -> None:
    """Exactly one score per event of ``event_ids``, each equal to the reference run's."""
    duplicates = {k: v for k, v in got.items() if len(v) != 1}
    assert not duplicates, f"{len(duplicates)} events scored more than once"
    assert set(got) == set(expected) == event_ids
    mismatched = [k for k in expected if got[k][0] != expected[k][0]]
    assert not mismatched, (f"{len(mismatched)} scores differ from the reference, e.g. "
                            f"{mismatched[0]}: {got[mismatched[0]]} vs {expected[mismatched[0]]}")
