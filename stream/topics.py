"""The project's topics: what they are, and creating them idempotently.

``fraudstream topics create`` creates every topic in :func:`project_topics` that is missing and
checks those that exist: a partition count or cleanup policy other than the configured one is a
:class:`~stream.exceptions.TopicMismatchError`, because silently running on a wrongly partitioned
topic breaks keyed state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from stream.exceptions import KafkaError, TopicMismatchError
from stream.settings import Settings

__all__ = ["TopicSpec", "project_topics", "ensure_topics", "TopicReport"]


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)

    @property
    def cleanup_policy(self) -> str:
        return self.config.get("cleanup.policy", "delete")


@dataclass(frozen=True)
class TopicReport:
    created: list[str]
    existing: list[str]


def project_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic fraudstream needs, with partitions, replication and policies from settings."""
    rf = settings.replication_factor
    # The broker must accept any message we are willing to decode, plus headers and batch overhead;
    # the dead-letter topic receives originals that were too large, so it allows more.
    max_bytes = str(max(1_048_588, settings.max_message_bytes * 2))
    dlq_bytes = str(max(2_097_152, settings.max_message_bytes * 4))
    return [
        TopicSpec(settings.topic_events, settings.partitions, rf,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.events_retention_ms),
                   "max.message.bytes": max_bytes}),
        TopicSpec(settings.topic_labels, settings.partitions, rf,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.events_retention_ms),
                   "max.message.bytes": max_bytes}),
        TopicSpec(settings.topic_scores, settings.partitions, rf,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.scores_retention_ms)}),
        TopicSpec(settings.topic_dead_letter, settings.partitions, rf,
                  {"cleanup.policy": "delete",
                   "retention.ms": str(settings.dead_letter_retention_ms),
                   "max.message.bytes": dlq_bytes}),
        TopicSpec(settings.topic_training, 1, rf,
                  {"cleanup.policy": "delete", "retention.ms": str(settings.events_retention_ms),
                   "max.message.bytes": max_bytes}),
        # Snapshots are large (pickled models) and only the latest per key matters.
        TopicSpec(settings.topic_models, 1, rf,
                  {"cleanup.policy": "compact", "max.message.bytes": str(64 * 1024 * 1024),
                   "min.compaction.lag.ms": "0"}),
    ]


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None,
                  timeout: float = 30.0, logger: logging.Logger | None = None) -> TopicReport:
    """Create missing topics, verify existing ones; idempotent. ``logger`` receives librdkafka's
    own log lines (default: librdkafka writes them to stderr)."""
    specs = project_topics(settings) if specs is None else specs
    conf = settings.kafka_client_config()
    if logger is not None:
        conf["logger"] = logger
    admin = AdminClient(conf)
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from None
    existing = {spec.name for spec in specs if spec.name in metadata.topics}
    missing = [spec for spec in specs if spec.name not in existing]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor,
                      config=dict(s.config)) for s in missing],
            operation_timeout=timeout, request_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result()
                created.append(name)
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == err.TOPIC_ALREADY_EXISTS:  # raced with another creator
                    existing.add(name)
                else:
                    raise KafkaError(f"creating topic {name!r} failed: {err.str()}") from None
        metadata = admin.list_topics(timeout=timeout)
    _verify(admin, [s for s in specs if s.name in existing], metadata, timeout)
    return TopicReport(created=sorted(created), existing=sorted(existing))


def _verify(admin: AdminClient, specs: list[TopicSpec], metadata, timeout: float) -> None:
    if not specs:
        return
    for spec in specs:
        actual = len(metadata.topics[spec.name].partitions)
        if actual != spec.partitions:
            raise TopicMismatchError(
                f"topic {spec.name!r} has {actual} partitions but {spec.partitions} are configured; "
                "keyed state is partitioned by it, so either set partitions to match or migrate "
                "(see docs/operations.md)")
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in specs]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    by_name = {s.name: s for s in specs}
    for resource, fut in futures.items():
        try:
            entries = fut.result()
        except KafkaException as exc:
            raise KafkaError(f"describing topic {resource.name!r} failed: {exc}") from None
        spec = by_name[resource.name]
        policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else "delete"
        if set(policy.split(",")) != set(spec.cleanup_policy.split(",")):
            raise TopicMismatchError(
                f"topic {spec.name!r} has cleanup.policy={policy} but {spec.cleanup_policy} is "
                "required")
