"""The wire contract: events in, labels in, scores out (see ``docs/events.md``).

Decoding is strict and precise: every rejection is a :class:`~stream.exceptions.DecodeError` naming
the field and the reason. Unknown top-level fields of an event are kept in ``attributes`` rather than
dropped. Times are normalised to epoch milliseconds (integers); RFC 3339 strings are accepted on
input and must carry a UTC offset.

The JSON Schema files in ``stream/schemas/`` describe the same contract for other languages;
``tests/unit/test_events.py`` holds the two in agreement.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime
from collections.abc import Mapping
from typing import Any

from stream import wire
from stream.exceptions import DecodeError

__all__ = [
    "EVENT_TYPES",
    "DECISIONS",
    "SCHEMA_VERSION",
    "DEFAULT_MAX_BYTES",
    "Event",
    "Label",
    "Score",
    "encode_score",
    "decode_event",
    "decode_label",
    "decode_score",
    "event_from_dict",
    "label_from_dict",
    "score_from_dict",
    "is_canonical_event",
    "decode_event_dict",
    "decode_label_dict",
    "is_canonical_label",
    "parse_time",
]

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
DEFAULT_MAX_BYTES = 64 * 1024
EVENT_TYPES = frozenset({"transaction", "login", "account_update", "payment_method_added"})
DECISIONS = ("approve", "review", "block")

_MAX_ID_LEN = 256
# Epoch milliseconds accepted as event times: 1970-01-01 up to the year 9999.
_MAX_EPOCH_MS = 253_402_300_799_999
_CURRENCY = re.compile(r"[A-Z]{3}\Z")
_COUNTRY = re.compile(r"[A-Z]{2}\Z")
# RFC 3339 section 5.6 ``date-time``, field ranges left to ``datetime``. ``fromisoformat`` alone
# also takes ISO 8601 forms outside RFC 3339 (``20260101T000000Z``, week dates, ``+01``, any
# separator character), which the JSON Schema and other languages' parsers would not.
_RFC3339_LOCAL = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
_RFC3339 = re.compile(_RFC3339_LOCAL + r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})\Z")
_RFC3339_NAIVE = re.compile(_RFC3339_LOCAL + r"\Z")


@dataclass(slots=True)
class Event:
    """A decoded input event (transaction, login, account update, payment method added)."""

    event_id: str
    event_type: str
    event_time: int
    user_id: str
    merchant_id: str | None = None
    amount: float | None = None
    currency: str | None = None
    card_id: str | None = None
    device_id: str | None = None
    ip: str | None = None
    country: str | None = None
    channel: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The canonical wire form: optional fields that are unset are left out."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "event_type": self.event_type,
            "event_time": self.event_time,
            "user_id": self.user_id,
        }
        for name in _EVENT_OPTIONAL:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.attributes:
            out["attributes"] = self.attributes
        out["schema_version"] = self.schema_version
        return out

    def encode(self) -> bytes:
        return wire.dumps(self.to_dict())


_EVENT_OPTIONAL = ("merchant_id", "amount", "currency", "card_id", "device_id", "ip", "country",
                   "channel")
_EVENT_KNOWN = frozenset({"event_id", "event_type", "event_time", "user_id", "attributes",
                          "schema_version", *_EVENT_OPTIONAL})


@dataclass(slots=True)
class Label:
    """A late-arriving verdict on an earlier event (chargeback, manual review, ...)."""

    event_id: str
    user_id: str
    merchant_id: str
    is_fraud: bool
    label_time: int
    source: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "merchant_id": self.merchant_id,
            "is_fraud": self.is_fraud,
            "label_time": self.label_time,
        }
        if self.source is not None:
            out["source"] = self.source
        if self.attributes:
            out["attributes"] = self.attributes
        return out

    def encode(self) -> bytes:
        return wire.dumps(self.to_dict())


_LABEL_KNOWN = frozenset({"event_id", "user_id", "merchant_id", "is_fraud", "label_time", "source",
                          "attributes"})


@dataclass(slots=True)
class Score:
    """What the worker emits for every scored event."""

    event_id: str
    user_id: str
    merchant_id: str | None
    event_time: int
    score: float
    decision: str
    model_version: str
    reasons: list[dict[str, Any]]
    scored_at: int

    def to_dict(self) -> dict[str, Any]:
        return _score_dict(self.event_id, self.user_id, self.merchant_id, self.event_time,
                           self.score, self.decision, self.model_version, self.reasons,
                           self.scored_at)

    def encode(self) -> bytes:
        return wire.dumps(self.to_dict())


def _score_dict(event_id: str, user_id: str, merchant_id: str | None, event_time: int,
                score: float, decision: str, model_version: str,
                reasons: list[dict[str, Any]], scored_at: int) -> dict[str, Any]:
    return {"event_id": event_id, "user_id": user_id, "merchant_id": merchant_id,
            "event_time": event_time, "score": score, "decision": decision,
            "model_version": model_version, "reasons": reasons, "scored_at": scored_at}


def encode_score(event_id: str, user_id: str, merchant_id: str | None, event_time: int,
                 score: float, decision: str, model_version: str,
                 reasons: list[dict[str, Any]], scored_at: int) -> bytes:
    """``Score(...).encode()`` without building the :class:`Score` (the worker's hot path).

    >>> encode_score("e1", "u1", None, 0, 0.5, "review", "m-1", [], 7) == Score(
    ...     "e1", "u1", None, 0, 0.5, "review", "m-1", [], 7).encode()
    True
    """
    return wire.dumps(_score_dict(event_id, user_id, merchant_id, event_time, score, decision,
                                  model_version, reasons, scored_at))


# ---------------------------------------------------------------------- decoding
def _parse(data: bytes | bytearray | memoryview, max_bytes: int, what: str) -> dict[str, Any]:
    if data is None:
        raise DecodeError(f"{what} has no value (tombstone)", code="empty")
    size = len(data)
    if size > max_bytes:
        raise DecodeError(f"{what} is {size} bytes, over the {max_bytes}-byte limit",
                          code="too_large")
    if size == 0:
        raise DecodeError(f"{what} is empty", code="empty")
    try:
        obj = wire.loads(data)
    except wire.JSONDecodeError as exc:
        try:
            bytes(data).decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise DecodeError(f"not valid UTF-8 at byte {uexc.start}", code="bad_utf8") from None
        raise DecodeError(f"not valid JSON: {exc}", code="bad_json") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{what} must be a JSON object, got {_json_type(obj)}", code="bad_json")
    return obj


@lru_cache(maxsize=1 << 16)
def _is_ip(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address. Cached: parsing one costs about as much as
    the rest of an event's checks, and traffic repeats addresses."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def decode_event(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Event:
    """Decode and validate one event message.

    >>> e = decode_event(b'{"event_id":"e1","event_type":"transaction",'
    ...     b'"event_time":"2026-01-01T00:00:00Z","user_id":"u1","merchant_id":"m1",'
    ...     b'"amount":12.5,"currency":"EUR","shop":"web"}')
    >>> e.event_time, e.amount, e.attributes
    (1767225600000, 12.5, {'shop': 'web'})
    >>> decode_event(b'{"event_id":"e1"}')
    Traceback (most recent call last):
    ...
    stream.exceptions.DecodeError: event_type: is required
    """
    return event_from_dict(_parse(data, max_bytes, "event"))


def decode_event_dict(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``decode_event(data).to_dict()``, without building the :class:`Event` when the record is
    already in the canonical wire form (what the SDK, ``publish`` and ``replay`` write): the
    check :func:`is_canonical_event` accepts only what the decoder would return unchanged.

    >>> decode_event_dict(b'{"event_id":"e1","event_type":"login","event_time":0,"user_id":"u1"}')
    {'event_id': 'e1', 'event_type': 'login', 'event_time': 0, 'user_id': 'u1', 'schema_version': 1}
    """
    obj = _parse(data, max_bytes, "event")
    if is_canonical_event(obj):
        if "attributes" in obj and not obj["attributes"]:
            del obj["attributes"]
        if "schema_version" not in obj:
            obj["schema_version"] = SCHEMA_VERSION
        return obj
    return event_from_dict(obj).to_dict()


def decode_label_dict(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """``decode_label(data).to_dict()``, with the fast path of :func:`decode_event_dict`."""
    obj = _parse(data, max_bytes, "label")
    if is_canonical_label(obj):
        if "attributes" in obj and not obj["attributes"]:
            del obj["attributes"]
        return obj
    return label_from_dict(obj).to_dict()


def event_from_dict(obj: Mapping[str, Any]) -> Event:
    """Validate an already-parsed event (SDK callers pass dicts)."""
    if type(obj) is not dict and not isinstance(obj, Mapping):  # dict: skip the ABC check
        raise DecodeError(f"event must be an object, got {_json_type(obj)}", code="bad_json")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if type(version) is not int or version not in SUPPORTED_SCHEMA_VERSIONS:
        raise DecodeError(f"unsupported schema version {version!r} (supported: "
                          f"{sorted(SUPPORTED_SCHEMA_VERSIONS)})", "schema_version")
    event_id = _req_id(obj, "event_id")
    event_type = _req_str(obj, "event_type")
    if event_type not in EVENT_TYPES:
        raise DecodeError(f"unknown event type {event_type!r} (expected one of "
                          f"{', '.join(sorted(EVENT_TYPES))})", "event_type")
    event_time = _req_time(obj, "event_time")
    user_id = _req_id(obj, "user_id")
    is_txn = event_type == "transaction"
    merchant_id = _req_id(obj, "merchant_id") if is_txn else _opt_id(obj, "merchant_id")
    amount = obj.get("amount")
    if amount is None:
        if is_txn:
            raise DecodeError("is required for transactions", "amount")
    else:
        if type(amount) not in (int, float):
            raise DecodeError(f"must be a number, got {_json_type(amount)}", "amount")
        if type(amount) is float and not math.isfinite(amount):
            raise DecodeError("must be finite", "amount")
        if amount < 0:
            raise DecodeError(f"must be >= 0, got {amount}", "amount")
        try:
            amount = float(amount)
        except OverflowError:  # an int past the float range (SDK callers; JSON gives floats)
            raise DecodeError("is too large", "amount") from None
    currency = obj.get("currency")
    if currency is None:
        if is_txn:
            raise DecodeError("is required for transactions", "currency")
    elif not isinstance(currency, str) or not _CURRENCY.match(currency):
        raise DecodeError(f"must be a three-letter upper-case ISO 4217 code, got {currency!r}",
                          "currency")
    country = obj.get("country")
    if country is not None and (not isinstance(country, str) or not _COUNTRY.match(country)):
        raise DecodeError(f"must be a two-letter upper-case ISO 3166-1 code, got {country!r}",
                          "country")
    ip = _opt_str(obj, "ip")
    if ip is not None and not _is_ip(ip):
        raise DecodeError(f"not an IPv4 or IPv6 address: {ip!r}", "ip")
    attributes = obj.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise DecodeError(f"must be an object, got {_json_type(attributes)}", "attributes")
    else:
        attributes = dict(attributes)
    if len(obj) > len(_EVENT_KNOWN) or not _EVENT_KNOWN.issuperset(obj):
        for key, value in obj.items():
            if key not in _EVENT_KNOWN:
                attributes.setdefault(key, value)
    return Event(
        event_id=event_id,
        event_type=event_type,
        event_time=event_time,
        user_id=user_id,
        merchant_id=merchant_id,
        amount=amount,
        currency=currency,
        card_id=_opt_id(obj, "card_id"),
        device_id=_opt_id(obj, "device_id"),
        ip=ip,
        country=country,
        channel=_opt_str(obj, "channel"),
        attributes=attributes,
        schema_version=version,
    )


# ---------------------------------------------------------------------- canonical fast path
# A log written by fraudstream (or by anyone following the contract to the letter) is already in
# the wire form. Replaying it only needs to know that each record *would* decode unchanged; these
# checks say so without building an Event, at a third of the cost. They accept a subset of what
# the decoders accept (tests/unit/test_events.py holds them to that: whatever they accept decodes,
# and encodes back to the same object); anything they are unsure of goes to the decoders, which
# also give the reasons for a rejection.
# Codes that passed the patterns: a set lookup is a fraction of a regex match, and the sets are
# bounded by the patterns themselves (26**3 and 26**2 strings at most).
_CURRENCIES_SEEN: set[str] = set()
_COUNTRIES_SEEN: set[str] = set()


def is_canonical_event(obj: Any) -> bool:
    """Whether ``obj`` is a valid event in the canonical wire form: contract fields only, no
    nulls, ids and strings as strings, ``event_time`` in epoch ms, ``amount`` a float.

    >>> is_canonical_event({"event_id": "e1", "event_type": "login",
    ...                     "event_time": 1767225600000, "user_id": "u1"})
    True
    >>> is_canonical_event({"event_id": "e1", "event_type": "login",
    ...                     "event_time": "2026-01-01T00:00:00Z", "user_id": "u1"})
    False
    """
    if type(obj) is not dict or not _EVENT_KNOWN.issuperset(obj):
        return False
    get = obj.get
    value = get("event_id")
    if type(value) is not str or not 0 < len(value) <= _MAX_ID_LEN:
        return False
    value = get("user_id")
    if type(value) is not str or not 0 < len(value) <= _MAX_ID_LEN:
        return False
    event_type = get("event_type")
    if type(event_type) is not str or event_type not in EVENT_TYPES:
        return False
    value = get("event_time")
    if type(value) is not int or not 0 <= value <= _MAX_EPOCH_MS:
        return False
    seen = 4  # fields checked; a key left unchecked at the end holds a null
    for name in ("merchant_id", "card_id", "device_id"):
        value = get(name)
        if value is not None:
            if type(value) is not str or not 0 < len(value) <= _MAX_ID_LEN:
                return False
            seen += 1
    amount = get("amount")
    if amount is not None:
        # ``amount >= 0`` is false for NaN; infinity is the one other non-finite float.
        if type(amount) is not float or not 0.0 <= amount < _INF:
            return False
        seen += 1
    currency = get("currency")
    if currency is not None:
        if type(currency) is not str:
            return False
        if currency not in _CURRENCIES_SEEN:
            if not _CURRENCY.match(currency):
                return False
            _CURRENCIES_SEEN.add(currency)
        seen += 1
    if event_type == "transaction" and (amount is None or currency is None
                                        or get("merchant_id") is None):
        return False
    value = get("country")
    if value is not None:
        if type(value) is not str:
            return False
        if value not in _COUNTRIES_SEEN:
            if not _COUNTRY.match(value):
                return False
            _COUNTRIES_SEEN.add(value)
        seen += 1
    value = get("ip")
    if value is not None:
        if type(value) is not str or not _is_ip(value):
            return False
        seen += 1
    value = get("channel")
    if value is not None:
        if type(value) is not str:
            return False
        seen += 1
    value = get("attributes")
    if value is not None:
        if type(value) is not dict:
            return False
        seen += 1
    value = get("schema_version")
    if value is not None:
        if type(value) is not int or value not in SUPPORTED_SCHEMA_VERSIONS:
            return False
        seen += 1
    return seen == len(obj)


def is_canonical_label(obj: Any) -> bool:
    """Whether ``obj`` is a valid label in the canonical wire form (see
    :func:`is_canonical_event`).

    >>> is_canonical_label({"event_id": "e1", "user_id": "u1", "merchant_id": "m1",
    ...                     "is_fraud": True, "label_time": 1767225600000})
    True
    """
    if type(obj) is not dict or not _LABEL_KNOWN.issuperset(obj):
        return False
    get = obj.get
    for name in ("event_id", "user_id", "merchant_id"):
        value = get(name)
        if type(value) is not str or not 0 < len(value) <= _MAX_ID_LEN:
            return False
    if type(get("is_fraud")) is not bool:
        return False
    value = get("label_time")
    if type(value) is not int or not 0 <= value <= _MAX_EPOCH_MS:
        return False
    seen = 5
    value = get("source")
    if value is not None:
        if type(value) is not str:
            return False
        seen += 1
    value = get("attributes")
    if value is not None:
        if type(value) is not dict:
            return False
        seen += 1
    return seen == len(obj)


def decode_label(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Label:
    """Decode and validate one label message.

    >>> decode_label(b'{"event_id":"e1","user_id":"u1","merchant_id":"m1","is_fraud":true,'
    ...              b'"label_time":1767225600000,"source":"chargeback"}').is_fraud
    True
    """
    return label_from_dict(_parse(data, max_bytes, "label"))


def label_from_dict(obj: Mapping[str, Any]) -> Label:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # dict: skip the ABC check
        raise DecodeError(f"label must be an object, got {_json_type(obj)}", code="bad_json")
    is_fraud = obj.get("is_fraud")
    if is_fraud is None:
        raise DecodeError("is required", "is_fraud")
    if type(is_fraud) is not bool:
        raise DecodeError(f"must be true or false, got {_json_type(is_fraud)}", "is_fraud")
    attributes = obj.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise DecodeError(f"must be an object, got {_json_type(attributes)}", "attributes")
    attributes = dict(attributes)
    for key, value in obj.items():
        if key not in _LABEL_KNOWN:
            attributes.setdefault(key, value)
    return Label(
        event_id=_req_id(obj, "event_id"),
        user_id=_req_id(obj, "user_id"),
        merchant_id=_req_id(obj, "merchant_id"),
        is_fraud=is_fraud,
        label_time=_req_time(obj, "label_time"),
        source=_opt_str(obj, "source"),
        attributes=attributes,
    )


def decode_score(data: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Score:
    """Decode a score message (what ``ScoreConsumer`` yields)."""
    return score_from_dict(_parse(data, max_bytes, "score"))


def score_from_dict(obj: Mapping[str, Any]) -> Score:
    if type(obj) is not dict and not isinstance(obj, Mapping):  # dict: skip the ABC check
        raise DecodeError(f"score must be an object, got {_json_type(obj)}", code="bad_json")
    score = obj.get("score")
    if type(score) not in (int, float) or not 0.0 <= score <= 1.0:
        raise DecodeError(f"must be a number between 0 and 1, got {score!r}", "score")
    decision = _req_str(obj, "decision")
    if decision not in DECISIONS:
        raise DecodeError(f"must be one of {', '.join(DECISIONS)}, got {decision!r}", "decision")
    reasons = obj.get("reasons", [])
    if not isinstance(reasons, list):
        raise DecodeError(f"must be an array, got {_json_type(reasons)}", "reasons")
    scored_at = obj.get("scored_at")
    if type(scored_at) is not int:
        raise DecodeError(f"must be epoch milliseconds, got {_json_type(scored_at)}", "scored_at")
    return Score(
        event_id=_req_id(obj, "event_id"),
        user_id=_req_id(obj, "user_id"),
        merchant_id=_opt_id(obj, "merchant_id"),
        event_time=_req_time(obj, "event_time"),
        score=float(score),
        decision=decision,
        model_version=_req_str(obj, "model_version"),
        reasons=reasons,
        scored_at=scored_at,
    )


# ---------------------------------------------------------------------- field helpers
def parse_time(value: Any, name: str = "time") -> int:
    """Epoch milliseconds from an integer or an RFC 3339 string with a UTC offset.

    >>> parse_time(1767225600000), parse_time("2026-01-01T01:00:00.250+01:00")
    (1767225600000, 1767225600250)
    """
    if type(value) is int:
        if not 0 <= value <= _MAX_EPOCH_MS:
            raise DecodeError(f"epoch milliseconds out of range: {value}", name)
        return value
    if isinstance(value, str):
        if _RFC3339_NAIVE.match(value):
            raise DecodeError(f"RFC 3339 timestamp needs a UTC offset (e.g. 'Z'): {value!r}",
                              name)
        if not _RFC3339.match(value):
            raise DecodeError(f"not an RFC 3339 timestamp: {value!r}", name)
        try:
            # RFC 3339 allows lower-case 't' and 'z'; fromisoformat does not take 'z'.
            parsed = datetime.fromisoformat(value.upper())
        except ValueError:
            raise DecodeError(f"not an RFC 3339 timestamp: {value!r}", name) from None
        # Integer arithmetic on the timedelta keeps milliseconds exact (no float rounding).
        delta = parsed - _EPOCH
        ms = (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
        if not 0 <= ms <= _MAX_EPOCH_MS:
            raise DecodeError(f"timestamp before 1970 or after 9999: {value!r}", name)
        return ms
    raise DecodeError(f"must be epoch milliseconds (integer) or an RFC 3339 string, "
                      f"got {_json_type(value)}", name)


_INF = math.inf
_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def _req_time(obj: Mapping[str, Any], name: str) -> int:
    value = obj.get(name)
    if value is None:
        raise DecodeError("is required", name)
    return parse_time(value, name)


def _req_str(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise DecodeError("is required", name)
    if not isinstance(value, str):
        raise DecodeError(f"must be a string, got {_json_type(value)}", name)
    return value


def _req_id(obj: Mapping[str, Any], name: str) -> str:
    value = _req_str(obj, name)
    if not value:
        raise DecodeError("must not be empty", name)
    if len(value) > _MAX_ID_LEN:
        raise DecodeError(f"longer than {_MAX_ID_LEN} characters", name)
    return value


def _opt_str(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"must be a string, got {_json_type(value)}", name)
    return value


def _opt_id(obj: Mapping[str, Any], name: str) -> str | None:
    if obj.get(name) is None:
        return None
    return _req_id(obj, name)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__
