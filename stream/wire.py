"""The one place that knows how fraudstream serialises JSON (orjson), so every writer agrees.

Messages are compact UTF-8 JSON without a trailing newline; JSON Lines files add the newline.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["dumps", "dumps_line", "loads", "JSONDecodeError"]

_OPTIONS = orjson.OPT_NON_STR_KEYS
_LINE_OPTIONS = _OPTIONS | orjson.OPT_APPEND_NEWLINE

JSONDecodeError = orjson.JSONDecodeError


def dumps(obj: Any) -> bytes:
    """Serialise ``obj`` to compact JSON bytes."""
    return orjson.dumps(obj, option=_OPTIONS)


def dumps_line(obj: Any) -> bytes:
    """Serialise ``obj`` as one JSON Lines record (with the trailing newline)."""
    return orjson.dumps(obj, option=_LINE_OPTIONS)


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; raises :class:`JSONDecodeError` (a ``ValueError``) on bad input or bad UTF-8."""
    return orjson.loads(data)
