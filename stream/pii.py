"""Keyed hashing of identifiers, so raw personal data stays out of state, changelogs and logs.

With ``pii_hash_key`` set, the worker replaces each field in ``pii_fields`` (default ``user_id``,
``card_id``, ``device_id``, ``ip``) with ``HMAC-SHA256(key, value)``, hex, first 32 characters,
as soon as an event or label is decoded. Everything downstream (feature state, changelogs,
repartition records, scores, logs) sees only the hashes; equal identifiers still hash equal, so
every feature works unchanged. A service that needs to join scores back to its users computes the
same HMAC with the same key. Rotating the key starts every entity afresh.

>>> h = IdentifierHasher(b"k3y", ("user_id", "ip"))
>>> out = h.apply({"user_id": "alice", "ip": "10.0.0.1", "merchant_id": "m1", "card_id": None})
>>> out["merchant_id"], out["card_id"], len(out["user_id"]), out["user_id"] == h.hash("alice")
('m1', None, 32, True)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, Iterable

__all__ = ["IdentifierHasher", "DEFAULT_PII_FIELDS"]

DEFAULT_PII_FIELDS = ("user_id", "card_id", "device_id", "ip")


class IdentifierHasher:
    def __init__(self, key: bytes, fields: Iterable[str] = DEFAULT_PII_FIELDS) -> None:
        if not key:
            raise ValueError("pii_hash_key must not be empty")
        self._key = key
        self.fields = tuple(fields)

    def hash(self, value: str) -> str:
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Hash the configured fields of ``record`` in place (missing or null ones stay so)."""
        for name in self.fields:
            value = record.get(name)
            if value is not None:
                record[name] = self.hash(str(value))
        return record
