"""Errors raised by the online models: unknown specs, bad snapshots, bad configuration."""

from __future__ import annotations

from features.exceptions import FraudstreamError

__all__ = ["ModelError", "UnknownModelError", "SnapshotError", "SnapshotLayoutError",
           "ModelConfigError"]


class ModelError(FraudstreamError):
    """Root of the errors raised by :mod:`online_models`."""


class UnknownModelError(ModelError, KeyError):
    """No model spec is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class SnapshotError(ModelError):
    """A model snapshot could not be read (corrupt, truncated or of another format)."""


class SnapshotLayoutError(ModelError):
    """A stored scored-vector snapshot (``online_models.labels.SnapshotStore``) names a vector
    layout that is not in the store, or its vector is of an unknown form."""


class ModelConfigError(ModelError):
    """A model, calibration or threshold setting has an invalid value."""
