"""Errors raised by the feature engine, and the project's root exception.

``FraudstreamError`` lives here because ``features`` is the bottom layer: ``online_models`` and
``stream`` both import from it, and it imports from neither, so every package can share one root.
"""

from __future__ import annotations

__all__ = ["FraudstreamError", "FeatureError", "FeatureConfigError"]


class FraudstreamError(Exception):
    """Root of every error fraudstream raises on purpose."""


class FeatureError(FraudstreamError):
    """A feature could not be computed from the event it was given."""


class FeatureConfigError(FeatureError):
    """A feature definition is invalid (unknown aggregation, bad window, ...)."""
