"""The last stage's scorers, on a real state store (no broker)."""

from __future__ import annotations

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
