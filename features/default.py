"""The default fraud feature set (42 features); ``docs/features.md`` explains each one.

``features/default_features.toml`` is the same set as an editable file (a test keeps the two
equal): copy it, change it, and pass it with ``--config``.

>>> fs = default_feature_set()
>>> len(fs.features), fs.names[:6]
(42, ['hour_of_day', 'day_of_week', 'is_weekend', 'is_night', 'amount', 'user_txn_count_1m'])
"""

from __future__ import annotations

from features.definitions import Feature, FeatureSet

__all__ = ["default_feature_set", "DEFAULT_FEATURES"]

_TXN = ("transaction",)


def _txn(agg: str, entity, window: str = "lifetime", field: str | None = None,
         delay: str | int = 0) -> Feature:
    return Feature(agg, entity=entity, field=field, window=window, delay=delay, event_types=_TXN)


USER, MERCHANT, PAIR = "user_id", "merchant_id", ("user_id", "merchant_id")

DEFAULT_FEATURES: tuple[Feature, ...] = (
    # calendar and the event itself
    Feature("hour_of_day"),
    Feature("day_of_week"),
    Feature("is_weekend"),
    Feature("is_night"),
    Feature("value", field="amount"),
    # user: velocity, spend, amount profile, novelty
    _txn("count", USER, "1m"),
    _txn("count", USER, "5m"),
    _txn("count", USER, "1h"),
    _txn("count", USER, "24h"),
    _txn("count", USER, "7d"),
    _txn("count", USER),
    _txn("sum", USER, "1h", "amount"),
    _txn("sum", USER, "24h", "amount"),
    _txn("max", USER, "24h", "amount"),
    _txn("mean", USER, "7d", "amount"),
    _txn("std", USER, "7d", "amount"),
    _txn("zscore", USER, "7d", "amount"),
    _txn("ratio_to_mean", USER, "7d", "amount"),
    _txn("distinct", USER, "24h", "merchant_id"),
    _txn("distinct", USER, "7d", "device_id"),
    _txn("distinct", USER, "7d", "country"),
    _txn("time_since_last", USER),
    # merchant: load, amount profile, breadth of customers, known fraud. The fraud count needs
    # only fraud labels (days); the rate's denominator needs the legitimate ones too, which
    # arrive when an event matures (about 14 days), so its window ends 15 days back.
    _txn("count", MERCHANT, "1h"),
    _txn("count", MERCHANT, "24h"),
    _txn("mean", MERCHANT, "7d", "amount"),
    _txn("zscore", MERCHANT, "7d", "amount"),
    _txn("distinct", MERCHANT, "1h", "user_id"),
    _txn("distinct", MERCHANT, "24h", "user_id"),
    _txn("fraud_count", MERCHANT, "30d", delay="7d"),
    _txn("fraud_rate", MERCHANT, "30d", delay="15d"),
    # user x merchant: familiarity
    _txn("count", PAIR, "24h"),
    _txn("count", PAIR, "30d"),
    _txn("sum", PAIR, "30d", "amount"),
    _txn("time_since_last", PAIR),
    # card, device, ip: testing and sharing patterns
    _txn("count", "card_id", "1h"),
    _txn("count", "card_id", "24h"),
    _txn("distinct", "card_id", "24h", "merchant_id"),
    _txn("distinct", "card_id", "7d", "user_id"),
    Feature("count", entity="device_id", window="1h"),
    Feature("distinct", entity="device_id", field="user_id", window="24h"),
    Feature("count", entity="ip", window="1h"),
    Feature("distinct", entity="ip", field="user_id", window="1h"),
)


def default_feature_set() -> FeatureSet:
    """The default set with the default time policy (grace 1 h, TTL 90 days)."""
    return FeatureSet(DEFAULT_FEATURES, grace="1h", ttl="90d")
