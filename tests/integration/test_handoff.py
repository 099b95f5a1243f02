"""Local hand-off (docs/runtime.md, "Local hand-off") against a real broker.

One partition per topic throughout: the merchant stage then sees events in the events topic's
order whichever way they reach it, so exact equality is a fair demand (with several upstream
partitions the interleaving depends on timing: docs/runtime.md, "Determinism"). Besides the
scores, runs with an emitter compare every event's whole feature vector: the heuristic scorecard
does not read every merchant feature, so equal scores alone would not show an event that reached
the merchant stage out of order.
"""

from __future__ import annotations

import threading
import time

from stream import wire
from stream.demo import generate_events
from stream.events import decode_score
from stream.publisher import EventPublisher
from stream.runtime import Worker
from stream.runtime.worker import WorkerStats
from stream.topics import ensure_topics
from tests.kafka_util import group_offsets, read_topic

N_EVENTS = 6_000


class FeatureVectors:
    """Emits each event's merged feature vector instead of a score."""

    def emit(self, event, features):
        return event["event_id"].encode(), wire.dumps(features)


def _scores(s, expected: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for m in read_topic(s, s.topic_scores, expected=expected, timeout=120, idle=2):
        sc = decode_score(m.value())
        out.setdefault(sc.event_id, []).append(sc.score)
    return out


def _vectors(s, expected: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for m in read_topic(s, s.topic_scores, expected=expected, timeout=120, idle=2):
        out.setdefault(m.key().decode(), []).append(wire.loads(m.value()))
    return out


def _publish(s, events) -> None:
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)


def _published(kafka_settings, prefix: str):
    # The heuristic scorer: deterministic scores; the emitter runs compare whole vectors.
    base = kafka_settings.replace(partitions=1, model_name="heuristic")
    ensure_topics(base)
    events = generate_events(N_EVENTS, seed=29, id_prefix=prefix)
    _publish(base, events)
    return base, events


def _run(base, tag: str, tmp_path, emit: bool = False, **overrides):
    s = base.replace(group_id=f"{base.group_id}-{tag}", topic_scores=f"{base.topic_scores}-{tag}",
                     state_dir=str(tmp_path / tag), **overrides)
    ensure_topics(s)
    emitter = FeatureVectors() if emit else None
    return s, Worker(s, instance_id=tag, emitter=emitter).run(exit_when_idle=4)


def test_hand_off_gives_the_same_scores_twice_and_the_same_as_the_topic(kafka_settings,
                                                                         tmp_path):
    base, events = _published(kafka_settings, "det")
    runs = {}
    for tag, overrides in (("on1", {}), ("off", {"local_handoff": False}), ("on2", {}),
                           ("alo", {"processing_guarantee": "at_least_once"})):
        s, stats = _run(base, tag, tmp_path, **overrides)
        assert stats.scored == N_EVENTS, tag
        assert stats.consumed == N_EVENTS * (2 if tag == "off" else 1), tag
        if tag == "off":
            assert (stats.forwarded, stats.handed_off) == (N_EVENTS, 0)
        else:  # one worker owns every task: nothing goes through the repartition topic
            assert (stats.forwarded, stats.handed_off) == (0, N_EVENTS), tag
        runs[tag] = _scores(s, N_EVENTS)
    ids = {e["event_id"] for e in events}
    for tag, got in runs.items():
        assert set(got) == ids and all(len(v) == 1 for v in got.values()), tag
    assert runs["on1"] == runs["on2"] == runs["off"] == runs["alo"]
    vectors = {}
    for tag, overrides in (("von", {}), ("voff", {"local_handoff": False})):
        s, stats = _run(base, tag, tmp_path, emit=True, **overrides)
        assert stats.emitted == N_EVENTS, tag
        vectors[tag] = _vectors(s, N_EVENTS)
    assert vectors["von"] == vectors["voff"]
    assert all(len(v) == 1 for v in vectors["von"].values())


def test_a_task_takes_hand_offs_only_after_draining_its_repartition_partition(kafka_settings,
                                                                              tmp_path):
    base = kafka_settings.replace(partitions=1, model_name="heuristic")
    ensure_topics(base)
    events = generate_events(N_EVENTS, seed=31, id_prefix="drain")
    half = N_EVENTS // 2
    _publish(base, events[:half])

    # A first worker without hand-off stops early: its user stage ran ahead, so the merchant
    # stage's repartition partition still holds forwarded events when the next worker opens it
    # and finds the second half of the events to hand over.
    s = base.replace(group_id=base.group_id + "-drain", state_dir=str(tmp_path / "drain"))
    ensure_topics(s)
    emitter = FeatureVectors()
    # (Long transactions: the user stage forwards thousands of events before the merchant stage
    # can read the first; small producer batches, so that the next worker fetches the leftovers
    # a few at a time.)
    first = Worker(s.replace(local_handoff=False, commit_interval_ms=3000,
                             commit_min_interval_ms=3000, kafka={**s.kafka, "batch.size": 4096}),
                   instance_id="d1", emitter=emitter).run(max_events=300)
    assert 0 < first.emitted < half
    repartition = f"{s.group_id}.merchant.repartition"
    committed, ends = group_offsets(s, repartition)
    assert committed[0] < ends[0], "nothing left in the repartition topic: the test is void"
    _publish(base, events[half:])
    ref, stats = _run(base, "ref", tmp_path, emit=True, local_handoff=False)
    assert stats.emitted == N_EVENTS
    expected = _vectors(ref, N_EVENTS)

    # Small fetches and batches: the consumer hands over the leftovers and the new events
    # interleaved, so the user stage forwards while the merchant task still drains (and holds
    # them: long transactions, so that it finishes draining before a commit sends what it holds
    # to the topic).
    small = s.replace(poll_batch_size=20, commit_interval_ms=20_000,
                      commit_min_interval_ms=20_000, commit_every_records=100_000,
                      transaction_timeout_ms=60_000,
                      kafka={**s.kafka, "max.partition.fetch.bytes": 16_384})
    second = Worker(small, instance_id="d2", emitter=emitter).run(exit_when_idle=4)
    assert second.handed_off > 0, (first, second, committed, ends)
    # Every event reached the merchant stage once: leftovers from the topic, then the rest
    # handed over (or through the topic while the task was still draining).
    assert first.emitted + second.emitted == N_EVENTS
    got = _vectors(s, N_EVENTS)
    duplicates = {k: v for k, v in got.items() if len(v) != 1}
    assert not duplicates, f"{len(duplicates)} events emitted more than once"
    assert set(got) == set(expected) == {e["event_id"] for e in events}
    mismatched = [k for k in expected if got[k] != expected[k]]
    assert not mismatched, (f"{len(mismatched)} feature vectors differ from the reference, e.g. "
                            f"{mismatched[0]}: {got[mismatched[0]]} vs {expected[mismatched[0]]}")


def test_two_workers_with_mixed_ownership_hand_off_what_they_own(kafka_settings, tmp_path):
    """A worker alone hands everything off; a second one joins mid-stream and takes half of
    each topic's partitions: each then hands off to the merchant tasks it owns and forwards
    the rest through the topic, and the tasks that moved drain before taking hand-offs.
    Features live on the user stage (tests/integration/test_scaling.py), so the scores must
    equal a one-worker run's however the merchant stage interleaves its inputs."""
    from tests.integration.test_scaling import USER_STAGE_FEATURES

    n = 20_000
    (tmp_path / "features.toml").write_text(USER_STAGE_FEATURES)
    base = kafka_settings.replace(partitions=4, model_name="heuristic",
                                  features_file=str(tmp_path / "features.toml"))
    ensure_topics(base)
    events = generate_events(n, seed=37, id_prefix="mixed")
    _publish(base, events)
    ref, stats = _run(base, "ref", tmp_path, local_handoff=False)
    assert stats.scored == n
    expected = _scores(ref, n)

    # The same events into a topic of their own, published while the workers run.
    s = base.replace(group_id=base.group_id + "-mixed", state_dir=str(tmp_path / "mixed"),
                     topic_events=base.topic_events + "-mixed")
    ensure_topics(s)
    results: dict[str, object] = {}

    def run(name: str) -> None:
        try:
            results[name] = Worker(s, instance_id=name).run(exit_when_idle=6)
        except BaseException as exc:  # noqa: BLE001 - reported below
            results[name] = exc

    def publish_steadily() -> None:
        with EventPublisher(s) as pub:
            for i, e in enumerate(events):
                pub.publish(e)
                if i % 500 == 499:
                    pub.flush()
                    time.sleep(0.25)

    publisher = threading.Thread(target=publish_steadily)
    publisher.start()
    workers = [threading.Thread(target=run, args=("w1",))]
    workers[0].start()
    time.sleep(2.0)
    workers.append(threading.Thread(target=run, args=("w2",)))
    workers[1].start()
    publisher.join(300)
    for w in workers:
        w.join(300)
        assert not w.is_alive()
    stats = list(results.values())
    assert all(isinstance(x, WorkerStats) for x in stats), results
    assert sum(x.handed_off for x in stats) > 0 and sum(x.forwarded for x in stats) > 0, results
    assert sum(x.scored for x in stats) >= n
    got = _scores(s, n)
    duplicates = {k: v for k, v in got.items() if len(v) != 1}
    assert not duplicates, f"{len(duplicates)} events scored more than once"
    assert set(got) == set(expected) == {e["event_id"] for e in events}
    mismatched = [k for k in expected if got[k] != expected[k]]
    assert not mismatched, f"{len(mismatched)} scores differ from the reference"
