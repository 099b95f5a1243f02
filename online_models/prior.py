"""A fixed fraud scorecard: the prior the default model starts from, and the ``heuristic`` scorer.

Labels arrive late: a simulated or real stream confirms fraud within days or weeks, and labels a
transaction legitimate only once it matures (two weeks in ``fraudstream simulate``). A model that
starts from nothing therefore has *no* negative labels for its first weeks, and ranks at chance
(see ``docs/models.md``). :class:`RulePrior` is what the default model scores with until labels
say otherwise: a logistic scorecard over textbook fraud indicators (velocity, novelty, amount
against the user's habit, merchant fraud history, familiarity), written by hand and never fitted.
The default model (:class:`online_models.registry.PriorLogReg`) adds a learned correction to its
log-odds; the runtime's ``heuristic`` scorer (:class:`stream.runtime.scoring.HeuristicScorer`) is
the prior alone.

Each term is ``weight * log1p(max(value, 0))`` for counts, distinct counts and sums (a burst of 9
is not three times as suspicious as one of 3), ``weight * value`` for ratios, rates and z-scores.
Features the vector lacks, ``None`` and booleans are skipped, so any feature set works; features
without a weight carry none. The log-odds are clipped to ``[-50, 50]``.

>>> prior = RulePrior()
>>> quiet = prior.logit({"user_txn_count_1m": 0, "amount": 20.0})
>>> burst = prior.logit({"user_txn_count_1m": 4, "amount": 20.0})
>>> quiet == BIAS, round(burst - quiet, 4)
(True, 1.4485)
>>> [(name, round(c, 4)) for name, _, c in prior.terms({"user_txn_count_1m": 4})]
[('user_txn_count_1m', 1.4485)]
"""

from __future__ import annotations

from typing import Any, Mapping

from online_models._linear import prior_logit as _prior_logit
from online_models._linear import prior_terms as _prior_terms

__all__ = ["RulePrior", "WEIGHTS", "BIAS"]

#: Weights on ``log1p(feature)`` (counts, distinct counts, sums) or the raw value (ratios,
#: z-scores, rates), by the default feature set's names (``docs/features.md``).
WEIGHTS: Mapping[str, float] = {
    "user_txn_count_1m": 0.9,
    "user_txn_count_5m": 0.6,
    "user_txn_count_1h": 0.35,
    "user_txn_zscore_amount_7d": 0.35,
    "user_txn_ratio_to_mean_amount_7d": 0.15,
    "user_txn_distinct_merchant_1d": 0.3,
    "user_txn_distinct_country_7d": 0.4,
    "user_txn_distinct_device_7d": 0.3,
    "card_txn_count_1h": 0.4,
    "card_txn_distinct_merchant_1d": 0.3,
    "merchant_txn_fraud_rate_30d_delay15d": 4.0,
    "user_merchant_txn_count_30d": -0.25,
}
#: Log-odds of an event with no activity at all (about 1.8 %).
BIAS = -4.0
_LOG_SCALED = ("count", "distinct", "sum")
_CLIP = 50.0


class RulePrior:
    """A fixed logistic scorecard (see the module docstring); holds no state, learns nothing."""

    __slots__ = ("bias", "_terms")

    def __init__(self, weights: Mapping[str, float] = WEIGHTS, bias: float = BIAS) -> None:
        self.bias = bias
        self._terms = tuple((name, w, any(tag in name for tag in _LOG_SCALED))
                            for name, w in weights.items())

    def terms(self, x: Mapping[str, Any]) -> list[tuple[str, Any, float]]:
        """``(feature, value, weight * transformed value)`` for every weighted feature of ``x``.

        Per weighted feature present: ``None`` and booleans are skipped; counts, distinct counts
        and sums become ``log1p(max(value, 0))``, other values are used as they are if finite
        (compiled: ``online_models._linear.prior_terms``)."""
        if type(x) is dict:
            return _prior_terms(self._terms, x)
        return _prior_terms(self._terms, dict(x))

    def logit(self, x: Mapping[str, Any],
              terms: list[tuple[str, Any, float]] | None = None) -> float:
        """The prior log-odds of fraud for ``x``, clipped to ``[-50, 50]`` (``terms``: those of
        ``x`` if already computed)."""
        if terms is None and type(self.bias) is float:
            # Compiled: the same sum in the same order, without building the terms.
            return _prior_logit(self._terms, x if type(x) is dict else dict(x), self.bias, _CLIP)
        z = self.bias
        for _, _, c in (self.terms(x) if terms is None else terms):
            z += c
        return max(-_CLIP, min(_CLIP, z))

    # Stateless: pickles as the weights it was built with.
    def __getstate__(self) -> tuple:
        return (self.bias, self._terms)

    def __setstate__(self, st: tuple) -> None:
        self.bias, self._terms = st
