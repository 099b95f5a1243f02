"""Logging set-up for fraudstream's processes (one place, called by the CLI, never at import).

Two formats (``log_format``): ``text`` for people, ``json`` for log pipelines: one JSON object per
line with ``ts`` (RFC 3339, UTC), ``level``, ``logger``, ``msg`` and any context the call passed
in ``extra`` (the worker adds ``topic``, ``partition`` and ``offset`` to record-level lines, e.g.
dead letters). Messages are formatted before they are written; secrets never reach them because
settings render them masked (see ``Settings.redacted``).

>>> import io, logging
>>> buf = io.StringIO()
>>> handler = logging.StreamHandler(buf)
>>> handler.setFormatter(JsonFormatter())
>>> log = logging.getLogger("doctest.logs")
>>> log.addHandler(handler); log.propagate = False
>>> log.warning("dead letter %s", "x", extra={"topic": "events", "partition": 3, "offset": 42})
>>> line = buf.getvalue()
>>> '"msg":"dead letter x"' in line and '"partition":3' in line and '"offset":42' in line
True
"""

from __future__ import annotations

import logging
import sys
import time

from stream import wire

__all__ = ["configure", "JsonFormatter"]

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is context.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message",
                                                                              "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the ``extra`` context as top-level fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                  + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return wire.dumps(out).decode()


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr in ``fmt`` (``text`` or ``json``) at ``level``."""
    root = logging.getLogger()
    if getattr(configure, "_done", False):
        root.setLevel(level.upper())
        return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level.upper())
    configure._done = True  # type: ignore[attr-defined]
