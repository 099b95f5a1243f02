"""The scoring step of the last stage, behind one small interface.

The runtime calls :meth:`Scorer.score` once per event with the merged feature vector and
:meth:`Scorer.learn` once per label. Whatever a scorer keeps per merchant must live in the
partition's state store (passed in), so it is changelogged and restored with the partition; that
is what lets a restarted worker produce the same scores as an uninterrupted one.

:class:`HeuristicScorer` is a fixed, deterministic logistic score over velocity and amount
features. It learns nothing; it is the runtime's default until a model from ``online_models`` is
configured, and the reference the exactly-once tests compare against.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol

from features.store import StateStore

__all__ = ["Scorer", "HeuristicScorer"]


class Scorer(Protocol):
    version: str

    def score(self, features: Mapping[str, Any], event: Mapping[str, Any],
              store: StateStore) -> tuple[float, list[dict[str, Any]]]:
        """(probability-like score in [0, 1], reasons: the features that raised it most)."""

    def learn(self, label: Mapping[str, Any], store: StateStore) -> bool:
        """Learn from a label; returns whether anything changed."""


# Weights on log1p(feature) (counts, amounts) or the raw value (ratios, z-scores). Missing features
# are skipped, so any feature set works; unknown ones carry no weight.
_WEIGHTS = {
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
    "merchant_txn_fraud_rate_30d_delay7d": 4.0,
    "user_merchant_txn_count_30d": -0.25,
}
_LOG_SCALED = ("count", "distinct", "sum")
_BIAS = -4.0


class HeuristicScorer:
    version = "heuristic-1"

    def score(self, features: Mapping[str, Any], event: Mapping[str, Any],
              store: StateStore | None = None) -> tuple[float, list[dict[str, Any]]]:
        z = _BIAS
        contributions = []
        for name, weight in _WEIGHTS.items():
            value = features.get(name)
            if value is None or type(value) is bool:
                continue
            x = float(value)
            if any(tag in name for tag in _LOG_SCALED):
                x = math.log1p(max(x, 0.0))
            elif not math.isfinite(x):
                continue
            c = weight * x
            z += c
            if c > 0:
                contributions.append((c, name, value))
        score = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))
        contributions.sort(key=lambda item: (-item[0], item[1]))
        reasons = [{"feature": name, "value": value, "contribution": round(c, 4)}
                   for c, name, value in contributions[:3]]
        return round(score, 6), reasons

    def learn(self, label: Mapping[str, Any], store: StateStore | None = None) -> bool:
        return False
