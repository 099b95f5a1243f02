"""The streaming worker: all stages of the topology for the partitions assigned to this process.

One consumer subscribes to every stage's input topic and the labels topic; one producer writes
scores, forwarded records, dead letters and changelogs. A *task* is one stage on one partition,
with its own state store (RocksDB by default) and feature engine.

Commit protocol (``processing_guarantee = "exactly_once"``, the default):

1. A transaction is begun before the first record of a batch is processed.
2. Processing produces outputs into it: scores, records forwarded to the next stage's repartition
   topic, labels routed to the stages that need them, dead letters. A record forwarded to a
   next-stage task that this worker owns and that has drained its partition is processed by that
   task at once instead (local hand-off: its state changes join the same transaction); what a
   task still draining its partition was handed meanwhile goes to the topic before step 3 (see
   "local hand-off" below).
3. When ``commit_interval_ms`` has passed or ``commit_every_records`` records were processed, every
   task's store is flushed: dirty state is written to RocksDB and each changed key is produced to
   the stage's compacted changelog topic (same partition), inside the transaction; an event's
   label-index entry and scorer snapshot go as one event record (:mod:`stream.runtime.changelog`).
4. The consumed input offsets are added to the transaction (``send_offsets_to_transaction`` with the
   consumer's group metadata, which fences a zombie owner after a rebalance).
5. The transaction is committed: outputs, changelog records and input offsets become visible
   together or not at all. Steps 4 and 5 run on the transactional-call thread; the loop does not
   wait for their broker round trips.
6. Meanwhile the loop goes on with the next records, outside any transaction: it begins none,
   and the outputs of that work (scores, forwards, routed labels, dead letters, training
   examples) are held in memory, not produced, so nothing of it can enter the committing
   transaction. Its input offsets are recorded apart from those sent in step 4, and its state
   changes stay in the stores, unflushed (step 3 already wrote the committing transaction's).
   No commit starts while one is in flight; with ``commit_every_records`` records held the loop
   waits for it.
7. When the commit returns: committed, the next transaction begins and the held outputs are
   produced into it (that work is now at step 2; if its batch is already due, step 3 follows at
   once). Failed, the recovery below covers the held work too: held outputs are dropped, and
   its state changes go with the stores, which are rebuilt from the changelog (which has none
   of them). Revocation, shutdown, a lost partition and a rewind all wait for a commit in
   flight before anything else.
8. Only when a task is closed cleanly (revocation, shutdown) after step 5 is its local checkpoint
   written: the changelog's end offset that the RocksDB store now includes.

Opening a task consumes its checkpoint before any write (:mod:`stream.runtime.checkpoint`): with a
checkpoint the store is brought up to date from the changelog tail; without one (first start, a new
machine, or a crash) the store is wiped and rebuilt from the whole changelog. Restoring happens in
the main loop with the task's input partition paused, never inside a rebalance callback.

If a transaction must be aborted (a broker restart, a timed-out transaction, a failed delivery),
the worker aborts it, drops every task without a checkpoint, seeks its input back to the committed
offsets and restores each task from its changelog: the state returns to exactly the last commit and
processing resumes. Fatal errors (another instance fenced this one) stop the worker.

Under ``at_least_once`` there is no transaction (no steps 6 and 7) and steps 4 and 5 become:
commit a batch's input offsets once every output it produced (changelog records included) is
delivered. The worker does not wait for that: each batch is an *epoch* whose outputs carry the
epoch's delivery callback, and the offsets of the oldest epochs whose outputs are all
acknowledged are committed asynchronously from the main loop, so delivery round trips never
stall processing. Step 3 runs as a *flush round*, one task per loop iteration, so that writing
a commit interval's state changes never stops processing for long: the round takes the offsets
consumed so far, flushes every task in turn (a task flushed later also writes the changes made
meanwhile, which is harmless), and only then closes the epoch with those offsets. Revocation and shutdown finish the
round, flush the producer and commit synchronously. A crash re-processes what was not committed;
feature state may then count those events twice.
"""

from __future__ import annotations

import gc
import logging
import queue
import shutil
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Callable

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer,
                             TopicPartition)
from confluent_kafka import KafkaError as _RdKafkaError

from features.default import default_feature_set
from features.definitions import FeatureSet
from features.engine import FeatureEngine
from online_models.labels import DEFAULT_TTL_MS as SNAPSHOT_TTL_MS
from online_models.scorer import GlobalModel
from stream import wire
from stream.deadletter import dead_letter_headers
from stream.events import decode_event_dict, decode_label_dict, encode_score
from stream.consumer import consumer_error
from stream.exceptions import ChangelogFormatError, ConfigError, DecodeError, KafkaError
from stream.lifecycle import GracefulStop, Stoppable
from stream.modelstore import ROLE_CHALLENGER, ROLE_GLOBAL, ModelFeed, ModelRecord
from stream.observability import HealthServer, QualityGauges, RestoreProgress, WorkerMetrics
from stream.pii import IdentifierHasher
from stream.replay import partition_for
from stream.runtime import changelog
from stream.runtime.checkpoint import consume_checkpoint, write_checkpoint
from stream.runtime.emitter import Emitter
from stream.runtime.scoring import ModelScorer, Scorer, make_scorer
from stream.runtime.topology import DEFAULT_STAGE_KEYS, Stage, Topology
from stream.settings import Settings
from stream.state import CachedStore, RocksOptions, open_store
from stream.topics import ensure_topics, project_topics

__all__ = ["Worker", "WorkerStats", "decide"]

log = logging.getLogger(__name__)
_KAFKA_LOG = logging.getLogger("fraudstream.kafka")

# Transactional calls get this timeout; a call still blocked after _WATCHDOG_S is declared stuck.
_TXN_CALL_S = 30
_WATCHDOG_S = 45
# While a commit is in flight the loop waits for records no longer than this at a time, so that
# it sees the commit return soon (nothing can wake a consumer's wait from the call thread).
_INFLIGHT_WAIT_S = 0.002


class _Stuck(Exception):
    """A librdkafka transactional call did not return in time."""


class _CallThread:
    """A daemon thread that runs blocking transactional calls for the loop, under a watchdog.

    One long-lived thread rather than one per call: starting a thread makes the loop wait until
    the new thread is scheduled (up to milliseconds on a loaded machine), twice per commit. A call
    that does not return in time leaves this thread blocked in librdkafka; the worker abandons it
    (a daemon thread does not hold up the exit) and the next call starts a fresh one. The
    exactly-once commit is ``submit``-ted without waiting: the loop goes on while it runs.
    """

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="txn-calls", daemon=True).start()

    def _serve(self) -> None:
        while True:
            item = self._calls.get()
            if item is None:
                return
            call, done, outcome = item
            try:
                call()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                outcome.append(exc)
            done.set()

    def submit(self, call: Callable[[], None]) -> tuple[threading.Event, list]:
        """Queue ``call``; the event is set when it has run, and the list then holds what it
        raised, or None."""
        done = threading.Event()
        outcome: list[BaseException | None] = []
        self._calls.put((call, done, outcome))
        return done, outcome

    def run(self, call: Callable[[], None], timeout: float) -> BaseException | None:
        """Run ``call`` on the thread; what it raised, or None. ``_Stuck`` after ``timeout``."""
        done, outcome = self.submit(call)
        if not done.wait(timeout):
            raise _Stuck()
        return outcome[0]

    def stop(self) -> None:
        self._calls.put(None)


@dataclass
class _InFlight:
    """An exactly-once commit running on the transactional-call thread (see the module
    docstring, steps 4-7)."""

    done: threading.Event
    outcome: list
    step: list            # the transactional call it is in, for the watchdog's message
    deadline: float       # time.monotonic() after which it is declared stuck
    started: float        # time.perf_counter() when the commit began (commit_seconds)
    e2e: list[int]        # append times of the events it scores (end_to_end_seconds)


# Keys of internal repartition records: an event with the features computed so far (and when the
# event was appended to the events topic, for end-to-end latency), or a label. The features go
# as a list of values in the topology's order of feature names (_VALUES: half the bytes of the
# dict and cheaper to encode and decode); _FEATURES, a dict, is still read (records written
# before) and written when a stage's feature dict is not in that order.
_EVENT, _FEATURES, _VALUES, _LABEL, _APPENDED = "e", "f", "v", "l", "t"
# State key prefix of labels waiting for their event (see Worker._apply_label).
_PARKED = b"\x00pl/"
#: The RocksDB options of a task's store (``bench/bench_features.py`` measures with them too).
TASK_ROCKS = RocksOptions(disable_wal=True)
# A task's store keeps its latest _WRITE_BEHIND encoded writes in memory across commits and
# writes the oldest _WRITE_CHUNK at a time (stream.state.cache): a hot entity's state, changed
# in every commit, reaches RocksDB about once per window instead of once per commit (half the
# RocksDB writes of the default pipeline). Nothing is lost by keeping them: the changelog has
# every change at each commit, and a store is trusted again only after a clean close, which
# writes everything.
_WRITE_BEHIND, _WRITE_CHUNK = 5_000, 1_000
# librdkafka's "unassigned partition": the configured partitioner picks one from the key.
_ANY_PARTITION = -1
# fraudstream_processing_seconds times one record in this many (timing is per record).
_PROCESSING_SAMPLE = 8


def decide(score: float, settings: Settings, merchant_id: str | None = None) -> str:
    """Map a score to a decision with the configured thresholds (inclusive lower bounds); a
    merchant's own thresholds (``merchant_thresholds``) win over the global ones."""
    review, block = settings.thresholds_for(merchant_id)
    if score >= block:
        return "block"
    if score >= review:
        return "review"
    return "approve"


@dataclass
class WorkerStats:
    consumed: int = 0
    scored: int = 0
    emitted: int = 0  # records the last stage produced through an emitter instead of scores
    forwarded: int = 0   # events produced to a repartition topic for the next stage
    handed_off: int = 0  # events handed to the next stage's local task (docs/runtime.md)
    labels: int = 0
    dead_lettered: int = 0
    commits: int = 0
    restored_records: int = 0
    examples: int = 0
    labels_parked: int = 0
    expired: int = 0
    recoveries: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)


class Task:
    """One stage on one partition: its store, its feature engine, and (last stage) its scorer."""

    def __init__(self, stage: Stage, partition: int, store: CachedStore,
                 scorer: Scorer | None = None, migrate: set[bytes] | None = None,
                 next_stage: Stage | None = None, parked: bool = False) -> None:
        self.stage = stage
        self.partition = partition
        self.store = store
        # The stage this one forwards to; None on the last stage.
        self.next_stage = next_stage
        # Whether labels may be parked in the store (see Worker._apply_label): until one is,
        # a scored event needs no lookup for its parked label.
        self.parked = parked
        self.engine = FeatureEngine(stage.features, store) if stage.features else None
        self.scorer = scorer
        # Event ids restored from old-layout changelog records, to rewrite (stream.runtime.changelog)
        self.migrate: set[bytes] = migrate or set()
        # Metric children, resolved once (label lookup costs more than the increment).
        self.consumed_metric: Any = None
        self.processing_metric: Any = None
        self.consumed = 0           # records handled; added to consumed_metric at each commit
        self.consumed_reported = 0
        # Whether the feature dicts this task forwards are in the topology's order of names
        # (checked on the first one; the engine's dicts all have one shape): see _VALUES.
        self.forwards_values: bool | None = None
        self.late_reported = 0  # engine.stats.late already added to the late-events counter
        # Local hand-off, on a later stage's task (see Worker._arm_handoffs): the offset of its
        # input partition it must have consumed before it takes hand-offs, and what was handed
        # to it meanwhile, in order (None once it takes them directly).
        self.barrier = -1
        self.held: list[tuple[bytes, dict[str, Any] | None, dict[str, Any], int]] | None = None


class Worker(Stoppable):
    """One worker process. ``run()`` processes until stopped.

    ``stage_keys``: the chain of keyed stages (see ``Topology.build``). ``emitter``: the last
    stage produces what it returns instead of scoring (``stream.runtime.emitter``); no scorer,
    model feed or label parking then.
    """

    def __init__(self, settings: Settings, instance_id: str | None = None,
                 feature_set: FeatureSet | None = None,
                 state_backend: str = "rocksdb", serve_metrics: bool = False,
                 stage_keys: tuple[str, ...] = DEFAULT_STAGE_KEYS,
                 emitter: Emitter | None = None) -> None:
        self.settings = settings
        self.instance_id = instance_id or settings.instance_id or socket.gethostname()
        self.exactly_once = settings.processing_guarantee == "exactly_once"
        if feature_set is None:
            if settings.features_file:
                from features.config import load as load_features

                feature_set = load_features(settings.features_file)
            else:
                feature_set = default_feature_set()
        self.topology = Topology.build(settings, feature_set, stage_keys)
        self._emitter = emitter
        # Scores come from a model that the models topic may update (else: fixed or no scorer).
        self._follows_models = emitter is None and settings.model_name != "heuristic"
        # The global model every task scores with: the latest snapshot on the models topic
        # (followed while running), or the spec's untrained model until the trainer publishes.
        self._global_model: Any | None = None
        self._challenger: Any | None = None
        self._model_feed: ModelFeed | None = None
        self.model_version = "heuristic-1" if settings.model_name == "heuristic" else None
        self._parks_labels = self._follows_models
        self._pii = (IdentifierHasher(settings.pii_hash_key.reveal().encode(),
                                      [f.strip() for f in settings.pii_fields.split(",")
                                       if f.strip()])
                     if settings.pii_hash_key else None)
        self.state_backend = state_backend
        self.state_root = Path(settings.state_dir) / settings.group_id / self.instance_id
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics()
        self._serve_metrics = serve_metrics
        self._health: HealthServer | None = None
        self._children: dict[tuple, Any] = {}
        self._decisions: dict[str, int] = {}   # scores by decision since the last commit
        self._e2e_pending: list[int] = []
        self._next_lag_check = 0.0
        self._quality = QualityGauges(self.metrics)
        self._next_quality = time.monotonic() + settings.quality_metrics_interval_s
        self._next_expiry = time.monotonic() + settings.state_expiry_interval_s
        self._by_topic = self.topology.stage_for_topic()
        # Per stage: the names of the features computed before it, in order (see _VALUES).
        self._upstream_names: list[tuple[str, ...]] = []
        names: tuple[str, ...] = ()
        for st in self.topology.stages:
            self._upstream_names.append(names)
            names += tuple(st.feature_names)
        self._tasks: dict[tuple[int, int], Task] = {}
        # Local hand-off (docs/runtime.md, "Local hand-off"): the later-stage tasks that take
        # records forwarded by this worker directly (_local; those still draining their input
        # partition hold them, and are in _armed too), and those waiting for a barrier
        # (_unarmed), taken at the next point where nothing this worker forwarded is in flight.
        self._handoff = settings.local_handoff and len(self.topology.stages) > 1
        self._local: dict[tuple[int, int], Task] = {}
        self._armed: dict[tuple[int, int], Task] = {}
        self._unarmed: set[tuple[int, int]] = set()
        self._forwards_reported = (0, 0)
        self._to_restore: dict[tuple[int, int], TopicPartition] = {}
        self._offsets: dict[tuple[str, int], int] = {}
        self._stopper = GracefulStop("finishing the current batch")
        self._calls: _CallThread | None = None   # made on the first transactional call
        # Changelog restores and offset queries (hand-off barriers, checkpoints): see _reader.
        # On the main consumer's connection a query waited behind its long-poll fetch (the
        # broker answers one connection's requests in order; fetch.wait.max.ms, 500 ms), half a
        # second per task when a worker shut down or lost partitions.
        self._reader_client: Consumer | None = None
        self._in_txn = False
        # Exactly-once: the commit running on the call thread, and meanwhile the outputs of the
        # next batch, held until that commit returns and the next transaction begins (None when
        # no commit is in flight: outputs are produced at once).
        self._inflight: _InFlight | None = None
        self._held: list[tuple] | None = None
        self._batch_records = 0
        self._batch_started = 0.0
        self._delivery_error: str | None = None
        self._delivery_failures = 0
        self._rewind_reason: str | None = None
        # At-least-once epochs (see the module docstring): outputs not yet acknowledged per
        # epoch, and the input offsets each closed epoch may commit once its count is zero.
        self._epoch = 0
        self._undelivered: dict[int, int] = {0: 0}
        self._closed_epochs: deque[tuple[int, dict[tuple[str, int], int]]] = deque()
        # At-least-once flush round in progress (see the module docstring): the tasks still to
        # flush, and the input offsets the round's epoch commits once they all are.
        self._round_tasks: deque[tuple[int, int]] = deque()
        self._round_offsets: dict[tuple[str, int], int] | None = None
        # Exactly-once needs no report per delivered record (a failed one fails the commit):
        # only failures reach _on_delivery, through the producer configuration.
        self._delivery_cb: Callable[..., None] | None = (
            None if self.exactly_once else partial(self._on_epoch_delivery, 0))

        client = f"{settings.client_id}-{self.instance_id}"
        # librdkafka's own log lines go through Python logging (and so the configured format).
        self._consumer = Consumer(settings.consumer_config(
            settings.group_id, **{"client.id": client, "logger": _KAFKA_LOG}))
        self._producer_conf: dict[str, Any] = {"client.id": client, "logger": _KAFKA_LOG,
                                               **producer_defaults(settings)}
        if self.exactly_once:
            self._producer_conf["transactional.id"] = f"{settings.group_id}-{self.instance_id}"
            self._producer_conf["transaction.timeout.ms"] = settings.transaction_timeout_ms
            self._producer_conf["on_delivery"] = self._on_delivery
            self._producer_conf["delivery.report.only.error"] = True
        self._producer = Producer(settings.producer_config(**self._producer_conf))

    # ------------------------------------------------------------------ lifecycle
    def ensure_topics(self) -> None:
        """Create (or check) the project's and the topology's internal topics."""
        ensure_topics(self.settings, project_topics(self.settings)
                      + self.topology.internal_topics(), logger=_KAFKA_LOG)

    def run(self, exit_when_idle: float | None = None,
            max_events: int | None = None) -> WorkerStats:
        if self._serve_metrics and self.settings.metrics_port:
            host, port = self.settings.metrics_host, self.settings.metrics_port
            try:
                self._health = HealthServer(self.metrics, host, port).start()
            except OSError as exc:
                raise ConfigError(f"metrics_port: cannot serve on {host}:{port} ({exc.strerror}); "
                                  "give each worker on a host its own --metrics-port, or 0 for "
                                  "none") from None
            log.info("metrics and health on http://%s:%d", *self._health.address[:2])
        self.ensure_topics()
        if self._follows_models:
            self._model_feed = ModelFeed(self.settings, logger=_KAFKA_LOG)
            self._apply_models(list(self._model_feed.catch_up().values()))
        elif self._emitter is None:
            self.metrics["fraudstream_model_version_info"].labels(
                model="global", version="heuristic-1").info({})
        if self.exactly_once:
            self._init_transactions()
        topics = [st.input_topic for st in self.topology.stages] + [self.settings.topic_labels]
        self._consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("worker %s started (%s): stages %s", self.instance_id,
                 self.settings.processing_guarantee,
                 " -> ".join(f"{s.name}[{len(s.feature_names)}]" for s in self.topology.stages))
        last_activity = time.monotonic()
        batch = self.settings.poll_batch_size
        self.metrics.started = True
        # Feature state is millions of small containers without reference cycles: collect the
        # youngest generation far less often (the default 700 allocations costs ~10-20 % CPU),
        # and after every commit move what survived into the permanent generation (gc.freeze)
        # so the cycle collector never walks the whole cache: a full collection over a few
        # million state objects pauses the loop for up to a second, which was the p99 latency.
        # Objects are still freed by reference counting; cyclic garbage among frozen objects
        # waits for the full collection that runs with the state-expiry sweep.
        gc_thresholds = gc.get_threshold()
        gc.set_threshold(50_000, *gc_thresholds[1:])
        try:
            while not self._stop:
                self.metrics.beat()
                if (self._inflight is not None
                        and self._batch_records >= self.settings.commit_every_records):
                    self._settle_commit()  # enough held: wait for the commit in flight
                if self._to_restore:
                    self._restore_pending()
                    if self._unarmed:  # before the first records, if no transaction is open
                        self._arm_handoffs()
                    last_activity = time.monotonic()
                msgs = self._next_records(batch)
                if self._rewind_reason is not None:
                    self._recover(self._rewind_reason)  # what was just consumed is re-read
                    continue
                if msgs or self._armed:
                    # (An armed task's position can reach its barrier by stepping over a
                    # transaction marker, with no record handed over.)
                    if msgs:
                        last_activity = time.monotonic()
                    try:
                        if msgs:
                            self._handle(msgs)
                        if self._armed:
                            self._take_up_handoffs()
                    except KafkaException as exc:
                        # produce() refuses while the transaction is in an error state.
                        if exc.args[0].fatal() or not self.exactly_once:
                            raise KafkaError(f"producing failed: {exc.args[0].str()}") from None
                        self._recover(exc.args[0].str())
                        continue
                if (not msgs and exit_when_idle is not None and not self._batch_records
                        and self._inflight is None
                        and time.monotonic() - last_activity >= exit_when_idle):
                    log.info("idle for %.1fs: exiting", exit_when_idle)
                    break
                self._producer.poll(0)
                if self._inflight is not None and (self._inflight.done.is_set() or
                                                   time.monotonic() >= self._inflight.deadline):
                    self._settle_commit()
                if self._round_offsets is not None:
                    self._flush_round_step()
                if self._closed_epochs:
                    self._commit_delivered()
                if self._commit_due(drained=not msgs or len(msgs) < batch):
                    # A task waiting for a hand-off barrier needs a point with no transaction
                    # open or in flight: this commit then waits for its round trips.
                    self.commit(wait=self.exactly_once and bool(self._unarmed))
                    if self._expiry_due():
                        self._expire_state()
                        gc.unfreeze()
                        gc.collect()
                    gc.freeze()
                if self._unarmed:
                    self._arm_handoffs()
                if time.monotonic() >= self._next_lag_check:
                    self._record_lag()
                if time.monotonic() >= self._next_quality:
                    self._record_quality()
                if self._model_feed is not None:
                    updates = self._model_feed.poll()
                    if updates:
                        self._apply_models(updates)
                if (max_events is not None
                        and self.stats.scored + self.stats.emitted >= max_events):
                    break
            self.commit(wait=True)
            self._close_tasks(list(self._tasks), checkpoint=True)
        finally:
            gc.set_threshold(*gc_thresholds)
            gc.unfreeze()
            self._shutdown_clients()
            if self._model_feed is not None:
                self._model_feed.close()
            if self._health is not None:
                self._health.stop()
        return self.stats

    def _shutdown_clients(self) -> None:
        if self._calls is not None:
            self._calls.stop()
            self._calls = None
        try:
            if self._reader_client is not None:
                self._reader_client.close()
                self._reader_client = None
            self._consumer.close()
        finally:
            self._producer.flush(30)
            for task in self._tasks.values():  # only after an error: no checkpoint
                task.store.close()
            self._tasks.clear()
            # The clients hold bound methods of this worker (callbacks): drop them so their
            # connections close now rather than whenever the cycle collector runs.
            del self._producer, self._consumer

    # ------------------------------------------------------------------ processing
    def _handle(self, msgs: list[Message]) -> None:
        """Process consumed records in order (the loop's per-record lookups hoisted: two to
        three records per event)."""
        offsets, by_topic, tasks, stats = self._offsets, self._by_topic, self._tasks, self.stats
        handle_stage = self._handle_stage
        for msg in msgs:
            err = msg.error()
            if err is not None:
                consumer_error(err, "consuming")
                continue
            if not self._in_txn and self.exactly_once and self._held is None:
                self._producer.begin_transaction()
                self._in_txn = True
            if not self._batch_records:
                self._batch_started = time.monotonic()
            self._batch_records += 1
            stats.consumed += 1
            topic, partition = msg.topic(), msg.partition()
            offsets[(topic, partition)] = msg.offset() + 1
            stage = by_topic.get(topic)
            if stage is None:  # the labels topic
                self._route_label(msg)
                continue
            task = tasks.get((stage.index, partition))
            if task is None:  # cannot happen while paused-until-restored holds; never drop
                raise KafkaError(f"record from {topic}[{partition}] without an open task")
            # Counters are added up per commit (a Prometheus increment takes a lock); the
            # processing-time histogram samples one record in _PROCESSING_SAMPLE.
            task.consumed += 1
            if task.consumed % _PROCESSING_SAMPLE:
                handle_stage(msg, stage, task)
                continue
            started = time.perf_counter()
            try:
                handle_stage(msg, stage, task)
            finally:
                task.processing_metric.observe(time.perf_counter() - started)

    def _handle_stage(self, msg: Message, stage: Stage, task: Task) -> None:
        if stage.index == 0:
            try:
                event_dict = decode_event_dict(msg.value(), self.settings.max_message_bytes)
            except DecodeError as exc:
                self._dead_letter(msg, exc)
                return
            if self._pii is not None:
                self._pii.apply(event_dict)
            self._advance(task, event_dict, {}, msg.timestamp()[1])
            return
        record = wire.loads(msg.value())
        if _LABEL in record:
            self._take_label(task, record[_LABEL])
            return
        values = record.get(_VALUES)
        if values is None:
            upstream = record[_FEATURES]
        else:
            names = self._upstream_names[stage.index]
            if len(values) != len(names):
                raise ConfigError(f"{msg.topic()}[{msg.partition()}]@{msg.offset()}: "
                                  f"{len(values)} feature values for {len(names)} features: "
                                  "the workers of this group run different feature sets")
            upstream = dict(zip(names, values))
        self._advance(task, record[_EVENT], upstream, record.get(_APPENDED, 0))

    def _advance(self, task: Task, event: dict[str, Any], upstream: dict[str, Any],
                 appended_ms: int) -> None:
        """Compute this stage's features, then forward to the next stage or score."""
        engine = task.engine
        features = engine.process(event) if engine is not None else {}
        if upstream:  # decoded from the repartition record just now: ours to extend in place
            upstream.update(features)
            merged = upstream
        else:
            merged = features
        nxt = task.next_stage
        if nxt is not None:
            key = str(event.get(nxt.key_field) or event["user_id"]).encode()
            if self._local and key:
                target = self._local.get((nxt.index, partition_for(key, self.settings.partitions)))
                if target is not None:
                    if target.held is not None:  # still draining its partition: in order, later
                        target.held.append((key, event, merged, appended_ms))
                        return
                    self.stats.handed_off += 1
                    self._advance(target, event, merged, appended_ms)
                    return
            if task.forwards_values is None:
                task.forwards_values = tuple(merged) == self._upstream_names[nxt.index]
            self._forward(nxt, key, event, merged, appended_ms, task.forwards_values)
            return
        if appended_ms > 0:
            self._e2e_pending.append(appended_ms)
        if self._emitter is not None:
            self._produce(self.settings.topic_scores, *self._emitter.emit(event, merged))
            self.stats.emitted += 1
            return
        out = task.scorer.score(merged, event)
        user_id, merchant_id = event["user_id"], event.get("merchant_id")
        decision = out.decision or decide(out.score, self.settings, merchant_id)
        self._produce(self.settings.topic_scores, user_id.encode(),
                      encode_score(event["event_id"], user_id, merchant_id, event["event_time"],
                                   out.score, decision, out.version, out.reasons,
                                   time.time_ns() // 1_000_000))
        self.stats.scored += 1
        self._decisions[decision] = self._decisions.get(decision, 0) + 1
        if task.parked:
            key = _PARKED + event["event_id"].encode()
            parked = task.store.get(key)
            if parked is not None:  # its label overtook it: learn now that the vector exists
                task.store.delete(key)
                self._apply_label(task, parked[1])

    def _forward(self, stage: Stage, key: bytes, event: dict[str, Any], merged: dict[str, Any],
                 appended_ms: int, as_values: bool, partition: int = _ANY_PARTITION) -> None:
        """Produce an event with its features so far to ``stage``'s repartition topic."""
        if as_values:
            record = {_EVENT: event, _VALUES: list(merged.values()), _APPENDED: appended_ms}
        else:
            record = {_EVENT: event, _FEATURES: merged, _APPENDED: appended_ms}
        self._produce(stage.input_topic, key, wire.dumps(record), partition)
        self.stats.forwarded += 1

    def _take_label(self, task: Task, label: dict[str, Any]) -> None:
        """A label for ``task``, read from its repartition topic or handed over locally."""
        self.stats.labels += 1
        self._child("fraudstream_labels_total", task.stage.name).inc()
        self._apply_label(task, label)

    def _apply_label(self, task: Task, label: dict[str, Any]) -> None:
        """Fold a label into the stage's features and, on the last stage, learn from it.

        A label can overtake its event (a replay at full speed, a review within seconds):
        the last stage then parks it under the event id, in the partition's state, until the
        event is scored.
        """
        if task.scorer is not None:
            status, example = task.scorer.learn(label)
            if status == "unknown" and self._parks_labels:
                task.store.put(_PARKED + str(label["event_id"]).encode(),
                               [int(label["label_time"]), label], cache=False)
                task.parked = True
                self.stats.labels_parked += 1
                return
            self._emit_example(example)
        if task.engine is not None:
            task.engine.process_label(label)

    def _route_label(self, msg: Message) -> None:
        try:
            label_dict = decode_label_dict(msg.value(), self.settings.max_message_bytes)
        except DecodeError as exc:
            self._dead_letter(msg, exc)
            return
        if self._pii is not None:
            self._pii.apply(label_dict)
        payload = None
        for stage in self.topology.stages:
            if stage.receives_labels and stage.index > 0:
                key = str(label_dict.get(stage.key_field) or label_dict["merchant_id"]).encode()
                target = None
                if self._local and key:
                    target = self._local.get((stage.index,
                                              partition_for(key, self.settings.partitions)))
                if target is not None:  # this worker's task: hand it over (a copy per stage)
                    if target.held is not None:
                        target.held.append((key, None, dict(label_dict), 0))
                    else:
                        self._take_label(target, dict(label_dict))
                    continue
                if payload is None:
                    payload = wire.dumps({_LABEL: label_dict})
                self._produce(stage.input_topic, key, payload)
        if len(self.topology.stages) == 1:
            # A one-stage topology has no repartition topic: labels apply directly.
            task = self._tasks.get((0, msg.partition()))
            if task is not None:
                self._apply_label(task, label_dict)

    def _dead_letter(self, msg: Message, error: DecodeError) -> None:
        self.stats.dead_lettered += 1
        reasons = self.stats.dead_letter_reasons
        reasons[error.code] = reasons.get(error.code, 0) + 1
        self._child("fraudstream_dead_letters_total", error.code).inc()
        log.info("dead letter %s[%d]@%d: %s", msg.topic(), msg.partition(), msg.offset(), error,
                 extra={"topic": msg.topic(), "partition": msg.partition(),
                        "offset": msg.offset(), "reason": error.code})
        self._produce(self.settings.topic_dead_letter, msg.key(), msg.value(),
                      headers=dead_letter_headers(msg, error))

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 partition: int = _ANY_PARTITION, headers: list | None = None) -> None:
        # Record timestamps stay the produce time; event time is in the payload (see publisher).
        # Per record: positional arguments (topic, value, key, partition, on_delivery), no
        # keyword dict unless there are headers; -1 lets the partitioner choose.
        held = self._held
        if held is not None:  # exactly-once, a commit in flight: produced when it returns
            held.append((topic, key, value, partition, headers))
            return
        cb = self._delivery_cb
        if cb is not None:  # at-least-once: count the epoch's outputs (exactly-once: see below)
            self._undelivered[self._epoch] += 1
        while True:
            try:
                if headers:
                    self._producer.produce(topic, value, key, partition, cb, headers=headers)
                else:
                    self._producer.produce(topic, value, key, partition, cb)
                return
            except BufferError:
                self._producer.poll(0.05)  # wait for room; never drop an output

    def _on_epoch_delivery(self, epoch: int, err: _RdKafkaError | None, msg: Message) -> None:
        self._undelivered[epoch] -= 1
        if err is not None:
            self._on_delivery(err, msg)

    def _on_delivery(self, err: _RdKafkaError | None, msg: Message) -> None:
        if err is not None:
            # Counted and logged once per commit: a broker outage fails thousands at once.
            self._delivery_failures += 1
            if self._delivery_error is None:
                self._delivery_error = f"{msg.topic()}: {err.str()}"

    def _next_records(self, batch: int) -> list[Message]:
        """Up to ``batch`` records, waiting only while none has arrived.

        ``Consumer.consume(n, timeout)`` blocks until it has ``n`` records or the timeout
        passes, which would add the whole timeout to every record's latency whenever fewer than
        ``n`` are coming. So: take what is already fetched; if nothing is, wait for one record
        (no longer than until the open batch is due to commit), then take what came with it.
        """
        msgs = self._consumer.consume(batch, 0)
        if msgs:
            return msgs
        wait = 0.05
        if self._round_offsets is not None:  # a flush round goes on in the next iterations
            wait = 0.0
        elif self._inflight is not None:  # look again soon: the held outputs wait for it
            wait = _INFLIGHT_WAIT_S
        elif self._batch_records:
            age_ms = (time.monotonic() - self._batch_started) * 1000
            wait = max(0.0, min(wait, (self.settings.commit_interval_ms - age_ms) / 1000))
        msgs = self._consumer.consume(1, wait)
        if msgs and batch > 1:
            msgs.extend(self._consumer.consume(batch - 1, 0))
        return msgs

    # ------------------------------------------------------------------ committing
    def _commit_due(self, drained: bool = False) -> bool:
        """Whether to commit now: the batch is ``commit_interval_ms`` old or holds
        ``commit_every_records`` records, or (exactly-once only) the input is drained and the
        batch is at least ``commit_min_interval_ms`` old: a transaction's outputs are invisible
        until it commits, so an idle or lightly loaded worker commits at once rather than after
        the full interval, while a busy one batches. At-least-once outputs are visible when
        delivered; committing early there would only cost round trips."""
        if (not self._batch_records or self._round_offsets is not None
                or self._inflight is not None):
            return False
        age_ms = (time.monotonic() - self._batch_started) * 1000
        return (self._batch_records >= self.settings.commit_every_records
                or age_ms >= self.settings.commit_interval_ms
                or (drained and self.exactly_once
                    and age_ms >= self.settings.commit_min_interval_ms))

    def _expiry_due(self) -> bool:
        interval = self.settings.state_expiry_interval_s
        return bool(interval) and time.monotonic() >= self._next_expiry

    def _expire_state(self) -> None:
        """Delete entries idle beyond their TTL (in event time), right after a commit.

        Running just after a commit matters: the deletions become changelog tombstones in the
        next transaction, and a crash before it leaves no checkpoint, so the store is rebuilt
        from the changelog as usual. Everything stored starts with its event time; the horizon is
        the longest TTL that applies (features' TTL plus grace, scored snapshots' TTL).
        """
        self._next_expiry = time.monotonic() + self.settings.state_expiry_interval_s
        for task in self._tasks.values():
            if task.engine is None or task.engine.watermark < 0:
                continue
            fs = task.stage.features
            horizon = max(fs.ttl_ms + fs.grace_ms, SNAPSHOT_TTL_MS)
            removed = task.store.expire(task.engine.watermark - horizon)
            if removed:
                self.stats.expired += removed
                log.info("task %s-%d: %d idle entries expired", task.stage.name, task.partition,
                         removed)
                self._commit_pending_changes()

    def _commit_pending_changes(self) -> None:
        """State changed outside a batch (expiry): open one, so that a commit follows and writes
        the changes to the changelogs even if no record comes (with the local hand-off a batch's
        commit is often the last before a quiet spell or a shutdown)."""
        if self.exactly_once and not self._in_txn and self._held is None:
            # (With a commit in flight, _settle_commit begins the transaction for this batch.)
            self._producer.begin_transaction()
            self._in_txn = True
        if not self._batch_records:
            self._batch_started = time.monotonic()
            self._batch_records = 1

    def _emit_example(self, example: dict[str, Any] | None) -> None:
        """A label joined its scored snapshot: send the example to the trainer (same txn)."""
        if example is None:
            return
        # One partition (one active trainer): no key needed.
        self._produce(self.settings.topic_training, None, wire.dumps(example))
        self.stats.examples += 1

    def _apply_models(self, records: list[ModelRecord]) -> None:
        """Load new global/challenger snapshots into every scoring task, between two records."""
        for rec in records:
            if rec.role == ROLE_GLOBAL and rec.data:
                model = GlobalModel.from_bytes(rec.data)
                if self._global_model is not None and model.version == self.model_version:
                    continue
                self._global_model = model
                self.model_version = model.version
                for task in self._tasks.values():
                    if task.scorer is not None:
                        task.scorer.load_global(model)
                log.info("scoring with global model %s", model.version)
                self.metrics["fraudstream_model_version_info"].labels(
                    model="global", version=model.version).info({})
            elif rec.role == ROLE_CHALLENGER:
                self._challenger = GlobalModel.from_bytes(rec.data) if rec.data else None
                for task in self._tasks.values():
                    if isinstance(task.scorer, ModelScorer):
                        task.scorer.load_challenger(self._challenger)
                log.info("challenger %s", self._challenger.version if self._challenger
                         else "stopped")

    def _flush_changelogs(self) -> None:
        for task in self._tasks.values():
            self._flush_task(task)

    def _flush_task(self, task: Task) -> None:
        """Step 3 for one task: its dirty state into RocksDB and its changelog."""
        # Three to five changelog records per event: produced here directly rather than through
        # _produce (one Python call less per record); a full local queue falls back to it.
        produce, cb = self._producer.produce, self._delivery_cb
        if task.scorer is not None:
            task.scorer.flush()  # per-merchant models into the store, then the changelog
        changes = task.store.flush()
        topic, partition = task.stage.changelog_topic, task.partition
        produced = 0
        for key, value in changelog.records(changes, task.store.stored, task.migrate):
            try:
                produce(topic, value, key, partition, cb)
                produced += 1
            except BufferError:
                if cb is not None:  # at-least-once: count before delivery reports are served
                    self._undelivered[self._epoch] += produced
                produced = 0
                self._produce(topic, key, value, partition)
        if cb is not None:
            self._undelivered[self._epoch] += produced

    def _flush_round_step(self, everything: bool = False) -> None:
        """At-least-once: flush the next task of the round in progress (``everything``: all
        that are left, and whatever changed since the round began); when none is left, the
        round's offsets wait for its epoch's outputs (see the module docstring)."""
        if everything:
            self._round_offsets.update(self._offsets)
            self._offsets.clear()
            self._flush_changelogs()
            self._round_tasks.clear()
        while self._round_tasks:
            task = self._tasks.get(self._round_tasks.popleft())
            if task is not None:  # else closed meanwhile (lost: its offsets are gone too)
                self._flush_task(task)
                break
        if not self._round_tasks:
            offsets, self._round_offsets = self._round_offsets, None
            self._close_epoch(offsets)

    def commit(self, wait: bool = False) -> None:
        """Steps 3-5 of the commit protocol (see the module docstring).

        Under exactly-once steps 4 and 5 run on the call thread while the loop goes on (settled
        by ``_settle_commit``), unless ``wait``: then a commit in flight is waited for and
        everything is committed now. Under at-least-once the batch's offsets are committed once
        its outputs are delivered, later (from the main loop) unless ``wait``: then everything
        is flushed and committed now.
        """
        if self._rewind_reason is not None:
            self._recover(self._rewind_reason)
            return
        if self._inflight is not None:
            self._settle_commit()  # a failed one rewinds: nothing is left to commit then
        if not self._batch_records and not self._in_txn:
            if wait and self._round_offsets is not None:
                self._flush_round_step(everything=True)
            if wait and self._closed_epochs:
                self._drain_epochs()
            return
        if self._armed:
            self._send_held_to_topic()
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        commit_started = time.perf_counter()
        if self.exactly_once:
            try:
                self._flush_changelogs()
                metadata = self._consumer.consumer_group_metadata()
                if not wait:
                    self._start_commit(offsets, metadata, commit_started)
                    return
                self._guarded(lambda: self._producer.send_offsets_to_transaction(
                    offsets, metadata, _TXN_CALL_S), "send_offsets_to_transaction")
                self._guarded(self._commit_transaction, "commit_transaction")
            except _Stuck as stuck:
                self._replace_stuck_producer(str(stuck))
                return
            except KafkaException as exc:
                self._transaction_failed(exc.args[0])
                return
            self._in_txn = False
        else:
            if self._round_offsets is None:  # a round begins (commit_due waits for the last)
                self._round_offsets = dict(self._offsets)
                self._offsets.clear()
                self._round_tasks.extend(self._tasks)
            self._flush_round_step(everything=wait)
            if wait:
                self._drain_epochs()
        self._offsets.clear()
        self._batch_records = 0
        self._committed(commit_started, self._e2e_pending)
        self._e2e_pending = []

    def _committed(self, started: float, e2e_pending: list[int]) -> None:
        """A commit is done: its counters and timings."""
        self.stats.commits += 1
        self._count_late()
        self._count_records()
        m = self.metrics
        m["fraudstream_commit_seconds"].observe(time.perf_counter() - started)
        m["fraudstream_commits_total"].inc()
        if e2e_pending:
            now_ms = time.time() * 1000
            e2e = m["fraudstream_end_to_end_seconds"]
            for appended in e2e_pending:
                e2e.observe(max(0.0, now_ms - appended) / 1000)

    def _start_commit(self, offsets: list[TopicPartition], metadata: Any,
                      started: float) -> None:
        """Exactly-once steps 4 and 5 on the call thread; the loop goes on meanwhile, holding
        the next batch's outputs (steps 6 and 7 in the module docstring)."""
        if self._calls is None:
            self._calls = _CallThread()
        producer, step = self._producer, ["send_offsets_to_transaction"]

        def send_and_commit() -> None:
            producer.send_offsets_to_transaction(offsets, metadata, _TXN_CALL_S)
            step[0] = "commit_transaction"
            self._commit_transaction(producer)

        done, outcome = self._calls.submit(send_and_commit)
        # Two calls, each with the watchdog's allowance.
        self._inflight = _InFlight(done, outcome, step, time.monotonic() + 2 * _WATCHDOG_S,
                                   started, self._e2e_pending)
        self._e2e_pending = []
        self._held = []
        self._in_txn = False
        self._offsets.clear()
        self._batch_records = 0

    def _await_commit(self) -> BaseException | None:
        """Wait for the commit in flight (up to its deadline); what it raised, or None when it
        committed (then counted). ``_Stuck`` when it did not return in time."""
        inflight, self._inflight = self._inflight, None
        if not inflight.done.wait(max(0.0, inflight.deadline - time.monotonic())):
            self._calls = None  # blocked in the call: abandoned, the next call gets a new one
            raise _Stuck(inflight.step[0])
        error = inflight.outcome[0]
        if error is None:
            self._committed(inflight.started, inflight.e2e)
        return error

    def _settle_commit(self) -> None:
        """Step 7: wait for the commit in flight; when it committed, begin the next transaction
        and produce the held outputs into it; when it failed, rewind (held work included)."""
        try:
            error = self._await_commit()
        except _Stuck as stuck:
            self._replace_stuck_producer(str(stuck))
            return
        if error is not None:
            if not isinstance(error, KafkaException):
                raise error
            self._transaction_failed(error.args[0])
            return
        held, self._held = self._held, None
        if not self._batch_records:
            return
        try:
            self._producer.begin_transaction()
            self._in_txn = True
            for topic, key, value, partition, headers in held:
                self._produce(topic, key, value, partition, headers)
        except KafkaException as exc:
            self._transaction_failed(exc.args[0])

    def _transaction_failed(self, err: _RdKafkaError) -> None:
        if err.fatal():
            self._in_txn = False
            self._held = None
            raise KafkaError(f"transaction failed: {err.str()}") from None
        # Abortable, or timed out (outputs expired while the broker was away): either way this
        # transaction cannot be trusted to commit; start again from the last one.
        self._recover(err.str())

    def _replace_stuck_producer(self, stuck: str) -> None:
        """A librdkafka call outlived its own timeout (seen when the group coordinator
        disappears mid-call): fence the stuck producer, then rewind."""
        self._fence_stuck_producer(stuck)
        self._recover(stuck, abort=False)

    def _fence_stuck_producer(self, stuck: str) -> None:
        """A fresh producer under the same transactional id: its ``init_transactions`` fences
        the stuck one and aborts whatever transaction it left open."""
        log.error("%s did not return within %ss: replacing the producer", stuck, _WATCHDOG_S)
        self._producer = Producer(self.settings.producer_config(**self._producer_conf))
        self._init_transactions()

    def _count_late(self) -> None:
        """Add each task's late events since the last commit to the counter (per commit, not
        per record: the engine counts them anyway)."""
        for task in self._tasks.values():
            if task.engine is not None and task.engine.stats.late != task.late_reported:
                self._child("fraudstream_late_events_total", task.stage.name).inc(
                    task.engine.stats.late - task.late_reported)
                task.late_reported = task.engine.stats.late

    def _count_records(self) -> None:
        """Add records consumed and scores by decision since the last commit to their counters."""
        for task in self._tasks.values():
            if task.consumed != task.consumed_reported:
                task.consumed_metric.inc(task.consumed - task.consumed_reported)
                task.consumed_reported = task.consumed
        forwards = (self.stats.forwarded, self.stats.handed_off)
        if forwards != self._forwards_reported:
            for path, now, before in zip(("topic", "handoff"), forwards, self._forwards_reported):
                if now != before:
                    self._child("fraudstream_forwards_total", path).inc(now - before)
            self._forwards_reported = forwards
        if self._decisions:
            for decision, n in self._decisions.items():
                self._child("fraudstream_scores_total", decision).inc(n)
            self._decisions.clear()

    def _close_epoch(self, offsets: dict[tuple[str, int], int]) -> None:
        """At-least-once: ``offsets`` wait for the current epoch's outputs; a new epoch opens."""
        self._closed_epochs.append((self._epoch, offsets))
        self._epoch += 1
        self._undelivered[self._epoch] = 0
        self._delivery_cb = partial(self._on_epoch_delivery, self._epoch)

    def _drain_epochs(self) -> None:
        """At-least-once: wait for every output, then commit all closed epochs' offsets now."""
        if self._producer.flush(60):
            raise KafkaError(f"outputs not all delivered within 60s ({len(self._producer)} "
                             "waiting); their input offsets are not committed")
        self._commit_delivered(asynchronous=False)

    def _commit_delivered(self, asynchronous: bool = True) -> None:
        """At-least-once: commit the offsets of the oldest closed epochs whose outputs are all
        acknowledged (in order: an epoch waits for every earlier one)."""
        if self._delivery_error:
            raise KafkaError(f"outputs not delivered ({self._delivery_failures}, first: "
                             f"{self._delivery_error}); their input offsets are not committed, "
                             "so a restart processes those records again")
        ready: dict[tuple[str, int], int] = {}
        epochs = self._closed_epochs
        while epochs and self._undelivered[epochs[0][0]] == 0:
            epoch, offsets = epochs.popleft()
            del self._undelivered[epoch]
            ready.update(offsets)
        if ready:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ready.items()],
                                  asynchronous=asynchronous)

    def _init_transactions(self) -> None:
        try:
            self._guarded(lambda: self._producer.init_transactions(_TXN_CALL_S),
                          "init_transactions")
        except (KafkaException, _Stuck) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else str(exc)
            raise KafkaError(f"cannot initialise transactions: {detail}") from None

    def _guarded(self, call: Callable[[], None], name: str) -> None:
        """Run a blocking transactional call on the helper thread, giving up after a deadline."""
        if self._calls is None:
            self._calls = _CallThread()
        try:
            error = self._calls.run(call, _WATCHDOG_S)
        except _Stuck:
            self._calls = None  # blocked in the call: abandoned, the next call gets a new one
            raise _Stuck(name) from None
        if error is not None:
            raise error

    def _commit_transaction(self, producer: Producer | None = None) -> None:
        """Commit, retrying while the outcome is unknown (e.g. the coordinator is moving)."""
        producer = producer or self._producer
        deadline = time.monotonic() + _WATCHDOG_S - _TXN_CALL_S
        while True:
            try:
                producer.commit_transaction(_TXN_CALL_S)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    log.warning("transaction commit will be retried: %s", err.str())
                    continue
                raise

    def _committed_offsets(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets, waiting out a coordinator that is away for a while."""
        deadline = time.monotonic() + 300
        while True:
            try:
                return self._consumer.committed(partitions, timeout=30)
            except KafkaException as exc:
                if exc.args[0].fatal() or time.monotonic() >= deadline:
                    raise KafkaError(f"cannot read committed offsets: {exc.args[0].str()}") \
                        from None
                log.warning("committed offsets not available yet (%s); retrying",
                            exc.args[0].str())

    def _recover(self, reason: str, abort: bool = True) -> None:
        """Abort, forget uncommitted state, rewind input to the committed offsets, restore."""
        if self._delivery_failures:
            log.warning("%d outputs of this transaction were not delivered (first: %s)",
                        self._delivery_failures, self._delivery_error)
        log.warning("aborting the transaction (%s): rewinding to the last commit", reason)
        self._delivery_failures = 0
        # A commit in flight finishes first (committed or not); the held work of the next batch
        # is dropped with the rest. Abort only what is still open then.
        open_txn = True
        if self._inflight is not None:
            try:
                failed = self._await_commit() is not None
                open_txn = self._in_txn or failed
            except _Stuck as stuck:
                self._fence_stuck_producer(str(stuck))
                open_txn = False
        self._held = None
        if abort and open_txn:
            try:
                self._guarded(lambda: self._producer.abort_transaction(_TXN_CALL_S),
                              "abort_transaction")
            except (_Stuck, KafkaException) as exc:
                # INVALID_TXN_STATE on abort (fatal to librdkafka) is what a coordinator that
                # restarted answers when it no longer holds the transaction as open: seen when
                # the broker restarts mid-transaction. Nothing else fences us there, so it is
                # handled as below; any other fatal error (fenced by another instance) stops.
                if (isinstance(exc, KafkaException) and exc.args[0].fatal()
                        and exc.args[0].code() != _RdKafkaError.INVALID_TXN_STATE):
                    raise KafkaError(f"cannot abort the transaction: {exc.args[0].str()}") \
                        from None
                # A producer that can neither commit nor abort is replaced; the new one's
                # init_transactions fences it and aborts whatever it left open.
                self._producer = Producer(self.settings.producer_config(**self._producer_conf))
                self._init_transactions()
        self._in_txn = False
        self._offsets.clear()
        self._batch_records = 0
        self._delivery_error = None
        self._delivery_failures = 0
        self._rewind_reason = None
        self._e2e_pending.clear()
        self.stats.recoveries += 1
        self._child("fraudstream_recoveries_total",
                    "stuck_call" if not abort else "aborted").inc()
        # Without a checkpoint each task is rebuilt from its changelog when reopened.
        for task in self._tasks.values():
            task.store.close()
            self._forget_task(task)
        self._tasks.clear()
        # What tasks held was processed in the aborted transaction: its input is read again.
        self._local.clear()
        self._armed.clear()
        self._unarmed.clear()
        assignment = self._consumer.assignment()
        committed = self._committed_offsets(assignment)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            stage = self._by_topic.get(tp.topic)
            if stage is not None:
                self._to_restore[(stage.index, tp.partition)] = TopicPartition(tp.topic,
                                                                               tp.partition)
        paused = list(self._to_restore.values())
        if paused:
            self._consumer.pause(paused)

    # ------------------------------------------------------------------ tasks and state
    def _task_dir(self, stage: Stage, partition: int) -> Path:
        return self.state_root / f"{stage.name}-{partition}"

    def _open_task(self, stage: Stage, partition: int, restorer: Consumer) -> Task:
        path = self._task_dir(stage, partition)
        checkpoint = path.with_suffix(".checkpoint")
        path.parent.mkdir(parents=True, exist_ok=True)
        start = consume_checkpoint(checkpoint, stage.changelog_topic, partition)
        if start is None and path.exists():
            shutil.rmtree(path)  # no trustworthy checkpoint: rebuild from the changelog
        # No write-ahead log: the changelog is the durable copy. A store is trusted again only
        # through a checkpoint, written after a clean close, and closing flushes the memtables;
        # after a crash the store is rebuilt from the changelog whatever RocksDB holds.
        store = open_store(self.state_backend, path, batch_size=_WRITE_BEHIND + _WRITE_CHUNK,
                           keep=_WRITE_BEHIND,
                           cache_entries=self.settings.state_cache_entries,
                           options=replace(
                               TASK_ROCKS,
                               row_cache_bytes=self.settings.state_row_cache_mb << 20))
        legacy: set[bytes] = set()
        restored = self._restore(restorer, store, stage, partition, start or 0, legacy)
        self.stats.restored_records += restored
        if legacy:
            log.info("task %s-%d: %d events in the old changelog layout, rewritten in the next "
                     "commits", stage.name, partition, len(legacy))
        log.info("task %s-%d ready: %d changelog records restored from offset %d", stage.name,
                 partition, restored, start or 0,
                 extra={"stage": stage.name, "partition": partition, "restored": restored})
        scorer = None
        if stage is self.topology.last and self._emitter is None:
            s = self.settings
            scorer = make_scorer(s.model_name, store, s.review_threshold, s.block_threshold,
                                 self._global_model, s.merchant_threshold_map(),
                                 budget=s.review_budget, merchant_models=s.merchant_models)
            if self._challenger is not None and isinstance(scorer, ModelScorer):
                scorer.load_challenger(self._challenger)
        nxt = (self.topology.stages[stage.index + 1] if stage is not self.topology.last
               else None)
        # Parked labels restored with the store (rare: a label that overtook its event).
        parked = scorer is not None and self._parks_labels and store.has_prefix(_PARKED)
        task = Task(stage, partition, store, scorer, legacy, nxt, parked)
        task.consumed_metric = self._child("fraudstream_events_consumed_total", stage.name,
                                           partition)
        task.processing_metric = self._child("fraudstream_processing_seconds", stage.name)
        return task

    def _restore(self, restorer: Consumer, store: CachedStore, stage: Stage, partition: int,
                 start: int, legacy: set[bytes]) -> int:
        """Replay the changelog from ``start`` into ``store``; how many records were read.
        Event ids of old-layout records go into ``legacy`` (``stream.runtime.changelog``)."""
        topic = stage.changelog_topic
        tp = TopicPartition(topic, partition)
        try:
            low, high = _watermarks(restorer, tp)
            first = max(start, low)
            # Gauges per batch, published at most every second or RESTORE_PROGRESS_RECORDS.
            progress = RestoreProgress(self.metrics, stage.name, partition, first, high)
            if high <= first:
                return progress.finish()
            restorer.assign([TopicPartition(topic, partition, first)])
            puts: dict[bytes, bytes] = {}
            deletes: set[bytes] = set()
            done = False
            while not done:
                # consume() waits for all 5000 or the timeout: keep the timeout short and stop
                # as soon as the fetch position passes the end read above (it steps over
                # transaction markers, which the last record's offset does not).
                msgs = restorer.consume(5000, 0.02)
                read = 0
                position = -1
                batch: list[tuple[bytes, bytes | None]] = []
                for msg in msgs:
                    err = msg.error()
                    if err is not None:
                        if err.code() == _RdKafkaError._PARTITION_EOF:
                            done = True
                            continue
                        raise KafkaError(f"restoring {topic}[{partition}]: {err.str()}")
                    batch.append((msg.key(), msg.value()))
                    read += 1
                    position = msg.offset() + 1
                try:
                    changelog.apply(batch, puts, deletes, legacy)
                except ChangelogFormatError as exc:
                    raise ChangelogFormatError(f"restoring {topic}[{partition}] before offset "
                                               f"{position}: {exc}") from None
                if not done and restorer.position([tp])[0].offset >= high:
                    done = True
                if len(puts) + len(deletes) >= 50_000 or done:
                    store.backend.write(puts, list(deletes))
                    puts, deletes = {}, set()
                progress.advance(read, position)
        finally:
            restorer.unassign()
        return progress.finish()

    def _restore_pending(self) -> None:
        pending, self._to_restore = self._to_restore, {}
        restorer = self._reader()
        for (stage_index, partition), tp in pending.items():
            stage = self.topology.stages[stage_index]
            self._tasks[(stage_index, partition)] = self._open_task(stage, partition, restorer)
            self._consumer.resume([tp])
        if self._handoff:
            self._handoff_after_open(list(pending))
        self._record_assignment()

    def _record_assignment(self) -> None:
        """Gauges of assigned and restoring tasks per stage (readiness follows the latter)."""
        m = self.metrics
        m.restoring = len(self._to_restore)
        for stage in self.topology.stages:
            m["fraudstream_assigned_partitions"].labels(stage=stage.name).set(
                sum(1 for (i, _) in self._tasks if i == stage.index)
                + sum(1 for (i, _) in self._to_restore if i == stage.index))
            m["fraudstream_restoring_partitions"].labels(stage=stage.name).set(
                sum(1 for (i, _) in self._to_restore if i == stage.index))

    def _record_lag(self) -> None:
        """Consumer lag per assigned partition, from the client's cached watermarks (no I/O)."""
        self._next_lag_check = time.monotonic() + 5.0
        lag = self.metrics["fraudstream_consumer_lag"]
        try:
            positions = self._consumer.position(self._consumer.assignment())
        except KafkaException:
            return
        for tp in positions:
            try:
                _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0 and tp.offset >= 0:
                lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, high - tp.offset))

    def _record_quality(self) -> None:
        """Rolling quality of the models, pooled over the scoring tasks (every
        ``quality_metrics_interval_s``: pooling sorts every task's windows)."""
        self._next_quality = time.monotonic() + self.settings.quality_metrics_interval_s
        monitors = {f"{t.stage.name}-{t.partition}": t.scorer.monitor
                    for t in self._tasks.values()
                    if t.scorer is not None and t.scorer.monitor is not None}
        self._log_drifts(self._quality.update(monitors, self.settings.review_budget))
        self._record_state_size()

    def _record_state_size(self) -> None:
        """Entries and bytes of the local stores per stage (RocksDB's own estimates plus the
        writes a store still buffers: cheap)."""
        entries: dict[str, int] = {s.name: 0 for s in self.topology.stages}
        size: dict[str, int] = dict(entries)
        for task in self._tasks.values():
            entries[task.stage.name] += task.store.entry_count()
            size[task.stage.name] += task.store.size_bytes()
        for stage, n in entries.items():
            self._child("fraudstream_state_entities", stage).set(n)
            self._child("fraudstream_state_bytes", stage).set(size[stage])

    def _log_drifts(self, alarms: dict[str, int]) -> None:
        for model, n in sorted(alarms.items()):
            log.warning("drift alarm on model %s (%d since the last check): its per-label log loss "
                        "changed; see the fraudstream_quality_* metrics", model, n,
                        extra={"model": model, "alarms": n})

    def _forget_task(self, task: Task) -> None:
        """A task closes: its restore gauges go, and the drift alarms its monitor raised since
        the last quality update are still counted."""
        RestoreProgress.forget(self.metrics, task.stage.name, task.partition)
        monitor = task.scorer.monitor if task.scorer is not None else None
        if monitor is not None:
            self._log_drifts(self._quality.retire(f"{task.stage.name}-{task.partition}",
                                                  monitor))

    def _child(self, name: str, *labels: Any) -> Any:
        """A labelled metric child, cached: label resolution costs more than the increment."""
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self.metrics[name].labels(*[str(v) for v in labels])
            self._children[key] = child
        return child

    def _reader(self) -> Consumer:
        """The worker's second consumer, made on first use and kept: it restores changelogs
        (assigned a partition at a time, unassigned after) and answers offset queries. It has
        no group membership and the main consumer's isolation level (read_committed), so its
        offsets are the ones the main consumer would see; being another connection, its
        queries never wait behind the main consumer's long-poll fetch.
        ``fetch.wait.max.ms``: at a changelog's end the broker holds a fetch open for up to
        this long, and the next task's partition cannot be fetched until it returns."""
        if self._reader_client is None:
            self._reader_client = Consumer(self.settings.consumer_config(
                f"{self.settings.group_id}-restore",
                **{"enable.partition.eof": True, "fetch.wait.max.ms": 10,
                   "client.id": f"{self.settings.client_id}-restore", "logger": _KAFKA_LOG}))
        return self._reader_client

    def _close_tasks(self, keys: list[tuple[int, int]], checkpoint: bool) -> None:
        for key in keys:
            task = self._tasks.pop(key, None)
            if task is None:
                continue
            self._unarmed.discard(key)
            if key in self._local:
                # Lost under exactly-once: the open transaction is rewound, held records with it.
                self._leave_handoff(key, task, drop=self.exactly_once and not checkpoint)
            task.store.close()
            self._forget_task(task)
            if checkpoint and task.migrate:
                log.info("task %s-%d closed before its changelog was rewritten in the new layout: "
                         "no checkpoint, the next owner replays the changelog", task.stage.name,
                         task.partition)
            elif checkpoint:
                tp = TopicPartition(task.stage.changelog_topic, task.partition)
                end = _watermarks(self._reader(), tp)[1]
                write_checkpoint(self._task_dir(task.stage, task.partition)
                                 .with_suffix(".checkpoint"),
                                 task.stage.changelog_topic, task.partition, end)

    # ------------------------------------------------------------------ local hand-off
    # A record this worker forwards to a later stage's task that it owns itself is handed to that
    # task directly, in the same transaction, instead of through the repartition topic. The task
    # then sees it before anything the topic still holds for it, so (docs/runtime.md, "Local
    # hand-off") a task takes hand-offs only once it has consumed its input partition up to a
    # *barrier*: the partition's end offset taken when nothing this worker forwarded is in flight
    # (exactly-once: between transactions; at-least-once: after a flush), after the task and
    # every local task of the stage before it opened. While it drains, what is handed to it is
    # held in order; a commit that comes first sends what is held to the topic instead (the
    # offsets that consumed those events commit with it) and the task waits for a new barrier.
    def _handoff_after_open(self, opened: list[tuple[int, int]]) -> None:
        """Tasks just opened wait for a barrier; so do the next stage's, when a task opened
        whose previous owner's forwards may still be in the topic ahead of ours."""
        upstream = {i + 1 for i, _ in opened}
        for key in list(self._local):
            if key[0] in upstream:
                self._leave_handoff(key, self._local[key])
                self._unarmed.add(key)
        self._unarmed.update(k for k in opened if k[0] > 0 and k in self._tasks)

    def _arm_handoffs(self) -> None:
        """Take the barrier of every task waiting for one, if nothing this worker forwarded is
        in flight now: exactly-once between transactions (everything is committed; no commit in
        flight, so no outputs held for the next transaction either), at-least-once once the
        producer has delivered everything."""
        if self.exactly_once and (self._in_txn or self._inflight is not None):
            return
        if not self.exactly_once and self._producer.flush(30):
            return  # not all delivered yet: next time
        for key in sorted(self._unarmed):
            task = self._tasks.get(key)
            if task is None:
                continue
            tp = TopicPartition(task.stage.input_topic, task.partition)
            low, task.barrier = _watermarks(self._reader(), tp)
            position = self._consumer.position([tp])[0].offset
            if position < 0:  # nothing consumed since the assignment: from the committed offset
                position = self._committed_offsets([tp])[0].offset
                if position < 0:  # none yet: from the start (auto.offset.reset=earliest)
                    position = low
            self._local[key] = task
            if position >= task.barrier:
                task.held = None
            else:
                task.held = []
                self._armed[key] = task
            log.info("task %s-%d: local hand-off %s", task.stage.name, task.partition,
                     "on" if task.held is None else f"once offset {task.barrier} is consumed")
        self._unarmed.clear()

    def _take_up_handoffs(self) -> None:
        """Draining tasks that reached their barrier process what they hold, then take
        hand-offs directly."""
        armed = self._armed
        tps = [TopicPartition(t.stage.input_topic, t.partition) for t in armed.values()]
        for key, tp in zip(list(armed), self._consumer.position(tps)):
            task = armed[key]
            if tp.offset < task.barrier:
                continue
            del armed[key]
            held, task.held = task.held, None
            log.info("task %s-%d: local hand-off on (%d held records processed)",
                     task.stage.name, task.partition, len(held or ()))
            for _, event, payload, appended_ms in held or ():
                if event is None:
                    self._take_label(task, payload)
                else:
                    self.stats.handed_off += 1
                    self._advance(task, event, payload, appended_ms)

    def _send_held_to_topic(self) -> None:
        """Before a commit: what draining tasks hold goes to their topic, since the offsets of
        the records it came from commit now; those tasks need a new barrier."""
        for key, task in list(self._armed.items()):
            if task.held:
                self._leave_handoff(key, task)
                self._unarmed.add(key)

    def _leave_handoff(self, key: tuple[int, int], task: Task, drop: bool = False) -> None:
        """``task`` takes no more hand-offs; what it held is produced to its partition, in
        order (behind everything this worker forwarded to it before the barrier), unless
        ``drop``: the open transaction is to be rewound and those records are read again."""
        del self._local[key]
        self._armed.pop(key, None)
        held, task.held = task.held, None
        if not held or drop:
            return
        names = self._upstream_names[task.stage.index]
        for rkey, event, payload, appended_ms in held:
            if event is None:
                self._produce(task.stage.input_topic, rkey, wire.dumps({_LABEL: payload}),
                              task.partition)
            else:
                self._forward(task.stage, rkey, event, payload, appended_ms,
                              tuple(payload) == names, task.partition)

    # ------------------------------------------------------------------ rebalancing
    # Callbacks stay short: pause new partitions (restored later in the main loop); commit and
    # close the ones that leave.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        to_pause = []
        for tp in partitions:
            stage = self._by_topic.get(tp.topic)
            if stage is not None:
                self._to_restore[(stage.index, tp.partition)] = TopicPartition(tp.topic,
                                                                               tp.partition)
                to_pause.append(tp)
        if to_pause:
            consumer.pause(to_pause)
        self.metrics.restoring = len(self._to_restore)
        self.metrics.joined = True
        log.info("assigned %s", _describe(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.commit(wait=True)
        self._drop_tasks(partitions, checkpoint=True)
        log.info("revoked %s", _describe(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member owns them now: close without a checkpoint (never trust that state),
        # and never commit offsets for them later (that could move the new owner's back).
        self._drop_tasks(partitions, checkpoint=False)
        gone = {(tp.topic, tp.partition) for tp in partitions}
        for _, offsets in self._closed_epochs:
            for key in gone & offsets.keys():
                del offsets[key]
        if self._round_offsets is not None:
            for key in gone & self._round_offsets.keys():
                del self._round_offsets[key]
        for key in gone & self._offsets.keys():
            del self._offsets[key]
        if self._in_txn or self._inflight is not None:
            # The open transaction (or the work held for the next one) holds outputs of
            # partitions that are gone, so it cannot commit: the main loop rewinds to the last
            # commit (the same recovery as an aborted one; it waits for a commit in flight).
            self._rewind_reason = "partitions lost with a transaction open"
        log.warning("lost %s", _describe(partitions))

    def _drop_tasks(self, partitions: list[TopicPartition], checkpoint: bool) -> None:
        keys = []
        for tp in partitions:
            stage = self._by_topic.get(tp.topic)
            if stage is not None:
                self._to_restore.pop((stage.index, tp.partition), None)
                keys.append((stage.index, tp.partition))
        self._close_tasks(keys, checkpoint=checkpoint)
        self._record_assignment()


# Offset-query errors of a partition that has no leader yet, or whose leader is moving. The
# error the client raises for them does not carry librdkafka's retriable flag.
_TRANSIENT = frozenset({_RdKafkaError.NOT_LEADER_FOR_PARTITION, _RdKafkaError.LEADER_NOT_AVAILABLE,
                        _RdKafkaError.UNKNOWN_TOPIC_OR_PART})


#: The worker producer's ``linger.ms`` under at-least-once (the SDK's and exactly-once's: 5).
AT_LEAST_ONCE_LINGER_MS = 2


def producer_defaults(settings: Settings) -> dict[str, Any]:
    """The worker producer's settings that depend on the processing guarantee; a property the
    operator passes through (``FRAUDSTREAM_KAFKA__...``) wins over each (docs/runtime.md,
    "Latency")."""
    given = set(settings.kafka)
    if settings.processing_guarantee == "exactly_once":
        # A transaction's AddOffsetsToTxn/AddPartitionsToTxn that meets the previous one's
        # markers still being written (CONCURRENT_TRANSACTIONS) is retried after this, 100 ms
        # by default: on the latency path. The Java producer retries these after 20 ms;
        # librdkafka still backs off exponentially from here.
        return {} if "retry.backoff.ms" in given else {"retry.backoff.ms": 10}
    # At-least-once outputs are readable once delivered, so the linger is on the path of every
    # score and of every forward through a repartition topic. (Under exactly-once a commit's
    # flush sends what lingers.)
    if given & {"linger.ms", "queue.buffering.max.ms"}:
        return {}
    return {"linger.ms": AT_LEAST_ONCE_LINGER_MS}


def _watermarks(consumer: Consumer, tp: TopicPartition, patience: float = 60.0
                ) -> tuple[int, int]:
    """(low, high) offsets of ``tp``, waiting out retriable errors: a topic the worker has just
    created is not led by its broker for a moment (NOT_LEADER_FOR_PARTITION), nor is a
    partition whose leader is moving."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=30)
        except KafkaException as exc:
            err = exc.args[0]
            if ((err.code() not in _TRANSIENT and not err.retriable())
                    or time.monotonic() >= deadline):
                raise KafkaError(f"offsets of {tp.topic}[{tp.partition}]: {err.str()}") from None
            log.info("offsets of %s[%d] not available yet (%s); retrying", tp.topic,
                     tp.partition, err.str())
            time.sleep(0.1)


def _describe(partitions: list[TopicPartition]) -> str:
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ", ".join(f"{t}{sorted(p)}" for t, p in sorted(by_topic.items())) or "nothing"
