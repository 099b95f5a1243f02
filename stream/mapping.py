"""Column mappings for offline logs, shared by ``fraudstream replay`` and ``features compute``.

A mapping says how a source file's columns become contract fields, written once on the command
line as ``--map SOURCE=TARGET[:FORMAT],...`` (spaces ignored). ``FORMAT`` is for the time fields
(``event_time``, ``label_time``): ``auto`` (default: integers are epoch milliseconds, strings are
digits or RFC 3339), ``epoch_ms``, ``epoch_s`` or ``iso``. ``timezone`` (an IANA name) applies to
ISO timestamps without a UTC offset, which are otherwise rejected as the contract requires.
Timestamp values (``datetime``: Parquet timestamp columns) are taken as they are, whatever the
format; ``timezone`` applies to those without a time zone, which are otherwise rejected too.

>>> m = ColumnMapping.parse("ts=event_time:epoch_s, uid=user_id ,amt=amount")
>>> m.apply({"ts": "1767225600.5", "uid": "u1", "amt": "12.5", "shop": "web"})
{'event_time': 1767225600500, 'user_id': 'u1', 'amount': 12.5, 'shop': 'web'}
>>> rec = {"event_time": 1767225600000, "user_id": "u1"}
>>> IDENTITY.apply(rec) is rec          # nothing to change: the same object comes back
True
>>> ColumnMapping.parse("a=user_id,b=user_id")
Traceback (most recent call last):
...
stream.exceptions.ConfigError: --map: both 'a' and 'b' map to 'user_id'

Columns not named keep their names. Since CSV cells are strings, :meth:`ColumnMapping.apply` also
turns the contract's numeric and boolean fields (``amount``, ``is_fraud``, ``schema_version``)
from strings into numbers and booleans; what it cannot convert it leaves for validation
(``stream.events``) to reject with the field's name, and bad times raise
:class:`~stream.exceptions.DecodeError` here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from stream.events import parse_time
from stream.exceptions import ConfigError, DecodeError

__all__ = ["ColumnMapping", "IDENTITY", "TIME_FORMATS", "parse_time_value"]

TIME_FORMATS = ("auto", "epoch_ms", "epoch_s", "iso")
_TIME_FIELDS = ("event_time", "label_time")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class ColumnMapping:
    """Source column -> contract field renames, time formats per field, and a time zone."""

    renames: tuple[tuple[str, str], ...] = ()
    formats: tuple[tuple[str, str], ...] = ()
    timezone: str | None = None

    @classmethod
    def parse(cls, text: str | None, timezone: str | None = None) -> "ColumnMapping":
        """Read ``"a=b,c=event_time:epoch_s"``; empty or ``None`` means keep every name."""
        pairs: list[tuple[str, str]] = []
        formats: dict[str, str] = {}
        targets: dict[str, str] = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            src, sep, dst = item.partition("=")
            src, dst = src.strip(), dst.strip()
            dst, _, fmt = dst.partition(":")
            dst, fmt = dst.strip(), fmt.strip()
            if not sep or not src or not dst:
                raise ConfigError(f"--map: expected SOURCE=TARGET[:FORMAT], got {item!r}")
            if any(src == s for s, _ in pairs):
                raise ConfigError(f"--map: {src!r} is mapped twice")
            if dst in targets:
                raise ConfigError(f"--map: both {targets[dst]!r} and {src!r} map to {dst!r}")
            if fmt:
                if dst not in _TIME_FIELDS:
                    raise ConfigError(f"--map: a format is only for {' and '.join(_TIME_FIELDS)}"
                                      f", not {dst!r}")
                if fmt not in TIME_FORMATS:
                    raise ConfigError(f"--map: unknown time format {fmt!r} "
                                      f"(one of {', '.join(TIME_FORMATS)})")
                formats[dst] = fmt
            targets[dst] = src
            if src != dst:
                pairs.append((src, dst))
        if timezone is not None:
            try:
                ZoneInfo(timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ConfigError(f"--tz: unknown time zone {timezone!r}") from None
        return cls(tuple(pairs), tuple(sorted(formats.items())), timezone)

    def apply(self, record: Mapping[str, Any]) -> Any:
        """The record with contract names and types; ``record`` itself if nothing changes."""
        row: Any = record
        if self.renames:
            renames = dict(self.renames)
            targets = set(renames.values())
            row = {}
            for key, value in record.items():
                if key in renames:
                    row[renames[key]] = value
                elif key not in targets:
                    row.setdefault(key, value)
        formats = dict(self.formats)
        for name in _TIME_FIELDS:
            value = row.get(name)
            fmt = formats.get(name, "auto")
            if value is None or (type(value) is int and fmt in ("auto", "epoch_ms")):
                continue
            row = _copy(row, record)
            row[name] = parse_time_value(value, fmt, self.timezone, name)
        amount = row.get("amount")
        if isinstance(amount, str):
            try:
                converted = float(amount)
            except ValueError:
                converted = None
            if converted is not None:
                row = _copy(row, record)
                row["amount"] = converted
        for name, kinds in (("is_fraud", _BOOLS), ("schema_version", None)):
            value = row.get(name)
            if isinstance(value, str):
                text = value.strip().lower()
                if kinds is not None and text in kinds:
                    row = _copy(row, record)
                    row[name] = kinds[text]
                elif kinds is None and text.isdigit():
                    row = _copy(row, record)
                    row[name] = int(text)
        return row

    def __str__(self) -> str:
        fmts = dict(self.formats)
        items = [f"{a}={b}" + (f":{fmts[b]}" if b in fmts else "") for a, b in self.renames]
        items += [f"{b}={b}:{f}" for b, f in self.formats if b not in dict(self.renames).values()]
        return ",".join(items)


def _copy(row: Any, record: Any) -> dict[str, Any]:
    return dict(row) if row is record else row


IDENTITY = ColumnMapping()


def parse_time_value(value: Any, fmt: str = "auto", timezone: str | None = None,
                     name: str = "time") -> int:
    """Epoch milliseconds from ``value`` read as ``fmt`` (see the module docstring).

    >>> parse_time_value("2026-01-01T01:00:00", "iso", "Europe/Paris", "ts")
    1767225600000
    >>> parse_time_value(1767225600, "epoch_s"), parse_time_value("1767225600000")
    (1767225600000, 1767225600000)
    >>> parse_time_value(datetime(2026, 1, 1, 1, 0, 0, 250000), "auto", "Europe/Paris")
    1767225600250
    """
    if fmt not in TIME_FORMATS:
        raise ValueError(f"unknown time format {fmt!r}")
    if isinstance(value, datetime):
        return _datetime_ms(value, timezone, name)
    if isinstance(value, bool):
        raise DecodeError("must be a time, got a boolean", name)
    if fmt in ("epoch_ms", "epoch_s") or (fmt == "auto" and _numeric(value)):
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise DecodeError(f"not a number of {'seconds' if fmt == 'epoch_s' else 'ms'}: "
                              f"{value!r}", name) from None
        ms = number * 1000 if fmt == "epoch_s" else number
        if ms != ms.to_integral_value() and fmt != "epoch_s":
            raise DecodeError(f"epoch milliseconds must be whole: {value!r}", name)
        return parse_time(int(ms.to_integral_value()), name)
    if not isinstance(value, str):
        raise DecodeError(f"expected an RFC 3339 string, got {type(value).__name__}", name)
    if timezone is not None:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"not an RFC 3339 timestamp: {value!r}", name) from None
        if parsed.tzinfo is None:
            return parse_time(parsed.replace(tzinfo=ZoneInfo(timezone)).isoformat(), name)
    return parse_time(value, name)


def _datetime_ms(value: datetime, timezone: str | None, name: str) -> int:
    """A timestamp column's value (Parquet): whatever ``fmt`` says, it is a point in time."""
    if value.tzinfo is None:
        if timezone is None:
            raise DecodeError(f"timestamp without a time zone ({value.isoformat()}): say which "
                              "zone with --tz", name)
        value = value.replace(tzinfo=ZoneInfo(timezone))
    delta = value - _EPOCH
    return parse_time((delta.days * 86_400 + delta.seconds) * 1000
                      + delta.microseconds // 1000, name)


_EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)


def _numeric(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
