"""A synthetic stream of feature vectors with delayed labels, for tests, benchmarks and docs.

Not real traffic: feature vectors (the 42 names of ``features/default_features.toml``) drawn
directly, fraud drawn from a known logistic rule, so model quality can be compared across options.

- ``n_merchants`` merchants; the first ``n_distinct`` behave differently: their fraud shows up as
  *small* amounts on cards used by many users (``card_txn_distinct_user_7d``), a pattern the
  population rule does not have.
- From ``drift_day`` on, population fraud moves from high-amount bursts to night-time activity
  from new devices (a model frozen before then misses it).
- Labels: every event gets one; fraud is confirmed after 1 to 20 days (chargebacks), legitimate
  events after ``legit_delay_days``.

>>> events, labels = generate(n_events=50, seed=3)
>>> len(events), len(labels), len(events[0].features)
(50, 50, 42)
>>> all(a.event_time <= b.event_time for a, b in zip(events, events[1:]))
True
"""

from __future__ import annotations

import math
import random

from online_models.labels import DAY_MS
from online_models.replay import EventItem, LabelItem

__all__ = ["FEATURES", "generate"]

FEATURES = [
    "hour_of_day", "day_of_week", "is_weekend", "is_night", "amount", "user_txn_count_1m",
    "user_txn_count_5m", "user_txn_count_1h", "user_txn_count_1d", "user_txn_count_7d",
    "user_txn_count_lifetime", "user_txn_sum_amount_1h", "user_txn_sum_amount_1d",
    "user_txn_max_amount_1d", "user_txn_mean_amount_7d", "user_txn_std_amount_7d",
    "user_txn_zscore_amount_7d", "user_txn_ratio_to_mean_amount_7d",
    "user_txn_distinct_merchant_1d", "user_txn_distinct_device_7d",
    "user_txn_distinct_country_7d", "user_txn_time_since_last", "merchant_txn_count_1h",
    "merchant_txn_count_1d", "merchant_txn_mean_amount_7d", "merchant_txn_zscore_amount_7d",
    "merchant_txn_distinct_user_1h", "merchant_txn_distinct_user_1d",
    "merchant_txn_fraud_count_30d_delay7d", "merchant_txn_fraud_rate_30d_delay15d",
    "user_merchant_txn_count_1d", "user_merchant_txn_count_30d",
    "user_merchant_txn_sum_amount_30d", "user_merchant_txn_time_since_last", "card_txn_count_1h",
    "card_txn_count_1d", "card_txn_distinct_merchant_1d", "card_txn_distinct_user_7d",
    "device_count_1h", "device_distinct_user_1d", "ip_count_1h", "ip_distinct_user_1h",
]


def _sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def generate(n_events: int = 20_000, days: float = 42.0, n_merchants: int = 40,
             n_distinct: int = 4, drift_day: float = 21.0, legit_delay_days: float = 7.0,
             seed: int = 0) -> tuple[list[EventItem], list[LabelItem]]:
    """``(events, labels)``, each sorted by its own time (see the module docstring)."""
    rng = random.Random(seed)
    span = int(days * DAY_MS)
    times = sorted(rng.randrange(span) for _ in range(n_events))
    events: list[EventItem] = []
    labels: list[LabelItem] = []
    for i, t in enumerate(times):
        m = rng.randrange(n_merchants)
        hour = (t // 3_600_000) % 24
        amount = math.exp(rng.gauss(3.5, 1.0))
        count_1h = float(rng.randrange(4) if rng.random() < 0.9 else rng.randrange(4, 15))
        new_dev = float(rng.random() < 0.1)
        card_users = float(1 + (rng.randrange(6) if rng.random() < 0.15 else 0))
        mean7 = math.exp(rng.gauss(3.5, 0.5))
        x = {f: rng.random() for f in FEATURES}
        x.update({
            "hour_of_day": float(hour), "is_night": float(hour < 6),
            "amount": amount, "user_txn_count_1h": count_1h,
            "user_txn_mean_amount_7d": mean7, "user_txn_ratio_to_mean_amount_7d": amount / mean7,
            "user_txn_distinct_device_7d": 1.0 + new_dev * rng.randrange(1, 4),
            "card_txn_distinct_user_7d": card_users,
        })
        ratio = math.log(amount / mean7)
        if m < n_distinct:
            z = -5.0 - 1.2 * math.log(amount) + 1.6 * card_users + 0.8 * count_1h / 4
        elif t < drift_day * DAY_MS:
            z = -5.2 + 1.6 * ratio + 0.35 * count_1h
        else:
            z = -5.0 + 2.2 * x["is_night"] + 1.3 * (x["user_txn_distinct_device_7d"] - 1.0)
        fraud = rng.random() < _sigmoid(z)
        eid = f"e{i}"
        events.append(EventItem(eid, f"m{m}", t, x))
        delay = rng.uniform(1.0, 20.0) if fraud else legit_delay_days
        labels.append(LabelItem(eid, fraud, t + int(delay * DAY_MS)))
    labels.sort(key=lambda lab: lab.label_time)
    return events, labels
