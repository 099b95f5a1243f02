"""Model specs chosen by name: the River models fraudstream can score with.

Every model is a :class:`FraudModel`: a small adapter with one calling convention over River
estimators, so the scorer, the per-merchant models, the trainer and the backtest treat them alike:

- ``prepare_one(x)`` returns the vector the model scores *and later learns from*: a new dict
  (never ``x`` itself) that may carry derived inputs such as the prior's log-odds or the anomaly
  score. The scorer stores exactly this dict under the event id, so a delayed label trains on
  what was scored.
- ``score_one(v)`` returns the raw probability of fraud for a prepared vector (no learning).
- ``learn_one(v, y)`` learns from a prepared vector and a boolean label; it never modifies ``v``.
- ``explain_one(v)`` returns ``{feature: contribution}`` (log-odds shares, see
  :mod:`online_models.linear`), or ``{}`` for models without a linear part.
- ``needs_calibration``: whether the scorer maps the raw score through a learned Platt
  calibrator (:func:`online_models.calibration.calibrator_for`) before using it as a probability.
- ``supports_offset``: whether ``score_one`` and ``learn_one`` take ``offset``, a fixed log-odds
  per example that the model learns a correction to (a per-merchant model's offset is the
  global model's log-odds, :mod:`online_models.merchant`).

Specs (``names()``):

``default``
    :class:`PriorLogReg`: the log-odds of the fixed scorecard :class:`online_models.prior.RulePrior`
    (stored in the vector as ``prior_logit``) plus a learned logistic correction
    (:class:`online_models.linear.ScaledLogisticRegression`, step 0.0003, square-root class
    weights). Untrained, it scores with the prior; its raw score is used as is (no Platt step).
    Why: see ``docs/models.md`` (backtests with delayed labels).
``logreg``
    Fused standardisation + logistic regression with square-root class weighting, from zero
    (:class:`online_models.linear.ScaledLogisticRegression`, step 0.01); the per-merchant default
    (there, a correction to the global log-odds, given as ``offset``).
``merchant-correction``
    The per-merchant default: ``logreg``'s model with standardised values clipped to ``[-2, 2]``
    (not 8), learned as a correction to the global log-odds (``offset``). A merchant has tens of
    fraud labels, not thousands; with the wider clip one heavy-tailed feature (a time since the
    last purchase, say) with a weight learned from a handful of them moved a legitimate event by
    up to 13 log-odds. Needs an offset to mean anything; the scorer gives it one
    (:mod:`online_models.merchant`).
``blend``
    The default until 2026-11-28 (``default-1``): ``anomaly_hst`` (compact half-space trees over
    the features, learned from every labelled event without using its label) is added to the
    vector; the score is ``0.6 * logreg + 0.4 * hat`` on that vector.
``river-logreg``
    River's own ``StandardScaler | LogisticRegression`` under ``imblearn.RandomUnderSampler``
    (reference implementation; slower).
``hat``
    River's Hoeffding adaptive tree under ``imblearn.RandomUnderSampler`` (10% positives).
``hst``
    Compact half-space trees alone, unsupervised: the anomaly score is the raw score.

>>> m = build("default", seed=1)
>>> (m.name, m.version, m.needs_calibration)
('default', 'default-2', False)
>>> v = m.prepare_one({"amount": 12.0, "user_txn_count_1m": 3.0})
>>> sorted(v)
['amount', 'prior_logit', 'user_txn_count_1m']
>>> round(m.score_one(v), 4)           # untrained: the prior alone
0.06
>>> m.learn_one(v, False)
>>> 0.0 <= m.score_one(v) <= 1.0
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from river import compose, imblearn, linear_model, optim, preprocessing, tree

from online_models.anomaly import CompactHalfSpaceTrees
from online_models.exceptions import UnknownModelError
from online_models._linear import top_positive
from online_models.linear import ScaledLogisticRegression, sigmoid
from online_models.prior import RulePrior

__all__ = ["FraudModel", "ModelSpec", "ANOMALY_FEATURE", "PRIOR_FEATURE", "PriorLogReg",
           "CalibratedPriorLogReg", "build",
           "get_spec", "names", "register"]

#: Name of the derived anomaly-score input the ``blend`` model adds to each vector.
ANOMALY_FEATURE = "anomaly_hst"
#: Name of the prior's log-odds, which the default model adds to each vector.
PRIOR_FEATURE = "prior_logit"


class FraudModel:
    """The calling convention every registered model follows (see the module docstring)."""

    name: str = ""
    version: str = ""
    needs_calibration: bool = True
    supports_offset: bool = False

    def prepare_one(self, x: dict) -> dict:
        return dict(x)

    def score_one(self, v: dict) -> float:
        raise NotImplementedError

    def learn_one(self, v: dict, y: bool) -> None:
        raise NotImplementedError

    def explain_one(self, v: dict) -> dict[str, float]:
        return {}

    def score_explain_one(self, v: dict, k: int) -> tuple[float, list[tuple[str, float]]]:
        """``score_one(v)`` and the ``k`` largest positive contributions, largest first."""
        top = sorted(((c, f) for f, c in self.explain_one(v).items() if c > 0.0), reverse=True)
        return self.score_one(v), [(f, c) for c, f in top[:k]]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.version}>"


class LogReg(FraudModel):
    """:class:`ScaledLogisticRegression` as a :class:`FraudModel`."""

    supports_offset = True

    def __init__(self, name: str, version: str, **params: float) -> None:
        self.name, self.version = name, version
        self.model = ScaledLogisticRegression(**params)

    def score_one(self, v: dict, offset: float = 0.0) -> float:
        return sigmoid(self.model.raw_one(v, offset))

    def learn_one(self, v: dict, y: bool, offset: float = 0.0) -> None:
        self.model.learn_one(v, bool(y), offset=offset)

    def explain_one(self, v: dict) -> dict[str, float]:
        return self.model.contributions(v)

    def score_explain_one(self, v: dict, k: int) -> tuple[float, list[tuple[str, float]]]:
        return self.model.proba_and_top(v, k)


class RiverClassifier(FraudModel):
    """Any River binary classifier (pipelines included) as a :class:`FraudModel`."""

    def __init__(self, name: str, version: str, model) -> None:
        self.name, self.version = name, version
        self.model = model

    def score_one(self, v: dict) -> float:
        return float(self.model.predict_proba_one(v).get(True, 0.0))

    def learn_one(self, v: dict, y: bool) -> None:
        self.model.learn_one(v, bool(y))


class Anomaly(FraudModel):
    """An unsupervised detector: learns from every labelled vector, ignoring the label."""

    def __init__(self, name: str, version: str, detector: CompactHalfSpaceTrees) -> None:
        self.name, self.version = name, version
        self.detector = detector

    def score_one(self, v: dict) -> float:
        return self.detector.score_one(v)

    def learn_one(self, v: dict, y: bool) -> None:
        self.detector.learn_one(v)


class PriorLogReg(FraudModel):
    """The default: the prior's log-odds plus a learned logistic correction.

    ``logit P(fraud | v) = prior_logit + bias + sum(weight * standardised value)``, where
    ``prior_logit`` (:class:`online_models.prior.RulePrior`) is computed once by
    :meth:`prepare_one` and stored in the vector, so a delayed label learns with the offset the
    event was scored with. The correction also sees ``prior_logit`` as an input, so it can scale
    the prior up or down. It starts at zero: an untrained model is the prior. A vector without
    ``prior_logit`` (prepared by another spec, e.g. when this is a per-merchant model) gets the
    prior computed from its features.

    The raw score is the probability as trained, so there is no Platt step
    (``needs_calibration = False``); positives weigh up to 10 times more in training (the weight
    reaches that cap once labels of both classes are in at fraud rates of 1 % or less), so it
    over-states the odds of fraud by up to that factor.

    Explanations: per feature, the prior's term plus the correction's ``weight * standardised
    value`` (the correction's share on ``prior_logit`` itself is not a feature and is left out).
    """

    needs_calibration = False

    def __init__(self, name: str, version: str, prior: RulePrior | None = None,
                 **params: float) -> None:
        self.name, self.version = name, version
        self.prior = prior if prior is not None else RulePrior()
        self.model = ScaledLogisticRegression(**params)

    def prepare_one(self, x: dict) -> dict:
        v = dict(x)
        v[PRIOR_FEATURE] = self.prior.logit(x)
        return v

    def _offset(self, v: dict) -> float:
        offset = v.get(PRIOR_FEATURE)
        return self.prior.logit(v) if offset is None else offset

    def score_one(self, v: dict) -> float:
        return sigmoid(self.model.raw_one(v, self._offset(v)))

    def learn_one(self, v: dict, y: bool) -> None:
        self.model.learn_one(v, bool(y), offset=self._offset(v))

    def _log_odds_and_explanation(self, v: dict) -> tuple[float, dict[str, float]]:
        """The log-odds and, per feature, the prior's term plus the correction's contribution,
        in one pass over the vector."""
        out = {name: c for name, _, c in self.prior.terms(v)}
        z = self.model.raw_and_contributions(v, self._offset(v), out, PRIOR_FEATURE)
        return z, out

    def explain_one(self, v: dict) -> dict[str, float]:
        return self._log_odds_and_explanation(v)[1]

    def score_explain_one(self, v: dict, k: int) -> tuple[float, list[tuple[str, float]]]:
        z, out = self._log_odds_and_explanation(v)
        return sigmoid(z), top_positive(out, k)


class CalibratedPriorLogReg(PriorLogReg):
    """:class:`PriorLogReg` whose raw score goes through the scorer's online Platt calibrator, so
    scores are probabilities (spec ``calibrated``). The default leaves it out: while labels
    arrive with a class-dependent delay the fitted map drifts week by week (docs/models.md)."""

    needs_calibration = True


class Blend(FraudModel):
    """The ``blend`` spec (the default until ``default-2``): anomaly score as an input, then a
    weighted mean of logreg and HAT. Kept so ``default-1`` snapshots still load."""

    def __init__(self, name: str, version: str, seed: int, w_logreg: float = 0.6) -> None:
        self.name, self.version = name, version
        self.w_logreg = w_logreg
        self.hst = CompactHalfSpaceTrees(n_trees=8, height=6, window_size=250, seed=seed,
                                         exclude=frozenset({ANOMALY_FEATURE}))
        self.logreg = ScaledLogisticRegression()
        self.hat = imblearn.RandomUnderSampler(
            tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, leaf_prediction="mc",
                                                 max_depth=12, seed=seed),
            desired_dist={False: 0.8, True: 0.2}, seed=seed)

    def prepare_one(self, x: dict) -> dict:
        v = dict(x)
        v[ANOMALY_FEATURE] = self.hst.score_one(x)
        return v

    def score_one(self, v: dict) -> float:
        p_hat = self.hat.predict_proba_one(v).get(True, 0.0)
        w = self.w_logreg
        return w * self.logreg.proba_true(v) + (1.0 - w) * p_hat

    def learn_one(self, v: dict, y: bool) -> None:
        y = bool(y)
        self.logreg.learn_one(v, y)
        self.hat.learn_one(v, y)
        self.hst.learn_one(v)  # ignores ANOMALY_FEATURE (``exclude``)

    def explain_one(self, v: dict) -> dict[str, float]:
        return self.logreg.contributions(v)

    def score_explain_one(self, v: dict, k: int) -> tuple[float, list[tuple[str, float]]]:
        p_lr, top = self.logreg.proba_and_top(v, k)
        w = self.w_logreg
        return w * p_lr + (1.0 - w) * self.hat.predict_proba_one(v).get(True, 0.0), top


@dataclass(frozen=True)
class ModelSpec:
    """A named, versioned recipe for a :class:`FraudModel`. Bump ``version`` when it changes."""

    name: str
    version: str
    description: str
    factory: Callable[[str, str, int], FraudModel]

    def build(self, seed: int = 42) -> FraudModel:
        return self.factory(self.name, self.version, seed)


def _river_logreg(name: str, version: str, seed: int) -> FraudModel:
    pipe = compose.Pipeline(preprocessing.StandardScaler(),
                            linear_model.LogisticRegression(optimizer=optim.SGD(0.01)))
    return RiverClassifier(name, version, imblearn.RandomUnderSampler(
        pipe, desired_dist={False: 0.8, True: 0.2}, seed=seed))


def _hat(name: str, version: str, seed: int) -> FraudModel:
    return RiverClassifier(name, version, imblearn.RandomUnderSampler(
        tree.HoeffdingAdaptiveTreeClassifier(grace_period=200, leaf_prediction="mc",
                                             max_depth=12, seed=seed),
        desired_dist={False: 0.9, True: 0.1}, seed=seed))


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    """Add (or replace) a spec; the name is what configuration refers to."""
    _SPECS[spec.name] = spec


for _spec in (
    ModelSpec("default", "default-2", "rule prior's log-odds plus a learned logistic correction "
              "(step 0.0003, sqrt class weights); no Platt step",
              lambda n, v, s: PriorLogReg(n, v, lr=0.0003)),
    ModelSpec("calibrated", "calibrated-1", "the default's model with an online Platt "
              "calibrator: scores are probabilities (docs/models.md: less AUC while labels drift)",
              lambda n, v, s: CalibratedPriorLogReg(n, v, lr=0.0003)),
    ModelSpec("logreg", "logreg-1", "fused standardised logistic regression, sqrt class weights",
              lambda n, v, s: LogReg(n, v)),
    ModelSpec("merchant-correction", "merchant-correction-1",
              "per-merchant correction to the global log-odds: logreg, values clipped to +-2",
              lambda n, v, s: LogReg(n, v, clip=2.0)),
    ModelSpec("blend", "blend-1", "default-1: HST anomaly input; 0.6 logreg + 0.4 HAT",
              lambda n, v, s: Blend(n, v, s)),
    ModelSpec("river-logreg", "river-logreg-1", "River StandardScaler|LogisticRegression, undersampled",
              _river_logreg),
    ModelSpec("hat", "hat-1", "River Hoeffding adaptive tree, undersampled to 10% positives", _hat),
    ModelSpec("hst", "hst-1", "compact half-space trees, unsupervised anomaly score",
              lambda n, v, s: Anomaly(n, v, CompactHalfSpaceTrees(seed=s))),
):
    register(_spec)


def names() -> list[str]:
    """The registered spec names, sorted."""
    return sorted(_SPECS)


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; :class:`UnknownModelError` lists the known ones."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(names())}") from None


def build(name: str, seed: int = 42) -> FraudModel:
    """A fresh, untrained model from the spec ``name``."""
    return get_spec(name).build(seed)
