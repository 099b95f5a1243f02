"""State-store errors, and the one helper that recognises RocksDB's.

rocksdict raises plain ``Exception`` whose message starts with RocksDB's status text
(``"IO error: ..."``, ``"Corruption: ..."``), or ``DbClosedError``. Everything that touches
rocksdict wraps calls with :func:`translate` so the rest of fraudstream sees typed errors and
nobody string-matches RocksDB messages anywhere else.
"""

from __future__ import annotations

import rocksdict

from features.exceptions import FraudstreamError

__all__ = [
    "StateError",
    "StateLockedError",
    "StateCorruptionError",
    "StateClosedError",
    "rocksdb_error",
    "translate",
]


class StateError(FraudstreamError):
    """A state store operation failed."""


class StateLockedError(StateError):
    """Another process (or another open handle in this one) holds the store's lock."""


class StateCorruptionError(StateError):
    """RocksDB found corrupt data: restore the partition from its changelog."""


class StateClosedError(StateError):
    """The store was used after it was closed."""


# RocksDB ``Status::ToString()`` prefixes (rocksdb/util/status.cc).
_STATUS_PREFIXES = (
    "IO error", "Corruption", "Invalid argument", "Not implemented", "Not found",
    "Operation aborted", "Resource busy", "Operation expired", "Operation failed",
    "Result incomplete", "Shutdown in progress", "Operation timed out", "Not supported",
    "Merge operator failed", "Compaction too large", "Column family",
)
_LOCK_MARKERS = ("lock hold by current process", "While lock file", "LOCK: ")


def rocksdb_error(exc: BaseException) -> StateError | None:
    """The typed error for a rocksdict exception, or ``None`` if ``exc`` is not one.

    >>> type(rocksdb_error(Exception("IO error: While lock file: /s/LOCK: Resource "
    ...                              "temporarily unavailable"))).__name__
    'StateLockedError'
    >>> type(rocksdb_error(Exception("Corruption: block checksum mismatch"))).__name__
    'StateCorruptionError'
    >>> rocksdb_error(ValueError("Corruption: not from rocksdb")) is None
    True
    """
    if isinstance(exc, StateError):
        return exc
    if isinstance(exc, rocksdict.DbClosedError):
        return StateClosedError(str(exc))
    if type(exc) is not Exception:  # rocksdict's status errors are bare Exceptions
        return None
    message = str(exc)
    if not message.startswith(_STATUS_PREFIXES):
        return None
    if message.startswith("IO error") and any(m in message for m in _LOCK_MARKERS):
        return StateLockedError(message)
    if message.startswith("Corruption"):
        return StateCorruptionError(message)
    return StateError(message)


class translate:
    """Context manager: re-raise rocksdict errors as :class:`StateError` subclasses.

    >>> with translate("open /s"):
    ...     raise Exception("Corruption: bad block")
    Traceback (most recent call last):
    ...
    stream.state.errors.StateCorruptionError: open /s: Corruption: bad block
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None:
            return False
        typed = rocksdb_error(exc)
        if typed is None or typed is exc:
            return False
        raise type(typed)(f"{self.what}: {typed}") from exc
