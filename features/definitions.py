"""Declarative feature definitions: what to aggregate, per which entity, over which window.

A :class:`Feature` names an aggregation, the entity it is kept per (one event field or a tuple of
fields), the field it aggregates, the window and an optional delay and event-type filter. A
:class:`FeatureSet` validates a list of them and fixes the engine's time policy (grace period for
out-of-order events, idle TTL, distinct-count capacity).

>>> f = Feature("count", entity="user_id", window="1h", event_types="transaction")
>>> f.name
'user_txn_count_1h'
>>> Feature("mean", entity=("user_id", "merchant_id"), field="amount", window="30d").name
'user_merchant_mean_amount_30d'
>>> Feature("fraud_rate", entity="merchant_id", window="30d", delay="7d").name
'merchant_fraud_rate_30d_delay7d'
>>> Feature("median", entity="user_id")
Traceback (most recent call last):
...
features.exceptions.FeatureConfigError: median: unknown aggregation (known: count, day_of_week, \
distinct, fraud_count, fraud_rate, hour_of_day, is_night, is_weekend, last, max, mean, min, \
ratio_to_mean, std, sum, time_since_last, value, zscore)
"""

from __future__ import annotations

from dataclasses import dataclass, field as dc_field
from typing import Any, Iterable, Mapping

from features.exceptions import FeatureConfigError
from features.windows import LIFETIME, Window, format_duration, parse_duration

__all__ = [
    "AGGREGATIONS",
    "EVENT_AGGREGATIONS",
    "LABEL_AGGREGATIONS",
    "PREVIOUS_AGGREGATIONS",
    "VALUE_AGGREGATIONS",
    "Feature",
    "FeatureSet",
]

#: Read from the event alone (no state).
EVENT_AGGREGATIONS = frozenset({"hour_of_day", "day_of_week", "is_weekend", "is_night", "value"})
#: Read from the entity's state *before* the current event is folded in; no window.
PREVIOUS_AGGREGATIONS = frozenset({"time_since_last", "last"})
#: Over a numeric field in a window.
VALUE_AGGREGATIONS = frozenset({"sum", "mean", "std", "min", "max", "ratio_to_mean", "zscore"})
#: Over the labels known for the entity's events in a window.
LABEL_AGGREGATIONS = frozenset({"fraud_count", "fraud_rate"})
WINDOW_AGGREGATIONS = VALUE_AGGREGATIONS | LABEL_AGGREGATIONS | {"count", "distinct"}
AGGREGATIONS = EVENT_AGGREGATIONS | PREVIOUS_AGGREGATIONS | WINDOW_AGGREGATIONS
_NEEDS_FIELD = VALUE_AGGREGATIONS | {"distinct", "last", "value"}

_TYPE_ALIASES = {"transaction": "txn", "login": "login", "account_update": "acctupd",
                 "payment_method_added": "pmadd"}


def _alias(name: str) -> str:
    return name[:-3] if name.endswith("_id") else name


def _as_tuple(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


@dataclass(frozen=True)
class Feature:
    """One feature definition. ``name`` is derived from the other fields unless given."""

    agg: str
    entity: tuple[str, ...] | str = ()
    field: str | None = None
    window: str | int = LIFETIME
    delay: str | int = 0
    resolution: str | int | None = None
    event_types: tuple[str, ...] | str = ()
    name: str = ""
    spec: Window = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "entity", _as_tuple(self.entity))
        set_(self, "event_types", _as_tuple(self.event_types))
        agg = self.agg
        if agg not in AGGREGATIONS:
            raise FeatureConfigError(f"{agg}: unknown aggregation (known: "
                                     f"{', '.join(sorted(AGGREGATIONS))})")
        if agg in _NEEDS_FIELD and not self.field:
            raise FeatureConfigError(f"{self.name or agg}: aggregation {agg!r} needs a 'field'")
        if agg not in _NEEDS_FIELD and self.field:
            raise FeatureConfigError(f"{self.name or agg}: aggregation {agg!r} takes no 'field'")
        if agg in EVENT_AGGREGATIONS:
            if self.entity or self.event_types:
                raise FeatureConfigError(f"{self.name or agg}: event features take no entity or "
                                         "event_types")
        elif not self.entity:
            raise FeatureConfigError(f"{self.name or agg}: needs an 'entity' (e.g. 'user_id')")
        if any(not isinstance(e, str) or not e for e in self.entity):
            raise FeatureConfigError(f"{self.name or agg}: entity must be field names")
        windowed = agg in WINDOW_AGGREGATIONS
        if not windowed and (self.window != LIFETIME or self.delay or self.resolution):
            raise FeatureConfigError(f"{self.name or agg}: aggregation {agg!r} has no window")
        set_(self, "spec", Window.of(self.window, self.delay, self.resolution) if windowed
             else Window(0))
        if not self.name:
            set_(self, "name", self._default_name())
        elif not isinstance(self.name, str) or not self.name.isidentifier():
            raise FeatureConfigError(f"{self.name!r}: a feature name must be an identifier")

    def _default_name(self) -> str:
        if self.agg in EVENT_AGGREGATIONS:
            return self.agg if self.agg != "value" else self.field
        parts = ["_".join(_alias(e) for e in self.entity)]
        parts += [_TYPE_ALIASES.get(t, t) for t in self.event_types]
        parts.append(self.agg)
        if self.field:
            parts.append(_alias(self.field))
        if self.agg in WINDOW_AGGREGATIONS:
            parts.append(self.spec.label)
            if self.resolution is not None and not self.spec.lifetime:
                parts.append("res" + format_duration(self.spec.resolution_ms))
        return "_".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The TOML/JSON form (only non-default keys)."""
        out: dict[str, Any] = {"name": self.name, "agg": self.agg}
        if self.entity:
            out["entity"] = list(self.entity) if len(self.entity) > 1 else self.entity[0]
        if self.field:
            out["field"] = self.field
        if self.agg in WINDOW_AGGREGATIONS:
            out["window"] = self.window
            if self.delay:
                out["delay"] = self.delay
            if self.resolution is not None:
                out["resolution"] = self.resolution
        if self.event_types:
            out["event_types"] = list(self.event_types)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Feature":
        known = {"name", "agg", "entity", "field", "window", "delay", "resolution", "event_types"}
        unknown = set(raw) - known
        label = raw.get("name") or raw.get("agg") or "feature"
        if unknown:
            raise FeatureConfigError(f"{label}: unknown keys {', '.join(sorted(unknown))} "
                                     f"(allowed: {', '.join(sorted(known))})")
        if "agg" not in raw:
            raise FeatureConfigError(f"{label}: 'agg' is required")
        return cls(**{k: v for k, v in raw.items()})


@dataclass(frozen=True)
class FeatureSet:
    """A validated list of features plus the time policy the engine applies to all of them.

    * ``grace``: how far behind an entity's latest event an event may be and still be folded into
      the windows it belongs to (default 1 h). Older events are *late*: scored with the entity's
      current state (windows read at its latest event time) and not folded in.
    * ``ttl``: an entity whose latest event is more than ``ttl`` older than the current event is
      treated as new (its state expired); also the longest a label may take to arrive. Must
      exceed every window plus delay plus grace.
    * ``distinct_capacity``: distinct counts are exact up to this many values per window.
    """

    features: tuple[Feature, ...]
    grace: str | int = "1h"
    ttl: str | int = "90d"
    distinct_capacity: int = 256
    grace_ms: int = dc_field(init=False, repr=False, compare=False)
    ttl_ms: int = dc_field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "grace_ms", parse_duration(self.grace, "grace"))
        object.__setattr__(self, "ttl_ms", parse_duration(self.ttl, "ttl"))
        if not self.features:
            raise FeatureConfigError("a feature set needs at least one feature")
        seen: set[str] = set()
        for f in self.features:
            if not isinstance(f, Feature):
                raise FeatureConfigError(f"not a Feature: {f!r}")
            if f.name in seen:
                raise FeatureConfigError(f"{f.name}: defined twice")
            seen.add(f.name)
        if type(self.distinct_capacity) is not int or self.distinct_capacity < 2:
            raise FeatureConfigError("distinct_capacity: must be an integer >= 2")
        span = max((f.spec.length_ms + f.spec.delay_ms for f in self.features), default=0)
        if self.ttl_ms <= span + self.grace_ms:
            raise FeatureConfigError(f"ttl: must exceed the longest window plus delay plus grace "
                                     f"({span + self.grace_ms} ms), got {self.ttl_ms} ms")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {"grace": self.grace, "ttl": self.ttl, "distinct_capacity": self.distinct_capacity,
                "feature": [f.to_dict() for f in self.features]}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureSet":
        known = {"grace", "ttl", "distinct_capacity", "feature"}
        unknown = set(raw) - known
        if unknown:
            raise FeatureConfigError(f"unknown top-level keys {', '.join(sorted(unknown))} "
                                     f"(allowed: {', '.join(sorted(known))})")
        items = raw.get("feature")
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise FeatureConfigError("expected [[feature]] tables")
        feats = []
        for i, item in enumerate(items, 1):
            try:
                feats.append(Feature.from_dict(item))
            except FeatureConfigError as exc:
                raise FeatureConfigError(f"feature #{i}: {exc}") from None
            except TypeError as exc:
                raise FeatureConfigError(f"feature #{i}: {exc}") from None
        kwargs = {k: raw[k] for k in ("grace", "ttl", "distinct_capacity") if k in raw}
        return cls(tuple(feats), **kwargs)
