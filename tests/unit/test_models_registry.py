"""Generic checks over every model in the registry (CONVENTIONS 14)."""

from __future__ import annotations

import copy
import pickle
import random

import pytest

from online_models import registry
from online_models.exceptions import UnknownModelError
from online_models.synthetic import generate

EVENTS, LABELS = generate(n_events=700, seed=11)
Y = {lab.event_id: lab.is_fraud for lab in LABELS}


def _train(model, n=600):
    for e in EVENTS[:n]:
        v = model.prepare_one(e.features)
        model.learn_one(v, Y[e.event_id])
    return model


def _scores(model, events):
    return [model.score_one(model.prepare_one(e.features)) for e in events]


@pytest.mark.parametrize("name", registry.names())
def test_pickle_round_trip_gives_identical_scores(name):
    m = _train(registry.build(name, seed=3))
    clone = pickle.loads(pickle.dumps(m))
    assert _scores(clone, EVENTS[600:]) == _scores(m, EVENTS[600:])
    # and both keep learning identically
    for model in (m, clone):
        for e in EVENTS[600:650]:
            model.learn_one(model.prepare_one(e.features), Y[e.event_id])
    assert _scores(clone, EVENTS[650:]) == _scores(m, EVENTS[650:])


@pytest.mark.parametrize("name", registry.names())
def test_learn_and_score_do_not_change_their_input(name):
    m = registry.build(name, seed=3)
    for e in EVENTS[:400]:
        x = e.features
        before = copy.deepcopy(x)
        v = m.prepare_one(x)
        assert v is not x
        v_before = copy.deepcopy(v)
        m.score_one(v)
        m.explain_one(v)
        m.learn_one(v, Y[e.event_id])
        assert x == before
        assert v == v_before


@pytest.mark.parametrize("name", registry.names())
def test_same_stream_same_scores(name):
    a = _train(registry.build(name, seed=5))
    b = _train(registry.build(name, seed=5))
    assert _scores(a, EVENTS[600:]) == _scores(b, EVENTS[600:])


@pytest.mark.parametrize("name", registry.names())
def test_scores_are_probabilities_and_versioned(name):
    spec = registry.get_spec(name)
    m = _train(registry.build(name))
    assert (m.name, m.version) == (spec.name, spec.version)
    assert all(0.0 <= s <= 1.0 for s in _scores(m, EVENTS[600:]))


def test_unknown_spec_lists_known_ones():
    with pytest.raises(UnknownModelError, match="default"):
        registry.build("nope")


def test_reasons_are_top_positive_contributions_of_prior_and_correction():
    m = _train(registry.build("default", seed=1))
    v = m.prepare_one(EVENTS[650].features)
    contrib = m.explain_one(v)
    p, top = m.score_explain_one(v, 3)
    assert p == m.score_one(v)
    expected = sorted(((c, f) for f, c in contrib.items() if c > 0), reverse=True)[:3]
    assert top == [(f, c) for c, f in expected]
    assert registry.PRIOR_FEATURE not in contrib
    # contribution = the prior's term + the correction's weight * standardised value (clipped)
    prior_terms = {f: c for f, _, c in m.prior.terms(v)}
    lr = m.model
    for f in ("user_txn_count_1h", "amount"):
        n, mean, m2, w, inv = lr._state[f]
        z = max(-lr.clip, min(lr.clip, (v[f] - mean) / (m2 / n) ** 0.5))
        assert contrib[f] == pytest.approx(prior_terms.get(f, 0.0) + w * z)


def test_default_starts_as_the_prior_and_learns_a_correction_to_it():
    from online_models.linear import sigmoid
    from online_models.prior import RulePrior

    m = registry.build("default", seed=1)
    vectors = [m.prepare_one(e.features) for e in EVENTS[:50]]
    prior = RulePrior()
    assert [m.score_one(v) for v in vectors] == [sigmoid(prior.logit(e.features))
                                                 for e in EVENTS[:50]]
    _train(m)
    assert [m.score_one(v) for v in vectors] != [sigmoid(prior.logit(e.features))
                                                 for e in EVENTS[:50]]
    # the offset is the one stored in the vector, not recomputed from its features
    v = dict(vectors[0])
    shifted = dict(v, **{registry.PRIOR_FEATURE: v[registry.PRIOR_FEATURE] + 1.0})
    assert m.score_one(shifted) != m.score_one(v)
    assert not m.needs_calibration and registry.build("logreg").needs_calibration


def test_merchant_model_pickles_compactly():
    m = _train(registry.build("logreg"), n=300)
    assert len(pickle.dumps(m)) < 4000
    random.seed(0)


def test_calibrated_spec_maps_the_default_through_platt():
    """``calibrated`` is the default's model with a Platt calibrator: on a stream whose fraud rate
    (30 %) is far from what the prior and the slowly learned correction say, the mean calibrated
    score tracks the base rate and the raw one does not."""
    import random

    from online_models.calibration import PassThrough, PlattCalibrator, calibrator_for
    from online_models.registry import build

    raw_model, cal_model = build("default"), build("calibrated")
    assert isinstance(calibrator_for(raw_model), PassThrough)
    calibrator = calibrator_for(cal_model)
    assert isinstance(calibrator, PlattCalibrator)
    rng = random.Random(5)
    raws, cals, ys = [], [], []
    for i in range(6000):
        y = rng.random() < 0.3
        x = {"user_txn_count_1h": float(rng.randint(3, 6) if y else rng.randint(0, 3)),
             "amount": rng.lognormvariate(5 if y else 3, 0.5)}
        v = cal_model.prepare_one(x)
        raw = cal_model.score_one(v)
        if i >= 3000:
            raws.append(raw)
            cals.append(calibrator.predict_one(raw))
            ys.append(y)
        cal_model.learn_one(v, y)
        calibrator.learn_one(raw, y)
    base = sum(ys) / len(ys)
    assert abs(sum(cals) / len(cals) - base) < 0.03 < abs(sum(raws) / len(raws) - base)
