"""Worker and trainer together on the real broker: labels become training examples, the trainer
publishes a new global model, and the running worker scores with it without a restart."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time

from stream.demo import generate_events
from stream.events import decode_score
from stream.modelstore import read_models
from stream.publisher import EventPublisher
from stream.topics import ensure_topics
from tests.conftest import ROOT
from tests.kafka_util import process_env, read_topic

DAY_MS = 86_400_000


def test_trainer_publishes_and_worker_picks_up_the_new_version_live(kafka_settings, tmp_path):
    s = kafka_settings.replace(partitions=2)
    ensure_topics(s)
    env = process_env(s, FRAUDSTREAM_TRAINER_PUBLISH_EVERY="100",
                      FRAUDSTREAM_TRAINER_PUBLISH_INTERVAL_S="2")
    logs = {n: (tmp_path / f"{n}.log").open("wb") for n in ("worker", "trainer")}
    worker = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id", "w"],
                              env=env, stdout=logs["worker"], stderr=subprocess.STDOUT, cwd=ROOT)
    trainer = subprocess.Popen([sys.executable, "-m", "stream", "trainer", "--no-metrics"],
                               env=env, stdout=logs["trainer"], stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        first = generate_events(600, seed=51, id_prefix="lc1")
        with EventPublisher(s) as pub:
            for e in first:
                pub.publish(e)
        scored = read_topic(s, s.topic_scores, expected=len(first), timeout=120, idle=1)
        assert len(scored) == len(first)
        initial = {decode_score(m.value()).model_version for m in scored}

        # Labels arrive "days later" for every scored event; about one in ten is fraud.
        rng = random.Random(5)
        with EventPublisher(s) as pub:
            for e in first:
                pub.publish_label({"event_id": e["event_id"], "user_id": e["user_id"],
                                   "merchant_id": e["merchant_id"],
                                   "is_fraud": rng.random() < 0.1 or e["amount"] < 2.0,
                                   "label_time": e["event_time"] + 3 * DAY_MS,
                                   "source": "chargeback"})

        deadline = time.monotonic() + 120
        published = None
        while time.monotonic() < deadline:
            rec = read_models(s).get("role/global")
            if rec is not None and rec.n_learned == len(first):
                published = rec
                break
            assert worker.poll() is None and trainer.poll() is None
            time.sleep(1)
        assert published is not None, "the trainer did not publish a model of every example"
        assert published.version not in {v.split("+")[0] for v in initial}

        # The same worker process, never restarted, now stamps the new version on its scores.
        deadline = time.monotonic() + 60
        while published.version not in (tmp_path / "worker.log").read_text():
            assert time.monotonic() < deadline, "the worker did not load the new model"
            time.sleep(0.5)
        second = generate_events(200, seed=52, id_prefix="lc2")
        with EventPublisher(s) as pub:
            for e in second:
                pub.publish(e)
        later = [decode_score(m.value()) for m in
                 read_topic(s, s.topic_scores, expected=len(first) + len(second), timeout=120,
                            idle=1)]
        versions = {sc.model_version.split("+")[0] for sc in later
                    if sc.event_id.startswith("lc2")}
        assert versions == {published.version}
        assert worker.poll() is None  # no restart happened
        text = (tmp_path / "worker.log").read_text()
        assert re.search(rf"scoring with global model {re.escape(published.version)}", text)
    finally:
        for proc in (worker, trainer):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (worker, trainer):
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()


def test_labels_that_overtake_their_events_are_parked_and_learned(kafka_settings):
    """Labels published before their events (a replay at full speed can do that) are kept in
    partition state and joined when the event is scored: every one becomes a training example."""
    from stream.runtime import Worker

    s = kafka_settings.replace(partitions=2)
    ensure_topics(s)
    events = generate_events(120, seed=61, id_prefix="park")
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish_label({"event_id": e["event_id"], "user_id": e["user_id"],
                               "merchant_id": e["merchant_id"], "is_fraud": e["amount"] < 2.0,
                               "label_time": e["event_time"] + DAY_MS})
    worker = Worker(s, instance_id="park")
    stats = worker.run(exit_when_idle=4)  # labels only: nothing to join yet
    assert stats.labels == len(events) and stats.labels_parked == len(events)
    assert stats.examples == 0
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)
    stats = Worker(s, instance_id="park").run(exit_when_idle=4)  # restarted: parked in state
    assert stats.scored == len(events)
    assert stats.examples == len(events)
    examples = read_topic(s, s.topic_training, expected=len(events), idle=1)
    assert len(examples) == len(events)
