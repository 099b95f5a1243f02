"""Changelogs written in the old layout (label-index entry and snapshot as separate records)
restore, and the worker rewrites them as event records (stream/runtime/changelog.py)."""

from __future__ import annotations

from confluent_kafka import Producer

from features.engine import INDEX_PREFIX
from online_models.labels import DAY_MS
from stream.demo import generate_events
from stream.publisher import EventPublisher
from stream.runtime import Worker, changelog
from stream.runtime.changelog import EVENT_PREFIX
from stream.topics import ensure_topics
from tests.kafka_util import read_topic

SNAP = b"snap:"


def _latest(settings, topic):
    latest = {}
    for m in read_topic(settings, topic, timeout=10, idle=1):
        latest[m.key()] = m.value()
    return latest


def test_old_layout_changelog_restores_and_is_rewritten(kafka_settings):
    s = kafka_settings.replace(partitions=1)
    ensure_topics(s)
    events = generate_events(40, seed=21, id_prefix="mig")
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)
    assert Worker(s, instance_id="writer").run(exit_when_idle=3).scored == len(events)
    written = _latest(s, f"{s.group_id}.merchant.changelog")
    assert sum(k.startswith(EVENT_PREFIX) for k in written) == len(events)
    assert not any(k.startswith((INDEX_PREFIX, SNAP)) for k in written)

    # The same state as the previous version wrote it, in another group's changelogs (its
    # events topic stays empty: only labels reach it).
    old = s.replace(group_id=s.group_id + "-old", topic_events=s.topic_events + "-none")
    worker = Worker(old, instance_id="reader")
    worker.ensure_topics()
    producer = Producer(old.producer_config())
    for stage in ("user", "merchant"):
        target = f"{old.group_id}.{stage}.changelog"
        for key, value in _latest(s, f"{s.group_id}.{stage}.changelog").items():
            if key.startswith(EVENT_PREFIX):
                eid = key[len(EVENT_PREFIX):]
                for prefix, part in zip((INDEX_PREFIX, SNAP), changelog.unpack(value)):
                    if part is not None:
                        producer.produce(target, part, prefix + eid, partition=0)
            else:
                producer.produce(target, value, key, partition=0)
    assert producer.flush(30) == 0
    _publish_labels(old, events)

    # Every label joins a snapshot restored from the old records...
    stats = worker.run(exit_when_idle=3)
    assert stats.labels == len(events)
    assert stats.examples == len(events) and stats.labels_parked == 0
    # ...and the changelog now holds event records, with the old keys tombstoned.
    latest = _latest(old, f"{old.group_id}.merchant.changelog")
    assert {k for k, v in latest.items() if k.startswith((INDEX_PREFIX, SNAP))} and all(
        v is None for k, v in latest.items() if k.startswith((INDEX_PREFIX, SNAP)))
    assert sum(k.startswith(EVENT_PREFIX) and v is not None
               for k, v in latest.items()) == len(events)

    # A new instance (no checkpoint) rebuilds from the rewritten changelog: the same labels are
    # now duplicates of joined snapshots (a lost snapshot would park them as unknown).
    _publish_labels(old, events)
    again = Worker(old, instance_id="rebuilt").run(exit_when_idle=3)
    assert again.restored_records > 0
    assert again.labels == len(events)
    assert again.examples == 0 and again.labels_parked == 0


def _publish_labels(settings, events):
    with EventPublisher(settings) as pub:
        for e in events:
            pub.publish_label({"event_id": e["event_id"], "user_id": e["user_id"],
                               "merchant_id": e["merchant_id"], "is_fraud": False,
                               "label_time": e["event_time"] + DAY_MS})
