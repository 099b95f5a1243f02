"""Logging set-up for fraudstream's processes (one place, called by the CLI, never at import)."""

from __future__ import annotations

import logging
import sys

__all__ = ["configure"]


def configure(level: str = "INFO") -> None:
    """Log to stderr with time, level and logger name; librdkafka's own logs go through here too."""
    root = logging.getLogger()
    if getattr(configure, "_done", False):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    configure._done = True  # type: ignore[attr-defined]
