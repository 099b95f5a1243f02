"""The first slice's model: an unsupervised River anomaly detector over the user features.

Half-space trees learn from every event without labels, so the first end-to-end slice produces
meaningful scores before any label arrives. Raw anomaly scores are not probabilities, so the score
is the event's percentile among the last ``RANK_WINDOW`` raw scores, raised to a power chosen so the
top 3% reach 0.5 (the default review threshold) and the top 0.5% about 0.9 (block). The model
registry (global and per-merchant supervised models, calibration) supersedes this module.

>>> scorer = AnomalyScorer(seed=7)
>>> s = scorer.score_then_learn({"amount": 10.0, "user_txn_count_1h": 1})
>>> 0.0 <= s <= 1.0
True
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from river import anomaly, compose, preprocessing

__all__ = ["MODEL_VERSION", "RANK_WINDOW", "AnomalyScorer"]

MODEL_VERSION = "first-slice-hst-1"
RANK_WINDOW = 1000
# percentile ** _EXPONENT maps percentile 0.97 to 0.5.
_EXPONENT = math.log(0.5) / math.log(0.97)


class AnomalyScorer:
    """Half-space trees plus a rolling percentile rank of their raw scores."""

    def __init__(self, seed: int = 42) -> None:
        self.model = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed),
        )
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def score_then_learn(self, x: dict[str, float]) -> float:
        """Score ``x`` with the model as it was before ``x``, then learn from it."""
        raw = float(self.model.score_one(x))
        self.model.learn_one(x)
        n = len(self._sorted)
        if n:
            below = bisect.bisect_left(self._sorted, raw)
            equal = bisect.bisect_right(self._sorted, raw) - below
            percentile = (below + 0.5 * equal) / n
        else:
            percentile = 0.5
        self._recent.append(raw)
        bisect.insort(self._sorted, raw)
        if len(self._recent) > RANK_WINDOW:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        return percentile ** _EXPONENT
