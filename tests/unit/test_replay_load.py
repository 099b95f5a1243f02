"""The pure parts of replay: speeds, reading and validating logs, rejects, the timeline."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import pytest

from stream import wire
from stream.mapping import ColumnMapping
from stream.replay import (Rejects, RecordMapping, build_timeline, detect_format, load_log,
                           parse_constants, parse_speed, partition_for)

T0 = 1_767_225_600_000


def ev(i: int, t: int, **extra) -> dict:
    return {"event_id": f"e{i}", "event_type": "transaction", "event_time": t,
            "user_id": f"u{i % 3}", "merchant_id": "m1", "amount": 1.5, "currency": "EUR",
            **extra}


def write(path: Path, lines: list[bytes]) -> Path:
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("text, expected", [("max", None), ("MAX", None), ("60x", 60.0),
                                            ("1x", 1.0), ("2.5", 2.5), (" 0.5X ", 0.5)])
def test_parse_speed(text, expected):
    assert parse_speed(text) == expected


@pytest.mark.parametrize("text", ["fast", "0x", "-2x", "x"])
def test_parse_speed_rejects(text):
    with pytest.raises(ValueError):
        parse_speed(text)


def test_canonical_lines_are_forwarded_as_read_others_re_encoded(tmp_path):
    canonical = wire.dumps(ev(1, T0))
    iso = wire.dumps(ev(2, "2026-01-01T00:00:01Z"))
    int_amount = wire.dumps(dict(ev(3, T0 + 2), amount=7))
    extra = wire.dumps(ev(4, T0 + 3, basket=2))
    log = load_log(write(tmp_path / "a.jsonl.gz", [canonical, iso, int_amount, extra]), "event")
    assert list(log.times) == [T0, T0 + 1000, T0 + 2, T0 + 3]
    assert log.payloads[0] is not None and log.payloads[0] == canonical
    assert log.forwarded_as_read == 1
    assert wire.loads(log.payloads[1])["event_time"] == T0 + 1000
    assert wire.loads(log.payloads[2])["amount"] == 7.0
    assert wire.loads(log.payloads[3])["attributes"] == {"basket": 2}
    assert log.keys == [b"u1", b"u2", b"u0", b"u1"]


def test_rejects_carry_line_numbers_reasons_and_raw_lines(tmp_path):
    lines = [wire.dumps(ev(1, T0)), b"", b"[1, 2]", b"{broken", wire.dumps(ev(5, T0, ip="1.2.3")),
             b"\xff\xfe{}", wire.dumps(ev(7, T0))]
    sink = Rejects(tmp_path / "rejects.jsonl")
    log = load_log(write(tmp_path / "b.jsonl", lines), "event", rejects=sink)
    sink.close()
    assert len(log) == 2 and log.rejected == 4 and log.read == 6
    rows = [wire.loads(x) for x in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]
    assert [(r["line"], r["code"], r["field"]) for r in rows] == [
        (3, "bad_json", None), (4, "bad_json", None), (5, "invalid", "ip"), (6, "bad_utf8", None)]
    assert rows[2]["raw"] == wire.dumps(ev(5, T0, ip="1.2.3")).decode()
    assert sink.first[0].startswith("b.jsonl:3: ")
    # A clean run removes an earlier run's rejects file rather than leaving it to mislead.
    clean = Rejects(tmp_path / "rejects.jsonl")
    load_log(write(tmp_path / "c.jsonl", [wire.dumps(ev(1, T0))]), "event", rejects=clean)
    clean.close()
    assert not (tmp_path / "rejects.jsonl").exists()


def test_too_large_records_are_rejected_before_parsing(tmp_path):
    big = wire.dumps(ev(1, T0, attributes={"blob": "x" * 500}))
    log = load_log(write(tmp_path / "d.jsonl", [big, wire.dumps(ev(2, T0))]), "event",
                   max_bytes=300)
    assert len(log) == 1 and log.rejected == 1


def test_window_keeps_from_inclusive_to_exclusive(tmp_path):
    lines = [wire.dumps(ev(i, T0 + i * 1000)) for i in range(6)]
    log = load_log(write(tmp_path / "w.jsonl", lines), "event", start_ms=T0 + 1000,
                   end_ms=T0 + 4000)
    assert list(log.times) == [T0 + 1000, T0 + 2000, T0 + 3000] and log.outside == 3


def test_csv_with_mapping_constants_and_epoch_seconds(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("ID,CUST,SHOP,TS,AMT,CUR,extra\n"
                    "a,7,s1,1767225600,9.90,EUR,x\n"
                    "b,8,s1,1767225601.5,1,EUR,\n"
                    "c,8,s1,not-a-time,1,EUR,\n")
    mapping = RecordMapping(ColumnMapping.parse(
        "ID=event_id,CUST=user_id,SHOP=merchant_id,TS=event_time:epoch_s,AMT=amount,"
        "CUR=currency"), parse_constants("event_type=transaction"))
    sink = Rejects(None)
    log = load_log(path, "event", mapping=mapping, rejects=sink)
    assert detect_format(path) == "csv"
    assert list(log.times) == [T0, T0 + 1500]
    first = wire.loads(log.payloads[0])
    assert first["user_id"] == "7" and first["amount"] == 9.9
    assert first["attributes"] == {"extra": "x"}
    assert "extra" not in wire.loads(log.payloads[1]).get("attributes", {})  # empty cell: absent
    assert sink.count == 1 and sink.first[0].startswith("p.csv:4: event_time")


def test_labels_load_keyed_by_merchant(tmp_path):
    lab = {"event_id": "e1", "user_id": "u1", "merchant_id": "m9", "is_fraud": True,
           "label_time": T0 + 5}
    log = load_log(write(tmp_path / "l.jsonl", [wire.dumps(lab), wire.dumps(
        dict(lab, is_fraud="maybe"))]), "label")
    assert log.keys == [b"m9"] and log.rejected == 1


def test_timeline_orders_by_time_events_before_labels_then_file_order(tmp_path):
    events = load_log(write(tmp_path / "e.jsonl", [
        wire.dumps(ev(0, T0 + 20)), wire.dumps(ev(1, T0 + 10)), wire.dumps(ev(2, T0 + 10))]),
        "event")
    labels = load_log(write(tmp_path / "l.jsonl", [wire.dumps(
        {"event_id": "e1", "user_id": "u1", "merchant_id": "m1", "is_fraud": False,
         "label_time": T0 + 10})]), "label")
    tl = build_timeline(events, labels)
    ids = [wire.loads(p)["event_id"] for p in tl.payloads]
    assert ids == ["e1", "e2", "e1", "e0"]
    assert list(tl.kinds) == [0, 0, 1, 0]
    assert tl.times == [T0 + 10, T0 + 10, T0 + 10, T0 + 20]


def test_parallel_validation_gives_the_same_result(tmp_path, monkeypatch):
    import stream.replay as replay_mod

    monkeypatch.setattr(replay_mod, "_BLOCK_BYTES", 4096)  # many blocks from a small file
    lines = [wire.dumps(ev(i, T0 + i)) for i in range(400)]
    lines[17] = b"{bad"
    lines[250] = wire.dumps(ev(250, "2026-01-01T00:00:00Z"))
    path = write(tmp_path / "big.jsonl.gz", lines)
    serial_rejects, parallel_rejects = Rejects(None), Rejects(None)
    serial = load_log(path, "event", rejects=serial_rejects)
    parallel = load_log(path, "event", rejects=parallel_rejects, workers=2)
    assert parallel.payloads == serial.payloads and list(parallel.times) == list(serial.times)
    assert parallel.keys == serial.keys
    assert parallel_rejects.first == serial_rejects.first
    assert len(serial_rejects.first) == 1
    assert serial_rejects.first[0].startswith("big.jsonl.gz:18: not valid JSON")


def test_partition_is_librdkafkas_consistent_hash():
    assert partition_for(b"u000042", 6) == zlib.crc32(b"u000042") % 6


def test_parse_constants_rejects_unknown_fields():
    with pytest.raises(ValueError, match="cannot be a constant"):
        parse_constants("event_time=5")
