"""Reading event and label logs: JSON Lines, CSV (either gzipped) and Parquet.

Shared by ``fraudstream replay``, ``fraudstream backtest`` (through :func:`stream.replay.load_log`)
and ``fraudstream features compute``. :func:`read_records` yields every record as a plain dict in
source column names, with its line or row number and its raw bytes (for the rejects file), or a
:class:`~stream.exceptions.DecodeError` in its place; renaming and typing the columns is
:mod:`stream.mapping`'s, validating them :mod:`stream.events`'.

A missing cell is an absent field in every format: CSV cannot say null, and a null Parquet cell is
treated the same. Parquet timestamp columns arrive as ``datetime`` values (to the millisecond),
which :func:`stream.mapping.parse_time_value` takes as they are (a column without a time zone
needs ``--tz``); decimal columns arrive as floats. Parquet files are read a batch of rows at a
time, so reading needs memory for one row group, not the file. :class:`ParquetRows` writes rows
the same way (``features compute --out X.parquet``). Parquet needs ``pyarrow``
(``pip install "fraudstream[parquet]"``).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from stream import wire
from stream.events import DEFAULT_MAX_BYTES
from stream.exceptions import ConfigError, DecodeError

__all__ = ["FORMATS", "ParquetRows", "detect_format", "read_records", "require_pyarrow", "unit",
           "where"]

FORMATS = ("jsonl", "csv", "parquet")
_PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH_ROWS = 65_536
_INSTALL_HINT = 'pip install "fraudstream[parquet]"'


def _open_binary(path: Path) -> BinaryIO:
    fh = path.open("rb")
    magic = fh.read(2)
    fh.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


def detect_format(path: Path) -> str:
    """``jsonl``, ``csv`` or ``parquet``: by file name (``.csv``, ``.csv.gz``, ``.parquet``),
    else by the content (Parquet's magic bytes, a JSON object's first byte)."""
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    with path.open("rb") as raw:
        if raw.read(4) == _PARQUET_MAGIC:
            return "parquet"
    with _open_binary(path) as fh:
        head = fh.read(4096).lstrip()
    return "jsonl" if head[:1] in (b"{", b"") else "csv"


def unit(fmt: str) -> str:
    """What a record's number counts in a log of format ``fmt``: ``row`` or ``line``."""
    return "row" if fmt == "parquet" else "line"


def where(path: Path, number: int, fmt: str | None = None) -> str:
    """``events.jsonl:12`` or ``events.parquet:row 12``, for messages about one record."""
    fmt = fmt or ("parquet" if path.name.lower().endswith((".parquet", ".pq")) else "jsonl")
    return f"{path.name}:row {number}" if fmt == "parquet" else f"{path.name}:{number}"


def read_records(path: Path, fmt: str,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[tuple[int, bytes, Any]]:
    """``(number, raw bytes, dict or DecodeError)`` for every non-blank record; the number is
    the line (JSON Lines, CSV) or the row counted from 1 (Parquet), the raw bytes are the line
    as read or, for CSV and Parquet, the record as JSON."""
    if fmt == "jsonl":
        yield from _read_jsonl(path, max_bytes)
    elif fmt == "csv":
        yield from _read_csv(path)
    elif fmt == "parquet":
        yield from _read_parquet(path)
    else:
        raise ConfigError(f"unknown log format {fmt!r} (jsonl, csv or parquet)")


def _read_jsonl(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes, Any]]:
    yield from _parse_lines(_line_blocks(path), 1, max_bytes)


_READ_BYTES = 1 << 20


def _line_blocks(path: Path) -> Iterator[list[bytes]]:
    """The lines of ``path`` (without their newlines), a megabyte's worth at a time: splitting
    a block costs a fraction of ``readline`` per line, most of all on gzip files."""
    rest = b""
    with _open_binary(path) as fh:
        read = fh.read
        while True:
            data = read(_READ_BYTES)
            if not data:
                break
            lines = (rest + data).split(b"\n") if rest else data.split(b"\n")
            rest = lines.pop()
            yield lines
    if rest:
        yield [rest]


def _parse_lines(blocks: Iterable[list[bytes]], first: int,
                 max_bytes: int) -> Iterator[tuple[int, bytes, Any]]:
    loads = wire.loads
    number = first - 1
    for lines in blocks:
        for line in lines:
            number += 1
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
            if type(obj) is not dict:  # orjson gives plain dicts
                yield number, line, DecodeError("record must be a JSON object",
                                                code="bad_json")
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


# ---------------------------------------------------------------------- Parquet
def require_pyarrow(what: str = "reading Parquet") -> Any:
    """The ``pyarrow`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(f"{what} needs pyarrow, which is not installed: "
                          f"{_INSTALL_HINT}") from None
    return pyarrow


def _read_parquet(path: Path,
                  batch_rows: int = _PARQUET_BATCH_ROWS) -> Iterator[tuple[int, bytes, Any]]:
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        yield 1, b"", DecodeError(f"unreadable Parquet file: {exc}", code="bad_parquet")
        return
    casts = _parquet_casts(pa, source.schema_arrow)
    number = 0
    try:
        for batch in source.iter_batches(batch_size=batch_rows):
            if casts:
                batch = pa.RecordBatch.from_arrays(
                    [column.cast(casts[name], safe=False) if name in casts else column
                     for name, column in zip(batch.schema.names, batch.columns)],
                    names=batch.schema.names)
            for row in batch.to_pylist():
                number += 1
                rec = {k: v for k, v in row.items() if v is not None}
                attributes = rec.get("attributes")
                if type(attributes) is str and attributes.lstrip().startswith("{"):
                    try:
                        rec["attributes"] = wire.loads(attributes)
                    except wire.JSONDecodeError:
                        pass
                yield number, _shown(rec), rec
    except (pa.ArrowException, OSError, ValueError, OverflowError) as exc:
        yield number + 1, b"", DecodeError(f"unreadable Parquet data: {exc}",
                                           code="bad_parquet")


def _parquet_casts(pa: Any, schema: Any) -> dict[str, Any]:
    """Column types to read as another: timestamps to milliseconds (the contract's precision;
    ``datetime`` cannot hold nanoseconds), decimals to floats (the contract's amounts)."""
    casts = {}
    for column in schema:
        kind = column.type
        if pa.types.is_timestamp(kind) and kind.unit != "ms":
            casts[column.name] = pa.timestamp("ms", tz=kind.tz)
        elif pa.types.is_decimal(kind):
            casts[column.name] = pa.float64()
    return casts


def _shown(rec: dict[str, Any]) -> bytes:
    """The record as JSON for the rejects file (bytes and other values JSON lacks as text)."""
    try:
        return wire.dumps(rec)
    except TypeError:
        return wire.dumps({k: v if isinstance(v, (str, int, float, bool, dict, list))
                           else str(v) for k, v in rec.items()})


class ParquetRows:
    """Rows (dicts with the same keys) written to a Parquet file, a row group per ``batch_rows``.

    Column types are those of the first batch (``types`` names some up front); a column with no
    value in the first batch is a float column. A later value of another type is an error.
    """

    def __init__(self, path: Path | str, types: dict[str, str] | None = None,
                 batch_rows: int = _PARQUET_BATCH_ROWS) -> None:
        self._pa = require_pyarrow("writing Parquet")
        self.path = Path(path)
        self._types = {name: self._pa.type_for_alias(alias)
                       for name, alias in (types or {}).items()}
        self._batch_rows = batch_rows
        self._rows: list[dict[str, Any]] = []
        self._writer: Any = None
        self._schema: Any = None

    def write_row(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        pa = self._pa
        if self._schema is None:
            import pyarrow.parquet as pq

            fields = []
            if self._rows:
                for column in pa.Table.from_pylist(self._rows).schema:
                    kind = self._types.get(column.name, column.type)
                    fields.append(pa.field(column.name, pa.float64()
                                           if pa.types.is_null(kind) else kind))
            else:
                fields = [pa.field(name, kind) for name, kind in self._types.items()]
            self._schema = pa.schema(fields)
            self._writer = pq.ParquetWriter(self.path, self._schema)
        if not self._rows:
            return
        try:
            table = pa.Table.from_pylist(self._rows, schema=self._schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise ConfigError(f"{self.path}: a column's values changed type ({exc}); write "
                              "JSON Lines instead") from None
        self._writer.write_table(table)
        self._rows = []

    def close(self) -> None:
        """Write what is buffered and close the file (an empty file still has the columns)."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
