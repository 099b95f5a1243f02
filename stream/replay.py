"""Replaying event logs into Kafka in event-time order (behind ``fraudstream replay``).

A replay reads a log of events (JSON Lines, ``.gz`` or CSV) and optionally a log of labels,
validates every record against the contract (``stream.events``), and sends the events to the
events topic and the labels to the labels topic on one timeline: a label whose ``label_time`` is T
goes out after every event with ``event_time`` <= T and before the later ones. ``speed=None``
sends as fast as the broker takes it; ``speed=60`` keeps inter-arrival times, sixty times faster.

Invalid records never reach Kafka: each is reported with its file and line number and written,
with the reason, to a rejects file (JSON Lines). Records that are already canonical (integer
epoch-ms times, contract fields only, no nulls) are forwarded as the bytes that were read;
everything else is sent in the canonical encoding, like ``EventPublisher`` does.

**Resuming without duplicates.** The timeline is deterministic (stable sort on time, then events
before labels, then file order), so "the first P items" names exactly what was sent. The
checkpoint protocol, one step per chunk of at most ``chunk_items`` items:

1. Write the checkpoint ``{position: P, pending_until: P + chunk_items, anchor_ms: now}``
   (atomically: temporary file, fsync, rename). Items in ``[P, pending_until)`` may be in
   flight from here on.
2. Produce the chunk (records keyed like ``EventPublisher``: events by ``user_id``, labels by
   ``merchant_id``; the partition is computed here, as librdkafka's default partitioner does).
3. Flush the producer; any delivery failure stops the replay with the checkpoint at step 1.
4. Advance P to the end of the chunk and go to 1. At the end, mark the checkpoint done.

A replay that was killed resumes at P. The producer is idempotent, so within a partition what
landed is a prefix of what was produced; reading each partition from ``anchor_ms`` (minus a
margin) to its end and matching records to the pending items by identity (an event's
``event_id``; a label's event id, label time and verdict) gives, per partition, the last pending
item that landed. Pending items up to it are skipped, the rest are sent. So nothing is sent twice
and nothing is lost, also after ``kill -9``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import math
import os
import re
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone
from pathlib import Path
from typing import Any, BinaryIO

from stream import wire
from stream.events import DEFAULT_MAX_BYTES, event_from_dict, label_from_dict, parse_time
from stream.exceptions import DecodeError, FraudstreamError
from stream.mapping import ColumnMapping
from stream.settings import Settings

__all__ = [
    "ReplayError",
    "ReplayOptions",
    "RecordMapping",
    "TIME_FORMATS",
    "parse_time_value",
    "parse_constants",
    "ReplayProgress",
    "ReplayResult",
    "Rejects",
    "LoadedLog",
    "Timeline",
    "parse_speed",
    "parse_bound",
    "detect_format",
    "read_records",
    "load_log",
    "build_timeline",
    "partition_for",
    "replay",
]

_EVENT_CANONICAL = frozenset({"event_id", "event_type", "event_time", "user_id", "merchant_id",
                              "amount", "currency", "card_id", "device_id", "ip", "country",
                              "channel", "attributes", "schema_version"})
_LABEL_CANONICAL = frozenset({"event_id", "user_id", "merchant_id", "is_fraud", "label_time",
                              "source", "attributes"})
_EVENT, _LABEL = 0, 1
_SPEED = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*[xX]?\s*\Z")
_CHECKPOINT_VERSION = 1
# How far before the checkpoint's anchor the resume scan starts (client/broker clock skew).
_ANCHOR_MARGIN_MS = 60_000


class ReplayError(FraudstreamError):
    """A replay cannot start or continue (bad options, a checkpoint that does not match,
    undelivered messages)."""


# ---------------------------------------------------------------------- record mapping
# Foreign logs name and type things their own way. Column renames are the shared
# ``stream.mapping.ColumnMapping`` (``--map SOURCE=FIELD``); on top of it a replay sets constants
# (``--set event_type=transaction``) and converts what such logs commonly hold into what the
# contract takes: times as epoch s/ms/us/ns (numbers or digit strings) or ISO 8601 strings,
# numeric ids, and amounts or verdicts written as text. Validation stays with the contract
# decoder, so every rejection still names the contract field.
TIME_FORMATS = ("auto", "s", "ms", "us", "ns", "iso")
_TIME_FIELDS = ("event_time", "label_time")
_ID_FIELDS = ("event_id", "user_id", "merchant_id", "card_id", "device_id")
_CONSTANT_FIELDS = frozenset({"event_type", "currency", "country", "channel", "source",
                              "merchant_id", "schema_version"})
_UNIT_MS = {"s": 1000.0, "ms": 1.0, "us": 1e-3, "ns": 1e-6}
_NUMERIC = re.compile(r"\s*-?[0-9]+(?:\.[0-9]*)?\s*\Z")
# Epoch values below these are seconds, milliseconds, microseconds (else nanoseconds):
# 1e11 s is the year 5138 and 1e11 ms is March 1973, so real logs are unambiguous.
_AUTO_LIMITS = ((1e11, "s"), (1e14, "ms"), (1e17, "us"))
_MAX_EPOCH_MS = 253_402_300_799_999
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})


@dataclass(frozen=True)
class RecordMapping:
    """Renames, constants and type conversions applied to each raw record before validation.

    >>> m = RecordMapping(ColumnMapping.parse("CUSTOMER=user_id,SHOP=merchant_id,TS=event_time"),
    ...                   constants=(("currency", "EUR"),))
    >>> row = m.apply({"CUSTOMER": 42, "SHOP": "s1", "TS": 1767225600, "amount": "9.90",
    ...                "event_id": "e1", "event_type": "transaction"})
    >>> row["user_id"], row["event_time"], row["amount"], row["currency"]
    ('42', 1767225600000, 9.9, 'EUR')
    """

    columns: ColumnMapping = field(default_factory=ColumnMapping)
    constants: tuple[tuple[str, Any], ...] = ()
    time_format: str = "auto"
    timezone: str | None = None   # zone of ISO times written without an offset

    def __post_init__(self) -> None:
        if self.time_format not in TIME_FORMATS:
            raise ValueError(f"time format must be one of {', '.join(TIME_FORMATS)}, "
                             f"got {self.time_format!r}")
        if self.timezone is not None:
            _zone(self.timezone)  # an unknown zone fails here, not on every record

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """The record with contract names and types; ``row`` itself when nothing changed
        (the caller forwards such input as it was read when it is canonical)."""
        out = self.columns.apply(row) if self.columns.renames else row
        if self.constants:
            if out is row:
                out = dict(row)
            out.update(self.constants)
        for name in _TIME_FIELDS:
            value = out.get(name)
            if value is None or (type(value) is int and value >= 100_000_000_000
                                 and self.time_format in ("auto", "ms")):
                continue  # already epoch milliseconds: the common, fast case
            converted = parse_time_value(value, self.time_format, self.timezone, name)
            if type(value) is not int or converted != value:
                if out is row:
                    out = dict(row)
                out[name] = converted
        for name in _ID_FIELDS:
            if type(out.get(name)) is int:
                if out is row:
                    out = dict(row)
                out[name] = str(out[name])
        amount = out.get("amount")
        if isinstance(amount, str):
            if out is row:
                out = dict(row)
            out["amount"] = _number(amount)
        flag = out.get("is_fraud")
        if flag is not None and type(flag) is not bool:
            if out is row:
                out = dict(row)
            out["is_fraud"] = _boolean(flag)
        version = out.get("schema_version")
        if isinstance(version, str) and version.strip().isdigit():
            if out is row:
                out = dict(row)
            out["schema_version"] = int(version)
        return out

    def describe(self) -> str:
        return (f"map={self.columns};set={self.constants!r};time={self.time_format};"
                f"tz={self.timezone}")


IDENTITY = RecordMapping()


def parse_constants(items: str | tuple[str, ...] | list[str] | None) -> tuple[tuple[str, Any], ...]:
    """``--set FIELD=VALUE`` pairs (comma-separated or repeated).

    >>> parse_constants(("event_type=transaction", "currency=EUR"))
    (('event_type', 'transaction'), ('currency', 'EUR'))
    """
    if items is None:
        return ()
    parts: list[str] = []
    for chunk in ([items] if isinstance(items, str) else items):
        parts.extend(p for p in chunk.split(",") if p.strip())
    out: list[tuple[str, Any]] = []
    for part in parts:
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise ValueError(f"--set: expected FIELD=VALUE, got {part!r}")
        if name not in _CONSTANT_FIELDS:
            raise ValueError(f"--set: {name!r} cannot be set to a constant (one of "
                             f"{', '.join(sorted(_CONSTANT_FIELDS))})")
        out.append((name, value))
    return tuple(out)


def parse_time_value(value: Any, fmt: str = "auto", timezone: str | None = None,
                     name: str = "time") -> int:
    """Epoch milliseconds from epoch s/ms/us/ns (numbers or digit strings) or ISO 8601.

    ``auto`` tells the epoch unit by magnitude and reads other strings as ISO 8601. ISO times
    without an offset need ``timezone`` (``UTC`` or an IANA name such as ``Europe/Berlin``).
    Digits below the millisecond are dropped, as in the contract.

    >>> [parse_time_value(v) for v in (1767225600, 1767225600000, "1767225600.5",
    ...                                1767225600000000, "2026-01-01T00:00:00Z")]
    [1767225600000, 1767225600000, 1767225600500, 1767225600000, 1767225600000]
    >>> parse_time_value("2026-01-01 01:00:00", timezone="Europe/Berlin")
    1767225600000
    >>> parse_time_value("2026-01-01 00:00:00")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream.exceptions.DecodeError: time: ISO time without a UTC offset: '2026-01-01 00:00:00' ...
    """
    if isinstance(value, bool) or value is None:
        raise DecodeError(f"not a time: {value!r}", name)
    if isinstance(value, str):
        if _NUMERIC.match(value):
            if fmt == "iso":
                raise DecodeError(f"expected an ISO 8601 time, got {value!r}", name)
            text = value.strip()
            return _from_epoch(int(text) if text.lstrip("-").isdigit() else float(text), fmt,
                               name)
        if fmt not in ("auto", "iso"):
            raise DecodeError(f"expected epoch {fmt} (a number), got {value!r}", name)
        return _from_iso(value.strip(), timezone, name)
    if isinstance(value, (int, float)):
        if fmt == "iso":
            raise DecodeError(f"expected an ISO 8601 time, got {value!r}", name)
        return _from_epoch(value, fmt, name)
    raise DecodeError(f"not a time: {type(value).__name__}", name)


def _from_epoch(number: float | int, fmt: str, name: str) -> int:
    if isinstance(number, float) and not math.isfinite(number):
        raise DecodeError(f"not a time: {number!r}", name)
    unit = fmt
    if fmt == "auto":
        unit = next((u for limit, u in _AUTO_LIMITS if abs(number) < limit), "ns")
    if type(number) is int:
        ms = {"s": number * 1000, "ms": number, "us": number // 1000,
              "ns": number // 1_000_000}[unit]
    else:
        scaled = number * _UNIT_MS[unit]
        nearest = round(scaled)
        # Float noise (1767225600.123 s -> ...122.99998 ms) must not cost a millisecond.
        ms = nearest if abs(scaled - nearest) < 1e-3 else math.floor(scaled)
    if not 0 <= ms <= _MAX_EPOCH_MS:
        raise DecodeError(f"epoch time out of range: {number!r} (read as {unit})", name)
    return int(ms)


def _from_iso(text: str, timezone: str | None, name: str) -> int:
    try:
        return parse_time(text, name)  # RFC 3339 with an offset: the contract's own parser
    except DecodeError:
        pass
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z")
                                        else text)
    except ValueError:
        raise DecodeError(f"not an ISO 8601 time: {text!r}", name) from None
    if parsed.tzinfo is None:
        if timezone is None:
            raise DecodeError(f"ISO time without a UTC offset: {text!r} (give its zone with "
                              "--timezone, e.g. UTC)", name)
        parsed = parsed.replace(tzinfo=_zone(timezone))
    ms = math.floor(parsed.timestamp() * 1000 + 1e-6)
    if not 0 <= ms <= _MAX_EPOCH_MS:
        raise DecodeError(f"time before 1970 or after 9999: {text!r}", name)
    return ms


def _zone(name: str):
    if name.upper() == "UTC":
        return dt_timezone.utc
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # left for the decoder to reject, naming the field


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    elif type(value) is int and value in (0, 1):
        return bool(value)
    return value  # left for the decoder to reject


# ---------------------------------------------------------------------- options
def parse_speed(text: str | float | None) -> float | None:
    """``"max"`` -> None (as fast as possible); ``"60x"``, ``"60"``, ``"0.5x"`` -> the factor.

    >>> parse_speed("max"), parse_speed("60x"), parse_speed("0.5")
    (None, 60.0, 0.5)
    """
    if text is None:
        return None
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        if text.strip().lower() == "max":
            return None
        match = _SPEED.match(text)
        if not match:
            raise ValueError(f"speed must be 'max' or a factor such as '60x', got {text!r}")
        value = float(match.group(1))
    if not value > 0:
        raise ValueError(f"speed must be positive, got {text!r}")
    return value


def parse_bound(text: str | None, timezone: str | None = None,
                name: str = "--from") -> int | None:
    """A ``--from``/``--to`` bound: ISO 8601 or epoch s/ms (told apart by magnitude)."""
    if text is None:
        return None
    try:
        return parse_time_value(text, "auto", timezone, name)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how; everything here is part of the checkpoint's fingerprint."""

    log: Path
    labels: Path | None = None
    speed: float | None = None                 # None: as fast as possible
    start_ms: int | None = None                # --from (inclusive)
    end_ms: int | None = None                  # --to (exclusive)
    mapping: RecordMapping = IDENTITY
    labels_mapping: RecordMapping | None = None  # default: ``mapping``
    fmt: str | None = None                     # "jsonl" | "csv"; None: by name, then content
    chunk_items: int = 100_000                 # items per checkpoint at most
    chunk_seconds: float = 1.0                 # and at least one checkpoint this often


# ---------------------------------------------------------------------- reading logs
def _open_binary(path: Path) -> BinaryIO:
    fh = path.open("rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def detect_format(path: Path) -> str:
    """``jsonl`` or ``csv``: by file name (``.csv``, ``.csv.gz``), else by the first byte."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    with _open_binary(path) as fh:
        head = fh.read(4096).lstrip()
    return "jsonl" if head[:1] in (b"{", b"") else "csv"


def read_records(path: Path, fmt: str,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[int, bytes, Any]]:
    """``(line number, raw bytes, dict or DecodeError)`` for every non-blank record."""
    if fmt == "jsonl":
        yield from _read_jsonl(path, max_bytes)
    elif fmt == "csv":
        yield from _read_csv(path)
    else:
        raise ReplayError(f"unknown log format {fmt!r} (jsonl or csv)")


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes, Any]]:
    loads = wire.loads
    with _open_binary(path) as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            if len(line) > max_bytes:
                yield number, line, DecodeError(
                    f"record is {len(line)} bytes, over the {max_bytes}-byte limit",
                    code="too_large")
                continue
            try:
                obj = loads(line)
            except wire.JSONDecodeError as exc:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as uexc:
                    yield number, line, DecodeError(f"not valid UTF-8 at byte {uexc.start}",
                                                    code="bad_utf8")
                    continue
                yield number, line, DecodeError(f"not valid JSON: {exc}", code="bad_json")
                continue
            if not isinstance(obj, dict):
                yield number, line, DecodeError("record must be a JSON object", code="bad_json")
                continue
            yield number, line, obj


def _read_csv(path: Path) -> Iterator[tuple[int, bytes, Any]]:
    with _open_binary(path) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="", errors="strict")
        reader = csv.DictReader(text)
        first = 2  # line 1 is the header
        try:
            for row in reader:
                line = first
                first = reader.line_num + 1
                shown = wire.dumps({k: v for k, v in row.items() if k is not None})
                if None in row:
                    yield line, shown, DecodeError("more values than header columns",
                                                   code="bad_csv")
                    continue
                rec: dict[str, Any] = {}
                for key, value in row.items():
                    if value is None or value == "":
                        continue  # CSV cannot say null: an empty cell is an absent field
                    if key == "attributes" and value.lstrip().startswith("{"):
                        try:
                            value = wire.loads(value)
                        except wire.JSONDecodeError:
                            pass
                    rec[key] = value
                yield line, shown, rec
        except UnicodeDecodeError as exc:
            yield first, b"", DecodeError(f"not valid UTF-8 ({exc.reason})", code="bad_utf8")
        except csv.Error as exc:
            yield first, b"", DecodeError(f"unreadable CSV: {exc}", code="bad_csv")


class Rejects:
    """Collects rejected records; writes them, with reasons and line numbers, as JSON Lines."""

    def __init__(self, path: Path | None, keep: int = 20) -> None:
        self.path = path
        self.count = 0
        self.first: list[str] = []   # the first ``keep`` messages, for the terminal
        self._keep = keep
        self._out: BinaryIO | None = None

    def add(self, source: Path, kind: str, line: int, exc: DecodeError, raw: bytes) -> None:
        self.count += 1
        message = f"{source.name}:{line}: {exc}"
        if len(self.first) < self._keep:
            self.first.append(message)
        if self.path is None:
            return
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("wb")
        self._out.write(wire.dumps_line({
            "file": str(source), "line": line, "kind": kind, "field": exc.field,
            "code": exc.code, "error": str(exc),
            "raw": raw.decode("utf-8", errors="backslashreplace")}))

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        elif self.path is not None and self.path.exists():
            self.path.unlink()  # an earlier run's rejects must not be mistaken for this run's


@dataclass
class LoadedLog:
    """Valid records of one log, in file order: time, Kafka key and the bytes to send."""

    path: Path
    kind: str
    times: array = field(default_factory=lambda: array("q"))
    keys: list[bytes] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    read: int = 0
    rejected: int = 0
    outside: int = 0           # valid, but outside --from/--to
    forwarded_as_read: int = 0

    def __len__(self) -> int:
        return len(self.payloads)


def load_log(path: Path, kind: str, *, fmt: str | None = None,
             mapping: RecordMapping = IDENTITY, start_ms: int | None = None,
             end_ms: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
             rejects: Rejects | None = None,
             on_progress: Callable[[int], None] | None = None) -> LoadedLog:
    """Read, map and validate every record of ``path`` (``kind``: ``event`` or ``label``)."""
    if kind not in ("event", "label"):
        raise ValueError(f"kind must be 'event' or 'label', got {kind!r}")
    fmt = fmt or detect_format(path)
    out = LoadedLog(path=path, kind=kind)
    is_event = kind == "event"
    decode = event_from_dict if is_event else label_from_dict
    canonical = _EVENT_CANONICAL if is_event else _LABEL_CANONICAL
    time_name = "event_time" if is_event else "label_time"
    lo = -1 if start_ms is None else start_ms
    hi = 1 << 62 if end_ms is None else end_ms
    forward_raw = fmt == "jsonl"
    apply = mapping.apply
    times, keys, payloads = out.times, out.keys, out.payloads
    rejects = rejects if rejects is not None else Rejects(None)
    for number, raw, obj in read_records(path, fmt, max_bytes):
        out.read += 1
        if on_progress is not None and not out.read % 65536:
            on_progress(out.read)
        try:
            if type(obj) is not dict:
                raise obj
            row = apply(obj)
            record = decode(row)
        except DecodeError as exc:
            out.rejected += 1
            rejects.add(path, kind, number, exc, raw)
            continue
        t = record.event_time if is_event else record.label_time
        if not lo <= t < hi:
            out.outside += 1
            continue
        if (forward_raw and row is obj and type(obj[time_name]) is int
                and canonical.issuperset(obj) and None not in obj.values()
                and (not is_event or obj.get("amount") is None
                     or type(obj["amount"]) is float)):
            payload = raw  # already canonical: forward the bytes that were read
            out.forwarded_as_read += 1
        else:
            payload = record.encode()
            if len(payload) > max_bytes:
                out.rejected += 1
                rejects.add(path, kind, number, DecodeError(
                    f"{kind} is {len(payload)} bytes encoded, over the {max_bytes}-byte limit",
                    code="too_large"), raw)
                continue
        times.append(t)
        keys.append((record.user_id if is_event else record.merchant_id).encode())
        payloads.append(payload)
    return out


# ---------------------------------------------------------------------- the timeline
@dataclass
class Timeline:
    """Events and labels merged in send order; parallel lists indexed by position."""

    times: list[int]
    kinds: bytes               # _EVENT or _LABEL per position
    keys: list[bytes]
    payloads: list[bytes]

    def __len__(self) -> int:
        return len(self.payloads)


def build_timeline(events: LoadedLog, labels: LoadedLog | None = None) -> Timeline:
    """Sort by (time, events before labels, file order): deterministic, so positions are stable
    across runs and a checkpoint's position names exactly what was sent."""
    import numpy as np

    ev_t = np.frombuffer(events.times, dtype=np.int64) if len(events) else np.empty(0, np.int64)
    parts_t, parts_k = [ev_t], [np.zeros(len(ev_t), dtype=np.int8)]
    keys, payloads = list(events.keys), list(events.payloads)
    if labels is not None and len(labels):
        parts_t.append(np.frombuffer(labels.times, dtype=np.int64))
        parts_k.append(np.ones(len(labels), dtype=np.int8))
        keys += labels.keys
        payloads += labels.payloads
    times = np.concatenate(parts_t)
    kinds = np.concatenate(parts_k)
    # lexsort: last key is primary. Ordinal order inside each kind is the file order.
    order = np.lexsort((np.arange(len(times)), kinds, times))
    if np.all(order[1:] > order[:-1]) if len(order) > 1 else True:
        return Timeline(times.tolist(), kinds.tobytes(), keys, payloads)
    idx = order.tolist()
    return Timeline(times[order].tolist(), kinds[order].tobytes(), [keys[i] for i in idx],
                    [payloads[i] for i in idx])


def partition_for(key: bytes, partitions: int) -> int:
    """librdkafka's default (``consistent_random``) partition for a non-empty key: CRC-32."""
    return zlib.crc32(key) % partitions


# ---------------------------------------------------------------------- checkpoints
def _file_id(path: Path | None) -> Any:
    if path is None:
        return None
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _fingerprint(opts: ReplayOptions, topics: tuple[str, str], partitions: tuple[int, int]) -> str:
    lm = opts.labels_mapping or opts.mapping
    blob = wire.dumps({
        "log": _file_id(opts.log), "labels": _file_id(opts.labels), "from": opts.start_ms,
        "to": opts.end_ms, "fmt": opts.fmt, "mapping": opts.mapping.describe(),
        "labels_mapping": lm.describe(), "topics": list(topics), "partitions": list(partitions)})
    return hashlib.sha256(blob).hexdigest()


def default_checkpoint_path(log: Path, base: Path = Path(".fraudstream/replay")) -> Path:
    digest = hashlib.sha256(str(log.resolve()).encode()).hexdigest()[:10]
    return base / f"{log.name}-{digest}.checkpoint.json"


def _read_checkpoint(path: Path) -> dict[str, Any] | None:
    try:
        data = wire.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except wire.JSONDecodeError as exc:
        raise ReplayError(f"checkpoint {path} is unreadable ({exc}); delete it or use "
                          "--restart") from None
    if not isinstance(data, dict) or data.get("version") != _CHECKPOINT_VERSION:
        raise ReplayError(f"checkpoint {path} has an unknown format; use --restart")
    return data


def _write_checkpoint(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(wire.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# ---------------------------------------------------------------------- sending
@dataclass
class ReplayProgress:
    position: int          # items of the timeline handled (sent or skipped)
    total: int
    events_sent: int
    labels_sent: int
    elapsed: float         # seconds sending (this run)
    event_time: int | None  # time of the last item handled


@dataclass
class ReplayResult:
    events: LoadedLog
    labels: LoadedLog | None
    total: int
    events_sent: int = 0
    labels_sent: int = 0
    resumed_at: int = 0          # position the run started at (0: from the beginning)
    skipped_in_flight: int = 0   # pending items found already delivered when resuming
    already_done: bool = False
    load_seconds: float = 0.0
    send_seconds: float = 0.0
    checkpoint: Path | None = None

    @property
    def sent(self) -> int:
        return self.events_sent + self.labels_sent


def replay(settings: Settings, opts: ReplayOptions, *, checkpoint: Path | None = None,
           rejects: Rejects | None = None, restart: bool = False,
           on_progress: Callable[[ReplayProgress], None] | None = None,
           on_load_progress: Callable[[str, int], None] | None = None,
           **producer_overrides: Any) -> ReplayResult:
    """Replay ``opts.log`` (and ``opts.labels``) into the settings' events and labels topics.

    Resumes from ``checkpoint`` when it exists for the same files and options (``restart``
    ignores it). Raises :class:`ReplayError` on a mismatching checkpoint, a missing topic or a
    delivery failure; ``KeyboardInterrupt`` flushes, checkpoints and propagates.
    """
    from confluent_kafka import Producer

    max_bytes = settings.max_message_bytes or DEFAULT_MAX_BYTES
    rejects = rejects if rejects is not None else Rejects(None)
    started = time.monotonic()
    try:
        events = load_log(opts.log, "event", fmt=opts.fmt, mapping=opts.mapping,
                          start_ms=opts.start_ms, end_ms=opts.end_ms, max_bytes=max_bytes,
                          rejects=rejects, on_progress=(lambda n: on_load_progress("events", n))
                          if on_load_progress else None)
        labels = None
        if opts.labels is not None:
            labels = load_log(opts.labels, "label", fmt=opts.fmt,
                              mapping=opts.labels_mapping or opts.mapping,
                              start_ms=opts.start_ms, end_ms=opts.end_ms, max_bytes=max_bytes,
                              rejects=rejects, on_progress=(lambda n: on_load_progress(
                                  "labels", n)) if on_load_progress else None)
    finally:
        rejects.close()
    timeline = build_timeline(events, labels)
    result = ReplayResult(events=events, labels=labels, total=len(timeline),
                          load_seconds=time.monotonic() - started, checkpoint=checkpoint)

    conf = settings.producer_config(**{
        "linger.ms": 5 if opts.speed is not None else 25,
        "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 2_097_151,
        # Only failures call back: one Python call per message costs more than the rest of
        # the send path; success is established by flushing at every checkpoint instead.
        "delivery.report.only.error": True,
        **producer_overrides})
    failures: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failures.append(f"{msg.topic()}[{msg.partition()}]: {err.str()}")

    conf["on_delivery"] = on_delivery
    producer = Producer(conf)
    topics = (settings.topic_events, settings.topic_labels)
    partitions = tuple(_partition_count(producer, t) for t in topics)
    fingerprint = _fingerprint(opts, topics, partitions)  # type: ignore[arg-type]

    state = _read_checkpoint(checkpoint) if checkpoint is not None and not restart else None
    if state is not None and state.get("fingerprint") != fingerprint:
        raise ReplayError(
            f"checkpoint {checkpoint} belongs to another replay (different files, options, "
            "topics or partition counts); use --restart to replay from the beginning, or "
            "--checkpoint to keep both")
    if state is not None and state.get("status") == "done":
        result.already_done = True
        result.resumed_at = result.total
        result.events_sent, result.labels_sent = state["events_sent"], state["labels_sent"]
        return result
    run_id = state["run_id"] if state else uuid.uuid4().hex
    position = state["position"] if state else 0
    skip: dict[tuple[int, int], int] = {}
    pending_until = position
    if state is not None:
        result.resumed_at = position
        result.events_sent, result.labels_sent = state["events_sent"], state["labels_sent"]
        pending_until = min(state["pending_until"], result.total)
        if pending_until > position:
            skip = _delivered_pending(settings, timeline, topics, partitions, position,
                                      pending_until, state["anchor_ms"] - _ANCHOR_MARGIN_MS)

    def save(pos: int, pend: int, status: str = "running") -> None:
        if checkpoint is None:
            return
        _write_checkpoint(checkpoint, {
            "version": _CHECKPOINT_VERSION, "run_id": run_id, "fingerprint": fingerprint,
            "log": str(opts.log), "labels": str(opts.labels) if opts.labels else None,
            "status": status, "total": result.total, "position": pos, "pending_until": pend,
            "anchor_ms": int(time.time() * 1000), "events_sent": result.events_sent,
            "labels_sent": result.labels_sent})

    sender = _Sender(producer, timeline, topics, partitions, opts, failures, result, on_progress)
    send_started = time.monotonic()
    try:
        while position < result.total:
            end = min(result.total, position + opts.chunk_items)
            save(position, end)
            position = sender.send(position, end, skip)
            remaining = producer.flush(60)
            if remaining or failures:
                raise ReplayError(_failure_message(remaining, failures))
            result.send_seconds = time.monotonic() - send_started
        save(position, position, "done")
    except KeyboardInterrupt:
        # Everything produced so far is delivered after the flush. The interrupt may have come
        # between a produce call and the position update, so the next two items stay pending
        # (checked against the topic when resuming) rather than assumed unsent.
        done = sender.position
        if not producer.flush(30) and not failures:
            save(done, min(result.total, done + 2))
        raise
    finally:
        result.send_seconds = time.monotonic() - send_started
    return result


def _failure_message(remaining: int, failures: list[str]) -> str:
    if failures:
        return (f"{len(failures)} messages failed delivery (first: {failures[0]}); the "
                "checkpoint was not advanced, so a resumed replay sends them again")
    return f"{remaining} messages still undelivered after 60s; resume to retry them"


def _partition_count(producer, topic: str) -> int:
    md = producer.list_topics(topic, timeout=15)
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise ReplayError(f"topic {topic!r} does not exist (create it with "
                          "`fraudstream topics create`)")
    return len(meta.partitions)


class _Sender:
    """The hot loop: produce timeline items in order, paced when a speed is set."""

    def __init__(self, producer, timeline: Timeline, topics: tuple[str, str],
                 partitions: tuple[int, ...], opts: ReplayOptions, failures: list[str],
                 result: ReplayResult, on_progress) -> None:
        self.producer = producer
        self.tl = timeline
        self.topics = topics
        self.partitions = partitions
        self.opts = opts
        self.failures = failures
        self.result = result
        self.on_progress = on_progress
        self.position = 0
        self.clock_start: float | None = None   # wall clock when pacing started
        self.time_start = 0                     # event time that maps to clock_start
        self.started = time.monotonic()

    def send(self, start: int, end: int, skip: dict[tuple[int, int], int]) -> int:
        """Produce items ``[start, end)``, stopping early when a chunk's time is up; returns
        the next position."""
        tl, producer = self.tl, self.producer
        produce, poll = producer.produce, producer.poll
        topics, kinds, keys, payloads, times = (self.topics, tl.kinds, tl.keys, tl.payloads,
                                                tl.times)
        n_ev, n_lab = self.partitions
        speed = self.opts.speed
        deadline = time.monotonic() + self.opts.chunk_seconds
        sent = [0, 0]
        next_report = 0.0
        i = start
        self.position = start
        if speed is not None and self.clock_start is None and start < end:
            self.clock_start, self.time_start = time.monotonic(), times[start]
        try:
            while i < end:
                kind = kinds[i]
                key = keys[i]
                part = zlib.crc32(key) % (n_lab if kind else n_ev)
                if skip and skip.get((kind, part), -1) >= i:
                    i += 1
                    self.position = i
                    self.result.skipped_in_flight += 1
                    continue
                if speed is not None:
                    self._wait(times[i], speed)
                while True:
                    try:
                        produce(topics[kind], payloads[i], key, part)
                        break
                    except BufferError:
                        poll(0.01)  # local queue full: serve delivery reports, never drop
                sent[kind] += 1
                i += 1
                self.position = i
                # Paced replays check the clock every item (they are slow anyway); at full
                # speed every 4096 items keeps the loop lean.
                if speed is not None or not i & 4095:
                    poll(0)
                    now = time.monotonic()
                    if now >= deadline:
                        break
                    if self.on_progress is not None and now >= next_report:
                        next_report = now + 0.1
                        self._progress(i, sent)
        finally:
            self.result.events_sent += sent[0]
            self.result.labels_sent += sent[1]
        poll(0)
        self._progress(i, [0, 0])
        return i

    def _wait(self, event_time: int, speed: float) -> None:
        due = self.clock_start + (event_time - self.time_start) / 1000.0 / speed
        while True:
            delay = due - time.monotonic()
            if delay <= 0:
                return
            # Serve delivery reports while waiting; wake at least every 50 ms.
            self.producer.poll(min(delay, 0.05))

    def _progress(self, i: int, pending: list[int]) -> None:
        if self.on_progress is None:
            return
        self.on_progress(ReplayProgress(
            position=i, total=self.result.total,
            events_sent=self.result.events_sent + pending[0],
            labels_sent=self.result.labels_sent + pending[1],
            elapsed=time.monotonic() - self.started,
            event_time=self.tl.times[i - 1] if i else None))


# ---------------------------------------------------------------------- resume scan
def _identity(kind: int, payload: bytes) -> tuple | None:
    try:
        obj = wire.loads(payload)
    except wire.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    if kind == _EVENT:
        return (_EVENT, obj.get("event_id"))
    return (_LABEL, obj.get("event_id"), obj.get("label_time"), obj.get("is_fraud"))


def _delivered_pending(settings: Settings, tl: Timeline, topics: tuple[str, str],
                       partitions: tuple[int, ...], start: int, end: int,
                       anchor_ms: int) -> dict[tuple[int, int], int]:
    """For each (kind, partition): the last pending position in ``[start, end)`` whose record
    is already in the topic. Items are matched by identity, in the canonical form (labels'
    times are compared as decoded epoch milliseconds)."""
    from confluent_kafka import Consumer, TopicPartition

    wanted: dict[tuple, int] = {}
    for i in range(start, end):
        ident = _canonical_identity(tl.kinds[i], tl.payloads[i])
        if ident is not None:
            wanted[ident] = i
    found: dict[tuple[int, int], int] = {}
    consumer = Consumer(settings.consumer_config(
        f"fraudstream-replay-scan-{uuid.uuid4().hex[:8]}", **{"isolation.level":
                                                              "read_uncommitted"}))
    try:
        for kind, topic in enumerate(topics):
            query = [TopicPartition(topic, p, max(0, anchor_ms)) for p in range(partitions[kind])]
            starts = consumer.offsets_for_times(query, timeout=15)
            for tp in starts:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, tp.partition), timeout=15, cached=False)
                first = tp.offset if tp.offset >= 0 else high
                if first >= high:
                    continue
                consumer.assign([TopicPartition(topic, tp.partition, first)])
                next_offset = first
                deadline = time.monotonic() + 120
                while next_offset < high and time.monotonic() < deadline:
                    for msg in consumer.consume(10_000, 1.0):
                        if msg.error() is not None:
                            continue
                        next_offset = msg.offset() + 1
                        ident = _canonical_identity(kind, msg.value())
                        pos = wanted.get(ident) if ident is not None else None
                        if pos is not None:
                            found_key = (kind, tp.partition)
                            if pos > found.get(found_key, -1):
                                found[found_key] = pos
                if next_offset < high:
                    raise ReplayError(f"could not read {topic}[{tp.partition}] up to offset "
                                      f"{high} to find what was delivered before the "
                                      "interruption")
    finally:
        consumer.close()
    return found


def _canonical_identity(kind: int, payload: bytes | None) -> tuple | None:
    if payload is None:
        return None
    ident = _identity(kind, payload)
    if ident is None or kind == _EVENT:
        return ident
    # A forwarded label may carry its time in another (valid) form than the re-encoded one.
    from stream.events import parse_time

    try:
        return (_LABEL, ident[1], parse_time(ident[2], "label_time"), ident[3])
    except DecodeError:
        return None
