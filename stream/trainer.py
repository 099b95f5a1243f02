"""The global-model trainer: learns the global model from the workers' training examples and
publishes versioned snapshots to the models topic, exactly once.

Workers produce joined examples (:meth:`online_models.labels.Example.to_dict`, JSON) to the
one-partition training topic. Every trainer instance joins the consumer group
``<group_id>-trainer``; the one that holds partition 0 is *active* and learns, the others are
*standby* and wait for the partition to move to them (cooperative-sticky assignment, so a standby
joining never takes it from a healthy active instance).

Becoming active (in the main loop, never in the rebalance callback, with the partition paused):

1. A transactional producer with ``transactional.id = <group_id>-trainer`` (the same for every
   instance) calls ``init_transactions``: this fences the previous active instance and aborts any
   transaction it left open (which also unblocks ``read_committed`` readers of the models topic).
2. The group's committed offset of partition 0 is read (it waits for a pending transactional
   commit to resolve, KIP-447), and the consumer seeks there.
3. The models topic is read to its end: the latest ``role/global`` snapshot is loaded (none yet:
   ``GlobalModel.create(settings.model_name)``), and ``role/challenger`` if there is one.
4. The partition is resumed.

Commit protocol, per publish:

1. Learn: each example is learned in memory (:meth:`GlobalModel.learn`; the challenger too when the
   example carries a challenger vector). A malformed record is kept aside for the dead-letter topic.
   Nothing is produced yet, so no transaction is open while learning (a transaction that stayed open
   for ``trainer_publish_interval_s`` would outlive ``transaction_timeout_ms``).
2. When :func:`publish_due` says so, begin a transaction.
3. Produce the dead letters kept since the last publish.
4. Produce the snapshot (:func:`stream.modelstore.publish_model`, ``version/<v>`` and
   ``role/global``; the challenger's under ``role/challenger`` if it learned too).
5. Add the consumed offset (``send_offsets_to_transaction`` with the consumer's group metadata,
   which also fences an owner from an older group generation).
6. Commit the transaction.

The snapshot and the offset of the last example it includes become visible together or not at
all. A crash anywhere before step 6 leaves the previous snapshot and its offset: the next active
instance loads that snapshot and learns again from that offset, so no example is learned twice
and none is lost. An abortable error in steps 2-6 aborts the transaction and keeps the in-memory
model (it still matches the consumer position); the publish is retried at the next due time. A
fatal error (another instance fenced this one) stops the trainer.

Versions are named ``<spec version>.<n_learned>`` (``default-1.1000``); when that name is already
on the models topic from another lineage (after a promote of an older version, say), ``~2``,
``~3``... is appended. A ``role/global`` or ``role/challenger`` record this trainer did not write
(``fraudstream models promote`` / ``import``) is adopted while running: the trainer continues from
the promoted global model and learns the examples it had not published yet onto it.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer,
                             TopicPartition)
from confluent_kafka import KafkaError as _RdKafkaError

from online_models.exceptions import SnapshotError
from online_models.labels import Example
from online_models.metrics import QualityWindow
from online_models.scorer import GlobalModel
from stream import wire
from stream.deadletter import dead_letter_headers
from stream.consumer import consumer_error
from stream.exceptions import DecodeError, KafkaError, RawRecord
from stream.lifecycle import GracefulStop, Stoppable
from stream.modelstore import (ROLE_CHALLENGER, ROLE_GLOBAL, ModelFeed, ModelRecord,
                               publish_model, snapshot_producer_config)
from stream.observability import HealthServer, QualityGauges, WorkerMetrics
from stream.settings import Settings
from stream.topics import ensure_topics, project_topics

__all__ = ["Trainer", "TrainerStats", "publish_due", "version_label", "decode_example",
           "trainer_group"]

log = logging.getLogger(__name__)

_TXN_CALL_S = 30
_PARTITION = 0


def trainer_group(settings: Settings) -> str:
    """The trainers' consumer group and transactional id: ``<group_id>-trainer``."""
    return f"{settings.group_id}-trainer"


def publish_due(pending: int, first_pending_at: float | None, now: float, every: int,
                interval_s: float) -> bool:
    """Whether to publish: ``every`` records are pending, or the oldest pending one has waited
    ``interval_s`` seconds. Nothing pending, nothing to publish.

    >>> publish_due(0, None, 100.0, every=1000, interval_s=60)
    False
    >>> publish_due(1000, 99.0, 100.0, every=1000, interval_s=60)
    True
    >>> publish_due(3, 30.0, 89.9, every=1000, interval_s=60), publish_due(3, 30.0, 90.0, 1000, 60)
    (False, True)
    """
    if pending <= 0:
        return False
    if pending >= every:
        return True
    return first_pending_at is not None and now - first_pending_at >= interval_s


def version_label(spec_version: str, n_learned: int, taken: set[str] | frozenset[str]) -> str:
    """``<spec version>.<n_learned>``, or with ``~2``, ``~3``... when that name is taken.

    >>> version_label("default-1", 1000, set())
    'default-1.1000'
    >>> version_label("default-1", 1000, {"default-1.1000", "default-1.1000~2"})
    'default-1.1000~3'
    """
    base = f"{spec_version}.{n_learned}"
    if base not in taken:
        return base
    k = 2
    while f"{base}~{k}" in taken:
        k += 1
    return f"{base}~{k}"


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_vector(v: Any, name: str) -> None:
    if not isinstance(v, dict):
        raise DecodeError("must be an object of feature values", name)
    for k, x in v.items():
        if not (x is None or isinstance(x, (int, float))):
            raise DecodeError(f"feature {k!r} must be a number or null, got {type(x).__name__}",
                              name)


def decode_example(value: bytes | None) -> Example:
    """One training record (``Example.to_dict()`` as JSON) to an :class:`Example`, checked
    enough that learning from it cannot fail; :class:`DecodeError` otherwise.

    >>> from online_models.labels import Snapshot
    >>> ex = Example(Snapshot("e1", "m1", 5, {"amount": 3.0}, 0.2, 0.1, "logreg-1.0"), True, 9)
    >>> decode_example(wire.dumps(ex.to_dict())) == ex
    True
    >>> decode_example(b'{"snapshot": [], "is_fraud": true, "label_time": 1}')
    Traceback (most recent call last):
    ...
    stream.exceptions.DecodeError: snapshot: must be a list of 14 fields
    """
    if not value:
        raise DecodeError("empty record", code="empty")
    try:
        d = wire.loads(value)
    except wire.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}", code="bad_json") from None
    if not isinstance(d, dict):
        raise DecodeError("must be a JSON object")
    snap = d.get("snapshot")
    if not isinstance(snap, list) or len(snap) != 14:
        raise DecodeError("must be a list of 14 fields", "snapshot")
    if not isinstance(d.get("is_fraud"), bool):
        raise DecodeError("must be true or false", "is_fraud")
    if not _number(d.get("label_time")) or d["label_time"] != int(d["label_time"]):
        raise DecodeError("must be an integer (epoch ms)", "label_time")
    try:
        ex = Example.from_dict(d)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise DecodeError(f"cannot build an example: {exc}", "snapshot") from None
    s = ex.snapshot
    _check_vector(s.vector, "snapshot.vector")
    if not _number(s.raw):
        raise DecodeError("must be a number", "snapshot.raw")
    if not _number(s.event_time):
        raise DecodeError("must be a number", "snapshot.event_time")
    if s.challenger_vector is not None:
        _check_vector(s.challenger_vector, "snapshot.challenger_vector")
        if not _number(s.challenger_raw):
            raise DecodeError("must be a number with a challenger vector",
                              "snapshot.challenger_raw")
    return ex


@dataclass
class TrainerStats:
    consumed: int = 0
    learned: int = 0
    learned_challenger: int = 0
    dead_lettered: int = 0
    published: int = 0
    adopted: int = 0
    activations: int = 0
    versions: list[str] = field(default_factory=list)


class _Lineage:
    """One model the trainer learns and publishes (global or challenger)."""

    def __init__(self, role: str, model: GlobalModel) -> None:
        self.role = role
        self.model = model
        self.dirty = 0  # examples learned since the last publish

    def learn(self, ex: Example) -> bool:
        if self.role == ROLE_GLOBAL:
            self.model.learn(ex)
        else:
            s = ex.snapshot
            if s.challenger_vector is None:
                return False
            m = self.model
            m.model.learn_one(s.challenger_vector, ex.is_fraud)
            m.calibrator.learn_one(s.challenger_raw, ex.is_fraud)
            m.n_learned += 1
            m.set_version(None)
        self.dirty += 1
        return True


class Trainer(Stoppable):
    """One trainer process; ``run()`` until stopped (see the module docstring)."""

    def __init__(self, settings: Settings, instance_id: str | None = None,
                 serve_metrics: bool = False) -> None:
        self.settings = settings
        self.instance_id = instance_id or settings.instance_id or socket.gethostname()
        self.group = trainer_group(settings)
        self.stats = TrainerStats()
        self.metrics = WorkerMetrics()
        self._serve_metrics = serve_metrics
        self._health: HealthServer | None = None
        client = f"{settings.client_id}-trainer-{self.instance_id}"
        self._client = client
        self._consumer = Consumer(settings.consumer_config(self.group, **{"client.id": client}))
        self._tp = TopicPartition(settings.topic_training, _PARTITION)
        self._stopper = GracefulStop("publishing what is pending")
        self._activate_pending = False
        self.active = False
        self._producer: Producer | None = None
        self._feed: ModelFeed | None = None
        self._global: _Lineage | None = None
        self._challenger: _Lineage | None = None
        self._taken: set[str] = set()
        self._own_offsets: set[int] = set()
        self._pending: list[Example] = []      # learned, not yet published (re-learned on adopt)
        self._dead: list[tuple[Message, DecodeError]] = []
        self._records = 0                      # records consumed since the last publish
        self._first_pending_at: float | None = None
        self._position: int | None = None      # next offset to commit
        # The global model's calibrated scores as workers recorded them, over all partitions.
        self._quality = QualityWindow(10_000, settings.review_budget)
        self._quality_gauges = QualityGauges(self.metrics)
        self._version_info: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def run(self, exit_when_idle: float | None = None) -> TrainerStats:
        if self._serve_metrics:
            self._health = HealthServer(self.metrics, self.settings.metrics_host,
                                        self.settings.metrics_port).start()
            log.info("metrics and health on http://%s:%d", *self._health.address[:2])
        ensure_topics(self.settings, project_topics(self.settings))
        self._consumer.subscribe([self.settings.topic_training], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("trainer %s started in group %s: standby until partition 0 of %s is assigned",
                 self.instance_id, self.group, self.settings.topic_training)
        self.metrics.started = True
        last_activity = time.monotonic()
        try:
            while not self._stop:
                self.metrics.beat()
                if self._activate_pending:
                    self._activate()
                    last_activity = time.monotonic()
                msgs = self._consumer.consume(self.settings.poll_batch_size, 0.1)
                for msg in msgs:
                    self._handle(msg)
                    if self._records >= self.settings.trainer_publish_every and self.active:
                        self.publish()
                if msgs or not self.active:
                    last_activity = time.monotonic()  # idle time counts only while active
                if self.active:
                    self._follow_models()
                    if publish_due(self._records, self._first_pending_at, time.monotonic(),
                                   self.settings.trainer_publish_every,
                                   self.settings.trainer_publish_interval_s):
                        self.publish()
                if (exit_when_idle is not None and not msgs
                        and time.monotonic() - last_activity >= exit_when_idle):
                    log.info("idle for %.1fs: exiting", exit_when_idle)
                    break
            if self.active:
                self.publish()
        finally:
            self._shutdown()
        return self.stats

    def _shutdown(self) -> None:
        try:
            self._consumer.close()  # revokes partition 0: the standby takes over
        finally:
            self._deactivate("shut down")
            if self._health is not None:
                self._health.stop()

    # ------------------------------------------------------------------ active / standby
    def _activate(self) -> None:
        """Steps 1-4 of becoming active (module docstring)."""
        self._activate_pending = False
        s = self.settings
        conf = snapshot_producer_config(s, **{
            "client.id": self._client, "transactional.id": self.group,
            "transaction.timeout.ms": s.transaction_timeout_ms, "on_delivery": self._on_delivery})
        self._producer = Producer(conf)
        try:
            self._producer.init_transactions(_TXN_CALL_S)
        except KafkaException as exc:
            raise KafkaError(f"cannot initialise transactions: {exc.args[0].str()}") from None
        committed = self._committed()
        self._position = committed if committed >= 0 else None
        self._consumer.seek(TopicPartition(s.topic_training, _PARTITION,
                                           committed if committed >= 0 else OFFSET_BEGINNING))
        self._feed = ModelFeed(s)
        latest = self._feed.catch_up()
        self._taken = {k.split("/", 1)[1] for k in latest if k.startswith("version/")}
        g = latest.get(f"role/{ROLE_GLOBAL}")
        if g is not None and g.data is not None:
            model = _load(g)
            origin = f"snapshot {model.version} (models offset {g.offset})"
        else:
            model = GlobalModel.create(s.model_name)
            origin = f"a new {s.model_name!r} model (no role/global on {s.topic_models})"
        self._global = _Lineage(ROLE_GLOBAL, model)
        c = latest.get(f"role/{ROLE_CHALLENGER}")
        self._challenger = (_Lineage(ROLE_CHALLENGER, _load(c))
                            if c is not None and c.data is not None else None)
        self._reset_batch()
        self.active = True
        self.stats.activations += 1
        self._consumer.resume([self._tp])
        self._set_version_info()
        log.info("ACTIVE: trainer %s holds %s[0]; learning from offset %s with %s, %d learned%s",
                 self.instance_id, s.topic_training,
                 committed if committed >= 0 else "0 (nothing committed)", origin,
                 model.n_learned,
                 f"; challenger {self._challenger.model.version}" if self._challenger else "")

    def _committed(self) -> int:
        deadline = time.monotonic() + 120
        while True:
            try:
                return self._consumer.committed([self._tp], timeout=30)[0].offset
            except KafkaException as exc:
                if exc.args[0].fatal() or time.monotonic() >= deadline:
                    raise KafkaError(f"cannot read the trainer's committed offset: "
                                     f"{exc.args[0].str()}") from None
                log.warning("committed offset not available yet (%s); retrying",
                            exc.args[0].str())

    def _deactivate(self, why: str) -> None:
        was_active = self.active
        self.active = False
        if self._records and was_active:
            log.warning("%s with %d unpublished records: the next active trainer learns them "
                        "again from the last committed offset", why, self._records)
        self._reset_batch()
        self._global = self._challenger = None
        if self._feed is not None:
            self._feed.close()
            self._feed = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        if was_active and self._stop:
            log.info("trainer %s stopped: partition 0 goes to a standby instance, if any",
                     self.instance_id)
        elif was_active:
            log.info("STANDBY: trainer %s no longer holds partition 0 (%s)", self.instance_id,
                     why)

    def _reset_batch(self) -> None:
        self._pending.clear()
        self._dead.clear()
        self._records = 0
        self._first_pending_at = None

    # ------------------------------------------------------------------ learning
    def _handle(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            consumer_error(err, f"consuming {self.settings.topic_training}")
            return
        if not self.active or msg.partition() != _PARTITION:
            return
        self.stats.consumed += 1
        self.metrics["fraudstream_events_consumed_total"].labels("trainer", "0").inc()
        self._position = msg.offset() + 1
        if self._first_pending_at is None:
            self._first_pending_at = time.monotonic()
        self._records += 1
        try:
            ex = decode_example(msg.value())
        except DecodeError as exc:
            self._dead.append((msg, exc.with_raw(RawRecord(msg.value(), msg.topic(),
                                                           msg.partition(), msg.offset()))))
            log.info("dead letter %s[0]@%d: %s", msg.topic(), msg.offset(), exc)
            return
        self._learn(ex)
        self._pending.append(ex)

    def _learn(self, ex: Example) -> None:
        assert self._global is not None
        self._global.learn(ex)
        self.stats.learned += 1
        s = ex.snapshot
        if s.p_global is not None:
            self._quality.update(float(s.p_global), ex.is_fraud)
        if self._challenger is not None and self._challenger.learn(ex):
            self.stats.learned_challenger += 1

    # ------------------------------------------------------------------ publishing
    def publish(self) -> bool:
        """Steps 2-6 of the commit protocol; ``False`` if the transaction was aborted."""
        if not self.active or not self._records or self._producer is None:
            return True
        p = self._producer
        started = time.perf_counter()
        published: list[tuple[_Lineage, str]] = []
        taken = set(self._taken)  # both lineages may publish the same count in one transaction
        try:
            p.begin_transaction()
            for msg, exc in self._dead:
                self._produce(self.settings.topic_dead_letter, msg.key(), msg.value(),
                              dead_letter_headers(msg, exc))
            for lineage in (self._global, self._challenger):
                if lineage is None or not lineage.dirty:
                    continue
                m = lineage.model
                version = version_label(m.model.version, m.n_learned, taken)
                taken.add(version)
                m.set_version(version)
                publish_model(p, self.settings, m.to_bytes(), version, m.model.name, m.n_learned,
                              role=lineage.role)
                published.append((lineage, version))
            # Serves the delivery reports (this instance's own model offsets) before the records
            # can become visible to the feed.
            if p.flush(_TXN_CALL_S):
                raise KafkaError("model snapshot not delivered in time")
            if self._position is not None:
                p.send_offsets_to_transaction(
                    [TopicPartition(self.settings.topic_training, _PARTITION, self._position)],
                    self._consumer.consumer_group_metadata(), _TXN_CALL_S)
            self._commit_transaction()
        except KafkaException as exc:
            err = exc.args[0]
            if err.fatal() or not err.txn_requires_abort():
                raise KafkaError(f"publishing failed ({err.str()}); another trainer instance may "
                                 "have taken over") from None
            log.warning("publish aborted (%s): keeping the model, retrying at the next publish",
                        err.str())
            try:
                p.abort_transaction(_TXN_CALL_S)
            except KafkaException as exc2:
                raise KafkaError(f"cannot abort: {exc2.args[0].str()}") from None
            self._first_pending_at = time.monotonic()
            return False
        for lineage, version in published:
            lineage.dirty = 0
            self._taken.add(version)
            self.stats.versions.append(version)
            log.info("published %s %s (%d learned) at %s[0] offset %s", lineage.role, version,
                     lineage.model.n_learned, self.settings.topic_training, self._position)
        self.stats.published += len(published)
        self.stats.dead_lettered += len(self._dead)
        for _, exc in self._dead:
            self.metrics["fraudstream_dead_letters_total"].labels(exc.code).inc()
        self._reset_batch()
        m = self.metrics
        m["fraudstream_commit_seconds"].observe(time.perf_counter() - started)
        m["fraudstream_commits_total"].inc()
        self._set_version_info()
        if self._quality.n:
            self._quality_gauges.set_models({"global": self._quality.report()})
        return True

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list) -> None:
        assert self._producer is not None
        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers)
                self._producer.poll(0)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _commit_transaction(self) -> None:
        assert self._producer is not None
        deadline = time.monotonic() + 2 * _TXN_CALL_S
        while True:
            try:
                self._producer.commit_transaction(_TXN_CALL_S)
                return
            except KafkaException as exc:
                if exc.args[0].retriable() and time.monotonic() < deadline:
                    log.warning("transaction commit will be retried: %s", exc.args[0].str())
                    continue
                raise

    def _on_delivery(self, err: _RdKafkaError | None, msg: Message) -> None:
        # Offsets of this instance's own model records: the feed skips them when they come back.
        if err is None and msg.topic() == self.settings.topic_models:
            self._own_offsets.add(msg.offset())

    # ------------------------------------------------------------------ promote / import
    def _follow_models(self) -> None:
        """Adopt role records written by someone else (``fraudstream models promote|import``)."""
        assert self._feed is not None
        for rec in self._feed.poll():
            if rec.key.startswith("version/"):
                self._taken.add(rec.key.split("/", 1)[1])
                continue
            if rec.offset in self._own_offsets or rec.role is None:
                self._own_offsets.discard(rec.offset)
                continue
            self._adopt(rec)

    def _adopt(self, rec: ModelRecord) -> None:
        if rec.role == ROLE_CHALLENGER:
            if rec.data is None:
                log.info("challenger removed (tombstone at models offset %d)", rec.offset)
                self._challenger = None
            else:
                self._challenger = _Lineage(ROLE_CHALLENGER, _load(rec))
                log.info("challenger set to %s from outside the trainer", rec.version)
        elif rec.role == ROLE_GLOBAL and rec.data is not None:
            model = _load(rec)
            lineage = _Lineage(ROLE_GLOBAL, model)
            for ex in self._pending:  # examples learned but not yet published: not lost
                lineage.learn(ex)
            self._global = lineage
            log.warning("role/global set to %s from outside the trainer: continuing from it "
                        "(%d unpublished examples learned onto it)", rec.version,
                        len(self._pending))
        else:
            return
        self.stats.adopted += 1
        self._set_version_info()

    def _set_version_info(self) -> None:
        fam = self.metrics["fraudstream_model_version_info"]
        for role, lineage in ((ROLE_GLOBAL, self._global), (ROLE_CHALLENGER, self._challenger)):
            version = lineage.model.version if lineage is not None else None
            old = self._version_info.get(role)
            if old == version:
                continue
            if old is not None:
                fam.remove(role, old)
            if version is not None:
                fam.labels(role, version).info({})
                self._version_info[role] = version
            else:
                self._version_info.pop(role, None)

    # ------------------------------------------------------------------ rebalancing
    # Callbacks stay short: pause and mark; activation (transactions, reading snapshots) runs in
    # the main loop.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        self.metrics.joined = True
        if any(tp.partition == _PARTITION for tp in partitions):
            consumer.pause([self._tp])
            self._activate_pending = True
            log.info("assigned %s[0]: becoming active", self.settings.topic_training)
        elif not self.active:
            log.info("STANDBY: trainer %s joined %s; another instance holds partition 0",
                     self.instance_id, self.group)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == _PARTITION for tp in partitions):
            self._activate_pending = False
            if self.active and not self._stop:
                self._deactivate("partition 0 revoked")

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == _PARTITION for tp in partitions):
            self._activate_pending = False
            self._deactivate("partition 0 lost")


def _load(rec: ModelRecord) -> GlobalModel:
    try:
        return GlobalModel.from_bytes(rec.data or b"")
    except SnapshotError as exc:
        raise KafkaError(f"{rec.key} at models offset {rec.offset}: {exc}") from None

