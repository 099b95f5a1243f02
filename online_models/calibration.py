"""Raw scores to probabilities, probabilities to decisions, and reason codes.

**Calibration** (:class:`PlattCalibrator`) is online Platt scaling: ``p = sigmoid(a * logit(raw) +
b)``. Labels fold ``(logit(raw), y)`` into fixed bins of the raw logit (count, positives, sum of
logits per bin: sufficient statistics, so learning is O(1)); every ``refit_every`` labels ``a`` and
``b`` are refitted by a few Newton steps over the bins, using Platt's smoothed targets
``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)`` so separable data cannot push them to infinity, a
ridge penalty ``slope_l2 * (a - 1)**2 / 2`` (an untrained model's scores barely vary and any slope
would fit that noise) and ``a >= min_slope > 0``, so calibration never inverts the ranking. Until
``min_labels`` labels (with both classes) have been seen, the raw score passes through. Scores the
models inflate on purpose (class weighting, under-sampling) are mapped back to frequencies. An
optional ``decay`` (< 1) multiplies the bins at each refit so the calibration follows drift.

A model whose raw score is already meant as a probability (``needs_calibration = False`` on the
registry model, as the default's is) gets a :class:`PassThrough` instead (:func:`calibrator_for`):
it counts labels and returns the raw score. Platt scaling learns from labels in the order they
arrive; when fraud is confirmed within days and legitimate events only after weeks, that order
over-represents fraud for the first weeks, and the fitted map moves with it (docs/models.md).

**Decisions** (:class:`DecisionPolicy`): ``block`` if ``p >= block``, else ``review`` if ``p >=
review``, else ``approve`` (as ``docs/events.md`` says); thresholds default to 0.5 and 0.9 and can
be set per merchant.

**Reason codes** (:func:`reason_codes`): the features with the largest positive
``weight * standardised value`` in the logistic part of the model, i.e. what pushed the log-odds
above those of an average event (see :mod:`online_models.linear`).

>>> cal = PlattCalibrator(min_labels=4, refit_every=4)
>>> for raw, y in [(0.9, True), (0.8, True), (0.2, False), (0.1, False), (0.7, False), (0.3, True)]:
...     cal.learn_one(raw, y)
>>> cal.predict_one(0.9) > cal.predict_one(0.1)
True
>>> policy = DecisionPolicy(Thresholds(review=0.5, block=0.9), {"m7": Thresholds(0.6, 0.95)})
>>> policy.decide(0.55, "m1"), policy.decide(0.55, "m7")
('review', 'approve')
>>> reason_codes([("amount", 1.2)], {"amount": 950.0})
[{'feature': 'amount', 'value': 950.0, 'contribution': 1.2}]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from online_models.exceptions import ModelConfigError
from online_models.linear import logit as _logit
from online_models.linear import sigmoid as _sigmoid

__all__ = ["PlattCalibrator", "PassThrough", "calibrator_for", "Thresholds", "DecisionPolicy",
           "reason_codes", "DECISIONS"]

DECISIONS = ("approve", "review", "block")


class PlattCalibrator:
    """Online Platt scaling over binned sufficient statistics (see the module docstring)."""

    def __init__(self, n_bins: int = 64, lo: float = -12.0, hi: float = 12.0,
                 refit_every: int = 64, min_labels: int = 100, decay: float = 1.0,
                 slope_l2: float = 10.0, min_slope: float = 1e-3) -> None:
        if n_bins < 2 or hi <= lo or refit_every < 1 or not 0.0 < decay <= 1.0:
            raise ModelConfigError("calibrator: need n_bins >= 2, hi > lo, refit_every >= 1, "
                                   "0 < decay <= 1")
        self.n_bins, self.lo, self.hi = n_bins, lo, hi
        self.refit_every, self.min_labels, self.decay = refit_every, min_labels, decay
        self.slope_l2, self.min_slope = slope_l2, min_slope
        self.count = [0.0] * n_bins
        self.pos = [0.0] * n_bins
        self.zsum = [0.0] * n_bins
        self.a, self.b = 1.0, 0.0
        self.fitted = False
        self.n = 0
        self.n_pos = 0
        self._since = 0

    def predict_one(self, raw: float) -> float:
        """The calibrated probability for a raw score in ``[0, 1]``."""
        if not self.fitted:
            return raw
        return _sigmoid(self.a * _logit(raw) + self.b)

    def learn_one(self, raw: float, y: bool) -> None:
        z = _logit(raw)
        i = int((z - self.lo) / (self.hi - self.lo) * self.n_bins)
        i = 0 if i < 0 else (self.n_bins - 1 if i >= self.n_bins else i)
        self.count[i] += 1.0
        self.zsum[i] += z
        if y:
            self.pos[i] += 1.0
            self.n_pos += 1
        self.n += 1
        self._since += 1
        if (self._since >= self.refit_every and self.n >= self.min_labels
                and 0 < self.n_pos < self.n):
            self.refit()

    def refit(self, iterations: int = 25) -> None:
        """Newton-Raphson on the binned, target-smoothed log loss; starts from the last fit."""
        self._since = 0
        n_pos = sum(self.pos)
        n_neg = sum(self.count) - n_pos
        t_pos = (n_pos + 1.0) / (n_pos + 2.0)
        t_neg = 1.0 / (n_neg + 2.0)
        bins = [(c, self.zsum[i] / c, self.pos[i] * t_pos + (c - self.pos[i]) * t_neg)
                for i, c in enumerate(self.count) if c > 0.0]
        a, b = (self.a, self.b) if self.fitted else (1.0, 0.0)
        for _ in range(iterations):
            ga = gb = haa = hab = hbb = 0.0
            for c, z, t in bins:
                p = _sigmoid(a * z + b)
                r = c * p - t
                ga += r * z
                gb += r
                w = c * p * (1.0 - p)
                haa += w * z * z
                hab += w * z
                hbb += w
            # Ridge pull of the slope towards 1 (identity): keeps it sane while the raw scores
            # barely vary (an untrained model), where any slope fits the noise.
            ga += self.slope_l2 * (a - 1.0)
            haa += self.slope_l2
            hbb += 1e-6
            det = haa * hbb - hab * hab
            if det <= 0.0:
                break
            da = (hbb * ga - hab * gb) / det
            db = (haa * gb - hab * ga) / det
            a = max(self.min_slope, a - da)  # never invert the ranking
            b -= db
            if abs(da) < 1e-9 and abs(db) < 1e-9:
                break
        if math.isfinite(a) and math.isfinite(b):
            self.a, self.b = a, b
            self.fitted = True
        if self.decay < 1.0:
            d = self.decay
            self.count = [c * d for c in self.count]
            self.pos = [c * d for c in self.pos]
            self.zsum = [c * d for c in self.zsum]


class PassThrough:
    """The calibrator of a model whose raw score is used as is: counts labels, maps nothing.

    It has :class:`PlattCalibrator`'s attributes (``fitted`` is always ``False``, ``a = 1``,
    ``b = 0``) so snapshots and ``models show`` treat both alike.

    >>> cal = PassThrough()
    >>> cal.learn_one(0.8, True)
    >>> cal.predict_one(0.8), cal.n, cal.n_pos, cal.fitted
    (0.8, 1, 1, False)
    """

    fitted = False
    a, b = 1.0, 0.0

    def __init__(self) -> None:
        self.n = 0
        self.n_pos = 0

    def predict_one(self, raw: float) -> float:
        return raw

    def learn_one(self, raw: float, y: bool) -> None:
        self.n += 1
        if y:
            self.n_pos += 1


def calibrator_for(model: object, **params: float) -> "PlattCalibrator | PassThrough":
    """:class:`PassThrough` for a model with ``needs_calibration = False``, else a
    :class:`PlattCalibrator` with ``params``."""
    if not getattr(model, "needs_calibration", True):
        return PassThrough()
    return PlattCalibrator(**params)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds on the calibrated probability: ``0 <= review <= block <= 1``."""

    review: float = 0.5
    block: float = 0.9

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.block <= 1.0:
            raise ModelConfigError(f"thresholds need 0 <= review <= block <= 1, got "
                                   f"review={self.review}, block={self.block}")

    def decide(self, p: float) -> str:
        if p >= self.block:
            return "block"
        if p >= self.review:
            return "review"
        return "approve"


@dataclass(frozen=True)
class DecisionPolicy:
    """Global thresholds, overridden per merchant id."""

    default: Thresholds = field(default_factory=Thresholds)
    per_merchant: Mapping[str, Thresholds] = field(default_factory=dict)

    def thresholds(self, merchant_id: str | None) -> Thresholds:
        if merchant_id is not None:
            t = self.per_merchant.get(merchant_id)
            if t is not None:
                return t
        return self.default

    def decide(self, p: float, merchant_id: str | None = None) -> str:
        return self.thresholds(merchant_id).decide(p)


def reason_codes(top: list[tuple[str, float]], vector: Mapping[str, object]) -> list[dict]:
    """``[{"feature", "value", "contribution"}]`` for the top contributions (largest first)."""
    return [{"feature": f, "value": vector.get(f), "contribution": c} for f, c in top]
