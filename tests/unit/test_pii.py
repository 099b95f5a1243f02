"""Keyed identifier hashing (no broker)."""

from __future__ import annotations

import pytest

from stream.pii import IdentifierHasher


def test_hash_is_keyed_deterministic_and_leaves_other_fields():
    a, b = IdentifierHasher(b"one"), IdentifierHasher(b"two")
    assert a.hash("alice") == IdentifierHasher(b"one").hash("alice")
    assert a.hash("alice") != b.hash("alice") and a.hash("alice") != a.hash("bob")
    record = {"user_id": "alice", "card_id": "c1", "merchant_id": "m1", "ip": None}
    a.apply(record)
    assert record["merchant_id"] == "m1" and record["ip"] is None
    assert record["user_id"] == a.hash("alice") and record["card_id"] == a.hash("c1")
    assert "alice" not in repr(record)


def test_empty_key_is_refused():
    with pytest.raises(ValueError):
        IdentifierHasher(b"")
