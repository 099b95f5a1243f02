"""Topic creation against the real broker: idempotent, and mismatches are clear errors."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from stream.exceptions import TopicMismatchError
from stream.topics import ensure_topics, project_topics


def test_create_is_idempotent_and_applies_configuration(kafka_settings):
    s = kafka_settings
    first = ensure_topics(s)
    names = [spec.name for spec in project_topics(s)]
    assert first.created == sorted(names) and first.existing == []
    second = ensure_topics(s)
    assert second.created == [] and second.existing == sorted(names)

    admin = AdminClient(s.kafka_client_config())
    md = admin.list_topics(timeout=10)
    for spec in project_topics(s):
        assert len(md.topics[spec.name].partitions) == spec.partitions
    # keyed topics follow the configured count; training and models are single-partition logs
    assert len(md.topics[s.topic_events].partitions) == s.partitions
    assert len(md.topics[s.topic_training].partitions) == 1
    res = ConfigResource(ResourceType.TOPIC, s.topic_events)
    config = admin.describe_configs([res])[res].result()
    assert config["retention.ms"].value == str(s.events_retention_ms)


def test_partition_mismatch_is_an_error(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    with pytest.raises(TopicMismatchError, match="partitions"):
        ensure_topics(s.replace(partitions=s.partitions + 1))
