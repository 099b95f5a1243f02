"""Baseline contender: the per-key tumbling-window count with plain confluent-kafka and a dict.

This is "what the client alone does": no framework, no changelog, no RocksDB. It runs in its own
virtualenv (``.cache/bench-venvs/confluent-kafka/``) with the same confluent-kafka and orjson
versions as the project, so it imports nothing from fraudstream.

Semantics shared by every contender (see ``bench/contenders.py``): for each input record (JSON,
keyed by user_id) the app decodes the value, adds one to the count of the record's key in the
tumbling window holding the record's Kafka timestamp, and produces
``{"start": ms, "end": ms, "value": count}`` under the same key to the output topic.
At-least-once: every ``--commit-interval`` seconds the producer is flushed, then the consumed
offsets are committed. SIGTERM or SIGINT: finish the batch, flush, commit, close.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from time import monotonic

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent))  # contract.py beside each app
from contract import contract_parser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = contract_parser(__doc__.splitlines()[0], state_dir_help="unused: state is a dict in memory")
    return p.parse_args(argv)


class WindowCounts:
    """Per-partition tumbling-window counts: {partition: {(key, window_start): count}}."""

    def __init__(self, window_ms: int, grace_ms: int) -> None:
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self.counts: dict[int, dict[tuple[bytes, int], int]] = {}
        self.latest: dict[int, int] = {}

    def add(self, partition: int, key: bytes, ts: int) -> tuple[int, int]:
        start = ts - ts % self.window_ms
        part = self.counts.setdefault(partition, {})
        value = part.get((key, start), 0) + 1
        part[(key, start)] = value
        if ts > self.latest.get(partition, -1):
            self.latest[partition] = ts
        return start, value

    def expire(self) -> None:
        """Drop windows that closed (end + grace passed the partition's latest timestamp)."""
        for partition, part in self.counts.items():
            horizon = self.latest.get(partition, 0) - self.grace_ms - self.window_ms
            stale = [k for k in part if k[1] < horizon]
            for k in stale:
                del part[k]

    def drop(self, partition: int) -> None:
        self.counts.pop(partition, None)
        self.latest.pop(partition, None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap, "group.id": args.group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 5,
                         "enable.idempotence": True})
    state = WindowCounts(args.window_ms, args.grace_ms)

    def commit() -> None:
        producer.flush()  # outputs first, then offsets: at-least-once
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                raise

    def on_revoke(_consumer, partitions) -> None:
        commit()
        for tp in partitions:
            state.drop(tp.partition)

    consumer.subscribe([args.input], on_revoke=on_revoke)
    out, window_ms = args.output, args.window_ms
    next_commit = monotonic() + args.commit_interval
    try:
        while not stop:
            for msg in consumer.consume(1000, 0.1):
                if msg.error() is not None:
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(msg.error())
                orjson.loads(msg.value())  # decode like the frameworks do
                key, ts = msg.key(), msg.timestamp()[1]
                start, value = state.add(msg.partition(), key, ts)
                payload = orjson.dumps({"start": start, "end": start + window_ms, "value": value})
                while True:
                    try:
                        producer.produce(out, payload, key, timestamp=ts)
                        break
                    except BufferError:
                        producer.poll(0.05)  # serve delivery reports, never drop
            producer.poll(0)
            if monotonic() >= next_commit:
                commit()
                state.expire()
                next_commit = monotonic() + args.commit_interval
        commit()
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
