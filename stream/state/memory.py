"""The in-memory backend: the same bytes interface as :class:`~stream.state.rocks.RocksBackend`.

Values are stored encoded, exactly as RocksDB would hold them, so both backends exercise the same
serialisation and give bit-identical features.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Bytes-in, bytes-out dict for one partition (lost on exit)."""

    def __init__(self) -> None:
        self._data: dict[bytes, bytes] = {}
        self.path = ":memory:"

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def write(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        self._data.update(puts)
        for key in deletes:
            self._data.pop(key, None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self._data.items())

    def has_prefix(self, prefix: bytes) -> bool:
        return any(key.startswith(prefix) for key in self._data)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())

    def entry_count(self) -> int:
        return len(self._data)
