"""Errors raised by the I/O layer: configuration, Kafka, state stores and the wire contract."""

from __future__ import annotations

from dataclasses import dataclass, field

from features.exceptions import FraudstreamError

__all__ = [
    "FraudstreamError",
    "ConfigError",
    "KafkaError",
    "LocalKafkaError",
    "TopicMismatchError",
    "ChangelogFormatError",
    "DecodeError",
    "RawRecord",
]


class ConfigError(FraudstreamError):
    """A setting is missing or has an invalid value."""


class KafkaError(FraudstreamError):
    """A Kafka operation failed in a way the caller has to know about."""


class LocalKafkaError(KafkaError):
    """The local development broker could not be fetched, started or stopped."""


class TopicMismatchError(KafkaError):
    """A topic exists with a partition count or cleanup policy other than the configured one."""


class ChangelogFormatError(FraudstreamError):
    """A changelog record in a layout this version cannot restore."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """Where a record came from and its original bytes, kept so it can be dead-lettered as-is."""

    value: bytes | None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default_factory=tuple)


class DecodeError(FraudstreamError):
    """A message could not be decoded or failed validation.

    ``field`` names the offending field (``None`` when the whole message is unusable, e.g. bad
    JSON), ``reason`` says what is wrong, and ``raw`` carries the original record when known.
    """

    def __init__(self, reason: str, field: str | None = None, raw: RawRecord | None = None,
                 code: str = "invalid") -> None:
        self.reason = reason
        self.field = field
        self.raw = raw
        self.code = code
        super().__init__(f"{field}: {reason}" if field else reason)

    def with_raw(self, raw: RawRecord) -> "DecodeError":
        return DecodeError(self.reason, self.field, raw, self.code)
