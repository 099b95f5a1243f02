"""The peer benchmark's fraudstream contender on the real broker, started as the harness starts it.

A few hundred harness events (the harness's own generator, record timestamp = event time) over
several tumbling windows and two partitions; the app must produce one ``{"start", "end",
"value"}`` per input under the input's key, with each key's running count per window, commit
every input offset, and exit 0 on SIGTERM, under both guarantees. Under exactly-once the
harness's read_committed counter must see exactly N outputs where high watermarks over-count.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.contenders import by_name
from bench.harness import Config, _create_topic, _Watcher, make_events
from stream import wire
from stream.settings import Settings
from tests.kafka_util import read_topic

N = 300
CFG = Config(events=N, partitions=2, users=12, window_ms=5_000, grace_ms=1_000,
             events_per_second=20, commit_interval=0.2)  # 15 s of event time: 3-4 windows


def _publish(bootstrap: str, topic: str) -> dict[bytes, list[tuple[int, int, int]]]:
    """Produce the events; each key's expected outputs, in order: (start, end, value)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    counts: dict[tuple[bytes, int], int] = defaultdict(int)
    expected: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
    base = 1_767_225_600_000  # a window boundary
    for key, value, ts in make_events(CFG, base):
        start = ts - ts % CFG.window_ms
        counts[key, start] += 1
        expected[key].append((start, start + CFG.window_ms, counts[key, start]))
        producer.produce(topic, value, key, timestamp=ts)
        producer.poll(0)
    assert producer.flush(30) == 0
    return expected


@pytest.mark.parametrize("contender", ["fraudstream", "fraudstream-eos"])
def test_contender_emits_each_keys_running_window_count(kafka_bootstrap, tmp_path, contender):
    c = by_name(contender)
    assert c.unavailable() is None
    tag = uuid.uuid4().hex[:8]
    source, output, group = f"bench-in-{tag}", f"bench-out-{tag}", f"bench-t-{tag}"
    _create_topic(kafka_bootstrap, source, CFG.partitions)
    _create_topic(kafka_bootstrap, output, CFG.partitions, append_time=True)
    expected = _publish(kafka_bootstrap, source)
    cmd = [sys.executable, str(c.script_path), "--bootstrap", kafka_bootstrap,
           "--input", source, "--output", output, "--group", group,
           "--state-dir", str(tmp_path / "state"), "--window-ms", str(CFG.window_ms),
           "--grace-ms", str(CFG.grace_ms), "--commit-interval", str(CFG.commit_interval),
           "--partitions", str(CFG.partitions), *c.extra_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    reader = Settings.load(env={}, overrides={"bootstrap_servers": kafka_bootstrap})
    try:
        msgs = read_topic(reader, output, expected=N, timeout=60, idle=1.0)
        watch = _Watcher(kafka_bootstrap, CFG.partitions, read_committed=c.exactly_once)
        try:
            assert _settled(watch, output) == N
        finally:
            watch.close()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]

    got: dict[bytes, list[tuple[int, int, int]]] = defaultdict(list)
    for m in msgs:
        v = wire.loads(m.value())
        got[m.key()].append((v["start"], v["end"], v["value"]))
    assert len(msgs) == N
    assert got == expected

    committed = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        offsets = committed.committed([TopicPartition(source, p)
                                       for p in range(CFG.partitions)], timeout=10)
        assert sum(tp.offset for tp in offsets) == N
        if c.exactly_once:  # commit markers take offsets: watermarks say more than N
            highs = sum(committed.get_watermark_offsets(TopicPartition(output, p), timeout=10)[1]
                        for p in range(CFG.partitions))
            assert highs > N
    finally:
        committed.close()


def _settled(watch: _Watcher, topic: str, timeout: float = 10.0) -> int:
    """The watcher's count once it has caught up (it only takes what is fetched already)."""
    deadline = time.monotonic() + timeout
    seen = watch.count(topic)
    while seen < N and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = watch.count(topic)
    return seen
