"""The publisher SDK against the real broker."""

from __future__ import annotations

import pytest

from stream.demo import generate_events
from stream.events import decode_event, decode_label
from stream.exceptions import DecodeError
from stream.publisher import EventPublisher
from stream.topics import ensure_topics
from tests.kafka_util import read_topic


def test_events_are_validated_normalised_and_keyed_by_user(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    events = generate_events(250, seed=1, id_prefix="pub")
    events[0] = dict(events[0], event_time="2026-01-01T00:00:00Z", loyalty="gold")
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)
        assert pub.stats.sent == 250
    assert pub.stats.delivered == 250 and pub.stats.failed == 0
    msgs = read_topic(s, s.topic_events, expected=250, idle=1)
    assert len(msgs) == 250
    by_id = {decode_event(m.value()).event_id: m for m in msgs}
    first = decode_event(by_id[events[0]["event_id"]].value())
    assert first.event_time == 1767225600000  # normalised on the way out
    assert first.attributes == {"loyalty": "gold"}
    for m in msgs:
        assert m.key() == decode_event(m.value()).user_id.encode()
    # one user's events all land in one partition (keyed), in publish order
    per_user: dict[str, set[int]] = {}
    for m in msgs:
        per_user.setdefault(m.key().decode(), set()).add(m.partition())
    assert all(len(p) == 1 for p in per_user.values())


def test_invalid_event_raises_and_nothing_is_sent(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    with EventPublisher(s) as pub:
        with pytest.raises(DecodeError) as info:
            pub.publish({"event_id": "x", "event_type": "transaction", "event_time": 1,
                         "user_id": "u", "merchant_id": "m", "amount": -1, "currency": "EUR"})
        assert info.value.field == "amount"
        assert pub.stats.sent == 0
    assert read_topic(s, s.topic_events, timeout=3) == []


def test_full_local_queue_is_waited_out_not_dropped(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    events = generate_events(3000, seed=2, id_prefix="q")
    # A tiny local queue forces BufferError on most produce calls.
    with EventPublisher(s, **{"queue.buffering.max.messages": 20, "linger.ms": 50}) as pub:
        for e in events:
            pub.publish(e)
    assert pub.stats.delivered == 3000
    assert len(read_topic(s, s.topic_events, expected=3000, idle=1)) == 3000


def test_labels_go_to_labels_topic_keyed_by_merchant(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    with EventPublisher(s) as pub:
        pub.publish_label({"event_id": "e1", "user_id": "u1", "merchant_id": "m9",
                           "is_fraud": True, "label_time": "2026-01-05T00:00:00Z",
                           "source": "chargeback"})
    [msg] = read_topic(s, s.topic_labels, expected=1, idle=1)
    assert msg.key() == b"m9"
    label = decode_label(msg.value())
    assert label.is_fraud and label.source == "chargeback" and label.label_time == 1767571200000
