"""Feature definitions in TOML, for users who edit features without touching code.

A file has optional top-level ``grace``, ``ttl`` and ``distinct_capacity`` keys and one
``[[feature]]`` table per feature with the keys of :class:`~features.definitions.Feature`
(``name`` is optional; the default name says entity, event type, aggregation, field and window):

>>> fs = loads('''
... grace = "30m"
... [[feature]]
... agg = "count"
... entity = "user_id"
... window = "1h"
... event_types = ["transaction"]
...
... [[feature]]
... name = "pair_spend_30d"
... agg = "sum"
... entity = ["user_id", "merchant_id"]
... field = "amount"
... window = "30d"
... ''')
>>> fs.names, fs.grace_ms
(['user_txn_count_1h', 'pair_spend_30d'], 1800000)
>>> loads(dumps(fs)) == fs
True
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from features.definitions import FeatureSet
from features.exceptions import FeatureConfigError

__all__ = ["load", "loads", "dumps"]


def loads(text: str) -> FeatureSet:
    """Parse and validate a feature definition file's text."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise FeatureConfigError(f"not valid TOML: {exc}") from None
    return FeatureSet.from_dict(raw)


def load(path: str | os.PathLike[str]) -> FeatureSet:
    """Read, parse and validate a feature definition file."""
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeatureConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return loads(text)
    except FeatureConfigError as exc:
        raise FeatureConfigError(f"{path}: {exc}") from None


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise FeatureConfigError(f"cannot write {v!r} to TOML")


def dumps(fs: FeatureSet) -> str:
    """The TOML text of a feature set (what :func:`loads` reads back to an equal set)."""
    raw = fs.to_dict()
    lines = [f"{k} = {_value(raw[k])}" for k in ("grace", "ttl", "distinct_capacity")]
    for feature in raw["feature"]:
        lines += ["", "[[feature]]"]
        lines += [f"{k} = {_value(v)}" for k, v in feature.items()]
    return "\n".join(lines) + "\n"
