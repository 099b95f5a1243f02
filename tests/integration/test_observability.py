"""The worker's metrics and health endpoints, scraped while it works on the real broker: throughput,
latency, lag, readiness, rolling model quality once labels arrive, and restore progress (a second
worker rebuilds the first one's state from the changelogs)."""

from __future__ import annotations

import json
import math
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from stream.demo import generate_events
from stream.publisher import EventPublisher
from stream.topics import ensure_topics
from tests.conftest import ROOT, _free_port_pair
from tests.kafka_util import process_env

DAY_MS = 86_400_000


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def _series(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of ``name``: label pairs -> value (NaN included)."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{([^}}]*)\}})? (\S+)$", line)
        if m:
            labels = tuple(sorted(re.findall(r'([a-z_]+)="([^"]*)"', m.group(1) or "")))
            out[labels] = float(m.group(2))
    return out


def _start_worker(s, instance: str, port: int, log) -> subprocess.Popen:
    env = process_env(s, FRAUDSTREAM_METRICS_PORT=str(port), FRAUDSTREAM_LOG_FORMAT="json",
                      FRAUDSTREAM_QUALITY_METRICS_INTERVAL_S="1")
    return subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id", instance],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_metrics_move_lag_drains_and_readiness_follows_restore(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s)
    port = _free_port_pair()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = _start_worker(s, "m1", port, log)
        try:
            # Readiness: 503 while starting (before assignment and restore), then 200.
            seen_not_ready = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                status, body = _get(base + "/readyz")
                if status == 503:
                    seen_not_ready = True
                if status == 200:
                    break
                time.sleep(0.05)
            assert seen_not_ready and status == 200
            assert "ready:" in log_path.read_text()  # the tasks logged their restore first
            assert _get(base + "/healthz")[0] == 200

            events = generate_events(3000, seed=41, id_prefix="obs")
            # One event two days behind its user's latest: late (beyond the 1 h grace period).
            events.append(dict(events[-1], event_id="obs-late",
                               event_time=events[-1]["event_time"] - 2 * DAY_MS))
            with EventPublisher(s) as pub:
                for e in events:
                    pub.publish(e)
                pub.publish_raw(s.topic_events, b"{broken", b"k")

            scored = 0.0
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                _, text = _get(base + "/metrics")
                scored = _sample(text, "fraudstream_scores_total")
                # End-to-end latency is observed just after each commit returns.
                if scored >= len(events) and _sample(
                        text, "fraudstream_end_to_end_seconds_count") >= len(events):
                    break
                time.sleep(0.5)
            assert scored == len(events)
            consumed = _sample(text, "fraudstream_events_consumed_total", stage="user")
            assert consumed == len(events) + 1  # and the broken record
            assert _sample(text, "fraudstream_dead_letters_total", reason="bad_json") == 1
            assert _sample(text, "fraudstream_commits_total") > 0
            assert _sample(text, "fraudstream_end_to_end_seconds_count") == len(events)
            # One record in 8 per (stage, partition) task is timed. The merchant stage reads
            # from its repartition topic what the worker did not hand to it in-process.
            merchant_consumed = [v for k, v in _series(
                text, "fraudstream_events_consumed_total").items() if ("stage", "merchant") in k]
            handed_off = _sample(text, "fraudstream_forwards_total", path="handoff")
            assert handed_off > 0
            assert sum(merchant_consumed) + handed_off == len(events)
            assert sum(merchant_consumed) == _sample(text, "fraudstream_forwards_total",
                                                     path="topic")
            assert _sample(text, "fraudstream_processing_seconds_count", stage="merchant") == sum(
                int(v) // 8 for v in merchant_consumed)
            assert _sample(text, "fraudstream_late_events_total", stage="user") == 1
            assert _sample(text, "fraudstream_assigned_partitions", stage="user") == s.partitions

            # Lag is published every 5 s; it must come back to zero once all is processed.
            deadline = time.monotonic() + 30
            lag = None
            while time.monotonic() < deadline:
                _, text = _get(base + "/metrics")
                if "fraudstream_consumer_lag{" in text:
                    lag = _sample(text, "fraudstream_consumer_lag", topic=s.topic_events)
                    if lag == 0:
                        break
                time.sleep(1)
            assert lag == 0
            assert _get(base + "/nope")[0] == 404

            # A fresh worker restored empty changelogs: every task reports 0 left, 0 restored.
            remaining = _series(text, "fraudstream_restore_remaining_records")
            assert len(remaining) == 2 * s.partitions and set(remaining.values()) == {0.0}
            # No label yet: no quality figures, and the label delay is unknown (not 0).
            assert not _series(text, "fraudstream_quality_auc")
            assert math.isnan(_series(text, "fraudstream_label_delay_mean_seconds")[()])

            # Labels three days later; the scoring stage evaluates each against its stored score.
            rng = random.Random(9)
            with EventPublisher(s) as pub:
                for e in events:
                    pub.publish_label({"event_id": e["event_id"], "user_id": e["user_id"],
                                       "merchant_id": e["merchant_id"],
                                       "is_fraud": e["amount"] < 2.0 or rng.random() < 0.05,
                                       "label_time": e["event_time"] + 3 * DAY_MS,
                                       "source": "chargeback"})
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                _, text = _get(base + "/metrics")
                window = _series(text, "fraudstream_quality_window_labels")
                if window.get((("model", "final"),)) == len(events):
                    break
                time.sleep(0.5)
            assert window.get((("model", "final"),)) == len(events), window
            for model in ("final", "global"):
                for family in ("auc", "average_precision", "precision_at_budget",
                               "recall_at_budget"):
                    got = _series(text, f"fraudstream_quality_{family}")
                    assert 0.0 <= got[(("model", model),)] <= 1.0, (family, model, got)
            assert _series(text, "fraudstream_label_delay_mean_seconds")[()] == \
                pytest.approx(3 * DAY_MS / 1000)
            assert _sample(text, "fraudstream_labels_total", stage="merchant") == len(events)
            # State size per stage: every user and merchant has an entry (plus label index and
            # stored snapshots), and the stores take bytes.
            users = len({e["user_id"] for e in events})
            assert _sample(text, "fraudstream_state_entities", stage="user") >= users
            assert _sample(text, "fraudstream_state_entities", stage="merchant") >= len(events)
            assert _sample(text, "fraudstream_state_bytes", stage="merchant") > 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            _stop(proc)
    assert _get(base + "/healthz")[0] == 0  # the server went away with the process
    # Structured logs: every line is one JSON object; record-level lines carry their context.
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    dead = [r for r in records if r["msg"].startswith("dead letter")]
    assert len(dead) == 1 and dead[0]["topic"] == s.topic_events and dead[0]["offset"] >= 0
    assert any(f"scored {len(events)}" in r["msg"] for r in records)

    # Another instance has no local state: it rebuilds every task from the changelogs, and its
    # restore gauges say how much it read, as its log does.
    port = _free_port_pair()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "worker2.log"
    with log_path.open("wb") as log:
        proc = _start_worker(s, "m2", port, log)
        try:
            deadline = time.monotonic() + 60
            while _get(base + "/readyz")[0] != 200:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
            _, text = _get(base + "/metrics")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            _stop(proc)
    restored = _series(text, "fraudstream_restore_restored_records")
    remaining = _series(text, "fraudstream_restore_remaining_records")
    assert len(restored) == 2 * s.partitions and set(remaining.values()) == {0.0}
    logged = {(r["stage"], str(r["partition"])): r["restored"]
              for r in map(json.loads, log_path.read_text().splitlines())
              if r["msg"].startswith("task ") and "restored" in r}
    assert {(dict(k)["stage"], dict(k)["partition"]): v for k, v in restored.items()} == logged
    for stage in ("user", "merchant"):
        total = sum(v for (st, _), v in logged.items() if st == stage)
        assert total > 0  # the merchant stage holds snapshots and merchant models, the user
        assert _sample(text, "fraudstream_restore_records_total", stage=stage) == total
    # The quality windows are not state: the new owner starts them empty.
    assert not _series(text, "fraudstream_quality_window_labels")
