"""Local hand-off routing: which forwarded records a worker hands to its own next-stage task.

No broker: the worker's clients point at a closed local port (librdkafka queues what is
produced), the tasks' stores are real in-memory stores, and records go through the worker's own
record handler, as the consumer would hand them over.
"""

from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import Iterator

from confluent_kafka import Message

from stream import wire
from stream.replay import partition_for
from stream.runtime import Worker
from stream.runtime.worker import Task
from stream.settings import Settings
from stream.state import open_store

T0 = 1_767_225_600_000
PARTITIONS = 4


def _event(i: int, user: str, merchant: str) -> bytes:
    return wire.dumps({"event_id": f"e{i}", "event_type": "transaction", "event_time": T0 + i,
                       "user_id": user, "merchant_id": merchant, "amount": 10.0,
                       "currency": "EUR"})


@contextmanager
def _worker(tmp_path, **overrides) -> Iterator[Worker]:
    settings = Settings.load(env={}, overrides={
        "bootstrap_servers": "127.0.0.1:9", "processing_guarantee": "at_least_once",
        "state_dir": str(tmp_path), "metrics_port": 0, "partitions": PARTITIONS,
        "model_name": "heuristic", "kafka": {"socket.connection.setup.timeout.ms": 1000},
        **overrides})
    worker = Worker(settings, instance_id="ho")
    try:
        yield worker
    finally:
        worker._producer.purge()
        worker._consumer.close()


def _send(worker: Worker, merchants: list[str]) -> None:
    """One event of user u1 per merchant, through the worker's record handler."""
    for i, m in enumerate(merchants):
        worker._handle([Message(topic=worker.settings.topic_events, partition=0, offset=i,
                                key=b"u1", value=_event(i, "u1", m), timestamp=(1, T0))])


def _open(worker: Worker, stage_index: int, partition: int) -> Task:
    stage = worker.topology.stages[stage_index]
    nxt = (worker.topology.stages[stage_index + 1] if stage is not worker.topology.last
           else None)
    scorer = None
    if nxt is None:
        from stream.runtime.scoring import make_scorer
        scorer = make_scorer("heuristic", open_store("memory"), 0.5, 0.9, None, {})
    task = Task(stage, partition, open_store("memory"), scorer, next_stage=nxt)
    task.consumed_metric = worker.metrics["fraudstream_events_consumed_total"].labels(
        stage.name, str(partition))
    task.processing_metric = worker.metrics["fraudstream_processing_seconds"].labels(stage.name)
    worker._tasks[(stage_index, partition)] = task
    return task


def test_partition_is_librdkafkas_default_crc32_of_the_key():
    # consistent_random: CRC-32 (ISO-HDLC) of the key bytes modulo the partition count.
    assert partition_for(b"m42", 7) == zlib.crc32(b"m42") % 7
    assert zlib.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value


def test_forward_goes_to_the_local_task_only_for_partitions_it_takes_hand_offs_for(tmp_path):
    with _worker(tmp_path) as worker:
        user = _open(worker, 0, 0)
        merchants = [f"m{i}" for i in range(40)]
        owned = partition_for(b"m0", PARTITIONS)
        local = _open(worker, 1, owned)
        worker._local[(1, owned)] = local  # takes hand-offs (held is None)
        _send(worker, merchants)
        mine = sum(1 for m in merchants if partition_for(m.encode(), PARTITIONS) == owned)
        assert 0 < mine < len(merchants)
        assert worker.stats.handed_off == mine
        assert worker.stats.forwarded == len(merchants) - mine
        assert worker.stats.scored == mine  # scored in this worker, in the same batch
        assert user.consumed == len(merchants) and local.consumed == 0


def test_a_draining_task_holds_hand_offs_in_order(tmp_path):
    with _worker(tmp_path) as worker:
        _open(worker, 0, 0)
        p = partition_for(b"m0", PARTITIONS)
        local = _open(worker, 1, p)
        local.held, local.barrier = [], 10
        worker._local[(1, p)] = local
        worker._armed[(1, p)] = local
        _send(worker, ["m0"] * 3)
        assert [h[1]["event_id"] for h in local.held] == ["e0", "e1", "e2"]
        assert (worker.stats.handed_off, worker.stats.scored, worker.stats.forwarded) == (0, 0, 0)
        # A commit before the task caught up: what it held goes to its partition, in order,
        # and the task waits for a new barrier.
        worker._send_held_to_topic()
        assert worker.stats.forwarded == 3 and local.held is None
        assert (1, p) not in worker._local and (1, p) in worker._unarmed


def test_off_setting_forwards_everything_through_the_topic(tmp_path):
    with _worker(tmp_path, local_handoff=False) as worker:
        _open(worker, 0, 0)
        for p in range(PARTITIONS):
            _open(worker, 1, p)
        worker._restore_pending()  # nothing pending: only the hand-off bookkeeping runs
        assert not worker._handoff and not worker._unarmed and not worker._local
        _send(worker, [f"m{i}" for i in range(8)])
        assert (worker.stats.forwarded, worker.stats.handed_off) == (8, 0)


def test_opening_a_task_of_the_stage_before_re_arms_the_next_stage(tmp_path):
    with _worker(tmp_path) as worker:
        _open(worker, 0, 0)
        p = partition_for(b"m0", PARTITIONS)
        local = _open(worker, 1, p)
        worker._local[(1, p)] = local
        # A user task opens (moved here from another worker, whose forwards to the merchant
        # partition may still be in the topic): the merchant task needs a new barrier.
        _open(worker, 0, 1)
        worker._handoff_after_open([(0, 1)])
        assert (1, p) not in worker._local and worker._unarmed == {(1, p)}
