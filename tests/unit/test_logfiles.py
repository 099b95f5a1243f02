"""Reading logs (stream/logfiles.py): Parquet with the --map mapping, rejects with row numbers,
batches, the missing-pyarrow message, the Parquet writer of `features compute`, and the Parquet
example in docs/replay.md."""

from __future__ import annotations

import re
import shlex
import sys
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from stream import logfiles, wire
from stream.exceptions import ConfigError
from stream.features_cli import features
from stream.logfiles import ParquetRows, detect_format, read_records
from stream.mapping import ColumnMapping
from stream.replay import (RecordMapping, Rejects, build_timeline, load_log, parse_constants)

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[2]
PAYMENTS_MAP = RecordMapping(ColumnMapping.parse(
    "txn_id=event_id,customer=user_id,shop=merchant_id,ts=event_time,total=amount,ccy=currency"),
    parse_constants("event_type=transaction"))


def payments(path: Path, ts: pa.Array, n: int | None = None, **columns) -> Path:
    n = len(ts) if n is None else n
    table = pa.table({"txn_id": [f"t{i}" for i in range(n)], "ts": ts,
                      "customer": pa.array(range(40, 40 + n), pa.int64()),
                      "shop": ["s1"] * n, "total": [1.5] * n, "ccy": ["EUR"] * n, **columns})
    pq.write_table(table, path)
    return path


def test_format_is_told_by_name_and_by_magic_bytes(tmp_path):
    path = payments(tmp_path / "p.parquet", pa.array([T0], pa.int64()))
    assert detect_format(path) == "parquet"
    renamed = tmp_path / "export.bin"
    renamed.write_bytes(path.read_bytes())
    assert detect_format(renamed) == "parquet"


@pytest.mark.parametrize("ts, fmt, tz", [
    (pa.array([T0, T0 + 1500], pa.int64()), "", None),                    # epoch ms
    (pa.array([T0 // 1000, T0 // 1000 + 1.5]), ":epoch_s", None),         # epoch s, fractions
    (pa.array(["2026-01-01T00:00:00Z", "2026-01-01T01:00:01.500+01:00"]), ":iso", None),
    (pa.array(["2026-01-01T01:00:00", "2026-01-01T01:00:01.5"]), "", "Europe/Paris"),
    (pa.array([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, 500000, UTC)],
              pa.timestamp("ns", tz="UTC")), "", None),
    (pa.array([datetime(2026, 1, 1, 1), datetime(2026, 1, 1, 1, 0, 1, 500000)],
              pa.timestamp("us")), ":iso", "Europe/Paris"),                # naive, with --tz
    (pa.array([datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 0, 1, 500000, UTC)],
              pa.timestamp("ms", tz="America/New_York")), "", None),
])
def test_times_in_every_form_become_epoch_ms(tmp_path, ts, fmt, tz):
    path = payments(tmp_path / "p.parquet", ts)
    mapping = RecordMapping(ColumnMapping.parse(
        "txn_id=event_id,customer=user_id,shop=merchant_id,total=amount,ccy=currency,"
        f"ts=event_time{fmt}", tz), parse_constants("event_type=transaction"))
    sink = Rejects(None)
    log = load_log(path, "event", mapping=mapping, rejects=sink)
    assert sink.first == []
    assert list(log.times) == [T0, T0 + 1500]
    assert log.keys == [b"40", b"41"]
    first = wire.loads(log.payloads[0])
    assert first == {"event_id": "t0", "event_type": "transaction", "event_time": T0,
                     "user_id": "40", "merchant_id": "s1", "amount": 1.5, "currency": "EUR",
                     "schema_version": 1}


def test_rejects_name_rows_across_batches_nulls_are_absent_and_decimals_are_amounts(tmp_path):
    n = 10
    ts = pa.array([datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC) if i != 4 else None
                   for i in range(n)], pa.timestamp("us", tz="UTC"))
    table = pa.table({
        "txn_id": [f"t{i}" for i in range(n)], "ts": ts,
        "customer": [f"u{i}" for i in range(n)], "shop": ["s1"] * n,
        "total": pa.array([Decimal("9.90")] * n, pa.decimal128(8, 2)),
        "ccy": ["EUR" if i != 7 else "eur" for i in range(n)],
        "note": [None if i % 2 else "x" for i in range(n)]})
    path = tmp_path / "p.parquet"
    pq.write_table(table, path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4

    rows = list(logfiles._read_parquet(path, batch_rows=2))
    assert [number for number, _, _ in rows] == list(range(1, n + 1))
    assert "note" not in rows[1][2] and rows[0][2]["note"] == "x"
    assert rows[0][2]["total"] == 9.9 and type(rows[0][2]["total"]) is float

    rejects_file = tmp_path / "rejects.jsonl"
    sink = Rejects(rejects_file)
    log = load_log(path, "event", mapping=PAYMENTS_MAP, rejects=sink)
    sink.close()
    assert len(log) == n - 2 and log.rejected == 2
    assert sink.first == ["p.parquet:row 5: event_time: is required",
                          "p.parquet:row 8: currency: must be a three-letter upper-case ISO 4217 "
                          "code, got 'eur'"]
    written = [orjson.loads(line) for line in rejects_file.read_bytes().splitlines()]
    assert [(r["row"], r["field"]) for r in written] == [(5, "event_time"), (8, "currency")]
    assert orjson.loads(written[1]["raw"])["txn_id"] == "t7"
    # Unmapped columns become attributes, as for CSV and JSON Lines.
    assert wire.loads(log.payloads[0])["attributes"] == {"note": "x"}


def test_naive_timestamps_need_a_zone(tmp_path):
    path = payments(tmp_path / "p.parquet",
                    pa.array([datetime(2026, 1, 1)], pa.timestamp("ms")))
    sink = Rejects(None)
    log = load_log(path, "event", mapping=PAYMENTS_MAP, rejects=sink)
    assert len(log) == 0
    assert sink.first[0].startswith("p.parquet:row 1: event_time: timestamp without a time zone")
    assert "--tz" in sink.first[0]


def test_labels_and_events_from_parquet_share_the_timeline(tmp_path):
    events = payments(tmp_path / "e.parquet", pa.array([T0, T0 + 2000], pa.int64()))
    labels = tmp_path / "l.parquet"
    pq.write_table(pa.table({"event_id": ["t0"], "user_id": ["40"], "merchant_id": ["s1"],
                             "is_fraud": [True],
                             "label_time": pa.array([datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)],
                                                    pa.timestamp("ms", tz="UTC"))}), labels)
    ev = load_log(events, "event", mapping=PAYMENTS_MAP)
    lab = load_log(labels, "label")
    assert (len(lab), lab.keys) == (1, [b"s1"])
    tl = build_timeline(ev, lab)
    assert list(tl.times) == [T0, T0 + 1000, T0 + 2000] and tl.kinds == bytes([0, 1, 0])


def test_unreadable_parquet_is_a_reject_not_a_crash(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    sink = Rejects(None)
    log = load_log(path, "event", rejects=sink)
    assert len(log) == 0 and sink.count == 1 and "unreadable Parquet" in sink.first[0]


def test_missing_pyarrow_says_how_to_install_it(tmp_path, monkeypatch):
    path = payments(tmp_path / "p.parquet", pa.array([T0], pa.int64()))
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow -> ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError, match=r'pip install "fraudstream\[parquet\]"'):
        list(read_records(path, "parquet"))
    with pytest.raises(ConfigError, match="writing Parquet needs pyarrow"):
        ParquetRows(tmp_path / "out.parquet")


def test_features_compute_reads_and_writes_parquet_as_it_does_json_lines(tmp_path):
    src = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "txn_id": ["t0", "t1", "t2"], "customer": ["u1", "u1", "u2"], "shop": ["s1"] * 3,
        "ts": pa.array([T0 // 1000, T0 // 1000 + 60, T0 // 1000 + 30], pa.int64()),
        "total": [1.5] * 3, "ccy": ["EUR"] * 3, "event_type": ["transaction"] * 3}), src)
    conf = tmp_path / "f.toml"
    conf.write_text('[[feature]]\nagg = "count"\nentity = "user_id"\nwindow = "1h"\n'
                    '[[feature]]\nagg = "sum"\nfield = "amount"\nentity = "merchant_id"\n'
                    'window = "1h"\n')
    args = ["--config", str(conf), "--map", "txn_id=event_id,ts=event_time:epoch_s,"
            "customer=user_id,shop=merchant_id,total=amount,ccy=currency"]
    runner = CliRunner()
    as_json = tmp_path / "out.jsonl"
    as_parquet = tmp_path / "out.parquet"
    for out in (as_json, as_parquet):
        result = runner.invoke(features, ["compute", str(src), "--out", str(out), *args])
        assert result.exit_code == 0, result.output
    expected = [orjson.loads(line) for line in as_json.read_bytes().splitlines()]
    table = pq.read_table(as_parquet)
    assert table.to_pylist() == expected
    assert [r["merchant_sum_amount_1h"] for r in expected] == [1.5, 3.0, 3.0]  # point in time
    assert table.schema.field("event_time").type == pa.int64()


def test_parquet_rows_keep_the_first_batch_types_and_fill_empty_columns_as_floats(tmp_path):
    out = ParquetRows(tmp_path / "o.parquet", {"is_fraud": "bool"}, batch_rows=2)
    for i in range(5):
        out.write_row({"id": f"e{i}", "n": i, "x": None if i < 2 else 0.5,
                       "is_fraud": None if i < 3 else True})
    out.close()
    table = pq.read_table(tmp_path / "o.parquet")
    assert [str(f.type) for f in table.schema] == ["string", "int64", "double", "bool"]
    assert table.column("x").to_pylist() == [None, None, 0.5, 0.5, 0.5]
    bad = ParquetRows(tmp_path / "bad.parquet", batch_rows=1)
    bad.write_row({"n": 1})
    with pytest.raises(ConfigError, match="changed type"):
        bad.write_row({"n": "one"})


# ---------------------------------------------------------------------- docs/replay.md
def _doc_blocks(marker: str) -> list[str]:
    text = (ROOT / "docs" / "replay.md").read_text()
    section = text[text.index(f"<!-- example: {marker} -->"):]
    return re.findall(r"```\w*\n(.*?)```", section, re.S)[:3]


def test_the_parquet_example_in_the_docs_runs_as_shown(tmp_path, monkeypatch):
    make, command, output = _doc_blocks("parquet")
    monkeypatch.chdir(tmp_path)
    exec(compile(make, "docs/replay.md", "exec"), {})  # writes payments.parquet
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == [".venv/bin/fraudstream", "replay"]
    maps, sets, tz = [], [], None
    it = iter(argv[3:])
    for flag in it:
        if flag == "--map":
            maps.append(next(it))
        elif flag == "--set":
            sets.append(next(it))
        elif flag == "--tz":
            tz = next(it)
        elif flag == "--speed":
            next(it)
    mapping = RecordMapping(ColumnMapping.parse(",".join(maps), tz), parse_constants(sets))
    sink = Rejects(None)
    log = load_log(Path(argv[2]), "event", mapping=mapping, rejects=sink)
    shown = [line.removeprefix("rejected: ") for line in output.splitlines()
             if line.startswith("rejected: ")]
    assert sink.first == shown
    assert re.search(rf"replayed {len(log)} events", output)
