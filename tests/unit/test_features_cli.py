"""``fraudstream features check`` and ``features compute``, and the shared column mapping."""

from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner

from features import config as feature_config
from features.default import default_feature_set
from stream.exceptions import ConfigError, DecodeError
from stream.features_cli import features
from stream.mapping import IDENTITY, ColumnMapping, parse_time_value

DEFAULT_TOML = "features/default_features.toml"


def test_default_toml_is_the_default_set():
    assert feature_config.load(DEFAULT_TOML) == default_feature_set()


def test_check_prints_names():
    result = CliRunner().invoke(features, ["check", DEFAULT_TOML])
    assert result.exit_code == 0, result.output
    names = [line for line in result.stdout.splitlines() if not line.startswith("#")]
    assert names == default_feature_set().names and len(names) >= 30


def test_check_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[feature]]\nagg = "sum"\nentity = "user_id"\nwindow = "1h"\n')
    result = CliRunner().invoke(features, ["check", str(bad)])
    assert result.exit_code == 1 and "needs a 'field'" in result.output


def test_compute_writes_point_in_time_vectors(tmp_path):
    log = tmp_path / "events.csv"
    log.write_text("id,ts,uid,mid,amt,ccy,type\n"
                   "e1,1767225600,u1,m1,10,EUR,transaction\n"
                   "e2,1767225660,u1,m1,30,EUR,transaction\n"
                   "e3,1767225630,u2,m1,5,EUR,transaction\n")
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"event_id":"e1","user_id":"u1","merchant_id":"m1","is_fraud":true,'
                      '"label_time":1767225650000}\n')
    conf = tmp_path / "f.toml"
    conf.write_text('[[feature]]\nagg = "count"\nentity = "user_id"\nwindow = "1h"\n'
                    '[[feature]]\nagg = "fraud_count"\nentity = "merchant_id"\n'
                    'window = "1h"\n')
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(features, [
        "compute", str(log), "--config", str(conf), "--out", str(out), "--labels", str(labels),
        "--map", "id=event_id,ts=event_time:epoch_s,uid=user_id,mid=merchant_id,amt=amount,"
                 "ccy=currency,type=event_type", "--labels-map", ""])
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert [r["event_id"] for r in rows] == ["e1", "e2", "e3"]
    assert [r["user_count_1h"] for r in rows] == [1, 2, 1]
    # the label (t=+50s) is known at e2 (+60s), not at e3 (+30s, arrives after e2)
    assert [r["merchant_fraud_count_1h"] for r in rows] == [0, 1, 1]
    assert [r["is_fraud"] for r in rows] == [True, None, None]


def test_compute_reports_the_bad_line(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"event_id":"e1","event_type":"transaction","event_time":1,"user_id":"u"}\n')
    result = CliRunner().invoke(features, ["compute", str(log), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "events.jsonl:1" in result.output


def test_mapping_parse_and_apply():
    m = ColumnMapping.parse("ts=event_time:iso,flag=is_fraud", timezone="UTC")
    assert m.apply({"ts": "2026-01-01T00:00:00", "flag": "false"}) == {
        "event_time": 1767225600000, "is_fraud": False}
    rec = {"event_time": 5, "user_id": "u"}
    assert IDENTITY.apply(rec) is rec
    assert ColumnMapping.parse("").renames == ()
    for bad in ("a", "a=b=c:x", "a=user_id:iso", "a=event_time:weird", "a=b,a=c"):
        with pytest.raises(ConfigError):
            ColumnMapping.parse(bad)
    with pytest.raises(ConfigError):
        ColumnMapping.parse("a=b", timezone="Mars/Olympus")
    with pytest.raises(DecodeError):
        parse_time_value("2026-01-01T00:00:00", "auto", None, "event_time")
    assert parse_time_value("1767225600.25", "epoch_s") == 1767225600250
