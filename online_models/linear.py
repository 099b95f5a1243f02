"""Standardise-then-logistic-regression fused into one River classifier, with class weighting.

River's ``StandardScaler() | LogisticRegression()`` pipeline walks the feature dict four times per
learned event and costs about 45 us with 42 features; fraud scoring needs the whole pipeline well
under 100 us. :class:`ScaledLogisticRegression` keeps, per feature, one list
``[count, mean, m2, weight, 1/std]`` (Welford running mean and squared deviations, the model
weight) so predicting is one pass and learning two; the passes are compiled
(``online_models/_linear.pyx``, the same arithmetic in the same order, on the same lists). It is a
:class:`river.base.Classifier`, so it composes with River tooling.

Class imbalance: a positive (fraud) example is learned with weight
``min(max_pos_weight, sqrt((n_neg + 1) / (n_pos + 1)))``: half-way (in log terms) to balanced
classes. Full balancing doubles the variance of the rare-class gradient for little ranking gain.
A Platt calibrator (:mod:`online_models.calibration`) can map the inflated scores back to
probabilities; the default model uses them as they are (see :mod:`online_models.registry`).

An optional ``offset`` (a fixed log-odds per example, given to both ``raw_one`` and
``learn_one``) makes the model learn a correction to it: the default model's offset is its prior.

Standardised values are clipped to ``[-clip, clip]`` so one heavy-tailed amount cannot blow up a
weight. Values that are ``None`` count as missing (standardised value 0). The explanation of a score
(:meth:`ScaledLogisticRegression.contributions`) is ``weight * standardised value`` per feature:
the feature's additive share of the log-odds relative to an average event.

>>> m = ScaledLogisticRegression()
>>> for i in range(200):
...     m.learn_one({"amount": float(i % 10), "n": 1.0}, i % 10 >= 8)
>>> m.predict_proba_one({"amount": 9.0, "n": 1.0})[True] > m.predict_proba_one({"amount": 0.0, "n": 1.0})[True]
True
>>> top = max(m.contributions({"amount": 9.0, "n": 1.0}).items(), key=lambda kv: kv[1])
>>> top[0]
'amount'
"""

from __future__ import annotations

import math

from river import base

from online_models import _linear

__all__ = ["ScaledLogisticRegression", "logit", "sigmoid"]


def logit(p: float, eps: float = 1e-6) -> float:
    """The log-odds of ``p``, with ``p`` clipped to ``[eps, 1 - eps]``."""
    p = min(1.0 - eps, max(eps, p))
    return math.log(p / (1.0 - p))


def sigmoid(z: float) -> float:
    """The logistic function, without overflow for large |z|."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class ScaledLogisticRegression(base.Classifier):
    """Binary logistic regression on running-standardised features, learned by SGD.

    Parameters
    ----------
    lr
        SGD step size on the log loss.
    l2
        L2 penalty applied to the weights (not the bias) at each step.
    clip
        Standardised values are clipped to ``[-clip, clip]``.
    max_pos_weight
        Upper bound of the positive-class weight (see the module docstring); 1 disables weighting.
    """

    def __init__(self, lr: float = 0.01, l2: float = 1e-4, clip: float = 8.0,
                 max_pos_weight: float = 10.0) -> None:
        self.lr = lr
        self.l2 = l2
        self.clip = clip
        self.max_pos_weight = max_pos_weight
        # feature -> [count, mean, m2, weight, 1/std]; per-feature counts so late features work
        self._state: dict[str, list[float]] = {}
        self.bias = 0.0
        self.n_pos = 0
        self.n_neg = 0

    @property
    def _multiclass(self) -> bool:
        return False

    # ------------------------------------------------------------------ scoring
    def raw_one(self, x: dict, offset: float = 0.0) -> float:
        """The log-odds for ``x`` (no learning); ``offset`` is added (see :meth:`learn_one`)."""
        return _linear.raw(self._state, x, self.bias + offset, self.clip)

    def raw_and_contributions(self, x: dict, offset: float, out: dict[str, float],
                              skip: str | None = None) -> float:
        """:meth:`raw_one`, in the same pass adding each feature's contribution (as in
        :meth:`contributions`) to ``out`` (``skip``: a feature left out of ``out``)."""
        return _linear.raw_and_contributions(self._state, x, self.bias + offset, self.clip, out,
                                             skip)

    def proba_true(self, x: dict) -> float:
        """``P(y = True | x)`` as a float (the fast path the registry uses)."""
        return sigmoid(self.raw_one(x))

    def predict_proba_one(self, x: dict) -> dict[bool, float]:
        p = self.proba_true(x)
        return {False: 1.0 - p, True: p}

    def contributions(self, x: dict) -> dict[str, float]:
        """``weight * standardised value`` per feature of ``x``: its share of the log-odds."""
        return _linear.contributions(self._state, x, self.clip)

    def proba_and_top(self, x: dict, k: int, offset: float = 0.0
                      ) -> tuple[float, list[tuple[str, float]]]:
        """``P(y = True | x)`` and the ``k`` largest positive contributions, in one pass
        (``offset`` as in :meth:`raw_one`; it is not a contribution)."""
        out: dict[str, float] = {}
        z = self.raw_and_contributions(x, offset, out)
        return sigmoid(z), _linear.top_positive(out, k)

    # ------------------------------------------------------------------ learning
    def pos_weight(self) -> float:
        """The weight a positive example gets now (see the module docstring)."""
        return min(self.max_pos_weight, math.sqrt((self.n_neg + 1) / (self.n_pos + 1)))

    def learn_one(self, x: dict, y: bool, w: float = 1.0,  # type: ignore[override]
                  offset: float = 0.0) -> None:
        """One weighted SGD step. ``offset`` is a fixed log-odds added to the model's (a prior:
        the model then learns a correction to it); pass the same one to :meth:`raw_one`."""
        if y:
            w *= self.pos_weight()
            self.n_pos += 1
        else:
            self.n_neg += 1
        # One SGD step on the log loss with the standardisation as it was before this example,
        # then fold the example into the running means and variances (Welford), in one pass.
        sg = self.lr * (sigmoid(self.raw_one(x, offset)) - (1.0 if y else 0.0)) * w
        # Per feature (compiled, online_models/_linear.pyx): z = clip((v - mean) / std) with the
        # state before this example; weight = weight * (1 - lr * l2) - sg * z; then Welford's
        # update of count, mean and m2, and 1/std once m2 > 0. New features start at all zeros.
        _linear.learn(self._state, x, sg, 1.0 - self.lr * self.l2, self.clip)
        self.bias -= sg

    @property
    def weights(self) -> dict[str, float]:
        """The current weight per feature (for inspection and docs)."""
        return {k: s[3] for k, s in self._state.items()}

    # Compact pickles: plain lists and floats only.
    def __getstate__(self) -> dict:
        return {"p": (self.lr, self.l2, self.clip, self.max_pos_weight),
                "s": self._state, "b": self.bias, "n": (self.n_pos, self.n_neg)}

    def __setstate__(self, st: dict) -> None:
        self.lr, self.l2, self.clip, self.max_pos_weight = st["p"]
        self._state = st["s"]
        self.bias = st["b"]
        self.n_pos, self.n_neg = st["n"]
