"""``fraudstream backtest``: metrics against hand-computed values, prequential order, determinism,
the (stage, partition) event path, and the command end to end. No broker."""

from __future__ import annotations

import csv
import gzip
import random
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from features.default import default_feature_set
from online_models import metrics as om
from online_models.replay import EventItem, LabelItem, merge_by_time
from stream import backtest as bt
from stream import wire
from stream.backtest import (BacktestOptions, average_precision, compute_report,
                             precision_recall_at_budget, roc_auc, run_backtest,
                             user_topk_per_day)
from stream.cli import main
from stream.runtime.topology import Topology
from stream.settings import Settings
from stream.simulate import SimConfig, simulate, write_jsonl

DAY = 86_400_000
T0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z, a Monday


# ---------------------------------------------------------------------- metrics by hand
S = [0.9, 0.8, 0.8, 0.3, 0.1]
Y = [1, 1, 0, 0, 1]


def test_roc_auc_by_hand():
    # positives 0.9, 0.8, 0.1 against negatives 0.8, 0.3: pairs won 1 + 1, 0.5 + 1, 0 + 0.
    assert roc_auc(S, Y) == pytest.approx(3.5 / 6)
    assert roc_auc([0.2, 0.1], [1, 1]) is None
    assert roc_auc([0.7, 0.7, 0.7, 0.7], [1, 0, 1, 0]) == 0.5


def test_average_precision_by_hand():
    # thresholds 0.9: P 1, R 1/3; 0.8 (tie group): P 2/3, R 2/3; 0.3: R unchanged; 0.1: P 3/5, R 1
    assert average_precision(S, Y) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 5)
    assert average_precision([0.4, 0.2], [0, 0]) is None


def test_precision_recall_at_budget_by_hand():
    # 40 % of 5 = 2 reviewed: 0.9 and the earlier 0.8 (ties by arrival), both fraud.
    assert precision_recall_at_budget(S, Y, 0.4) == (2, 1.0, pytest.approx(2 / 3), 0.8)
    # 50 % of 5 -> ceil(2.5) = 3 reviewed: 0.9, 0.8, 0.8.
    k, p, r, thr = precision_recall_at_budget(S, Y, 0.5)
    assert (k, p, r, thr) == (3, pytest.approx(2 / 3), pytest.approx(2 / 3), 0.8)
    # Tiny budgets still review one event; the later of two tied top scores is not it.
    assert precision_recall_at_budget([0.5, 0.5], [0, 1], 0.001) == (1, 0.0, 0.0, 0.5)


def test_metrics_agree_with_online_models_definitions():
    rng = random.Random(5)
    for _ in range(30):
        n = rng.randint(2, 200)
        s = [round(rng.random(), 1) for _ in range(n)]  # many ties
        y = [rng.random() < 0.3 for _ in range(n)]
        assert _same(roc_auc(s, y), om.roc_auc(s, y))
        assert _same(average_precision(s, y), om.average_precision(s, y))
        for b in (0.01, 0.1, 0.33):
            _, p, r, _ = precision_recall_at_budget(s, y, b)
            p_ref, r_ref = om.precision_recall_at_budget(s, y, b)
            assert _same(p, p_ref) and _same(r, r_ref)


def _same(a, b) -> bool:
    return a is None and b is None or (a is not None and b is not None
                                       and a == pytest.approx(b))


def test_user_topk_per_day_by_hand():
    times = [T0 + 10, T0 + 20, T0 + 30, T0 + 40, T0 + 50, T0 + DAY + 1, T0 + DAY + 2]
    users = ["a", "a", "b", "c", "f", "e", "d"]
    scores = [0.9, 0.2, 0.95, 0.5, 0.99, 0.3, 0.3]
    labels = [0, 1, 0, 1, -1, 0, 1]  # f has no label: not ranked at all
    r = user_topk_per_day(times, users, scores, labels, k=2)
    day0, day1 = r["days"]
    # day 0: a = max(0.9, 0.2) and fraudulent (one fraud event), b 0.95 legitimate, c 0.5 fraud
    assert day0["top"] == ["b", "a"] and day0["hits"] == 1 and day0["precision"] == 0.5
    assert (day0["users"], day0["fraud_users"]) == (3, 2)
    # day 1: tie at 0.3 broken by user id; both flagged, one fraudulent
    assert day1["top"] == ["d", "e"] and day1["precision"] == 0.5
    assert r["mean_precision"] == 0.5 and r["precision"] == 0.5
    r1 = user_topk_per_day(times, users, scores, labels, k=1)
    assert [d["top"] for d in r1["days"]] == [["b"], ["d"]]
    assert r1["mean_precision"] == 0.5 and (r1["hits"], r1["flagged"]) == (1, 2)


def _result(times, users, merchants, scores, labels) -> bt.BacktestResult:
    return bt.BacktestResult(
        event_ids=[f"e{i}" for i in range(len(times))], user_ids=users, merchant_ids=merchants,
        event_times=np.array(times, dtype=np.int64), scores=np.array(scores, dtype=np.float64),
        labels=np.array(labels, dtype=np.int8), model="x", model_version="x", partitions=1,
        stages=[], run_seconds=1.0)


def test_report_excludes_unlabelled_and_splits_weeks_and_merchants():
    week = 7 * DAY
    times = [T0, T0 + 1, T0 + 2, T0 + 3, T0 + week, T0 + week + 1, T0 + week + 2]
    res = _result(times, ["u1", "u2", "u3", "u4", "u1", "u2", "u3"],
                  ["m1", "m1", "m2", "m1", "m2", "m2", "m2"],
                  [0.9, 0.1, 0.8, 0.99, 0.2, 0.7, 0.6],
                  [1, 0, 0, -1, 0, 1, 0])
    rep = compute_report(res, budgets=(0.5,), top_k=(1,), top_merchants=1)
    assert rep["events"]["scored"] == 7 and rep["events"]["labelled"] == 6
    assert rep["events"]["unlabelled"] == 1
    o = rep["overall"]
    assert (o["n"], o["fraud"]) == (6, 2)
    # without the unlabelled 0.99: positives 0.9, 0.7 vs negatives 0.1, 0.8, 0.2, 0.6:
    # 4 + 3 of 8 pairs won
    assert o["roc_auc"] == pytest.approx(7 / 8)
    assert [w["week_start"] for w in rep["weekly"]] == ["2026-01-05", "2026-01-12"]
    assert [(w["n"], w["fraud"]) for w in rep["weekly"]] == [(3, 1), (3, 1)]
    assert rep["weekly"][0]["roc_auc"] == 1.0           # 0.9 above 0.1 and 0.8
    assert rep["weekly"][1]["roc_auc"] == 1.0           # 0.7 above 0.2 and 0.6
    # m2 has 4 events (m1 3); its metrics use its 4 labelled events.
    assert [(m["merchant_id"], m["events"], m["n"]) for m in rep["merchants"]] == [("m2", 4, 4)]
    assert rep["merchants"][0]["roc_auc"] == pytest.approx(2 / 3)
    wire.dumps(rep)  # JSON-ready


# ---------------------------------------------------------------------- runs on small logs
def _sim(tmp_path: Path, events: int = 1500, days: float = 20, seed: int = 3,
         maturity: float = 4) -> tuple[Path, Path]:
    sim = simulate(SimConfig(events=events, days=days, fraud_rate=0.04, seed=seed, users=80,
                             merchants=20, maturity_days=maturity, id_prefix="bt"))
    ev, lab = tmp_path / "events.jsonl", tmp_path / "labels.jsonl.gz"
    write_jsonl(sim.iter_events(), ev)
    write_jsonl(sim.iter_labels(), lab)
    return ev, lab


class _Recording(bt._Scoring):
    """The backtest's scoring, logging every score and learn call in order."""

    instances: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple] = []
        _Recording.instances.append(self)

    def score(self, scorer, merged, event):
        self.calls.append(("score", event["event_id"], event["event_time"]))
        return super().score(scorer, merged, event)

    def learn(self, scorer, label):
        self.calls.append(("learn", label["event_id"], label["label_time"]))
        return super().learn(scorer, label)


def test_prequential_order(tmp_path, monkeypatch):
    ev, lab = _sim(tmp_path)
    monkeypatch.setattr(bt, "_Scoring", _Recording)
    _Recording.instances.clear()
    res = run_backtest(BacktestOptions(log=ev, labels=lab, model="logreg"), Settings.load(env={}))
    calls = _Recording.instances[0].calls
    event_time = {c[1]: c[2] for c in calls if c[0] == "score"}
    assert len(event_time) == len(res) == 1500
    scored: set[str] = set()
    max_scored_time = -1
    learned = 0
    for i, (kind, event_id, t) in enumerate(calls):
        if kind == "score":
            scored.add(event_id)
            max_scored_time = max(max_scored_time, t)
            continue
        learned += 1
        # never before its event is scored; only once every event up to label_time is scored,
        # and before any later event
        assert event_id in scored and event_time[event_id] <= t
        assert max_scored_time <= t
        # and as soon as its time has come: the next event scored is later than the label
        nxt = next((e for k, e, _ in calls[i:] if k == "score"), None)
        assert nxt is None or event_time[nxt] > t
    assert learned == res.labels_applied > 0
    # The online scorer joined every label with the snapshot stored when its event was scored.
    assert res.learn_stats["labels"]["joined"] == learned
    # ... and the global model learned each one at once (the trainer's part).
    assert res.learn_stats["global_model"] == f"logreg-1.{learned}"
    # The same order as online_models.replay.merge_by_time (events first at equal times).
    events = [EventItem(c[1], None, c[2], {}) for c in calls if c[0] == "score"]
    labels = [LabelItem(c[1], False, c[2]) for c in calls if c[0] == "learn"]
    merged = [("score" if isinstance(x, EventItem) else "learn", x.event_id)
              for x in merge_by_time(events, labels)]
    assert merged == [(c[0], c[1]) for c in calls]


def test_label_at_its_event_time_joins_and_early_label_waits_for_its_event(tmp_path):
    events = [{"event_id": f"e{i}", "event_type": "transaction", "event_time": T0 + i * 1000,
               "user_id": "u1", "merchant_id": "m1", "amount": 10.0 + i, "currency": "EUR"}
              for i in range(3)]
    labels = [{"event_id": "e1", "user_id": "u1", "merchant_id": "m1", "is_fraud": True,
               "label_time": T0 + 1000},          # at the event's own time: after the event
              {"event_id": "e2", "user_id": "u1", "merchant_id": "m1", "is_fraud": False,
               "label_time": T0 + 1500}]          # before its event: parked, as the worker does
    ev, lab = tmp_path / "ev.jsonl", tmp_path / "lab.jsonl"
    write_jsonl(events, ev)
    write_jsonl(labels, lab)
    _Recording.instances.clear()
    bt_scoring = bt._Scoring
    try:
        bt._Scoring = _Recording
        res = run_backtest(BacktestOptions(log=ev, labels=lab, model="logreg"),
                           Settings.load(env={}))
    finally:
        bt._Scoring = bt_scoring
    # e2's label found no scored event: parked, then learned right after e2 was scored.
    assert res.learn_stats["labels"] == {"joined": 2, "unknown": 1}
    assert res.learn_stats["parked"] == 1
    assert [c[:2] for c in _Recording.instances[0].calls] == [
        ("score", "e0"), ("score", "e1"), ("learn", "e1"), ("learn", "e2"), ("score", "e2"),
        ("learn", "e2")]
    # ground truth counts both labels
    assert res.labels.tolist() == [-1, 1, 0]


def test_same_input_same_scores(tmp_path):
    ev, lab = _sim(tmp_path, events=1200, seed=9)
    s = Settings.load(env={})
    runs = [run_backtest(BacktestOptions(log=ev, labels=lab, model="default", partitions=3), s)
            for _ in range(2)]
    assert runs[0].event_ids == runs[1].event_ids
    assert np.array_equal(runs[0].scores, runs[1].scores)
    assert len(np.unique(runs[0].scores)) > 50


def test_csv_with_map_scores_like_jsonl(tmp_path):
    ev, lab = _sim(tmp_path, events=600, seed=4)
    rows = [wire.loads(line) for line in ev.read_bytes().splitlines()]
    csv_path = tmp_path / "foreign.csv"
    fields = ["TXN", "TS", "CUSTOMER", "event_type", "merchant_id", "amount", "currency",
              "card_id", "device_id", "ip", "country", "channel"]
    with csv_path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({"TXN": r["event_id"], "TS": f"{r['event_time'] / 1000:.3f}",
                        "CUSTOMER": r["user_id"],
                        **{k: r.get(k, "") for k in fields[3:]}})
    s = Settings.load(env={})
    base = run_backtest(BacktestOptions(log=ev, labels=lab, model="heuristic"), s)
    from stream.mapping import ColumnMapping
    from stream.replay import RecordMapping

    mapping = RecordMapping(ColumnMapping.parse("TXN=event_id,TS=event_time:epoch_s,"
                                                "CUSTOMER=user_id"))
    foreign = run_backtest(BacktestOptions(log=csv_path, labels=lab, model="heuristic",
                                           mapping=mapping, labels_mapping=RecordMapping()), s)
    assert foreign.event_ids == base.event_ids
    assert np.array_equal(foreign.scores, base.scores)


def test_parquet_with_timestamp_column_scores_like_jsonl(tmp_path):
    from datetime import datetime, timezone

    import pyarrow as pa
    import pyarrow.parquet as pq

    from stream.mapping import ColumnMapping
    from stream.replay import RecordMapping

    ev, lab = _sim(tmp_path, events=600, seed=4)
    rows = [wire.loads(line) for line in ev.read_bytes().splitlines()]
    columns = ["event_type", "merchant_id", "amount", "currency", "card_id", "device_id", "ip",
               "country", "channel"]
    table = pa.table({
        "TXN": [r["event_id"] for r in rows],
        "TS": pa.array([datetime.fromtimestamp(r["event_time"] / 1000, timezone.utc)
                        for r in rows], pa.timestamp("ms", tz="UTC")),
        "CUSTOMER": [r["user_id"] for r in rows],
        **{k: [r.get(k) for r in rows] for k in columns}})
    pq_path = tmp_path / "foreign.parquet"
    pq.write_table(table, pq_path, row_group_size=128)
    s = Settings.load(env={})
    base = run_backtest(BacktestOptions(log=ev, labels=lab, model="heuristic"), s)
    mapping = RecordMapping(ColumnMapping.parse("TXN=event_id,TS=event_time,CUSTOMER=user_id"))
    foreign = run_backtest(BacktestOptions(log=pq_path, labels=lab, model="heuristic",
                                           mapping=mapping, labels_mapping=RecordMapping()), s)
    assert foreign.event_ids == base.event_ids
    assert np.array_equal(foreign.scores, base.scores)


# ---------------------------------------------------------------------- the event path
class _Capture:
    """Scoring that keeps each event's merged vector."""

    parks_labels = False

    def __init__(self):
        self.vectors: dict[str, dict] = {}

    def for_store(self, store):
        return None

    def score(self, scorer, merged, event):
        self.vectors[event["event_id"]] = merged
        return 0.0

    def learn(self, scorer, label):
        return "ignored"


def _user_keys_in_different_partitions(n: int) -> tuple[str, str]:
    first = "u1"
    for i in range(2, 100):
        if zlib.crc32(f"u{i}".encode()) % n != zlib.crc32(first.encode()) % n:
            return first, f"u{i}"
    raise AssertionError("no such pair")


@pytest.mark.parametrize("partitions", [1, 3])
def test_card_features_see_only_their_user_partition(partitions):
    """A card shared by two users: counted across them only when they share a user partition."""
    a, b = _user_keys_in_different_partitions(3)
    topo = Topology.build(Settings.load(env={}), default_feature_set())
    cap = _Capture()
    path = bt._EventPath(topo, partitions, cap)
    for i, user in enumerate((a, b)):
        path.event({"event_id": f"e{i}", "event_type": "transaction", "event_time": T0 + i,
                    "user_id": user, "merchant_id": "m1", "card_id": "c1", "amount": 5.0})
    second = cap.vectors["e1"]
    assert second["card_txn_count_1h"] == (2 if partitions == 1 else 1)
    assert second["merchant_txn_count_1h"] == 2       # merchant stage: keyed by merchant
    assert list(second)[:len(topo.stages[0].feature_names)] == topo.stages[0].feature_names


# ---------------------------------------------------------------------- the command
def test_cli_end_to_end(tmp_path):
    ev, lab = _sim(tmp_path, events=1000, seed=12)
    out = tmp_path / "report"
    scores = tmp_path / "scores.jsonl.gz"
    result = CliRunner().invoke(main, [
        "backtest", str(ev), "--labels", str(lab), "--model", "logreg", "--partitions", "2",
        "--budget", "0.02,0.01", "--top-k", "5,10", "--out-dir", str(out),
        "--scores-out", str(scores), "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "ROC AUC" in result.output and "without a label" in result.output
    for name in ("roc", "pr", "weekly", "scores"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "http://" not in page and "https://" not in page    # self-contained
    assert "left out of every metric" in page
    report = wire.loads((out / "report.json").read_bytes())
    assert [b["budget"] for b in report["overall"]["budgets"]] == [0.02, 0.01]
    assert [u["k"] for u in report["user_topk"]] == [5, 10]
    rows = [wire.loads(line) for line in gzip.decompress(scores.read_bytes()).splitlines()]
    assert len(rows) == 1000 == report["events"]["scored"]
    assert set(rows[0]) == {"event_id", "event_time", "user_id", "merchant_id", "score", "label"}
    assert sum(r["label"] is None for r in rows) == report["events"]["unlabelled"]


def test_cli_rejects_unknown_model(tmp_path):
    ev, _ = _sim(tmp_path, events=100, seed=1)
    result = CliRunner().invoke(main, ["backtest", str(ev), "--model", "nope",
                                       "--out-dir", str(tmp_path / "r")])
    assert result.exit_code == 2 and "unknown model" in result.output


# ---------------------------------------------------------------------- --freeze-after, merchants
def _label_free_features():
    """The default set without label-aware features: labels then only reach the models."""
    from features.definitions import LABEL_AGGREGATIONS, FeatureSet

    fs = default_feature_set()
    return FeatureSet(tuple(f for f in fs.features if f.agg not in LABEL_AGGREGATIONS),
                      grace=fs.grace, ttl=fs.ttl)


def _merchant_sim(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    # Few merchants, labels within half a day: per-merchant models are trusted (200 labels)
    # well before the freeze point, so both the global and the merchant models matter.
    sim = simulate(SimConfig(events=3000, days=6, fraud_rate=0.04, seed=31, users=120,
                             merchants=4, maturity_days=0.5, id_prefix="fz"))
    ev, lab = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    write_jsonl(sim.iter_events(), ev)
    labels = sim.labels
    write_jsonl(labels, lab)
    return ev, lab, labels


def test_freeze_after_stops_all_learning_at_that_point(tmp_path):
    """Frozen after T scores exactly like a run that never received the labels after T (with
    features that do not read labels), and unlike the online run: neither the global nor any
    per-merchant model learns from then on."""
    ev, lab, labels = _merchant_sim(tmp_path)
    s, fs = Settings.load(env={}), _label_free_features()
    t_first = min(wire.loads(line)["event_time"] for line in ev.read_bytes().splitlines())
    freeze = 3 * DAY
    early = tmp_path / "early-labels.jsonl"
    write_jsonl([x for x in labels if x["label_time"] < t_first + freeze], early)

    opts = dict(feature_set=fs, partitions=1, merchant_models=True)
    frozen = run_backtest(BacktestOptions(log=ev, labels=lab, freeze_after_ms=freeze, **opts), s)
    truncated = run_backtest(BacktestOptions(log=ev, labels=early, **opts), s)
    online = run_backtest(BacktestOptions(log=ev, labels=lab, **opts), s)
    assert frozen.event_ids == truncated.event_ids == online.event_ids
    assert np.array_equal(frozen.scores, truncated.scores)
    after = frozen.event_times >= t_first + freeze
    assert after.sum() > 500
    assert not np.array_equal(frozen.scores[after], online.scores[after])
    assert np.array_equal(frozen.scores[~after], online.scores[~after])
    # Labels after the freeze still joined (and counted); the global model stopped learning.
    n_early = sum(1 for x in labels if x["label_time"] < t_first + freeze)
    assert frozen.learn_stats["labels"]["joined"] == len(labels) > n_early
    assert frozen.learn_stats["global_model"] == f"default-2.{n_early}"
    assert frozen.learn_stats["frozen_at"] is not None
    assert online.learn_stats["frozen_at"] is None


def test_merchant_models_option_and_setting(tmp_path):
    ev, lab, _ = _merchant_sim(tmp_path)
    s = Settings.load(env={})
    assert s.merchant_models is False  # off unless configured
    without = run_backtest(BacktestOptions(log=ev, labels=lab, partitions=1), s)
    with_mm = run_backtest(BacktestOptions(log=ev, labels=lab, partitions=1,
                                           merchant_models=True), s)
    assert without.learn_stats["merchant_models"] is False
    assert with_mm.learn_stats["merchant_models"] is True
    assert not np.array_equal(without.scores, with_mm.scores)
    # The setting turns them on; the option wins over the setting.
    on = Settings.load(env={"FRAUDSTREAM_MERCHANT_MODELS": "true"})
    assert on.merchant_models is True
    from_setting = run_backtest(BacktestOptions(log=ev, labels=lab, partitions=1), on)
    assert np.array_equal(from_setting.scores, with_mm.scores)
    forced_off = run_backtest(BacktestOptions(log=ev, labels=lab, partitions=1,
                                              merchant_models=False), on)
    assert np.array_equal(forced_off.scores, without.scores)


def test_cli_freeze_after_and_no_merchant_models(tmp_path):
    ev, lab = _sim(tmp_path, events=800, seed=12, days=14)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "backtest", str(ev), "--labels", str(lab), "--freeze-after", "7d", "--evaluate-from",
        "7d", "--no-merchant-models", "--out-dir", str(out), "--no-progress"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "learning frozen from 2026-01-12" in result.output
    assert "global model alone (no per-merchant models)" in result.output
    report = wire.loads((out / "report.json").read_bytes())
    assert report["learning"]["merchant_models"] is False
    assert report["since"]["from"].startswith("2026-01-12")
    assert 0 < report["since"]["n"] < report["overall"]["n"]
    bad = CliRunner().invoke(main, ["backtest", str(ev), "--freeze-after", "two weeks",
                                    "--out-dir", str(out)])
    assert bad.exit_code == 2 and "--freeze-after" in bad.output
