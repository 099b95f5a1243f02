"""``fraudstream replay`` against the real broker: order, pacing, mapping, resume, rejects."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from stream import wire
from stream.cli import main
from stream.events import decode_event, decode_label
from stream.mapping import ColumnMapping
from stream.publisher import EventPublisher
from stream.replay import RecordMapping, ReplayOptions, replay
from stream.simulate import SimConfig, simulate, write_jsonl
from stream.topics import ensure_topics
from tests.kafka_util import read_topic

ROOT = Path(__file__).resolve().parents[2]


def _simulated(tmp_path: Path, n: int, seed: int = 1, shuffle: bool = False):
    sim = simulate(SimConfig(events=n, days=10, fraud_rate=0.02, seed=seed, maturity_days=3))
    events, labels = sim.events, sim.labels
    if shuffle:
        random.Random(seed).shuffle(events)
        random.Random(seed + 1).shuffle(labels)
    ev, lab = tmp_path / "events.jsonl.gz", tmp_path / "labels.jsonl"
    write_jsonl(events, ev)
    write_jsonl(labels, lab)
    return ev, lab, sim


def _cli(settings, *args: str):
    return CliRunner().invoke(main, ["--bootstrap-servers", settings.bootstrap_servers, *args],
                              env={f"FRAUDSTREAM_{k.upper()}": v for k, v in {
                                  "topic_events": settings.topic_events,
                                  "topic_labels": settings.topic_labels,
                                  "topic_scores": settings.topic_scores,
                                  "topic_dead_letter": settings.topic_dead_letter,
                                  "partitions": str(settings.partitions)}.items()})


def test_shuffled_log_is_sent_in_event_time_order_keyed_like_the_publisher(kafka_settings,
                                                                           tmp_path):
    s = kafka_settings
    ensure_topics(s)
    ev, lab, sim = _simulated(tmp_path, 3000, shuffle=True)
    result = replay(s, ReplayOptions(log=ev, labels=lab), checkpoint=tmp_path / "ck.json")
    assert (result.events_sent, result.labels_sent) == (3000, sim.n_labels)

    events = read_topic(s, s.topic_events, expected=3000, idle=1)
    decoded = [(m, decode_event(m.value())) for m in events]
    assert sorted(e.event_id for _, e in decoded) == sorted(e["event_id"] for e in sim.events)
    by_partition: dict[int, list[int]] = {}
    for msg, e in decoded:
        assert msg.key() == e.user_id.encode()
        by_partition.setdefault(msg.partition(), []).append(e.event_time)
    for times in by_partition.values():
        assert times == sorted(times)
    # The same user lands where EventPublisher puts it (workers keep keyed state per partition).
    probe_user = decoded[0][1].user_id
    with EventPublisher(s) as pub:
        pub.publish({"event_id": "probe", "event_type": "login", "event_time": 1767225600000,
                     "user_id": probe_user})
    probe = [m for m in read_topic(s, s.topic_events, expected=3001, idle=0.5)
             if decode_event(m.value()).event_id == "probe"]
    assert probe[0].partition() == decoded[0][0].partition()

    labels = read_topic(s, s.topic_labels, expected=sim.n_labels, idle=1)
    assert len(labels) == sim.n_labels
    assert all(m.key() == decode_label(m.value()).merchant_id.encode() for m in labels)


def test_speed_keeps_scaled_inter_arrival_times_and_labels_at_their_time(kafka_settings,
                                                                        tmp_path):
    s = kafka_settings
    ensure_topics(s)
    t0 = 1_767_225_600_000
    # 41 events over 8 s of event time, one every 200 ms; a label at t0 + 4 s.
    rows = [{"event_id": f"e{i}", "event_type": "transaction", "event_time": t0 + i * 200,
             "user_id": f"u{i % 5}", "merchant_id": "m1", "amount": 1.0, "currency": "EUR"}
            for i in range(41)]
    log, labels = tmp_path / "paced.jsonl", tmp_path / "paced-labels.jsonl"
    write_jsonl(rows, log)
    write_jsonl([{"event_id": "e3", "user_id": "u3", "merchant_id": "m1", "is_fraud": True,
                  "label_time": t0 + 4000}], labels)
    began = time.monotonic()
    replay(s, ReplayOptions(log=log, labels=labels, speed=8.0))
    wall = time.monotonic() - began
    assert 0.9 < wall < 4.0, wall  # 8 s of event time at 8x is one second of sending

    msgs = read_topic(s, s.topic_events, expected=41, idle=0.5)
    sent_at = {decode_event(m.value()).event_id: m.timestamp()[1] for m in msgs}
    span = sent_at["e40"] - sent_at["e0"]
    assert 850 <= span <= 1600, span
    halfway = sent_at["e20"] - sent_at["e0"]
    assert 0.35 * span <= halfway <= 0.65 * span, (halfway, span)
    (label,) = read_topic(s, s.topic_labels, expected=1, idle=0.5)
    # At t0 + 4 s, i.e. half a second in: after e20 (t0 + 4 s, events first), before e22.
    assert sent_at["e20"] <= label.timestamp()[1] <= sent_at["e22"] + 50


def test_csv_with_foreign_columns_and_epoch_seconds(kafka_settings, tmp_path):
    s = kafka_settings
    log = tmp_path / "payments.csv"
    log.write_text(textwrap.dedent("""\
        TXN,CUSTOMER,SHOP,TS,AMT,CUR,note
        t1,1001,s9,1767225601,12.50,EUR,first
        t2,1002,s9,1767225600.25,3,EUR,
        t3,1001,s8,1767225602,7.10,GBP,third
        """))
    result = _cli(s, "replay", str(log), "--map", "TXN=event_id,CUSTOMER=user_id",
                  "--map", "SHOP=merchant_id,TS=event_time:epoch_s,AMT=amount,CUR=currency",
                  "--set", "event_type=transaction",
                  "--checkpoint", str(tmp_path / "ck.json"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "replayed 3 events" in result.output
    msgs = read_topic(s, s.topic_events, expected=3, idle=0.5)
    events = sorted((decode_event(m.value()) for m in msgs), key=lambda e: e.event_time)
    assert [(e.event_id, e.user_id, e.event_time, e.amount) for e in events] == [
        ("t2", "1002", 1767225600250, 3.0), ("t1", "1001", 1767225601000, 12.5),
        ("t3", "1001", 1767225602000, 7.1)]
    assert events[1].attributes == {"note": "first"}
    # On the wire in the canonical form: epoch-ms times, contract names.
    raw = wire.loads(next(m.value() for m in msgs if b'"t1"' in m.value()))
    assert raw["event_time"] == 1767225601000 and "TS" not in raw


def test_parquet_with_timestamp_column_and_labels_reports_rows(kafka_settings, tmp_path):
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    s = kafka_settings
    utc = timezone.utc
    log = tmp_path / "payments.parquet"
    pq.write_table(pa.table({
        "TXN": ["t1", "t2", "t3", "t4"],
        "CUSTOMER": pa.array([1001, 1002, 1001, 1003], pa.int64()),
        "SHOP": ["s9", "s9", "s8", "s8"],
        "TS": pa.array([datetime(2026, 1, 1, 0, 0, 1, tzinfo=utc),
                        datetime(2026, 1, 1, 0, 0, 0, 250000, tzinfo=utc),
                        datetime(2026, 1, 1, 0, 0, 3, tzinfo=utc), None],
                       pa.timestamp("ns", tz="UTC")),
        "AMT": [12.5, 3.0, 7.1, 1.0], "CUR": ["EUR"] * 4}), log, row_group_size=2)
    labels = tmp_path / "chargebacks.parquet"
    pq.write_table(pa.table({
        "event_id": ["t1"], "user_id": ["1001"], "merchant_id": ["s9"], "is_fraud": [True],
        "label_time": pa.array([datetime(2026, 1, 1, 0, 0, 2, tzinfo=utc)],
                               pa.timestamp("ms", tz="UTC"))}), labels)
    result = _cli(s, "replay", str(log), "--labels", str(labels),
                  "--map", "TXN=event_id,CUSTOMER=user_id,SHOP=merchant_id,TS=event_time",
                  "--map", "AMT=amount,CUR=currency", "--labels-map", "",
                  "--set", "event_type=transaction", "--rejects", str(tmp_path / "rej.jsonl"),
                  "--checkpoint", str(tmp_path / "ck.json"), "--no-progress")
    assert result.exit_code == 1, result.output  # one reject
    assert "rejected: payments.parquet:row 4: event_time: is required" in result.output
    assert "replayed 3 events, 1 labels" in result.output
    msgs = read_topic(s, s.topic_events, expected=3, idle=0.5)
    events = sorted((decode_event(m.value()) for m in msgs), key=lambda e: e.event_time)
    assert [(e.event_id, e.user_id, e.event_time) for e in events] == [
        ("t2", "1002", 1767225600250), ("t1", "1001", 1767225601000),
        ("t3", "1001", 1767225603000)]
    (label,) = read_topic(s, s.topic_labels, expected=1, idle=0.5)
    assert decode_label(label.value()).label_time == 1767225602000
    rejects = [wire.loads(line) for line in (tmp_path / "rej.jsonl").read_bytes().splitlines()]
    assert [(r["row"], r["field"]) for r in rejects] == [(4, "event_time")]


def test_resume_after_kill_sends_nothing_twice(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s)
    ev, lab, sim = _simulated(tmp_path, 12_000, seed=3)
    total = sim.n_events + sim.n_labels
    checkpoint = tmp_path / "ck.json"
    # A replay in another process, killed with SIGKILL in the middle of its third chunk (the
    # progress report at position 8192): those messages are in flight, none confirmed, and the
    # checkpoint says they are pending.
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from stream.settings import Settings
        from stream.replay import ReplayOptions, replay
        s = Settings.load(env={{}}, overrides={{
            "bootstrap_servers": {s.bootstrap_servers!r}, "topic_events": {s.topic_events!r},
            "topic_labels": {s.topic_labels!r}, "topic_scores": {s.topic_scores!r},
            "topic_dead_letter": {s.topic_dead_letter!r}}})
        def progress(p):
            if p.position >= 7000:
                os.kill(os.getpid(), signal.SIGKILL)
        replay(s, ReplayOptions(log=Path({str(ev)!r}), labels=Path({str(lab)!r}),
                                chunk_items=3000, chunk_seconds=60),
               checkpoint=Path({str(checkpoint)!r}), on_progress=progress,
               **{{"linger.ms": 50}})
        """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    state = wire.loads(checkpoint.read_bytes())
    assert state["status"] == "running" and state["position"] == 6000
    assert state["pending_until"] == 9000

    result = replay(s, ReplayOptions(log=ev, labels=lab, chunk_items=3000, chunk_seconds=60),
                    checkpoint=checkpoint)
    assert result.resumed_at == 6000
    assert result.events_sent + result.labels_sent == total
    events = read_topic(s, s.topic_events, expected=sim.n_events, idle=2)
    ids = Counter(decode_event(m.value()).event_id for m in events)
    assert len(ids) == sim.n_events and max(ids.values()) == 1
    labels = read_topic(s, s.topic_labels, expected=sim.n_labels, idle=1)
    assert len(labels) == sim.n_labels
    assert len({(m.value()) for m in labels}) == sim.n_labels
    # Run again: the checkpoint says done; nothing is sent.
    again = replay(s, ReplayOptions(log=ev, labels=lab, chunk_items=3000, chunk_seconds=60),
                   checkpoint=checkpoint)
    assert again.already_done
    assert len(read_topic(s, s.topic_events, timeout=3, idle=0.5)) == sim.n_events


def test_invalid_lines_are_reported_with_line_numbers_and_kept_out(kafka_settings, tmp_path):
    s = kafka_settings
    good = {"event_id": "g1", "event_type": "transaction", "event_time": 1767225600000,
            "user_id": "u1", "merchant_id": "m1", "amount": 5.0, "currency": "EUR"}
    log = tmp_path / "mixed.jsonl"
    log.write_bytes(b"\n".join([
        wire.dumps(good),
        b"{not json",
        wire.dumps(dict(good, event_id="g2", amount=-1.0)),
        b"",
        wire.dumps(dict(good, event_id="g3", event_time="2026-01-01T00:00:01Z")),
        wire.dumps(dict(good, event_id="g4", currency="euro")),
    ]) + b"\n")
    rejects = tmp_path / "rejects.jsonl"
    result = _cli(s, "replay", str(log), "--rejects", str(rejects),
                  "--checkpoint", str(tmp_path / "ck.json"), "--no-progress")
    assert result.exit_code == 1, result.output
    assert "mixed.jsonl:2: not valid JSON" in result.output
    assert "mixed.jsonl:3: amount: must be >= 0" in result.output
    assert "mixed.jsonl:6: currency:" in result.output
    rows = [wire.loads(line) for line in rejects.read_bytes().splitlines()]
    assert [(r["line"], r["field"], r["code"]) for r in rows] == [
        (2, None, "bad_json"), (3, "amount", "invalid"), (6, "currency", "invalid")]
    assert rows[0]["raw"] == "{not json"
    sent = read_topic(s, s.topic_events, expected=2, idle=0.5)
    assert sorted(decode_event(m.value()).event_id for m in sent) == ["g1", "g3"]
    # The ISO time was normalised on the way out; the canonical line went out as it was read.
    by_id = {decode_event(m.value()).event_id: m.value() for m in sent}
    assert by_id["g1"] == wire.dumps(good)
    assert wire.loads(by_id["g3"])["event_time"] == 1767225601000

    done = _cli(s, "replay", str(log), "--rejects", str(rejects),
                "--checkpoint", str(tmp_path / "ck.json"), "--no-progress")
    assert "already replayed" in done.output


def test_from_to_window_and_mapping_in_the_api(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s)
    t0 = 1_767_225_600  # seconds
    log = tmp_path / "window.jsonl"
    write_jsonl([{"id": f"w{i}", "kind": "login", "ts": t0 + i * 60, "uid": "u1"}
                 for i in range(10)], log)
    mapping = RecordMapping(ColumnMapping.parse(
        "id=event_id,kind=event_type,ts=event_time:epoch_s,uid=user_id"))
    result = replay(s, ReplayOptions(log=log, mapping=mapping, start_ms=(t0 + 120) * 1000,
                                     end_ms=(t0 + 300) * 1000))
    assert result.events_sent == 3 and result.events.outside == 7
    got = read_topic(s, s.topic_events, expected=3, idle=0.5)
    assert sorted(decode_event(m.value()).event_id for m in got) == ["w2", "w3", "w4"]
