"""The wire contract: the decoder's precise rejections, normalisation, round trips, and agreement
between the decoder and the JSON Schemas in ``stream/schemas/``."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream import wire
from stream.events import (
    DECISIONS,
    DEFAULT_MAX_BYTES,
    EVENT_TYPES,
    Event,
    Label,
    Score,
    decode_event,
    decode_label,
    decode_score,
    event_from_dict,
    is_canonical_event,
    is_canonical_label,
    label_from_dict,
    parse_time,
    score_from_dict,
)
from stream.exceptions import DecodeError, RawRecord
from stream.settings import Settings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ABSENT = object()  # a field left out of the message


def txn(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "e1",
        "event_type": "transaction",
        "event_time": T0,
        "user_id": "u1",
        "merchant_id": "m1",
        "amount": 12.5,
        "currency": "EUR",
    }
    return apply(doc, changes)


def login(**changes: Any) -> dict[str, Any]:
    doc = {"event_id": "e2", "event_type": "login", "event_time": T0, "user_id": "u1"}
    return apply(doc, changes)


def label(**changes: Any) -> dict[str, Any]:
    doc = {"event_id": "e1", "user_id": "u1", "merchant_id": "m1", "is_fraud": True,
           "label_time": T0 + 86_400_000, "source": "chargeback"}
    return apply(doc, changes)


def score(**changes: Any) -> dict[str, Any]:
    doc = {"event_id": "e1", "user_id": "u1", "merchant_id": "m1", "event_time": T0,
           "score": 0.93, "decision": "block", "model_version": "arf-3",
           "reasons": [{"feature": "user_amount_sum_1h", "value": 812.0, "contribution": 0.31}],
           "scored_at": T0 + 12}
    return apply(doc, changes)


def apply(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    doc = dict(doc)
    for key, value in changes.items():
        if value is ABSENT:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def enc(doc: Any) -> bytes:
    return orjson.dumps(doc)


def rejected(decode: Callable[..., Any], data: Any, field: str | None, code: str,
             *fragments: str, **kwargs: Any) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data, **kwargs)
    err = info.value
    assert (err.field, err.code) == (field, code), str(err)
    for fragment in fragments:
        assert fragment in err.reason, (fragment, err.reason)
    assert str(err) == (f"{field}: {err.reason}" if field else err.reason)
    return err


# ---------------------------------------------------------------------- schemas
def _load_schema(name: str) -> dict[str, Any]:
    text = (resources.files("stream") / "schemas" / f"{name}.schema.json").read_text("utf-8")
    return json.loads(text)


SCHEMAS = {name: _load_schema(name) for name in ("event", "label", "score")}
# ipv4/ipv6 need nothing beyond the standard library; date-time is left to the pattern so the
# result does not depend on which optional format packages happen to be installed.
_FORMATS = jsonschema.FormatChecker(formats=["ipv4", "ipv6"])
VALIDATORS = {name: jsonschema.Draft202012Validator(schema, format_checker=_FORMATS)
              for name, schema in SCHEMAS.items()}
DECODERS = {"event": decode_event, "label": decode_label, "score": decode_score}


def schema_ok(kind: str, doc: Any) -> bool:
    return VALIDATORS[kind].is_valid(doc)


def decoder_ok(kind: str, doc: Any) -> bool:
    try:
        DECODERS[kind](enc(doc))
    except DecodeError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    schema = SCHEMAS[name]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith(f":{name}:1")
    assert schema["description"]
    for prop, sub in schema["properties"].items():
        assert sub.get("description"), f"{name}.{prop} has no description"


def test_schema_enums_match_the_decoder() -> None:
    assert set(SCHEMAS["event"]["properties"]["event_type"]["enum"]) == EVENT_TYPES
    assert tuple(SCHEMAS["score"]["properties"]["decision"]["enum"]) == DECISIONS
    for name in SCHEMAS:
        time_forms = SCHEMAS[name]["$defs"]["time"]["anyOf"]
        assert time_forms[0]["maximum"] == MAX_MS
        assert parse_time(MAX_MS) == MAX_MS


def test_default_size_limit_matches_settings() -> None:
    assert DEFAULT_MAX_BYTES == Settings().max_message_bytes == 64 * 1024


# ---------------------------------------------------------------------- happy paths
def test_transaction_decodes_and_normalises() -> None:
    e = decode_event(enc(txn(event_time="2026-01-01T01:00:00+01:00", amount=12, card_id="c1",
                             device_id="d1", ip="2001:db8::1", country="DE", channel="web")))
    assert e == Event(event_id="e1", event_type="transaction", event_time=T0, user_id="u1",
                      merchant_id="m1", amount=12.0, currency="EUR", card_id="c1",
                      device_id="d1", ip="2001:db8::1", country="DE", channel="web")
    assert type(e.amount) is float and type(e.event_time) is int
    assert e.schema_version == 1


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES - {"transaction"}))
def test_other_event_types_need_no_merchant_amount_or_currency(event_type: str) -> None:
    e = decode_event(enc(login(event_type=event_type)))
    assert (e.event_type, e.merchant_id, e.amount, e.currency) == (event_type, None, None, None)


def test_null_optional_fields_count_as_absent() -> None:
    e = decode_event(enc(login(merchant_id=None, amount=None, currency=None, card_id=None,
                               device_id=None, ip=None, country=None, channel=None,
                               attributes=None)))
    assert e.to_dict() == {"event_id": "e2", "event_type": "login", "event_time": T0,
                           "user_id": "u1", "schema_version": 1}


def test_optional_fields_of_other_event_types_are_still_checked() -> None:
    rejected(decode_event, enc(login(amount=-1)), "amount", "invalid", ">= 0")
    rejected(decode_event, enc(login(merchant_id="")), "merchant_id", "invalid", "not be empty")
    rejected(decode_event, enc(login(currency="usd")), "currency", "invalid", "'usd'")


def test_ids_up_to_256_characters_are_accepted_counting_characters_not_bytes() -> None:
    e = decode_event(enc(txn(event_id="é" * 256, user_id="😀" * 256)))
    assert len(e.event_id) == 256 and len(e.user_id.encode()) == 1024


def test_ipv4_and_ipv6_addresses_are_accepted() -> None:
    for ip in ("203.0.113.7", "2001:db8::1", "::ffff:203.0.113.7", "::1"):
        assert decode_event(enc(login(ip=ip))).ip == ip


def test_zero_amount_is_a_valid_transaction() -> None:
    assert decode_event(enc(txn(amount=0))).amount == 0.0


def test_bytearray_and_memoryview_are_accepted() -> None:
    data = enc(txn())
    assert decode_event(bytearray(data)) == decode_event(memoryview(data)) == decode_event(data)


# ---------------------------------------------------------------------- unknown fields
def test_unknown_fields_go_into_attributes() -> None:
    e = decode_event(enc(txn(shop="web", basket={"items": 3, "tags": ["gift"]}, promo=None)))
    assert e.attributes == {"shop": "web", "basket": {"items": 3, "tags": ["gift"]},
                            "promo": None}
    assert e.to_dict()["attributes"] == e.attributes
    assert "shop" not in e.to_dict()


def test_explicit_attributes_are_not_overwritten_by_top_level_fields() -> None:
    given_attributes = {"shop": "app", "tier": "gold"}
    e = event_from_dict(txn(attributes=given_attributes, shop="web", promo="x"))
    assert e.attributes == {"shop": "app", "tier": "gold", "promo": "x"}
    assert given_attributes == {"shop": "app", "tier": "gold"}, "caller's dict was changed"


def test_label_unknown_fields_go_into_attributes_without_overwriting() -> None:
    lab = decode_label(enc(label(attributes={"case": "A"}, case="B", analyst="kim")))
    assert lab.attributes == {"case": "A", "analyst": "kim"}


def test_score_ignores_unknown_fields() -> None:
    assert decode_score(enc(score(extra=1))) == decode_score(enc(score()))


# ---------------------------------------------------------------------- event rejections
EVENT_REJECTIONS = [
    # (id, message, field, fragment of the reason)
    ("missing event_id", txn(event_id=ABSENT), "event_id", "is required"),
    ("null event_id", txn(event_id=None), "event_id", "is required"),
    ("event_id number", txn(event_id=5), "event_id", "must be a string, got number"),
    ("event_id empty", txn(event_id=""), "event_id", "must not be empty"),
    ("event_id too long", txn(event_id="x" * 257), "event_id", "longer than 256 characters"),
    ("missing event_type", txn(event_type=ABSENT), "event_type", "is required"),
    ("event_type boolean", txn(event_type=True), "event_type", "must be a string, got boolean"),
    ("unknown event_type", txn(event_type="refund"), "event_type", "unknown event type 'refund'"),
    ("event_type wrong case", txn(event_type="Transaction"), "event_type", "unknown event type"),
    ("missing event_time", txn(event_time=ABSENT), "event_time", "is required"),
    ("event_time float", txn(event_time=1.5), "event_time", "got number"),
    ("event_time boolean", txn(event_time=True), "event_time", "got boolean"),
    ("event_time array", txn(event_time=[T0]), "event_time", "got array"),
    ("event_time negative", txn(event_time=-1), "event_time", "out of range: -1"),
    ("event_time past 9999", txn(event_time=MAX_MS + 1), "event_time", "out of range"),
    ("event_time naive", txn(event_time="2026-01-01T00:00:00"), "event_time", "UTC offset"),
    ("event_time date only", txn(event_time="2026-01-01"), "event_time", "not an RFC 3339"),
    ("event_time words", txn(event_time="yesterday"), "event_time", "'yesterday'"),
    ("missing user_id", txn(user_id=ABSENT), "user_id", "is required"),
    ("user_id object", txn(user_id={"id": 1}), "user_id", "must be a string, got object"),
    ("user_id empty", txn(user_id=""), "user_id", "must not be empty"),
    ("user_id too long", txn(user_id="u" * 257), "user_id", "longer than 256"),
    ("txn without merchant_id", txn(merchant_id=ABSENT), "merchant_id", "is required"),
    ("txn with null merchant_id", txn(merchant_id=None), "merchant_id", "is required"),
    ("merchant_id number", txn(merchant_id=42), "merchant_id", "got number"),
    ("txn without amount", txn(amount=ABSENT), "amount", "is required for transactions"),
    ("txn with null amount", txn(amount=None), "amount", "is required for transactions"),
    ("amount string", txn(amount="12.50"), "amount", "must be a number, got string"),
    ("amount boolean", txn(amount=True), "amount", "must be a number, got boolean"),
    ("amount negative", txn(amount=-0.01), "amount", "must be >= 0, got -0.01"),
    ("txn without currency", txn(currency=ABSENT), "currency", "is required for transactions"),
    ("currency lower case", txn(currency="eur"), "currency", "ISO 4217"),
    ("currency four letters", txn(currency="EURO"), "currency", "'EURO'"),
    ("currency two letters", txn(currency="EU"), "currency", "'EU'"),
    ("currency trailing newline", txn(currency="EUR\n"), "currency", "'EUR\\n'"),
    ("currency numeric code", txn(currency=978), "currency", "got 978"),
    ("country lower case", txn(country="de"), "country", "ISO 3166-1"),
    ("country three letters", txn(country="DEU"), "country", "'DEU'"),
    ("country trailing newline", txn(country="DE\n"), "country", "'DE\\n'"),
    ("country number", txn(country=49), "country", "got 49"),
    ("ip not an address", txn(ip="999.1.1.1"), "ip", "not an IPv4 or IPv6 address: '999.1.1.1'"),
    ("ip host name", txn(ip="localhost"), "ip", "'localhost'"),
    ("ip leading zero", txn(ip="01.2.3.4"), "ip", "'01.2.3.4'"),
    ("ip number", txn(ip=2130706433), "ip", "must be a string, got number"),
    ("card_id empty", txn(card_id=""), "card_id", "must not be empty"),
    ("card_id number", txn(card_id=4111), "card_id", "got number"),
    ("device_id too long", txn(device_id="d" * 257), "device_id", "longer than 256"),
    ("channel number", txn(channel=1), "channel", "must be a string, got number"),
    ("attributes array", txn(attributes=["a"]), "attributes", "must be an object, got array"),
    ("attributes string", txn(attributes="a=1"), "attributes", "got string"),
    ("attributes false", txn(attributes=False), "attributes", "got boolean"),
    ("schema_version 2", txn(schema_version=2), "schema_version",
     "unsupported schema version 2 (supported: [1])"),
    ("schema_version string", txn(schema_version="1"), "schema_version", "'1'"),
    ("schema_version boolean", txn(schema_version=True), "schema_version", "True"),
    ("schema_version null", txn(schema_version=None), "schema_version", "None"),
    ("schema_version zero", txn(schema_version=0), "schema_version", "0"),
]


@pytest.mark.parametrize("doc,field,fragment", [r[1:] for r in EVENT_REJECTIONS],
                         ids=[r[0] for r in EVENT_REJECTIONS])
def test_event_rejection_names_field_and_reason(doc: dict[str, Any], field: str,
                                                fragment: str) -> None:
    rejected(decode_event, enc(doc), field, "invalid", fragment)


@pytest.mark.parametrize("doc", [r[1] for r in EVENT_REJECTIONS],
                         ids=[r[0] for r in EVENT_REJECTIONS])
def test_event_schema_rejects_what_the_decoder_rejects(doc: dict[str, Any]) -> None:
    assert not schema_ok("event", doc)


def test_first_failing_field_is_reported() -> None:
    # event_id is checked before amount: one message, one precise reason.
    rejected(decode_event, enc(txn(event_id="", amount=-1)), "event_id", "invalid")


def test_amount_must_be_finite_for_sdk_callers() -> None:
    # JSON cannot carry NaN or infinity (orjson rejects them), but dicts from SDK callers can.
    for bad in (math.inf, -math.inf, math.nan):
        rejected(event_from_dict, txn(amount=bad), "amount", "invalid", "must be finite")
    # An int too big for a float is a DecodeError too, not an OverflowError.
    rejected(event_from_dict, txn(amount=10**400), "amount", "invalid", "is too large")
    assert event_from_dict(txn(amount=10**20)).amount == 1e20


def test_non_finite_numbers_in_json_are_bad_json() -> None:
    for text in (b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": 1e400}'):
        rejected(decode_event, text, None, "bad_json", "not valid JSON")


def test_event_from_dict_rejects_non_objects() -> None:
    rejected(event_from_dict, ["e1"], None, "bad_json", "event must be an object, got array")


# ---------------------------------------------------------------------- whole-message failures
@pytest.mark.parametrize("decode,what", [(decode_event, "event"), (decode_label, "label"),
                                         (decode_score, "score")])
def test_message_level_failures(decode: Callable[..., Any], what: str) -> None:
    rejected(decode, b"", None, "empty", f"{what} is empty")
    rejected(decode, None, None, "empty", "tombstone")
    rejected(decode, b'{"event_id": "e1",', None, "bad_json", "not valid JSON")
    rejected(decode, b"{'event_id': 'e1'}", None, "bad_json", "not valid JSON")
    rejected(decode, b'{"event_id":"\xff"}', None, "bad_utf8", "not valid UTF-8 at byte 13")
    rejected(decode, b'\xed\xa0\x80', None, "bad_utf8", "at byte 0")  # encoded surrogate
    for data, kind in ((b"[1, 2]", "array"), (b'"e1"', "string"), (b"null", "null"),
                       (b"42", "number"), (b"true", "boolean")):
        rejected(decode, data, None, "bad_json", f"{what} must be a JSON object, got {kind}")


def test_size_limit_counts_bytes_and_is_checked_first() -> None:
    doc = txn(note="")
    base = len(enc(doc))
    exact = enc(txn(note="x" * (DEFAULT_MAX_BYTES - base)))
    assert len(exact) == DEFAULT_MAX_BYTES
    assert decode_event(exact).attributes["note"] == "x" * (DEFAULT_MAX_BYTES - base)
    over = enc(txn(note="x" * (DEFAULT_MAX_BYTES - base + 1)))
    rejected(decode_event, over, None, "too_large",
             f"event is {DEFAULT_MAX_BYTES + 1} bytes, over the {DEFAULT_MAX_BYTES}-byte limit")
    # Garbage over the limit is too large, not bad JSON: the limit is checked before parsing.
    rejected(decode_event, b"\xff" * (DEFAULT_MAX_BYTES + 1), None, "too_large")


def test_size_limit_is_configurable() -> None:
    data = enc(txn())
    assert decode_event(data, max_bytes=len(data)).event_id == "e1"
    rejected(decode_event, data, None, "too_large", f"over the {len(data) - 1}-byte limit",
             max_bytes=len(data) - 1)
    rejected(decode_label, enc(label()), None, "too_large", "label is", max_bytes=10)
    rejected(decode_score, enc(score()), None, "too_large", "score is", max_bytes=10)


def test_with_raw_keeps_field_reason_and_code() -> None:
    err = rejected(decode_event, enc(txn(amount=-1)), "amount", "invalid")
    raw = RawRecord(value=b"...", topic="fraudstream.events", partition=3, offset=42, key=b"u1")
    copy = err.with_raw(raw)
    assert (copy.field, copy.reason, copy.code, copy.raw) == ("amount", err.reason, "invalid", raw)
    assert str(copy) == str(err)


# ---------------------------------------------------------------------- times
@pytest.mark.parametrize("text,expected", [
    ("2026-01-01T00:00:00Z", T0),
    ("2026-01-01T00:00:00+00:00", T0),
    ("2026-01-01T00:00:00-00:00", T0),
    ("2026-01-01t00:00:00z", T0),
    ("2026-01-01T01:00:00+01:00", T0),
    ("2025-12-31T19:00:00-05:00", T0),
    ("2026-01-01T05:30:00+05:30", T0),
    ("2026-01-01T23:59:00+23:59", T0),  # largest offset
    ("2026-01-01T00:00:00.5Z", T0 + 500),
    ("2026-01-01T00:00:00.25+00:00", T0 + 250),
    ("2026-01-01T00:00:00.001Z", T0 + 1),
    ("2026-01-01T00:00:00.0009Z", T0),  # below a millisecond: truncated
    ("2026-01-01T00:00:00.9999Z", T0 + 999),  # truncated, not rounded up
    ("2026-01-01T00:00:00.123456789Z", T0 + 123),  # nanoseconds
    ("1970-01-01T00:00:00Z", 0),
    ("1970-01-01T00:00:00.001Z", 1),
    ("1969-12-31T23:00:00-01:00", 0),  # local date before 1970, UTC instant is the epoch
    ("2000-02-29T12:00:00Z", 951_825_600_000),
    ("9999-12-31T23:59:59.999Z", MAX_MS),
])
def test_rfc3339_times_to_epoch_ms(text: str, expected: int) -> None:
    assert parse_time(text, "event_time") == expected
    assert decode_event(enc(txn(event_time=text))).event_time == expected


@pytest.mark.parametrize("text,fragment", [
    ("2026-01-01T00:00:00", "needs a UTC offset"),
    ("2026-01-01T00:00:00.500", "needs a UTC offset"),
    ("2026-01-01", "not an RFC 3339 timestamp"),
    ("2026-01-01T00:00Z", "not an RFC 3339"),  # seconds are required
    ("20260101T000000Z", "not an RFC 3339"),  # ISO 8601 basic format
    ("2026-W01-1T00:00:00Z", "not an RFC 3339"),  # ISO week date
    ("2026-01-01 00:00:00Z", "not an RFC 3339"),
    ("2026-01-01x00:00:00Z", "not an RFC 3339"),
    ("2026-01-01T00:00:00,5Z", "not an RFC 3339"),  # comma decimal mark
    ("2026-01-01T00:00:00+0100", "not an RFC 3339"),
    ("2026-01-01T00:00:00+01", "not an RFC 3339"),
    ("2026-01-01T00:00:00+01:00:30", "not an RFC 3339"),
    ("2026-01-01T00:00:00Z\n", "not an RFC 3339"),
    ("２０２６-01-01T00:00:00Z", "not an RFC 3339"),  # non-ASCII digits
    ("2026-02-30T00:00:00Z", "not an RFC 3339"),  # no such day
    ("2026-01-01T24:00:00Z", "not an RFC 3339"),
    ("2026-12-31T23:59:60Z", "not an RFC 3339"),  # leap seconds are not representable
    ("2026-01-01T00:00:00+24:00", "not an RFC 3339"),
    ("", "not an RFC 3339"),
    ("1969-12-31T23:59:59.999Z", "before 1970 or after 9999"),
    ("9999-12-31T23:59:59-01:00", "before 1970 or after 9999"),
])
def test_bad_times_are_rejected(text: str, fragment: str) -> None:
    rejected(parse_time, text, "event_time", "invalid", fragment, repr(text), name="event_time")
    rejected(decode_label, enc(label(label_time=text)), "label_time", "invalid", fragment)


def test_integer_times_are_taken_as_is_within_range() -> None:
    assert parse_time(0) == 0 and parse_time(T0) == T0 and parse_time(MAX_MS) == MAX_MS
    rejected(parse_time, -1, "time", "invalid", "out of range")
    rejected(parse_time, 1.0 * T0, "time", "invalid", "integer", "got number")


# ---------------------------------------------------------------------- labels
def test_label_decodes() -> None:
    lab = decode_label(enc(label(label_time="2026-01-02T00:00:00Z")))
    assert lab == Label(event_id="e1", user_id="u1", merchant_id="m1", is_fraud=True,
                        label_time=T0 + 86_400_000, source="chargeback")


LABEL_REJECTIONS = [
    ("missing is_fraud", label(is_fraud=ABSENT), "is_fraud", "is required"),
    ("is_fraud string", label(is_fraud="true"), "is_fraud", "true or false, got string"),
    ("is_fraud number", label(is_fraud=1), "is_fraud", "got number"),
    ("missing event_id", label(event_id=ABSENT), "event_id", "is required"),
    ("missing user_id", label(user_id=ABSENT), "user_id", "is required"),
    ("missing merchant_id", label(merchant_id=ABSENT), "merchant_id", "is required"),
    ("null merchant_id", label(merchant_id=None), "merchant_id", "is required"),
    ("empty merchant_id", label(merchant_id=""), "merchant_id", "must not be empty"),
    ("missing label_time", label(label_time=ABSENT), "label_time", "is required"),
    ("label_time naive", label(label_time="2026-01-02T00:00:00"), "label_time", "UTC offset"),
    ("source number", label(source=3), "source", "must be a string, got number"),
    ("attributes array", label(attributes=[]), "attributes", "must be an object, got array"),
    ("attributes false", label(attributes=False), "attributes", "got boolean"),
    ("attributes zero", label(attributes=0), "attributes", "got number"),
    ("attributes empty string", label(attributes=""), "attributes", "got string"),
]


@pytest.mark.parametrize("doc,field,fragment", [r[1:] for r in LABEL_REJECTIONS],
                         ids=[r[0] for r in LABEL_REJECTIONS])
def test_label_rejection_names_field_and_reason(doc: dict[str, Any], field: str,
                                                fragment: str) -> None:
    rejected(decode_label, enc(doc), field, "invalid", fragment)
    assert not schema_ok("label", doc)


def test_label_from_dict_rejects_non_objects() -> None:
    rejected(label_from_dict, "e1", None, "bad_json", "label must be an object, got string")


# ---------------------------------------------------------------------- scores
def test_score_decodes() -> None:
    s = decode_score(enc(score()))
    assert s == Score(event_id="e1", user_id="u1", merchant_id="m1", event_time=T0, score=0.93,
                      decision="block", model_version="arf-3",
                      reasons=[{"feature": "user_amount_sum_1h", "value": 812.0,
                                "contribution": 0.31}],
                      scored_at=T0 + 12)


def test_score_schema_takes_reasons_as_the_worker_writes_them() -> None:
    # The first-slice worker writes {"feature", "value"} without a contribution.
    doc = score(reasons=[{"feature": "user_txn_count_1h", "value": 3.0},
                         {"feature": "amount", "value": 812.0}])
    assert schema_ok("score", doc)
    assert decode_score(enc(doc)).reasons == doc["reasons"]
    assert not schema_ok("score", score(reasons=[{"value": 3.0}]))  # feature is required
    assert not schema_ok("score", score(reasons=["amount"]))


def test_score_optional_parts() -> None:
    s = decode_score(enc(score(merchant_id=None, reasons=ABSENT, score=1)))
    assert (s.merchant_id, s.reasons, s.score) == (None, [], 1.0)
    assert type(s.score) is float
    assert s.to_dict()["merchant_id"] is None  # always written, null when unknown


SCORE_REJECTIONS = [
    ("missing score", score(score=ABSENT), "score", "between 0 and 1, got None"),
    ("score above 1", score(score=1.5), "score", "got 1.5"),
    ("score below 0", score(score=-0.1), "score", "got -0.1"),
    ("score string", score(score="0.9"), "score", "got '0.9'"),
    ("score boolean", score(score=True), "score", "got True"),
    ("missing decision", score(decision=ABSENT), "decision", "is required"),
    ("unknown decision", score(decision="deny"), "decision",
     "must be one of approve, review, block, got 'deny'"),
    ("reasons object", score(reasons={}), "reasons", "must be an array, got object"),
    ("reasons null", score(reasons=None), "reasons", "got null"),
    ("missing scored_at", score(scored_at=ABSENT), "scored_at", "epoch milliseconds, got null"),
    ("scored_at string", score(scored_at="2026-01-01T00:00:00Z"), "scored_at", "got string"),
    ("scored_at float", score(scored_at=1.5), "scored_at", "got number"),
    ("missing event_id", score(event_id=ABSENT), "event_id", "is required"),
    ("missing user_id", score(user_id=ABSENT), "user_id", "is required"),
    ("merchant_id empty", score(merchant_id=""), "merchant_id", "must not be empty"),
    ("missing event_time", score(event_time=ABSENT), "event_time", "is required"),
    ("missing model_version", score(model_version=ABSENT), "model_version", "is required"),
    ("model_version number", score(model_version=3), "model_version", "got number"),
]


@pytest.mark.parametrize("doc,field,fragment", [r[1:] for r in SCORE_REJECTIONS],
                         ids=[r[0] for r in SCORE_REJECTIONS])
def test_score_rejection_names_field_and_reason(doc: dict[str, Any], field: str,
                                                fragment: str) -> None:
    rejected(decode_score, enc(doc), field, "invalid", fragment)
    assert not schema_ok("score", doc)


def test_score_from_dict_rejects_non_objects() -> None:
    rejected(score_from_dict, [0.5], None, "bad_json", "score must be an object, got array")


# ---------------------------------------------------------------------- round trips
def test_encode_is_compact_json_in_canonical_form() -> None:
    e = decode_event(enc(login(channel="app", shop="web")))
    assert e.encode() == (b'{"event_id":"e2","event_type":"login","event_time":1767225600000,'
                          b'"user_id":"u1","channel":"app","attributes":{"shop":"web"},'
                          b'"schema_version":1}')


def test_round_trips_of_the_examples() -> None:
    for doc in (txn(country="DE", ip="203.0.113.7", extra=[1, 2]), login()):
        e = decode_event(enc(doc))
        assert decode_event(e.encode()) == e
        assert schema_ok("event", e.to_dict())
    lab = decode_label(enc(label(note="x")))
    assert decode_label(lab.encode()) == lab
    s = decode_score(enc(score()))
    assert decode_score(s.encode()) == s
    assert schema_ok("score", s.to_dict())
    assert schema_ok("label", lab.to_dict())


# ---------------------------------------------------------------------- hypothesis
KNOWN_EVENT_FIELDS = {"event_id", "event_type", "event_time", "user_id", "merchant_id", "amount",
                      "currency", "card_id", "device_id", "ip", "country", "channel",
                      "attributes", "schema_version"}
ids = st.text(min_size=1, max_size=256)
upper = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=10)
ips = st.one_of(st.ip_addresses().map(str), st.just("::ffff:192.0.2.1"))


@st.composite
def rfc3339_times(draw: st.DrawFn) -> tuple[str, int]:
    """An RFC 3339 string in any offset and precision, with its epoch ms computed independently."""
    instant = draw(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30),
                                timezones=st.just(timezone.utc)))
    digits = draw(st.integers(0, 9))
    keep = min(digits, 6)
    step = 10 ** (6 - keep)
    instant = instant.replace(microsecond=instant.microsecond // step * step)
    offset_min = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    local = instant.astimezone(timezone(timedelta(minutes=offset_min)))
    if offset_min == 0:
        suffix = draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"]))
    else:
        sign = "+" if offset_min > 0 else "-"
        suffix = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    fraction = ""
    if digits:
        fraction = "." + f"{local.microsecond:06d}"[:keep] + "7" * (digits - keep)
    sep = draw(st.sampled_from("Tt"))
    text = (f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}"
            f"{local.hour:02d}:{local.minute:02d}:{local.second:02d}{fraction}{suffix}")
    return text, (instant - EPOCH) // timedelta(milliseconds=1)


times = st.one_of(st.integers(0, MAX_MS).map(lambda ms: (ms, ms)), rfc3339_times())


@st.composite
def valid_events(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    event_type = draw(st.sampled_from(sorted(EVENT_TYPES)))
    when, ms = draw(times)
    doc: dict[str, Any] = {"event_id": draw(ids), "event_type": event_type, "event_time": when,
                           "user_id": draw(ids)}
    is_txn = event_type == "transaction"
    optional = {
        "merchant_id": ids,
        "amount": st.one_of(st.integers(0, 10**12),
                            st.floats(min_value=0, allow_nan=False, allow_infinity=False)),
        "currency": st.text(upper, min_size=3, max_size=3),
        "card_id": ids, "device_id": ids, "ip": ips,
        "country": st.text(upper, min_size=2, max_size=2),
        "channel": st.text(max_size=10),
        "attributes": st.dictionaries(st.text(max_size=10), json_values, max_size=3),
        "schema_version": st.just(1),
    }
    for name, strategy in optional.items():
        required = is_txn and name in ("merchant_id", "amount", "currency")
        if required or draw(st.booleans()):
            doc[name] = draw(strategy)
    unknown_keys = st.text(max_size=10).filter(lambda k: k not in KNOWN_EVENT_FIELDS)
    extras = draw(st.dictionaries(unknown_keys, json_values, max_size=3))
    doc.update(extras)
    return doc, ms


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(valid_events())
def test_random_valid_events_decode_round_trip_and_pass_the_schema(
        case: tuple[dict[str, Any], int]) -> None:
    doc, ms = case
    assert schema_ok("event", doc)
    e = decode_event(wire.dumps(doc))
    assert e.event_time == ms
    assert decode_event(e.encode()) == e
    assert schema_ok("event", e.to_dict())
    # Unknown fields land in attributes, explicit attributes win.
    for key, value in doc.items():
        if key not in KNOWN_EVENT_FIELDS:
            assert e.attributes[key] == doc.get("attributes", {}).get(key, value)


@FAST
@given(times)
def test_random_times_parse_to_independently_computed_ms(case: tuple[Any, int]) -> None:
    text, ms = case
    assert parse_time(text) == ms
    assert schema_ok("label", label(label_time=text))


@st.composite
def valid_labels(draw: st.DrawFn) -> dict[str, Any]:
    doc = {"event_id": draw(ids), "user_id": draw(ids), "merchant_id": draw(ids),
           "is_fraud": draw(st.booleans()), "label_time": draw(times)[0]}
    if draw(st.booleans()):
        doc["source"] = draw(st.one_of(st.none(), st.text(max_size=10)))
    if draw(st.booleans()):
        doc["attributes"] = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=3))
    return doc


reasons = st.lists(st.fixed_dictionaries(
    {"feature": st.text(min_size=1, max_size=30)},
    optional={"value": json_scalars,
              "contribution": st.floats(allow_nan=False, allow_infinity=False)}),
    max_size=4)


@st.composite
def valid_scores(draw: st.DrawFn) -> dict[str, Any]:
    doc = {"event_id": draw(ids), "user_id": draw(ids),
           "merchant_id": draw(st.one_of(st.none(), ids)), "event_time": draw(times)[0],
           "score": draw(st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))),
           "decision": draw(st.sampled_from(DECISIONS)), "model_version": draw(st.text()),
           "reasons": draw(reasons), "scored_at": draw(st.integers(0, MAX_MS))}
    return doc


@FAST
@given(valid_labels(), valid_scores())
def test_random_valid_labels_and_scores_round_trip_and_pass_the_schema(
        lab_doc: dict[str, Any], score_doc: dict[str, Any]) -> None:
    lab = decode_label(wire.dumps(lab_doc))
    assert decode_label(lab.encode()) == lab
    assert schema_ok("label", lab_doc) and schema_ok("label", lab.to_dict())
    s = decode_score(wire.dumps(score_doc))
    assert decode_score(s.encode()) == s
    assert schema_ok("score", score_doc) and schema_ok("score", s.to_dict())


# Values per field, valid and invalid mixed. They leave out the few things a JSON Schema cannot
# say the way the decoder does (1.0 as an integer, impossible calendar dates, IPv6 zone ids, and
# Python's ``re`` letting ``$`` match before a final newline in the time pattern), so on these
# the schema and the decoder must give the same answer every time.
_ID_POOL = ["e1", "", "x" * 256, "x" * 257, 5, None, ABSENT]
_TIME_POOL = [0, T0, MAX_MS, MAX_MS + 1, -1, 1.5, True, None, ABSENT, [T0],
              "2026-01-01T00:00:00Z", "2026-01-01t01:00:00.5+01:00", "2026-01-01T00:00:00",
              "2026-01-01", "20260101T000000Z", "2026-01-01 00:00:00Z", "2026-01-01T00:00:00+01"]
EVENT_POOLS: dict[str, list[Any]] = {
    "schema_version": [1, 2, 0, "1", None, True, ABSENT],
    "event_id": _ID_POOL,
    "event_type": sorted(EVENT_TYPES) + ["refund", "", None, 1, ABSENT],
    "event_time": _TIME_POOL,
    "user_id": _ID_POOL,
    "merchant_id": ["m1", "", "m" * 257, 7, None, ABSENT],
    "amount": [0, 12.5, 1e300, -0.01, -1, "12", True, None, ABSENT],
    "currency": ["EUR", "eur", "EURO", "EU", "EUR\n", 978, None, ABSENT],
    "card_id": ["c1", "", "c" * 257, 3, None, ABSENT],
    "device_id": ["d1", "", 3, None, ABSENT],
    "ip": ["203.0.113.7", "2001:db8::1", "::ffff:1.2.3.4", "999.1.1.1", "01.2.3.4", "localhost",
           "", 5, None, ABSENT],
    "country": ["DE", "de", "DEU", "D", "DE\n", 49, None, ABSENT],
    "channel": ["web", "", 1, None, ABSENT],
    "attributes": [{}, {"k": 1}, [], "x", 0, False, None, ABSENT],
    "shop": ["web", 1, None, ABSENT],
}
LABEL_POOLS: dict[str, list[Any]] = {
    "event_id": _ID_POOL, "user_id": _ID_POOL, "merchant_id": _ID_POOL,
    "is_fraud": [True, False, "true", 1, 0, None, ABSENT],
    "label_time": _TIME_POOL,
    "source": ["chargeback", "", 5, None, ABSENT],
    "attributes": [{}, {"k": 1}, [], "", 0, False, None, ABSENT],
    "case": ["A", None, ABSENT],
}
SCORE_POOLS: dict[str, list[Any]] = {
    "event_id": _ID_POOL, "user_id": _ID_POOL,
    "merchant_id": ["m1", "", 5, None, ABSENT],
    "event_time": _TIME_POOL,
    "score": [0, 1, 0.5, 1.5, -0.1, "0.5", True, None, ABSENT],
    "decision": ["approve", "review", "block", "deny", None, 1, ABSENT],
    "model_version": ["v1", "", 3, None, ABSENT],
    "reasons": [[], [{"feature": "f", "value": 1.0, "contribution": 0.3}], {}, "x", None, ABSENT],
    "scored_at": [0, T0, -5, 1.5, "x", True, None, ABSENT],
    "extra": [1, ABSENT],
}
BASES = {"event": [txn(), login()], "label": [label()], "score": [score()]}
POOLS = {"event": EVENT_POOLS, "label": LABEL_POOLS, "score": SCORE_POOLS}


@st.composite
def mutated(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    doc = draw(st.sampled_from(BASES[kind]))
    pools = POOLS[kind]
    names = draw(st.lists(st.sampled_from(sorted(pools)), min_size=1, max_size=3, unique=True))
    return apply(doc, {name: draw(st.sampled_from(pools[name])) for name in names})


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(POOLS)).flatmap(lambda kind: st.tuples(st.just(kind),
                                                                     mutated(kind))))
def test_schema_and_decoder_agree_on_mutated_messages(case: tuple[str, dict[str, Any]]) -> None:
    kind, doc = case
    assert schema_ok(kind, doc) == decoder_ok(kind, doc), doc


def test_agreement_pools_cover_both_answers() -> None:
    # Guard against a pool edit that leaves the agreement test only ever seeing one answer.
    for kind, pools in POOLS.items():
        for name, pool in pools.items():
            answers = {decoder_ok(kind, apply(BASES[kind][0], {name: v})) for v in pool}
            if name not in ("shop", "case", "extra"):
                assert answers == {True, False}, (kind, name)


# ---------------------------------------------------------------------- canonical fast path
CANONICAL = {"event": (is_canonical_event, event_from_dict),
             "label": (is_canonical_label, label_from_dict)}


def _decodes_unchanged(kind: str, doc: dict[str, Any]) -> bool:
    """``doc`` decodes, and its decoded form says exactly what ``doc`` says."""
    _, decode = CANONICAL[kind]
    try:
        obj = decode(doc)
    except DecodeError:
        return False
    expected = {k: v for k, v in doc.items() if k != "attributes" or v}
    if kind == "event":
        expected.setdefault("schema_version", 1)
    return obj.to_dict() == expected and all(
        type(obj.to_dict()[k]) is type(v) for k, v in expected.items())


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(sorted(CANONICAL)).flatmap(lambda kind: st.tuples(st.just(kind),
                                                                        mutated(kind))))
def test_canonical_checks_accept_only_what_decodes_unchanged(
        case: tuple[str, dict[str, Any]]) -> None:
    # Replay forwards the bytes of records these checks accept without decoding them.
    kind, doc = case
    check, _ = CANONICAL[kind]
    if check(doc):
        assert _decodes_unchanged(kind, doc), doc


@FAST
@given(valid_events(), valid_labels())
def test_canonical_checks_accept_the_encoders_output(case: tuple[dict[str, Any], int],
                                                     lab_doc: dict[str, Any]) -> None:
    e = decode_event(wire.dumps(case[0]))
    assert is_canonical_event(e.to_dict()) and _decodes_unchanged("event", e.to_dict())
    assert is_canonical_event(wire.loads(e.encode()))
    lab = decode_label(wire.dumps(lab_doc))
    assert is_canonical_label(lab.to_dict()) and is_canonical_label(wire.loads(lab.encode()))


@pytest.mark.parametrize("kind, changes", [
    ("event", {"amount": 7}), ("event", {"card_id": None}), ("event", {"shop": "web"}),
    ("event", {"event_time": "2026-01-01T00:00:00Z"}), ("event", {"amount": math.nan}),
    ("event", {"amount": math.inf}), ("event", {"amount": -1.0}), ("event", {"ip": "1.2.3"}),
    ("event", {"user_id": 5}), ("event", {"schema_version": True}),
    ("event", {"attributes": None}), ("event", {"merchant_id": ABSENT}),
    ("label", {"is_fraud": 1}), ("label", {"source": None}), ("label", {"case": "A"}),
    ("label", {"label_time": True}),
])
def test_canonical_checks_leave_anything_else_to_the_decoder(kind: str,
                                                             changes: dict[str, Any]) -> None:
    check, _ = CANONICAL[kind]
    base = txn() if kind == "event" else label()
    assert check(base)
    assert not check(apply(base, changes))


# ---------------------------------------------------------------------- docs/events.md
DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"


def _doc_examples() -> list[tuple[str, Any]]:
    pattern = re.compile(r"<!-- example: ([a-z ]+) -->\s*```json\n(.*?)```", re.S)
    return [(m.group(1), json.loads(m.group(2))) for m in pattern.finditer(DOC.read_text())]


def test_doc_examples_decode_as_documented() -> None:
    examples = _doc_examples()
    kinds = [kind for kind, _ in examples]
    assert kinds == ["event input", "event normalised", "event input", "label input", "score"]
    (_, txn_doc), (_, normalised), (_, login_doc), (_, label_doc), (_, score_doc) = examples

    e = decode_event(enc(txn_doc))
    assert e.to_dict() == normalised
    assert list(e.to_dict()) == list(normalised), "field order on the page differs from encode()"
    assert e.event_time == 1_767_256_200_250
    assert decode_event(enc(login_doc)).event_type == "login"
    lab = decode_label(enc(label_doc))
    assert lab.label_time == 1_767_449_100_000 and lab.attributes == {"case_id": "CB-5521"}
    s = decode_score(enc(score_doc))
    assert s.to_dict() == score_doc
    for kind, doc in (("event", txn_doc), ("event", normalised), ("event", login_doc),
                      ("label", label_doc), ("score", score_doc)):
        assert schema_ok(kind, doc), (kind, doc)


def _error_text(decode: Callable[..., Any], data: Any) -> str:
    with pytest.raises(DecodeError) as info:
        decode(data)
    return str(info.value)


def test_error_messages_quoted_in_the_docs_are_real() -> None:
    text = DOC.read_text()
    quoted = [
        _error_text(decode_event, enc(txn(note="x" * (70_000 - len(enc(txn(note=""))))))),
        _error_text(decode_event, b""),
        _error_text(decode_event, b'{"event_id":"\xff"}'),
        _error_text(decode_event, b"[]"),
        _error_text(decode_event, enc(txn(amount=-5))),
        _error_text(decode_event, enc(txn(event_type="refund"))),
        _error_text(decode_event, enc(txn(event_time="2026-01-01T00:00:00"))),
        _error_text(decode_event, enc(txn(currency="eur"))),
        _error_text(decode_event, enc(txn(merchant_id=ABSENT))),
        _error_text(decode_event, enc(txn(amount=ABSENT))),
        _error_text(decode_event, enc(txn(user_id="u" * 257))),
        _error_text(decode_event, enc(txn(ip="999.1.1.1"))),
        _error_text(decode_event, enc(txn(schema_version=2))),
        _error_text(decode_label, enc(label(is_fraud="yes"))),
    ]
    for message in quoted:
        assert message in text, message


@FAST
@given(valid_events(), valid_labels())
def test_dict_decoders_equal_the_full_decoders(case: tuple[dict[str, Any], int],
                                              lab_doc: dict[str, Any]) -> None:
    # The worker and the backtest take the fast path; it must say what the full decoder says,
    # for canonical records (fast) and for any other valid one (full).
    from stream.events import decode_event_dict, decode_label_dict
    for raw in (wire.dumps(case[0]), decode_event(wire.dumps(case[0])).encode()):
        assert decode_event_dict(raw) == decode_event(raw).to_dict()
    for raw in (wire.dumps(lab_doc), decode_label(wire.dumps(lab_doc)).encode()):
        assert decode_label_dict(raw) == decode_label(raw).to_dict()
