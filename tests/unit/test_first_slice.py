"""The first slice's features and model, against brute force and for determinism."""

from __future__ import annotations

import copy
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from features import first_slice as f
from online_models.first_slice import AnomalyScorer
from stream.settings import Settings
from stream.worker import decide

events = st.lists(st.tuples(st.integers(0, 4 * 3_600_000), st.floats(0, 1e6)), min_size=1,
                  max_size=60)


@settings(max_examples=150, deadline=None)
@given(events)
def test_features_match_brute_force_for_in_order_streams(stream):
    stream = sorted(stream, key=lambda e: e[0])
    state = f.empty_state()
    for i, (t, amount) in enumerate(stream):
        state = f.fold(state, t, amount)
        got = f.read(state, t)
        window = [a for (u, a) in stream[: i + 1] if t - f.WINDOW_MS < u <= t]
        assert got["user_txn_count_1h"] == len(window)
        assert abs(got["user_amount_sum_1h"] - sum(window)) <= 1e-6 * max(1.0, sum(window))
        earlier = [u for (u, _) in stream[:i] if u < t]
        expected_gap = (t - max(earlier)) / 1000 if earlier else -1.0
        # entries older than the window are dropped, so the gap is known within the hour
        if expected_gap == -1.0 or expected_gap * 1000 < f.WINDOW_MS:
            assert got["user_seconds_since_prev"] == expected_gap


def test_scorer_is_deterministic_and_pickles():
    xs = [{"amount": float(i % 17), "user_txn_count_1h": i % 5} for i in range(600)]
    a, b = AnomalyScorer(seed=3), AnomalyScorer(seed=3)
    first = [a.score_then_learn(dict(x)) for x in xs[:300]]
    clone = pickle.loads(pickle.dumps(a))
    assert first == [b.score_then_learn(dict(x)) for x in xs[:300]]
    rest = [a.score_then_learn(dict(x)) for x in xs[300:]]
    assert rest == [clone.score_then_learn(dict(x)) for x in xs[300:]]
    assert all(0.0 <= s <= 1.0 for s in first + rest)


def test_learning_leaves_input_unchanged():
    x = {"amount": 3.0, "user_txn_count_1h": 2}
    before = copy.deepcopy(x)
    AnomalyScorer().score_then_learn(x)
    assert x == before


def test_decisions_follow_thresholds():
    s = Settings.load(env={}, overrides={"review_threshold": 0.4, "block_threshold": 0.8})
    assert [decide(v, s) for v in (0.0, 0.39, 0.4, 0.79, 0.8, 1.0)] == \
        ["approve", "approve", "review", "review", "block", "block"]
