"""Several workers in one group, a member killed mid-stream, and a broker restarted mid-stream."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from stream.demo import generate_events
from stream.events import decode_score
from stream.localkafka import LocalKafka
from stream.publisher import EventPublisher
from stream.runtime import Worker
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.conftest import ROOT, _free_port_pair
from tests.kafka_util import FAST_FAILOVER, count_scores, process_env, read_topic

# Features whose state lives on the user stage only (user and user x merchant entities): every
# score then depends only on each user's own event order, which the user partition fixes, so the
# scores must equal the reference's however the merchant stage interleaves its inputs.
USER_STAGE_FEATURES = """
grace = "1h"
ttl = "40d"
[[feature]]
agg = "count"
entity = "user_id"
window = "1m"
[[feature]]
agg = "count"
entity = "user_id"
window = "1h"
[[feature]]
agg = "sum"
entity = "user_id"
field = "amount"
window = "1h"
[[feature]]
agg = "zscore"
entity = "user_id"
field = "amount"
window = "7d"
[[feature]]
agg = "distinct"
entity = "user_id"
field = "merchant_id"
window = "1d"
[[feature]]
agg = "count"
entity = ["user_id", "merchant_id"]
window = "30d"
[[feature]]
agg = "value"
field = "amount"
"""


def _scores(s: Settings, expected: int, topic: str | None = None) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for m in read_topic(s, topic or s.topic_scores, expected=expected, timeout=240, idle=3):
        sc = decode_score(m.value())
        out.setdefault(sc.event_id, []).append(sc.score)
    return out


def _reference(s: Settings, tmp_path: Path, n: int) -> dict[str, list[float]]:
    ref = s.replace(group_id=s.group_id + "-ref", topic_scores=s.topic_scores + "-ref",
                    state_dir=str(tmp_path / "ref-state"))
    ensure_topics(ref)
    assert Worker(ref, instance_id="ref").run(exit_when_idle=5).scored == n
    return _scores(ref, n)


def _assert_exactly_once_and_equal(got: dict, expected: dict, ids: set[str]) -> None:
    duplicates = [k for k, v in got.items() if len(v) != 1]
    assert not duplicates, f"{len(duplicates)} events scored more than once"
    assert set(got) == ids, f"missing {len(ids - set(got))}, unexpected {len(set(got) - ids)}"
    differing = [k for k in ids if got[k][0] != expected[k][0]]
    assert not differing, f"{len(differing)} scores differ from the reference"


def _wait_for_scores(s: Settings, at_least: int, timeout: float, procs) -> None:
    deadline = time.monotonic() + timeout
    while count_scores(s) < at_least:
        assert time.monotonic() < deadline, "workers made no progress"
        assert all(p.poll() is None for p in procs), "a worker exited early"


def _owned(log_path: Path, topic: str) -> set[int]:
    """Partitions of ``topic`` a worker holds now, replayed from its assigned/revoked log lines."""
    held: set[int] = set()
    pattern = re.compile(rf"(assigned|revoked|lost) .*?{re.escape(topic)}\[([0-9, ]+)\]")
    for line in log_path.read_text().splitlines():
        m = pattern.search(line)
        if m:
            parts = {int(p) for p in m.group(2).split(",")}
            held = held | parts if m.group(1) == "assigned" else held - parts
    return held


def test_three_workers_one_killed_partitions_move_and_state_is_restored(kafka_settings, tmp_path):
    """Events arrive at a steady rate while three workers share them; one that owns user
    partitions is SIGKILLed; the others take its partitions over, rebuild their state from the
    changelog, and every score still equals an uninterrupted reference run's."""
    n = 30_000
    s = kafka_settings.replace(partitions=3, features_file=str(tmp_path / "features.toml"),
                               model_name="heuristic")
    (tmp_path / "features.toml").write_text(USER_STAGE_FEATURES)
    ensure_topics(s)
    events = generate_events(n, seed=21, id_prefix="scale")
    published = threading.Event()

    def publish_steadily() -> None:  # about 1,500 events/s: the stream outlives the kill
        with EventPublisher(s) as pub:
            for i, e in enumerate(events):
                pub.publish(e)
                if i % 150 == 149:
                    time.sleep(0.1)
        published.set()

    run = s.replace(group_id=s.group_id + "-run", state_dir=str(tmp_path / "run"))
    env = process_env(run, FRAUDSTREAM_FEATURES_FILE=s.features_file,
                      FRAUDSTREAM_MODEL_NAME="heuristic", **FAST_FAILOVER)
    logs = {name: (tmp_path / f"{name}.log").open("wb") for name in ("w1", "w2", "w3")}
    procs = {name: subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id",
                                     name], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ROOT)
             for name, log in logs.items()}
    publisher = threading.Thread(target=publish_steadily, daemon=True)
    survivors: list[str] = []
    try:
        publisher.start()
        # Kill a worker that owns user partitions (the stage with state) and has held them
        # through a stretch of progress, while events are still arriving.
        deadline = time.monotonic() + 120
        victim_name = None
        while victim_name is None:
            assert time.monotonic() < deadline, "no worker kept a user partition"
            _wait_for_scores(run, count_scores(run) + 1000, 120, procs.values())
            owned = {name: _owned(tmp_path / f"{name}.log", run.topic_events) for name in procs}
            candidate = next((name for name, parts in owned.items() if parts), None)
            if candidate is None:
                continue
            _wait_for_scores(run, count_scores(run) + 1000, 120, procs.values())
            if _owned(tmp_path / f"{candidate}.log", run.topic_events) == owned[candidate]:
                victim_name = candidate
        assert not published.is_set(), "the stream ended before the kill: slow the publisher"
        procs[victim_name].send_signal(signal.SIGKILL)
        procs[victim_name].wait()
        survivors = [name for name in procs if name != victim_name]
        publisher.join(300)
        assert published.is_set()
        _wait_for_scores(run, n, 300, [procs[name] for name in survivors])
        for name in survivors:
            procs[name].send_signal(signal.SIGTERM)
        for name in survivors:
            assert procs[name].wait(60) == 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs.values():
            log.close()
    text = "".join((tmp_path / f"{name}.log").read_text() for name in survivors)
    restored = [int(x) for x in re.findall(r"(\d+) changelog records restored", text)]
    assert any(x > 0 for x in restored), "the moved partitions were not restored from changelogs"
    expected = _reference(s, tmp_path, n)
    _assert_exactly_once_and_equal(_scores(run, n), expected, {e["event_id"] for e in events})


def test_broker_restart_mid_stream_loses_nothing(tmp_path):
    """A private broker (so restarting it disturbs no other test) is stopped and started again
    while events are still being published and processed."""
    broker = LocalKafka(tmp_path / "kafka", ROOT / ".cache" / "kafka", port=_free_port_pair())
    broker.up(timeout=120)
    try:
        n = 24_000
        s = Settings.load(env={}, overrides={
            "bootstrap_servers": broker.bootstrap, "partitions": 2,
            "state_dir": str(tmp_path / "state"), "group_id": "restart"})
        ensure_topics(s)
        events = generate_events(n, seed=31, id_prefix="rst")
        published = threading.Event()

        def publish_steadily() -> None:  # about 1,500 events/s, through the restart
            with EventPublisher(s) as pub:
                for i, e in enumerate(events):
                    pub.publish(e)
                    if i % 150 == 149:
                        time.sleep(0.1)
            published.set()

        env = process_env(s, **FAST_FAILOVER)
        log_path = tmp_path / "worker.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id",
                                     "r1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=ROOT)
            publisher = threading.Thread(target=publish_steadily, daemon=True)
            try:
                publisher.start()
                _wait_for_scores(s, 2_000, 120, [proc])
                assert not published.is_set(), "publishing ended before the restart"
                assert broker.down(grace=30)
                time.sleep(3)
                broker.up(timeout=120)
                publisher.join(300)
                assert published.is_set()
                _wait_for_scores(s, n, 240, [proc])
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(60) == 0, log_path.read_text()[-3000:]
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGUSR1)  # stacks into the log, for the report
                    time.sleep(1)
                    proc.kill()
                    proc.wait()
        got = _scores(s, n)
        duplicates = [k for k, v in got.items() if len(v) != 1]
        assert not duplicates, f"{len(duplicates)} events scored more than once"
        assert set(got) == {e["event_id"] for e in events}
    finally:
        broker.down()
