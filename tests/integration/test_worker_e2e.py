"""End to end on the real broker: events in, exactly one score per valid event, dead letters out."""

from __future__ import annotations

import signal
import subprocess
import sys
import time


from stream import wire
from stream.demo import generate_events
from stream.events import decode_score
from stream.publisher import EventPublisher
from stream.topics import ensure_topics
from stream.runtime import Worker
from tests.kafka_util import group_offsets, headers_of, process_env, read_topic

N_VALID = 400

BASE = {"event_id": "x", "event_type": "transaction", "event_time": 1767225600000,
        "user_id": "u1", "merchant_id": "m1", "amount": 10.0, "currency": "EUR"}


def _malformed(max_bytes: int) -> list[tuple[bytes, str, str | None]]:
    """(raw bytes, expected error code, expected field) for each kind of bad input."""

    def doc(**changes):
        d = dict(BASE, **changes)
        return wire.dumps({k: v for k, v in d.items() if v is not None})

    return [
        (b"{\"event_id\": ", "bad_json", None),
        (b"[1, 2, 3]", "bad_json", None),
        (doc(event_id="bad-missing-user", user_id=None), "invalid", "user_id"),
        (doc(event_id="bad-missing-time", event_time=None), "invalid", "event_time"),
        (doc(event_id="bad-type-amount", amount="12.50"), "invalid", "amount"),
        (doc(event_id="bad-type-user", user_id=42), "invalid", "user_id"),
        (doc(event_id="bad-negative", amount=-3.5), "invalid", "amount"),
        (doc(event_id="bad-currency", currency="euro"), "invalid", "currency"),
        (doc(event_id="bad-oversized", attributes={"pad": "x" * max_bytes}), "too_large", None),
        (b'{"event_id":"bad-utf8","user_id":"\xff\xfe"}', "bad_utf8", None),
        (b"", "empty", None),
    ]


def test_valid_events_scored_once_and_malformed_dead_lettered(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    events = generate_events(N_VALID, seed=3, id_prefix="e2e")
    bad = _malformed(s.max_message_bytes)
    with EventPublisher(s) as pub:
        for i, event in enumerate(events):
            pub.publish(event)
            if i % 40 == 0 and i // 40 < len(bad):  # interleave the bad records with good ones
                raw = bad[i // 40][0]
                pub.publish_raw(s.topic_events, raw, b"u-bad",
                                headers=[("origin", b"test")])
        for raw, _, _ in bad[len(range(0, N_VALID, 40)):]:
            pub.publish_raw(s.topic_events, raw, b"u-bad")

    stats = Worker(s, instance_id="e2e").run(exit_when_idle=5)
    assert stats.scored == N_VALID
    assert stats.dead_lettered == len(bad)

    scores = read_topic(s, s.topic_scores, expected=N_VALID)
    ids = [decode_score(m.value()).event_id for m in scores]
    assert len(ids) == N_VALID
    assert sorted(ids) == sorted(e["event_id"] for e in events)
    for m in scores:
        sc = decode_score(m.value())
        assert 0.0 <= sc.score <= 1.0 and sc.decision in ("approve", "review", "block")
        assert m.key() == sc.user_id.encode()

    dead = read_topic(s, s.topic_dead_letter, expected=len(bad))
    assert len(dead) == len(bad)
    by_value = {m.value() or b"": m for m in dead}
    assert len(by_value) == len(bad)  # all distinct originals, none duplicated
    for raw, code, field in bad:
        m = by_value[raw]  # the original bytes, unchanged
        h = headers_of(m)
        assert h["fraudstream.error.code"] == code.encode()
        assert h["fraudstream.error.field"] == (field or "").encode()
        assert h["fraudstream.error.reason"]
        assert h["fraudstream.source.topic"] == s.topic_events.encode()
        assert int(h["fraudstream.source.offset"]) >= 0
        assert m.key() == b"u-bad"
    # original headers travel along
    assert any(headers_of(m).get("origin") == b"test" for m in dead)


def test_worker_process_sigterm_commits_and_exits_cleanly(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s)
    events = generate_events(300, seed=5, id_prefix="sig")
    with EventPublisher(s) as pub:
        for event in events:
            pub.publish(event)
    env = process_env(s)
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id", "sig"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        scores = read_topic(s, s.topic_scores, expected=len(events), timeout=90, idle=0.5)
        assert len(scores) == len(events)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert f"scored {len(events)}" in output

    # Every consumed offset was committed: the group's offsets equal the end of each partition.
    committed, ends = group_offsets(s, s.topic_events)
    assert committed == ends
    assert sum(ends.values()) == len(events)


def test_restarted_worker_does_not_rescore_committed_events(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    first = generate_events(200, seed=8, id_prefix="r1")
    second = generate_events(150, seed=9, id_prefix="r2")
    with EventPublisher(s) as pub:
        for e in first:
            pub.publish(e)
    Worker(s, instance_id="r").run(max_events=len(first), exit_when_idle=20)
    with EventPublisher(s) as pub:
        for e in second:
            pub.publish(e)
    time.sleep(0.5)
    Worker(s, instance_id="r").run(max_events=len(second), exit_when_idle=20)
    scores = read_topic(s, s.topic_scores, expected=len(first) + len(second))
    ids = [decode_score(m.value()).event_id for m in scores]
    assert len(ids) == len(set(ids)) == len(first) + len(second)


def test_identifiers_are_hashed_before_state_changelogs_and_scores(kafka_settings):
    from stream.pii import IdentifierHasher
    from stream.settings import Secret

    s = kafka_settings.replace(pii_hash_key=Secret("test-key"))
    ensure_topics(s)
    events = generate_events(150, seed=12, id_prefix="pii")
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)
    assert Worker(s, instance_id="pii").run(exit_when_idle=4).scored == len(events)
    hasher = IdentifierHasher(b"test-key")
    by_id = {e["event_id"]: e for e in events}
    for m in read_topic(s, s.topic_scores, expected=len(events), idle=1):
        sc = decode_score(m.value())
        assert sc.user_id == hasher.hash(by_id[sc.event_id]["user_id"])
        assert m.key() == sc.user_id.encode()
    raw_users = {e["user_id"].encode() for e in events}
    changelog = read_topic(s, f"{s.group_id}.user.changelog", timeout=10, idle=1)
    assert changelog, "the user stage wrote no state"
    for m in changelog:
        blob = (m.key() or b"") + (m.value() or b"")
        assert not any(u in blob for u in raw_users), "a raw user id reached the changelog"


def test_idle_entities_expire_and_their_changelog_records_are_tombstoned(kafka_settings):
    s = kafka_settings.replace(partitions=1, state_expiry_interval_s=0.001,
                               model_name="heuristic")
    ensure_topics(s)
    old = generate_events(30, seed=14, id_prefix="old", start_ms=1_700_000_000_000)
    # 200 days later (the default TTL is 90 days): other users only, so the old ones go idle.
    new = [dict(e, user_id=f"later-{e['user_id']}") for e in
           generate_events(30, seed=15, id_prefix="new", start_ms=1_717_280_000_000)]
    with EventPublisher(s) as pub:
        for e in old:
            pub.publish(e)
    Worker(s, instance_id="ttl").run(exit_when_idle=3)
    with EventPublisher(s) as pub:
        for e in new:
            pub.publish(e)
    stats = Worker(s, instance_id="ttl").run(exit_when_idle=3)
    assert stats.expired > 0
    latest: dict[bytes, bytes | None] = {}
    for m in read_topic(s, f"{s.group_id}.user.changelog", timeout=10, idle=1):
        latest[m.key()] = m.value()
    old_users = {e["user_id"].encode() for e in old}
    old_keys = [k for k in latest if b"later-" not in k and any(u in k for u in old_users)]
    assert old_keys and all(latest[k] is None for k in old_keys), "old entities not tombstoned"
    assert any(v is not None for k, v in latest.items() if b"later-" in k)
