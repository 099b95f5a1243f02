"""Reading scores: the consumer SDK behind ``fraudstream tail``.

A :class:`ScoreConsumer` reads the scores topic with ``isolation.level=read_committed`` (so it never
sees a score from an aborted transaction) and yields decoded :class:`ScoreRecord` objects. Offsets
are committed only when the caller says so (:meth:`ScoreConsumer.commit`), or periodically for what
has been yielded when ``auto_commit=True``: either way a score is never marked consumed before the
caller has seen it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as _RdKafkaError

from stream.events import Score, decode_score
from stream.exceptions import DecodeError, KafkaError
from stream.settings import Settings

__all__ = ["ScoreConsumer", "ScoreRecord", "consumer_error"]

log = logging.getLogger(__name__)


def consumer_error(err: _RdKafkaError, doing: str) -> None:
    """Triage an error event from ``Consumer.consume``: a partition end is nothing, a fatal
    error stops the caller (:class:`KafkaError`), anything else is logged (librdkafka retries)."""
    if err.code() == _RdKafkaError._PARTITION_EOF:
        return
    if err.fatal():
        raise KafkaError(f"{doing}: {err.str()}")
    log.warning("%s: %s", doing, err.str())


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    score: Score
    partition: int
    offset: int
    timestamp_ms: int


class ScoreConsumer:
    """Iterate over scores as they arrive.

    ``group_id=None`` gives a private group (nothing shared, from the start of the topic unless
    ``from_beginning=False``); pass a group id to share work and resume from committed offsets.
    """

    def __init__(self, settings: Settings, group_id: str | None = None, *,
                 topic: str | None = None, from_beginning: bool = True, auto_commit: bool = False,
                 **consumer_overrides) -> None:
        self.settings = settings
        self.topic = topic or settings.topic_scores
        self.group_id = group_id or f"fraudstream-tail-{uuid.uuid4().hex[:12]}"
        conf = settings.consumer_config(
            self.group_id,
            **{"auto.offset.reset": "earliest" if from_beginning else "latest",
               "enable.auto.commit": auto_commit},
        )
        conf.update(consumer_overrides)
        self.decode_errors = 0
        self._consumer = Consumer(conf)
        self._consumer.subscribe([self.topic])
        self._closed = False

    def poll(self, timeout: float = 1.0) -> ScoreRecord | None:
        """The next score, or None if none arrived within ``timeout`` seconds."""
        while True:
            msg = self._consumer.poll(timeout)
            if msg is None:
                return None
            err = msg.error()
            if err is not None:
                if err.code() == _RdKafkaError._PARTITION_EOF:
                    continue
                if err.fatal():
                    raise KafkaError(f"score consumer failed: {err.str()}")
                log.warning("score consumer: %s", err.str())
                continue
            try:
                score = decode_score(msg.value(), max_bytes=1 << 24)
            except DecodeError as exc:
                # The scores topic is written by fraudstream only; a bad record is a bug upstream.
                self.decode_errors += 1
                log.error("undecodable score at %s[%d]@%d: %s", msg.topic(), msg.partition(),
                          msg.offset(), exc)
                self._consumer.store_offsets(msg)
                continue
            self._consumer.store_offsets(msg)
            return ScoreRecord(score, msg.partition(), msg.offset(), msg.timestamp()[1])

    def stream(self, idle_timeout: float | None = None,
               max_records: int | None = None) -> Iterator[ScoreRecord]:
        """Yield scores until ``max_records`` were yielded or none arrived for ``idle_timeout`` s."""
        count = 0
        last = time.monotonic()
        while max_records is None or count < max_records:
            record = self.poll(0.2)
            if record is None:
                if idle_timeout is not None and time.monotonic() - last >= idle_timeout:
                    return
                continue
            last = time.monotonic()
            count += 1
            yield record

    def __iter__(self) -> Iterator[ScoreRecord]:
        return self.stream()

    def commit(self) -> None:
        """Commit the offsets of every score yielded so far (synchronously)."""
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() != _RdKafkaError._NO_OFFSET:  # nothing new to commit is not an error
                raise KafkaError(f"commit failed: {err.str()}") from None

    def committed(self) -> dict[int, int]:
        """Committed offsets by partition (for inspection and tests)."""
        md = self._consumer.list_topics(self.topic, timeout=10)
        parts = [TopicPartition(self.topic, p) for p in md.topics[self.topic].partitions]
        return {tp.partition: tp.offset for tp in self._consumer.committed(parts, timeout=10)}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()

    def __enter__(self) -> "ScoreConsumer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
