"""Model snapshots on Kafka: the models topic the trainer writes and every worker reads.

The models topic is compacted with one partition. Record keys:

* ``role/global``: the snapshot workers score with; ``role/challenger``: one run in shadow (a
  tombstone stops it);
* ``version/<version>``: every published version, kept for ``models list``, ``show``, ``export``
  and for promoting an older one.

Values are :meth:`online_models.scorer.GlobalModel.to_bytes` snapshots; headers carry
``version``, ``spec``, ``n_learned`` and ``published_at`` (epoch ms) so listings need not unpickle
anything. Snapshots are pickles: restrict writes to the models topic to the trainer's principal
with Kafka ACLs (see docs/security.md), as anyone who can write it can run code in the workers.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import KafkaError as _RdKafkaError

from stream.exceptions import KafkaError
from stream.settings import Settings

__all__ = ["ModelRecord", "ModelFeed", "publish_model", "set_role", "clear_role", "read_models",
           "ROLE_GLOBAL", "ROLE_CHALLENGER", "ROLES", "SNAPSHOT_MAX_BYTES"]

ROLE_GLOBAL = "global"
ROLE_CHALLENGER = "challenger"
ROLES = (ROLE_GLOBAL, ROLE_CHALLENGER)
SNAPSHOT_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ModelRecord:
    key: str                 # "role/global", "role/challenger" or "version/<v>"
    version: str | None      # None for a tombstone
    spec: str | None
    n_learned: int | None
    published_at: int | None
    data: bytes | None       # the snapshot; None for a tombstone
    offset: int

    @property
    def role(self) -> str | None:
        return self.key.split("/", 1)[1] if self.key.startswith("role/") else None


def _headers(version: str, spec: str, n_learned: int) -> list[tuple[str, bytes]]:
    return [("version", version.encode()), ("spec", spec.encode()),
            ("n_learned", str(n_learned).encode()),
            ("published_at", str(time.time_ns() // 1_000_000).encode())]


def publish_model(producer: Producer, settings: Settings, data: bytes, version: str, spec: str,
                  n_learned: int, role: str | None = ROLE_GLOBAL) -> None:
    """Produce a snapshot under ``version/<version>`` and, unless ``role`` is None, under its
    role key. The caller flushes (or commits its transaction)."""
    if len(data) > SNAPSHOT_MAX_BYTES:
        raise KafkaError(f"model snapshot is {len(data)} bytes, over {SNAPSHOT_MAX_BYTES}")
    headers = _headers(version, spec, n_learned)
    keys = [f"version/{version}"] + ([f"role/{role}"] if role else [])
    for key in keys:
        while True:
            try:
                producer.produce(settings.topic_models, data, key.encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.1)


def set_role(producer: Producer, settings: Settings, record: ModelRecord, role: str) -> None:
    """Point ``role/<role>`` at an already published version (``record``, e.g. its
    ``version/<v>`` record): the same bytes and headers, so ``published_at`` stays the version's.
    The caller flushes (or commits its transaction)."""
    if role not in ROLES:
        raise KafkaError(f"unknown model role {role!r}; known: {', '.join(ROLES)}")
    if record.data is None or record.version is None:
        raise KafkaError(f"{record.key} is a tombstone: nothing to point role/{role} at")
    headers = [("version", record.version.encode()), ("spec", (record.spec or "").encode()),
               ("n_learned", str(record.n_learned if record.n_learned is not None else "").encode()),
               ("published_at", str(record.published_at or "").encode())]
    _produce(producer, settings, f"role/{role}", record.data, headers)


def clear_role(producer: Producer, settings: Settings, role: str) -> None:
    """Tombstone ``role/<role>`` (for the challenger: stop the shadow run)."""
    _produce(producer, settings, f"role/{role}", None, None)


def _produce(producer: Producer, settings: Settings, key: str, data: bytes | None,
             headers: list | None) -> None:
    while True:
        try:
            producer.produce(settings.topic_models, data, key.encode(), headers=headers)
            return
        except BufferError:
            producer.poll(0.1)


def snapshot_producer_config(settings: Settings, **extra) -> dict:
    """Producer settings able to carry model snapshots."""
    return settings.producer_config(**{"message.max.bytes": SNAPSHOT_MAX_BYTES,
                                       "compression.type": "zstd", **extra})


def _record(msg) -> ModelRecord:
    h = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
    n = h.get("n_learned")
    at = h.get("published_at")
    return ModelRecord(key=msg.key().decode(), version=h.get("version"), spec=h.get("spec"),
                       n_learned=int(n) if n and n.isdigit() else None,
                       published_at=int(at) if at and at.isdigit() else None,
                       data=msg.value(), offset=msg.offset())


class ModelFeed:
    """Follows the models topic: :meth:`catch_up` reads to the end at start, :meth:`poll` returns
    records published since, without blocking. The latest record per key wins."""

    def __init__(self, settings: Settings, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        extra: dict[str, Any] = {"enable.partition.eof": True,
                                 "fetch.max.bytes": SNAPSHOT_MAX_BYTES,
                                 "max.partition.fetch.bytes": SNAPSHOT_MAX_BYTES}
        if logger is not None:  # librdkafka's own log lines (default: stderr)
            extra["logger"] = logger
        self._consumer = Consumer(settings.consumer_config(
            f"{settings.group_id}-models-{uuid.uuid4().hex[:8]}", **extra))
        self._consumer.assign([TopicPartition(settings.topic_models, 0, 0)])
        self.latest: dict[str, ModelRecord] = {}

    def catch_up(self, timeout: float = 30.0) -> dict[str, ModelRecord]:
        """Read every record up to the current end; returns the latest record per key."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self._consumer.consume(500, 0.5)
            for msg in msgs:
                err = msg.error()
                if err is not None:
                    if err.code() == _RdKafkaError._PARTITION_EOF:
                        return self.latest
                    if err.code() == _RdKafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise KafkaError(f"models topic {self.settings.topic_models!r} does not "
                                         "exist; run `fraudstream topics create`")
                    raise KafkaError(f"reading models: {err.str()}")
                self.latest[msg.key().decode()] = _record(msg)
        raise KafkaError(f"reading the models topic did not reach its end in {timeout:.0f}s")

    def poll(self) -> list[ModelRecord]:
        """New records since the last call (never blocks)."""
        out = []
        try:
            msgs = self._consumer.consume(100, 0)
        except KafkaException as exc:
            raise KafkaError(f"reading models: {exc}") from None
        for msg in msgs:
            if msg.error() is None:
                rec = _record(msg)
                self.latest[rec.key] = rec
                out.append(rec)
        return out

    def close(self) -> None:
        self._consumer.close()


def read_models(settings: Settings, timeout: float = 30.0) -> dict[str, ModelRecord]:
    """The latest record of every key on the models topic."""
    feed = ModelFeed(settings)
    try:
        return feed.catch_up(timeout)
    finally:
        feed.close()
