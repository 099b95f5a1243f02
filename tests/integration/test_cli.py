"""The command line against the real broker, run as a user runs it (a separate process)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

from stream import wire
from stream.demo import generate_events
from stream.events import Score, decode_event
from stream.localkafka import _alive
from stream.publisher import EventPublisher
from stream.topics import ensure_topics, project_topics
from tests.conftest import ROOT, _free_port_pair
from tests.kafka_util import process_env, read_topic


def _env(s) -> dict[str, str]:
    return process_env(s)


def fraudstream(*args: str, env: dict[str, str], stdin: bytes | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], env=env, input=stdin,
                          capture_output=True, timeout=timeout, cwd=ROOT)


def test_topics_create_twice(kafka_settings):
    env = _env(kafka_settings)
    expected = len(project_topics(kafka_settings))
    first = fraudstream("topics", "create", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.decode().count("created ") == expected
    second = fraudstream("topics", "create", env=env)
    assert second.returncode == 0 and second.stdout.decode().count("exists ") == expected


def test_publish_reports_invalid_lines_and_sends_only_valid(kafka_settings, tmp_path: Path):
    s = kafka_settings
    ensure_topics(s)
    good = generate_events(50, seed=4, id_prefix="cli")
    lines = [wire.dumps(e) for e in good]
    lines.insert(3, b'{"event_id": "nope"')                       # line 4: bad JSON
    lines.insert(10, wire.dumps(dict(good[0], event_id="neg", amount=-1)))  # line 11
    lines.insert(20, b"")                                           # blank lines are skipped
    path = tmp_path / "events.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b"\n".join(lines) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    proc = fraudstream("publish", str(path), "--rejects", str(rejects), env=_env(s))
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "line 4: rejected: not valid JSON" in err
    assert "line 11: rejected: amount: must be >= 0" in err
    assert "published 50 events" in err and "rejected 2" in err
    assert rejects.read_bytes().count(b"\n") == 2
    sent = read_topic(s, s.topic_events, expected=50, idle=1)
    assert sorted(decode_event(m.value()).event_id for m in sent) == \
        sorted(e["event_id"] for e in good)


def test_publish_from_stdin(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    data = b"".join(wire.dumps_line(e) for e in generate_events(20, seed=6, id_prefix="in"))
    proc = fraudstream("publish", "-", env=_env(s), stdin=data)
    assert proc.returncode == 0, proc.stderr
    assert len(read_topic(s, s.topic_events, expected=20, idle=1)) == 20


def test_tail_prints_scores_filtered_by_min_score(kafka_settings):
    s = kafka_settings
    ensure_topics(s)
    with EventPublisher(s) as pub:
        for i in range(10):
            score = Score(event_id=f"t{i}", user_id="u", merchant_id="m", event_time=1, score=i / 10,
                          decision="approve", model_version="v", reasons=[], scored_at=2)
            pub.publish_raw(s.topic_scores, score.encode(), b"u")
    proc = fraudstream("tail", "--from-beginning", "--json", "--min-score", "0.55",
                       "--idle-timeout", "3", env=_env(s))
    assert proc.returncode == 0, proc.stderr
    ids = [wire.loads(line)["event_id"] for line in proc.stdout.splitlines()]
    assert sorted(ids) == ["t6", "t7", "t8", "t9"]
    text = fraudstream("tail", "--from-beginning", "--max", "2", env=_env(s))
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2


def test_kafka_up_status_down_with_cache(tmp_path: Path):
    """A second broker through the CLI: cached start, status, and down stopping exactly it."""
    port = _free_port_pair()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    args = ["--port", str(port), "--dir", str(tmp_path / "k"), "--cache",
            str(ROOT / ".cache" / "kafka")]
    up = fraudstream("kafka", "up", *args, env=env)
    try:
        assert up.returncode == 0, up.stderr
        assert f"bootstrap 127.0.0.1:{port}" in up.stdout.decode()
        assert b"fetching" not in up.stderr  # the session fixture filled the cache already
        pid = int((tmp_path / "k" / "broker.pid").read_text().split()[0])
        status = fraudstream("kafka", "status", *args, env=env)
        assert status.returncode == 0 and f"PID {pid}" in status.stdout.decode()
        again = fraudstream("kafka", "up", *args, env=env)  # already running: a no-op
        assert again.returncode == 0 and f"PID {pid}" in again.stdout.decode()
    finally:
        down = fraudstream("kafka", "down", *args, env=env)
    assert down.returncode == 0 and down.stdout.strip() == b"stopped"
    assert not _alive(pid)  # exited (a zombie awaiting its reaper counts as exited)
    after = fraudstream("kafka", "status", *args, env=env)
    assert after.returncode == 3 and after.stdout.startswith(b"stopped")
