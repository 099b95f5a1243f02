"""ScoreConsumer against the real broker: read_committed only, and commit control."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from stream.consumer import ScoreConsumer
from stream.events import Score
from stream.topics import ensure_topics


def _score(i: int) -> Score:
    return Score(event_id=f"s{i}", user_id=f"u{i % 7}", merchant_id="m1",
                 event_time=1767225600000 + i, score=(i % 100) / 100, decision="approve",
                 model_version="t", reasons=[], scored_at=1767225600000 + i)


def test_only_committed_scores_are_seen(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    p = Producer(s.producer_config(**{"transactional.id": f"tx-{uuid.uuid4().hex[:8]}"}))
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(s.topic_scores, _score(i).encode(), b"k")
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(10, 20):
        p.produce(s.topic_scores, _score(i).encode(), b"k")
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(20, 25):
        p.produce(s.topic_scores, _score(i).encode(), b"k")
    p.commit_transaction(30)

    with ScoreConsumer(s) as c:
        seen = [r.score.event_id for r in c.stream(idle_timeout=3)]
    assert seen == [f"s{i}" for i in list(range(10)) + list(range(20, 25))]


def test_commit_control_resumes_after_the_last_commit(kafka_settings):
    s = kafka_settings
    ensure_topics(s.replace(partitions=1))  # one partition: a total order to assert on
    s = s.replace(partitions=1)
    p = Producer(s.producer_config())
    for i in range(30):
        p.produce(s.topic_scores, _score(i).encode(), b"k")
    assert p.flush(30) == 0

    group = f"g-{uuid.uuid4().hex[:8]}"
    with ScoreConsumer(s, group_id=group) as c:
        first = [r.score.event_id for r in c.stream(max_records=12)]
        c.commit()
        more = [r.score.event_id for r in c.stream(max_records=5)]  # read but not committed
    assert first == [f"s{i}" for i in range(12)] and more == [f"s{i}" for i in range(12, 17)]
    with ScoreConsumer(s, group_id=group) as c:
        resumed = [r.score.event_id for r in c.stream(max_records=3)]
        assert c.committed() == {0: 12}
    assert resumed == ["s12", "s13", "s14"]
