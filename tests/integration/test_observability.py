"""The worker's metrics and health endpoints, scraped while it works on the real broker."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from stream.demo import generate_events
from stream.publisher import EventPublisher
from stream.topics import ensure_topics
from tests.conftest import ROOT, _free_port_pair
from tests.kafka_util import process_env


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


def test_metrics_move_lag_drains_and_readiness_follows_restore(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s)
    port = _free_port_pair()
    base = f"http://127.0.0.1:{port}"
    env = process_env(s, FRAUDSTREAM_METRICS_PORT=str(port), FRAUDSTREAM_LOG_FORMAT="json")
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id", "m1"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
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
            assert _sample(text, "fraudstream_events_consumed_total", stage="user") == 3001
            assert _sample(text, "fraudstream_dead_letters_total", reason="bad_json") == 1
            assert _sample(text, "fraudstream_commits_total") > 0
            assert _sample(text, "fraudstream_end_to_end_seconds_count") == len(events)
            assert _sample(text, "fraudstream_processing_seconds_count", stage="merchant") == 3000
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
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert _get(base + "/healthz")[0] == 0  # the server went away with the process
    # Structured logs: every line is one JSON object; record-level lines carry their context.
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    dead = [r for r in records if r["msg"].startswith("dead letter")]
    assert len(dead) == 1 and dead[0]["topic"] == s.topic_events and dead[0]["offset"] >= 0
    assert any("scored 3000" in r["msg"] for r in records)
