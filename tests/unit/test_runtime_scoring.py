"""The last stage's scorers, on a real state store (no broker)."""

from __future__ import annotations

import math

from online_models.scorer import GlobalModel
from stream.runtime.scoring import HeuristicScorer, ModelScorer, make_scorer
from stream.state import open_store

EVENT = {"event_id": "e1", "user_id": "u1", "merchant_id": "m1", "event_time": 1_767_225_600_000}
FEATURES = {"amount": 120.0, "user_txn_count_1m": 3, "user_txn_count_1h": 9}


def test_model_scorer_stores_the_snapshot_and_joins_the_label(tmp_path):
    store = open_store("rocksdb", tmp_path / "db")
    scorer = make_scorer("default", store, 0.5, 0.9)
    assert isinstance(scorer, ModelScorer)
    out = scorer.score(FEATURES, EVENT)
    assert 0.0 <= out.score <= 1.0
    assert out.decision in ("approve", "review", "block")
    assert out.version.startswith(scorer.version)
    # The label joins the vector stored at scoring time, through the store (and its changelog).
    status, example = scorer.learn({"event_id": "e1", "is_fraud": True,
                                    "label_time": EVENT["event_time"] + 86_400_000})
    assert status == "joined" and example is not None and example["is_fraud"] is True
    assert example["snapshot"][3]["user_txn_count_1m"] == 3
    assert scorer.learn({"event_id": "never-scored", "is_fraud": False,
                         "label_time": EVENT["event_time"]}) == ("unknown", None)
    scorer.flush()
    assert store.flush()  # the snapshot and merchant state reached the store's change set
    store.close()


def test_loading_a_global_model_changes_the_version_stamped_on_scores(tmp_path):
    store = open_store("memory")
    scorer = make_scorer("default", store, 0.5, 0.9)
    before = scorer.score(FEATURES, EVENT).version
    trained = GlobalModel.create("default")
    trained.set_version("default-test-7")
    scorer.load_global(GlobalModel.from_bytes(trained.to_bytes()))
    after = scorer.score(FEATURES, dict(EVENT, event_id="e2")).version
    assert before != after and after.startswith("default-test-7")


def test_heuristic_scorer_is_deterministic_and_explains():
    a = HeuristicScorer().score(FEATURES, EVENT)
    b = HeuristicScorer().score(dict(FEATURES), EVENT)
    assert a == b and a.decision is None
    assert [r["feature"] for r in a.reasons][0] == "user_txn_count_1m"
    quieter = HeuristicScorer().score(dict(FEATURES, user_txn_count_1m=0), EVENT)
    assert quieter.score < a.score


def test_per_merchant_thresholds_win_over_global_ones():
    from stream.runtime.worker import decide
    from stream.settings import Settings

    s = Settings.load(env={}, overrides={"merchant_thresholds": "m7=0.2:0.4, m9=0.6:0.99"})
    assert s.thresholds_for("m7") == (0.2, 0.4) and s.thresholds_for("other") == (0.5, 0.9)
    assert [decide(0.3, s, m) for m in ("m7", "m9", "other", None)] == \
        ["review", "approve", "approve", "approve"]
    assert decide(0.45, s, "m7") == "block"
    store = open_store("memory")
    strict = make_scorer("default", store, 0.5, 0.9, per_merchant={"m1": (0.0, 0.0)})
    assert strict.score(FEATURES, EVENT).decision == "block"  # every score blocks at m1
    assert strict.score(FEATURES, dict(EVENT, event_id="e9", merchant_id="m2")).decision \
        != "block"


def test_malformed_merchant_thresholds_are_config_errors():
    import pytest

    from stream.exceptions import ConfigError
    from stream.settings import Settings

    for bad in ("m1=0.5", "m1=0.9:0.2", "=0.1:0.2", "m1=a:b"):
        with pytest.raises(ConfigError, match="merchant_thresholds"):
            Settings.load(env={}, overrides={"merchant_thresholds": bad})


def test_no_merchant_models_never_makes_or_uses_one():
    store = open_store("memory")
    scorer = make_scorer("default", store, 0.5, 0.9, merchant_models=False)
    trusted = make_scorer("default", open_store("memory"), 0.5, 0.9, merchant_models=True)
    assert not scorer.merchant_models and trusted.merchant_models
    for i in range(260):  # past the 200 labels after which a merchant model is blended in
        event = dict(EVENT, event_id=f"e{i}", event_time=EVENT["event_time"] + i)
        features = dict(FEATURES, amount=float(i % 9))
        a, b = scorer.score(features, event), trusted.score(features, event)
        label = {"event_id": f"e{i}", "is_fraud": i % 9 == 8,
                 "label_time": event["event_time"] + 1}
        assert scorer.learn(label)[0] == "joined" == trusted.learn(label)[0]
        assert "+" not in a.version
    assert "+" in b.version                                # the other one did blend by now
    scorer.flush()
    assert not any(key.startswith(b"mm:") for key, _ in store.items())


def test_heuristic_scorer_is_the_default_models_prior():
    from online_models.prior import RulePrior

    out = HeuristicScorer().score(FEATURES, EVENT)
    z = RulePrior().logit(FEATURES)
    assert out.score == round(1.0 / (1.0 + math.exp(-z)), 6)
    assert out.score == round(GlobalModel.create("default").model.score_one(
        GlobalModel.create("default").model.prepare_one(FEATURES)), 6)


def test_backtest_scorers_score_and_learn_as_the_workers():
    """Without reason codes, without a quality monitor and with packed snapshots (the
    backtest's scorers) the scores, the joined examples and what is learned are the same."""
    import random

    from features.store import DictStore

    rng = random.Random(5)
    merchants = ["m1", "m2"]
    full = make_scorer("default", DictStore(), 0.5, 0.9, merchant_models=True)
    lean = make_scorer("default", DictStore(), 0.5, 0.9, merchant_models=True, reasons=False,
                       evaluate=False, packed_snapshots=True)
    assert lean.monitor is None and full.monitor is not None
    pending = []
    for i in range(1200):
        features = {"amount": rng.uniform(1, 900), "user_txn_count_1m": rng.randint(0, 5),
                    "user_txn_count_1h": rng.randint(0, 20), "is_night": rng.randint(0, 1),
                    "merchant_txn_fraud_rate_30d_delay15d": rng.random() / 10,
                    "user_txn_time_since_last": rng.choice([None, rng.uniform(0, 1e5)])}
        event = dict(EVENT, event_id=f"e{i}", merchant_id=rng.choice(merchants),
                     event_time=EVENT["event_time"] + i * 60_000)
        a, b = full.score(dict(features), event), lean.score(dict(features), event)
        assert (a.score, a.decision, a.version) == (b.score, b.decision, b.version)
        assert b.reasons == [] and a.reasons
        pending.append({"event_id": event["event_id"], "is_fraud": rng.random() < 0.2,
                        "label_time": event["event_time"] + 1})
        if i % 3:
            label = pending.pop(0)
            assert full.learn(label) == lean.learn(label)
    # Enough labels that the per-merchant models are trusted, and they learned the same.
    trusted = full._s.merchants.score("m1", {"amount": 50.0}, 0.0)
    assert trusted is not None and trusted == lean._s.merchants.score("m1", {"amount": 50.0}, 0.0)
