"""Delayed labels join the stored snapshot; unknown/expired/duplicate labels are counted."""

from __future__ import annotations

import math
import pickle

import pytest

from online_models.labels import DAY_MS, MemoryKV, SnapshotStore
from online_models.merchant import BlendRule, logit
from online_models.registry import build
from online_models.replay import EventItem, LabelItem, merge_by_time, replay
from online_models.scorer import GlobalModel, Scorer


class Recorder:
    """Wraps a model and records what it learns from (same calling convention)."""

    def __init__(self, inner):
        self.inner, self.name, self.version = inner, inner.name, inner.version
        self.learned = []

    def prepare_one(self, x):
        return self.inner.prepare_one(x)

    def score_one(self, v):
        return self.inner.score_one(v)

    def score_explain_one(self, v, k):
        return self.inner.score_explain_one(v, k)

    def learn_one(self, v, y):
        self.learned.append((dict(v), y))
        self.inner.learn_one(v, y)


def test_labels_days_later_learn_from_the_stored_snapshot_not_recomputed_features():
    rec = Recorder(build("default", seed=2))
    scorer = Scorer(GlobalModel(rec), SnapshotStore(MemoryKV()), merchants=None)
    # the feature engine's view of user u1 changes after the event: features are mutable state
    live_features = {"user_txn_count_1h": 1.0, "amount": 20.0}
    r = scorer.score(live_features, "m1", "e1", event_time=0)
    scored_vector = scorer.snapshots.get("e1").vector
    live_features["user_txn_count_1h"] = 9.0   # what a recomputation 3 days later would see
    live_features["amount"] = 9999.0
    for i in range(30):                          # more traffic meanwhile
        scorer.score({"user_txn_count_1h": float(i), "amount": 5.0 * i}, "m1", f"x{i}",
                     event_time=DAY_MS + i)
    out = scorer.learn("e1", is_fraud=True, label_time=3 * DAY_MS)
    assert out.status == "joined"
    assert rec.learned == [(scored_vector, True)]
    assert scored_vector["user_txn_count_1h"] == 1.0 and scored_vector["amount"] == 20.0
    assert scored_vector["prior_logit"] == pytest.approx(-4.0 + 0.35 * math.log(2.0))
    assert out.example.snapshot.score == r.score
    assert out.example.delay_ms == 3 * DAY_MS


def test_unknown_expired_and_duplicate_labels_are_counted():
    scorer = Scorer.create("logreg", ttl_ms=10 * DAY_MS)
    scorer.score({"amount": 1.0}, "m1", "old", event_time=0)
    scorer.score({"amount": 2.0}, "m1", "new", event_time=5 * DAY_MS)
    assert scorer.learn("ghost", True, DAY_MS).status == "unknown"
    assert scorer.learn("old", True, 11 * DAY_MS).status == "expired"
    assert scorer.learn("new", False, 11 * DAY_MS).status == "joined"
    assert scorer.learn("new", True, 12 * DAY_MS).status == "duplicate"
    assert scorer.report()["labels"] == {"joined": 1, "unknown": 1, "expired": 1, "duplicate": 1}
    assert scorer.global_model.n_learned == 1


def test_replay_stream_with_labels_days_later():
    events = [EventItem(f"e{i}", "m1", i * 3_600_000, {"amount": float(i % 7)})
              for i in range(100)]
    labels = [LabelItem(f"e{i}", i % 7 == 6, i * 3_600_000 + 4 * DAY_MS) for i in range(100)]
    labels.append(LabelItem("never-scored", True, 2 * DAY_MS))
    labels.sort(key=lambda lab: lab.label_time)
    learned_at = []
    scorer = Scorer.create("logreg")
    s = replay(scorer, merge_by_time(events, labels),
               on_learn=lambda o: learned_at.append(o.example.label_time if o.example else None))
    assert s.scored == 100
    assert s.labels == {"joined": 100, "unknown": 1, "expired": 0, "duplicate": 0}
    # labels 4 days later: no learning at all before day 4
    assert scorer.global_model.n_learned == 100
    assert min(t for t in learned_at if t is not None) >= 4 * DAY_MS


def test_snapshot_values_are_plain_data():
    kv = MemoryKV()
    scorer = Scorer.create("default", kv=kv)
    scorer.score({"amount": 3.0}, "m1", "e1", event_time=7)
    value = kv.get(b"snap:e1")
    assert value[0] == 7
    import marshal
    assert marshal.loads(marshal.dumps(value)) == value  # any simple codec can persist it


def test_global_snapshot_round_trip_and_swap_during_score():
    scorer = Scorer.create("logreg")
    for i in range(50):
        scorer.score({"amount": float(i)}, "m1", f"e{i}", event_time=i)
        scorer.learn(f"e{i}", i % 5 == 0, label_time=i + 1)
    blob = scorer.global_model.to_bytes()
    new = GlobalModel.from_bytes(blob)
    assert new.version == scorer.global_model.version == "logreg-1.50"

    other = Scorer.create("default")
    other_blob = other.global_model.to_bytes()
    old_version = scorer.global_model.version
    inner = scorer.global_model.model
    real = inner.score_explain_one

    def swapping(v, k):  # a new version arrives while this event is being scored
        scorer.load_global(other_blob)
        return real(v, k)

    inner.score_explain_one = swapping
    rec = scorer.score({"amount": 3.0}, "m1", "mid", event_time=100)
    assert rec.versions["global"] == old_version
    assert scorer.snapshots.get("mid").global_version == old_version
    rec2 = scorer.score({"amount": 3.0}, "m1", "after", event_time=101)
    assert rec2.versions["global"] == "default-2.0"


def test_bad_snapshot_is_rejected():
    from online_models.exceptions import SnapshotError
    with pytest.raises(SnapshotError):
        GlobalModel.from_bytes(b"garbage")
    blob = GlobalModel.create("logreg").to_bytes()
    with pytest.raises(SnapshotError):
        GlobalModel.from_bytes(blob[:-20])


def test_worker_mode_returns_examples_for_the_trainer():
    worker = Scorer.create("logreg", learn_global=False)
    trainer = GlobalModel.create("logreg")
    for i in range(20):
        worker.score({"amount": float(i)}, "m1", f"e{i}", event_time=i)
    for i in range(20):
        ex = worker.learn(f"e{i}", i % 4 == 0, 100 + i).example
        trainer.learn(type(ex).from_dict(pickle.loads(pickle.dumps(ex.to_dict()))))
    assert worker.global_model.n_learned == 0 and trainer.n_learned == 20
    assert worker.load_global(trainer.to_bytes()) == "logreg-1.20"


def test_challenger_runs_in_shadow_and_can_be_promoted():
    scorer = Scorer.create("logreg", challenger="default", merchant_spec=None)
    rec = scorer.score({"amount": 3.0}, "m1", "e1", event_time=0)
    assert rec.versions["challenger"] == "default-2.0" and rec.challenger_score is not None
    scorer.learn("e1", True, 10)
    assert scorer.challenger.n_learned == 1
    assert scorer.promote_challenger() == "default-2.1"
    assert scorer.challenger is None


def test_merchant_models_blend_after_n_labels_and_survive_the_store():
    kv = MemoryKV()
    scorer = Scorer.create("logreg", kv=kv, blend=BlendRule(min_labels=20, half_trust=20))
    for i in range(19):
        scorer.score({"amount": float(i % 5)}, "m1", f"e{i}", event_time=i)
        scorer.learn(f"e{i}", i % 5 == 4, i + 1)
    r = scorer.score({"amount": 4.0}, "m1", "a", event_time=50)
    assert r.versions["merchant"] is None and "+" not in r.model_version
    scorer.score({"amount": 4.0}, "m1", "e19", event_time=51)
    scorer.learn("e19", True, 52)
    r = scorer.score({"amount": 4.0}, "m1", "b", event_time=53)
    assert r.versions["merchant"] == "merchant-correction-1/m1/20"
    assert r.model_version.endswith("+merchant-correction-1/m1/20")
    snap = scorer.snapshots.get("b")
    w = 20 / (20 + 20)
    lg, lm = logit(snap.p_global), logit(snap.raw_merchant)
    assert r.score == pytest.approx(1 / (1 + math.exp(-(lg + w * (lm - lg)))))
    # a fresh MerchantModels over the same store (restart, rebalance) sees the same model
    scorer.merchants.clear_cache()
    r2 = scorer.score({"amount": 4.0}, "m1", "c", event_time=54)
    assert r2.score == r.score


def test_frozen_merchant_models_keep_scoring_but_stop_learning():
    kv = MemoryKV()
    scorer = Scorer.create("logreg", kv=kv, blend=BlendRule(min_labels=20, half_trust=20))
    for i in range(40):
        scorer.score({"amount": float(i % 5)}, "m1", f"e{i}", event_time=i)
        scorer.learn(f"e{i}", i % 5 == 4, i + 1)
    before = pickle.dumps(scorer.merchants.get("m1"))
    probe = scorer.score({"amount": 4.0}, "m1", "p0", event_time=100)
    scorer.learn_merchants = False
    scorer.learn_global = False
    for i in range(40, 80):
        scorer.score({"amount": float(i % 5)}, "m1", f"e{i}", event_time=100 + i)
        out = scorer.learn(f"e{i}", True, 200 + i)
        assert out.status == "joined" and out.example is not None  # still sent to a trainer
    assert pickle.dumps(scorer.merchants.get("m1")) == before
    again = scorer.score({"amount": 4.0}, "m1", "p1", event_time=300)
    assert again.score == probe.score and again.versions["merchant"] == "merchant-correction-1/m1/40"
    assert scorer.global_model.n_learned == 40


def test_default_model_scores_are_used_uncalibrated():
    from online_models.calibration import PassThrough, PlattCalibrator

    g = GlobalModel.create("default")
    assert isinstance(g.calibrator, PassThrough)
    assert isinstance(GlobalModel.create("logreg").calibrator, PlattCalibrator)
    scorer = Scorer(g, SnapshotStore(MemoryKV()), merchants=None)
    for i in range(300):
        rec = scorer.score({"amount": float(i % 7), "user_txn_count_1m": float(i % 3)}, "m1",
                           f"e{i}", event_time=i)
        assert rec.score == rec.raw                       # no mapping, at any point
        scorer.learn(f"e{i}", i % 7 == 6, i + 1)
    assert g.calibrator.n == 300 and g.calibrator.n_pos == 42 and not g.calibrator.fitted
    assert GlobalModel.from_bytes(g.to_bytes()).calibrator.n == 300


def _auc(pairs):
    """ROC AUC of [(score, is_fraud)] by counting ordered pairs (ties count half)."""
    pos = [s for s, y in pairs if y]
    neg = [s for s, y in pairs if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def _merchant_stream(seed=5, n=6000):
    """Population fraud shows as a high ``a`` and a low ``b``; at merchant ``mx`` (one event in
    eight) fraud shows as a high ``b`` instead (``a`` says nothing there). Labels arrive 50
    events later."""
    import random

    rng = random.Random(seed)
    events = []
    for i in range(n):
        m = "mx" if i % 8 == 0 else f"m{i % 7}"
        fraud = rng.random() < 0.1
        a, b = rng.gauss(0, 1), rng.gauss(0, 1)
        if fraud and m == "mx":
            b += 2.5
        elif fraud:
            a, b = a + 2.5, b - 1.0
        events.append((f"e{i}", m, {"a": a, "b": b}, fraud))
    return events


def _run(events, **kw):
    scorer = Scorer.create("logreg", seed=1, blend=BlendRule(min_labels=100, half_trust=100),
                           **kw)
    out = []
    for i, (eid, m, x, y) in enumerate(events):
        rec = scorer.score(x, m, eid, event_time=i)
        out.append((rec.score, y, m, i))
        if i >= 50:
            old = events[i - 50]
            scorer.learn(old[0], old[3], label_time=i)
    return out, scorer


def test_merchant_correction_learns_what_the_global_model_cannot():
    events = _merchant_stream()
    with_mm, scorer = _run(events)
    without, _ = _run(events, merchant_spec=None)
    late = lambda rs, at_mx: [(s, y) for s, y, m, i in rs  # noqa: E731
                              if i >= 3000 and (m == "mx") == at_mx]
    # At mx the global model ranks by the wrong feature; the correction learns b.
    assert _auc(late(without, True)) < 0.65
    assert _auc(late(with_mm, True)) > _auc(late(without, True)) + 0.15
    # Elsewhere the global model is right and the corrections leave it about where it was.
    assert _auc(late(with_mm, False)) > _auc(late(without, False)) - 0.02
    weights = scorer.merchants.get("mx").model.model.weights
    assert weights["b"] > 0.5 and weights["b"] > abs(weights["a"])


def test_an_unlearned_correction_leaves_the_global_score_as_it_is():
    kv = MemoryKV()
    scorer = Scorer.create("default", kv=kv, blend=BlendRule(min_labels=1, half_trust=1))
    x = {"amount": 30.0, "user_txn_count_1m": 2.0}
    scorer.score(x, "m1", "e0", event_time=0)
    scorer.learn_merchants = False          # the global model learns, the merchant one not
    scorer.learn("e0", False, label_time=1)
    assert scorer.merchants.get("m1") is None
    scorer.learn_merchants = True
    m = scorer.merchants.learn("m1", {"amount": 1.0}, False, event_time=0, global_logit=0.0)
    m.model.model.bias = 0.0                # learned nothing: zero correction
    for s in m.model.model._state.values():
        s[3] = 0.0
    rec = scorer.score(x, "m1", "e1", event_time=2)
    assert rec.versions["merchant"] is not None
    assert rec.score == pytest.approx(scorer.snapshots.get("e1").p_global, rel=1e-9)


def test_merchant_model_stored_by_the_old_rule_is_dropped_and_relearned():
    from online_models.merchant import MerchantModel, MerchantModels

    class OldFormat:  # what the rule before 2026-11-28 pickled: (id, model, calibrator, n, t)
        def __reduce__(self):
            return (MerchantModel.__new__, (MerchantModel,),
                    ("m1", build("logreg"), None, 500, 7))

    kv = MemoryKV()
    kv.put(b"mm:m1", [7, pickle.dumps(OldFormat())])
    mm = MerchantModels(kv)
    assert mm.get("m1") is None and mm.score("m1", {"amount": 1.0}, global_logit=0.0) is None
    m = mm.learn("m1", {"amount": 1.0}, True, event_time=8, global_logit=-3.0)
    assert m.n == 1 and MerchantModels(kv).get("m1").n == 1


def test_a_spec_that_cannot_take_an_offset_cannot_be_a_merchant_model():
    from online_models.exceptions import ModelConfigError
    from online_models.merchant import MerchantModels

    with pytest.raises(ModelConfigError, match="offset"):
        MerchantModels(MemoryKV(), spec="hat").learn("m1", {"a": 1.0}, True, 0, global_logit=0.0)


def test_merchant_correction_does_not_see_the_merchants_fraud_label_features():
    from online_models.merchant import EXCLUDE, MerchantModels

    rate = "merchant_txn_fraud_rate_30d_delay15d"
    assert rate.startswith(EXCLUDE)
    mm = MerchantModels(MemoryKV(), rule=BlendRule(min_labels=1, half_trust=1))
    v = {"amount": 5.0, rate: 0.2, "merchant_txn_fraud_count_30d_delay7d": 3.0}
    before = dict(v)
    for i in range(20):
        mm.learn("m1", dict(v, amount=float(i), **{rate: i / 20}), i % 2 == 0, i, global_logit=-2.0)
    assert set(mm.get("m1").model.model.weights) == {"amount"}
    p, _, _ = mm.score("m1", v, global_logit=-2.0)
    assert p == mm.score("m1", dict(v, **{rate: 0.9}), global_logit=-2.0)[0]
    assert v == before
    # exclude=() lets them in
    everything = MerchantModels(MemoryKV(), exclude=())
    everything.learn("m1", v, True, 0, global_logit=-2.0)
    assert rate in everything.get("m1").model.model.weights
