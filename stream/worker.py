"""The scoring worker (first end-to-end slice): events in, scores and dead letters out.

Each consumed event is decoded against the contract; a record that fails goes to the dead-letter
topic with its original bytes and the reason (:mod:`stream.deadletter`) and the partition moves on.
A valid event updates its user's velocity state (:mod:`features.first_slice`), is scored by the
model (:mod:`online_models.first_slice`) and its score is produced to the scores topic.

Commit protocol under ``processing_guarantee = "exactly_once"`` (the default):

1. begin a transaction before producing the first output of a batch;
2. produce scores and dead letters into it, serving delivery reports as we go;
3. when ``commit_interval_ms`` has passed or ``commit_every_records`` records were processed, add
   the consumed offsets to the transaction (``send_offsets_to_transaction`` with the consumer's
   group metadata, which fences zombies after a rebalance);
4. commit the transaction: outputs and input offsets become visible to read_committed readers
   together, or not at all.

Under ``at_least_once`` steps 1 and 4 are replaced by flushing the idempotent producer, then
committing the consumed offsets: a crash between the two re-processes, and re-scores, the batch.

On revocation of partitions the open transaction is committed first (steps 3-4), so the new owner
starts exactly after what this worker published. An error that aborts a transaction stops the
worker with a non-zero exit: state in this slice lives in memory and cannot be rolled back, so a
clean restart from the committed offsets is the only correct recovery. (The runtime that keeps
state in RocksDB with changelogs replaces this slice.)
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as _RdKafkaError

from features import first_slice as user_features
from online_models import first_slice as model_lib
from stream.deadletter import dead_letter_headers
from stream.events import Event, Score, decode_event
from stream.exceptions import DecodeError, KafkaError
from stream.settings import Settings

__all__ = ["Worker", "WorkerStats", "decide"]

log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    consumed: int = 0
    scored: int = 0
    dead_lettered: int = 0
    commits: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


def decide(score: float, settings: Settings) -> str:
    """Map a score to a decision with the configured thresholds (inclusive lower bounds)."""
    if score >= settings.block_threshold:
        return "block"
    if score >= settings.review_threshold:
        return "review"
    return "approve"


class Worker:
    """One worker process: all assigned partitions of the events topic."""

    def __init__(self, settings: Settings, instance_id: str | None = None) -> None:
        self.settings = settings
        self.instance_id = instance_id or settings.instance_id or socket.gethostname()
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        self.stats = WorkerStats()
        self._stop = False
        self._signals = 0
        # user state per assigned partition: partition -> user_id -> feature state
        self._state: dict[int, dict[str, list]] = {}
        self._model = model_lib.AnomalyScorer()
        self._pending: dict[int, int] = {}  # partition -> next offset to commit
        self._in_txn = False
        self._batch_started = 0.0
        self._batch_records = 0

        consumer_conf = settings.consumer_config(settings.group_id)
        consumer_conf["client.id"] = f"{settings.client_id}-{self.instance_id}"
        self._consumer = Consumer(consumer_conf)
        producer_extra: dict[str, Any] = {"client.id": f"{settings.client_id}-{self.instance_id}"}
        if self.exactly_once:
            producer_extra["transactional.id"] = f"{settings.group_id}-{self.instance_id}"
            producer_extra["transaction.timeout.ms"] = settings.transaction_timeout_ms
        self._producer = Producer(settings.producer_config(**producer_extra))

    # ------------------------------------------------------------------ lifecycle
    def request_stop(self, *_: Any) -> None:
        """First call: finish the batch, commit, close. Second call: exit at once."""
        self._signals += 1
        if self._signals > 1:
            log.warning("second stop signal: exiting without committing")
            os._exit(130)
        log.info("stop requested: finishing the current batch")
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, exit_when_idle: float | None = None, max_events: int | None = None) -> WorkerStats:
        """Process until stopped (or idle for ``exit_when_idle`` seconds, or ``max_events``)."""
        if self.exactly_once:
            try:
                self._producer.init_transactions(30)
            except KafkaException as exc:
                raise KafkaError(f"cannot initialise transactions: {exc.args[0].str()}") from None
        self._consumer.subscribe([self.settings.topic_events], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("worker %s started (%s) on %s", self.instance_id,
                 self.settings.processing_guarantee, self.settings.bootstrap_servers)
        last_activity = time.monotonic()
        batch_size = self.settings.poll_batch_size
        try:
            while not self._stop:
                msgs = self._consumer.consume(batch_size, 0.05)
                if msgs:
                    last_activity = time.monotonic()
                    for msg in msgs:
                        self._handle(msg)
                elif exit_when_idle is not None and not self._in_txn and \
                        time.monotonic() - last_activity >= exit_when_idle:
                    log.info("idle for %.1fs: exiting", exit_when_idle)
                    break
                self._producer.poll(0)
                if self._commit_due():
                    self._commit()
                if max_events is not None and self.stats.consumed >= max_events:
                    break
            self._commit()
        finally:
            self._close()
        return self.stats

    def _close(self) -> None:
        try:
            self._consumer.close()
        finally:
            self._producer.flush(30)
            # The clients hold bound methods of this worker (callbacks): drop them so their
            # connections close now rather than whenever the cycle collector runs.
            del self._producer, self._consumer

    # ------------------------------------------------------------------ processing
    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == _RdKafkaError._PARTITION_EOF:
                return
            if err.fatal():
                raise KafkaError(f"consumer failed: {err.str()}")
            log.warning("consumer: %s", err.str())
            return
        self.stats.consumed += 1
        if self.exactly_once and not self._in_txn:
            self._producer.begin_transaction()
            self._in_txn = True
        if self._batch_records == 0:
            self._batch_started = time.monotonic()
        self._batch_records += 1
        self._pending[msg.partition()] = msg.offset() + 1
        try:
            event = decode_event(msg.value(), self.settings.max_message_bytes)
        except DecodeError as exc:
            self._dead_letter(msg, exc)
            return
        score = self._score(event, msg.partition())
        self._produce(self.settings.topic_scores, event.user_id.encode(), score.encode())
        self.stats.scored += 1

    def _score(self, event: Event, partition: int) -> Score:
        users = self._state.setdefault(partition, {})
        state = users.get(event.user_id)
        if state is None:
            state = users[event.user_id] = user_features.empty_state()
        amount = event.amount or 0.0
        user_features.fold(state, event.event_time, amount)
        x = user_features.read(state, event.event_time)
        x["amount"] = amount
        value = self._model.score_then_learn(x)
        reasons = sorted(({"feature": k, "value": v} for k, v in x.items()),
                         key=lambda r: -abs(r["value"]))[:3]
        return Score(
            event_id=event.event_id,
            user_id=event.user_id,
            merchant_id=event.merchant_id,
            event_time=event.event_time,
            score=round(value, 6),
            decision=decide(value, self.settings),
            model_version=model_lib.MODEL_VERSION,
            reasons=reasons,
            scored_at=time.time_ns() // 1_000_000,
        )

    def _dead_letter(self, msg: Message, error: DecodeError) -> None:
        self.stats.dead_lettered += 1
        self.stats.dead_letter_reasons[error.code] = \
            self.stats.dead_letter_reasons.get(error.code, 0) + 1
        log.info("dead letter %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error)
        self._produce(self.settings.topic_dead_letter, msg.key(), msg.value(),
                      dead_letter_headers(msg, error))

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list | None = None) -> None:
        # Record timestamps stay the produce time; event time is in the payload (see publisher).
        kwargs: dict[str, Any] = {"on_delivery": self._on_delivery}
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # wait for room; never drop an output

    def _on_delivery(self, err: _RdKafkaError | None, msg: Message) -> None:
        if err is not None:
            # Inside a transaction the commit will fail too; outside one, offsets are only
            # committed after flush, so a failed delivery must stop the worker before that.
            log.error("delivery to %s failed: %s", msg.topic(), err.str())
            self._delivery_failed = err

    _delivery_failed: _RdKafkaError | None = None

    # ------------------------------------------------------------------ committing
    def _commit_due(self) -> bool:
        if not self._batch_records:
            return False
        return (self._batch_records >= self.settings.commit_every_records or
                (time.monotonic() - self._batch_started) * 1000 >= self.settings.commit_interval_ms)

    def _offsets(self) -> list[TopicPartition]:
        return [TopicPartition(self.settings.topic_events, p, o) for p, o in self._pending.items()]

    def _commit(self) -> None:
        if not self._batch_records and not self._in_txn:
            return
        if self.exactly_once:
            if self._in_txn:
                try:
                    self._producer.send_offsets_to_transaction(
                        self._offsets(), self._consumer.consumer_group_metadata(), 30)
                    self._producer.commit_transaction(60)
                except KafkaException as exc:
                    err = exc.args[0]
                    if err.txn_requires_abort():
                        try:
                            self._producer.abort_transaction(30)
                        except KafkaException:
                            pass
                    raise KafkaError(f"transaction commit failed ({err.str()}); restart to resume "
                                     "from the last committed offsets") from None
                self._in_txn = False
        else:
            remaining = self._producer.flush(60)
            if remaining or self._delivery_failed is not None:
                raise KafkaError("outputs were not all delivered; offsets not committed")
            self._consumer.commit(offsets=self._offsets(), asynchronous=False)
        self.stats.commits += 1
        self._pending.clear()
        self._batch_records = 0

    # ------------------------------------------------------------------ rebalancing
    # Callbacks stay short: commit what is owed for the partitions that leave, drop their state.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._state.setdefault(tp.partition, {})
        log.info("assigned partitions %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()
        for tp in partitions:
            self._state.pop(tp.partition, None)
        log.info("revoked partitions %s", sorted(tp.partition for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member owns them already; our open transaction would be fenced.
        if self._in_txn:
            try:
                self._producer.abort_transaction(30)
            finally:
                self._in_txn = False
            raise KafkaError("partitions lost with a transaction open; restarting is required")
        for tp in partitions:
            self._state.pop(tp.partition, None)
        log.warning("lost partitions %s", sorted(tp.partition for tp in partitions))
