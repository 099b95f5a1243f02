"""The worker under ``processing_guarantee = "at_least_once"`` on the real broker.

Offsets are committed from the main loop once a batch's outputs are delivered (no flush per
batch): these tests check that every event is scored, that offsets reach the end of the input
while the worker keeps running, and that a SIGKILL loses nothing (duplicates are allowed).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from stream.demo import generate_events
from stream.events import decode_score
from stream.publisher import EventPublisher
from stream.settings import Settings
from stream.topics import ensure_topics
from tests.kafka_util import FAST_FAILOVER, group_offsets, process_env, read_topic


def _start(s: Settings, name: str, log) -> subprocess.Popen:
    env = process_env(s, FRAUDSTREAM_PROCESSING_GUARANTEE="at_least_once", **FAST_FAILOVER)
    return subprocess.Popen([sys.executable, "-m", "stream", "worker", "--instance-id", name],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_until_logged(path, marker: bytes, after: int, timeout: float = 60) -> None:
    """Wait until ``marker`` appears in the log past byte ``after`` (a worker that logged a
    ready task has its signal handlers installed: they come before its loop)."""
    deadline = time.monotonic() + timeout
    while marker not in path.read_bytes()[after:]:
        assert time.monotonic() < deadline, f"{marker!r} not logged within {timeout}s"
        time.sleep(0.2)


def _published(s: Settings, n: int, seed: int, prefix: str) -> list[dict]:
    """``n`` generated events, published to the (created) events topic."""
    ensure_topics(s)
    events = generate_events(n, seed=seed, id_prefix=prefix)
    with EventPublisher(s) as pub:
        for e in events:
            pub.publish(e)
    return events


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_offsets_are_committed_while_running_and_every_event_scored_once(kafka_settings,
                                                                         tmp_path):
    s = kafka_settings
    events = _published(s, 400, seed=21, prefix="alo")
    with (tmp_path / "worker.log").open("wb") as log:
        proc = _start(s, "alo", log)
        try:
            scores = read_topic(s, s.topic_scores, expected=len(events), timeout=90, idle=0.5)
            # No shutdown yet: the loop itself commits once the outputs are acknowledged.
            deadline = time.monotonic() + 20
            committed, ends = group_offsets(s, s.topic_events)
            while committed != ends and time.monotonic() < deadline:
                time.sleep(0.2)
                committed, ends = group_offsets(s, s.topic_events)
            assert committed == ends and sum(ends.values()) == len(events)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            _stop(proc)
    ids = [decode_score(m.value()).event_id for m in scores]
    assert sorted(ids) == sorted(e["event_id"] for e in events)  # an undisturbed run: once each


def test_sigkill_loses_no_event(kafka_settings, tmp_path):
    s = kafka_settings
    events = _published(s, 3000, seed=22, prefix="alok")
    with (tmp_path / "worker.log").open("wb") as log:
        proc = _start(s, "alok", log)
        try:
            read_topic(s, s.topic_scores, expected=600, timeout=90, idle=0)
            proc.kill()  # SIGKILL mid-stream: whatever was not committed is processed again
            proc.wait()
            log.flush()
            restarted_at = (tmp_path / "worker.log").stat().st_size
            proc = _start(s, "alok", log)
            scores = read_topic(s, s.topic_scores, expected=len(events), timeout=120, idle=1)
            ids = {decode_score(m.value()).event_id for m in scores}
            missing = {e["event_id"] for e in events} - ids
            deadline = time.monotonic() + 60
            while missing and time.monotonic() < deadline:  # duplicates may fill `expected`
                time.sleep(1)
                scores = read_topic(s, s.topic_scores, timeout=30, idle=1)
                missing -= {decode_score(m.value()).event_id for m in scores}
            assert not missing, f"{len(missing)} events never scored"
            # The first worker may have scored everything before the kill (and committed
            # nothing yet): the second one then reprocesses from the last commit. Signal it only
            # once it is running (a SIGTERM during start-up finds no handler yet) and its loop
            # has committed the whole input.
            _wait_until_logged(tmp_path / "worker.log", b"ready:", restarted_at)
            deadline = time.monotonic() + 60
            committed, ends = group_offsets(s, s.topic_events)
            while committed != ends and time.monotonic() < deadline:
                time.sleep(0.2)
                committed, ends = group_offsets(s, s.topic_events)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            _stop(proc)
    committed, ends = group_offsets(s, s.topic_events)
    assert committed == ends
