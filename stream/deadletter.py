"""Dead letters: records the worker cannot use, kept with their original bytes and the reason.

A dead letter's value and key are the original record's, byte for byte; headers say where it came
from and why it was rejected (the original headers follow, unchanged):

=============================== ==============================================
``fraudstream.error.reason``    human-readable reason, e.g. ``must be >= 0, got -5``
``fraudstream.error.field``     the offending field, empty when the whole record is unusable
``fraudstream.error.code``      ``too_large``, ``empty``, ``bad_utf8``, ``bad_json`` or ``invalid``
``fraudstream.source.topic``    topic the record was read from
``fraudstream.source.partition`` its partition (decimal)
``fraudstream.source.offset``   its offset (decimal)
``fraudstream.source.timestamp`` its timestamp in epoch ms (decimal)
=============================== ==============================================
"""

from __future__ import annotations

from confluent_kafka import Message

from stream.exceptions import DecodeError

__all__ = ["dead_letter_headers", "HEADER_PREFIX"]

HEADER_PREFIX = "fraudstream."


def dead_letter_headers(msg: Message, error: DecodeError) -> list[tuple[str, bytes]]:
    """Headers for the dead letter of ``msg``: provenance and reason, then the original headers."""
    headers = [
        ("fraudstream.error.reason", error.reason.encode("utf-8", "replace")),
        ("fraudstream.error.field", (error.field or "").encode()),
        ("fraudstream.error.code", error.code.encode()),
        ("fraudstream.source.topic", (msg.topic() or "").encode()),
        ("fraudstream.source.partition", str(msg.partition()).encode()),
        ("fraudstream.source.offset", str(msg.offset()).encode()),
        ("fraudstream.source.timestamp", str(msg.timestamp()[1]).encode()),
    ]
    original = msg.headers()
    if original:
        headers.extend((k, v if v is not None else b"") for k, v in original)
    return headers
