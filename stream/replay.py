"""Replaying event logs into Kafka in event-time order (behind ``fraudstream replay``).

A replay reads a log of events (JSON Lines or CSV, either gzipped, or Parquet: the readers are
:mod:`stream.logfiles`) and optionally a log of labels, validates every record against the
contract (``stream.events``), and sends the events to the events topic and the labels to the
labels topic on one timeline: a label whose ``label_time`` is T goes out after every event with
``event_time`` <= T and before the later ones. ``speed=None`` sends as fast as the broker takes
it; ``speed=60`` keeps inter-arrival times, sixty times faster.

Invalid records never reach Kafka: each is reported with its file and line (or Parquet row)
number and written, with the reason, to a rejects file (JSON Lines). Records that are already
canonical (integer epoch-ms times, contract fields only, no nulls) are forwarded as the bytes that
were read, and when no mapping applies they are recognised by a cheap check
(:func:`stream.events.is_canonical_event`) instead of the full decoder; everything else is sent in
the canonical encoding, like ``EventPublisher`` does.

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

import hashlib
import os
import re
import time
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from stream import wire
from stream.events import (DEFAULT_MAX_BYTES, event_from_dict, is_canonical_event,
                           is_canonical_label, label_from_dict)
from stream.exceptions import DecodeError, FraudstreamError
from stream.logfiles import _open_binary, _parse_lines, detect_format, read_records, unit
from stream.mapping import ColumnMapping
from stream.settings import Settings

__all__ = [
    "ReplayError",
    "ReplayOptions",
    "RecordMapping",
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
# Foreign logs name and type things their own way. Renames, time formats and the conversion of
# text cells are the shared ``stream.mapping.ColumnMapping`` (``--map SOURCE=FIELD[:FORMAT]``,
# ``--tz``); a replay adds constants for fields a log lacks (``--set event_type=transaction``)
# and turns numeric ids into strings. Validation stays with the contract decoder, so every
# rejection still names the contract field.
_ID_FIELDS = ("event_id", "user_id", "merchant_id", "card_id", "device_id")
_CONSTANT_FIELDS = frozenset({"event_type", "currency", "country", "channel", "source",
                              "merchant_id"})


@dataclass(frozen=True)
class RecordMapping:
    """Column mapping plus constants, applied to each raw record before validation.

    >>> m = RecordMapping(ColumnMapping.parse("CUSTOMER=user_id,SHOP=merchant_id,"
    ...                                       "TS=event_time:epoch_s"), (("currency", "EUR"),))
    >>> row = m.apply({"CUSTOMER": 42, "SHOP": "s1", "TS": 1767225600, "amount": "9.90",
    ...                "event_id": "e1", "event_type": "transaction"})
    >>> row["user_id"], row["event_time"], row["amount"], row["currency"]
    ('42', 1767225600000, 9.9, 'EUR')
    """

    columns: ColumnMapping = field(default_factory=ColumnMapping)
    constants: tuple[tuple[str, str], ...] = ()

    def apply(self, row: dict[str, Any]) -> dict[str, Any]:
        """The record with contract names and types; ``row`` itself when nothing changed
        (the caller forwards such input as it was read when it is canonical)."""
        out = self.columns.apply(row)
        if self.constants:
            if out is row:
                out = dict(row)
            out.update(self.constants)
        for name in _ID_FIELDS:
            if type(out.get(name)) is int:
                if out is row:
                    out = dict(row)
                out[name] = str(out[name])
        return out

    @property
    def is_identity(self) -> bool:
        """No renames, time formats or constants: a record that is already canonical passes
        through :meth:`apply` unchanged."""
        return not (self.columns.renames or self.columns.formats or self.constants)

    def describe(self) -> str:
        return f"map={self.columns};tz={self.columns.timezone};set={self.constants!r}"


IDENTITY = RecordMapping()


def parse_constants(items: str | tuple[str, ...] | list[str] | None) -> tuple[tuple[str, str], ...]:
    """``--set FIELD=VALUE`` pairs (comma-separated or repeated).

    >>> parse_constants(("event_type=transaction", "currency=EUR"))
    (('event_type', 'transaction'), ('currency', 'EUR'))
    """
    if items is None:
        return ()
    parts: list[str] = []
    for chunk in ([items] if isinstance(items, str) else items):
        parts.extend(p for p in chunk.split(",") if p.strip())
    out: list[tuple[str, str]] = []
    for part in parts:
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not value:
            raise ValueError(f"--set: expected FIELD=VALUE, got {part!r}")
        if name not in _CONSTANT_FIELDS:
            raise ValueError(f"--set: {name!r} cannot be a constant (one of "
                             f"{', '.join(sorted(_CONSTANT_FIELDS))})")
        out.append((name, value))
    return tuple(out)


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
    """A ``--from``/``--to`` bound: RFC 3339 (or ISO 8601 with ``timezone``) or epoch ms."""
    if text is None:
        return None
    from stream.mapping import parse_time_value

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
    fmt: str | None = None                     # "jsonl" | "csv" | "parquet"; None: detect
    chunk_items: int = 100_000                 # items per checkpoint at most
    chunk_seconds: float = 1.0                 # and at least one checkpoint this often
    load_workers: int | None = None            # validating processes; None: by file size


# ---------------------------------------------------------------------- reading logs
# The readers live in stream.logfiles (shared with backtest and features compute); these names
# stay importable from here.

class Rejects:
    """Collects rejected records; writes them, with reasons and line numbers, as JSON Lines."""

    def __init__(self, path: Path | None, keep: int = 20) -> None:
        self.path = path
        self.count = 0
        self.first: list[str] = []   # the first ``keep`` messages, for the terminal
        self._keep = keep
        self._out: BinaryIO | None = None

    def add(self, source: Path, kind: str, line: int, exc: DecodeError, raw: bytes,
            fmt: str = "jsonl") -> None:
        """One rejected record; ``line`` is a row number when ``fmt`` is ``parquet``."""
        self.count += 1
        counts = unit(fmt)
        message = f"{source.name}:{'row ' if counts == 'row' else ''}{line}: {exc}"
        if len(self.first) < self._keep:
            self.first.append(message)
        if self.path is None:
            return
        if self._out is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._out = self.path.open("wb")
        self._out.write(wire.dumps_line({
            "file": str(source), counts: line, "kind": kind, "field": exc.field,
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
             rejects: Rejects | None = None, workers: int = 1,
             on_progress: Callable[[int], None] | None = None) -> LoadedLog:
    """Read, map and validate every record of ``path`` (``kind``: ``event`` or ``label``).

    With ``workers`` > 1, JSON Lines are validated in that many processes (blocks of lines,
    results merged in file order): validation is most of a replay's cost.
    """
    if kind not in ("event", "label"):
        raise ValueError(f"kind must be 'event' or 'label', got {kind!r}")
    fmt = fmt or detect_format(path)
    rejects = rejects if rejects is not None else Rejects(None)
    spec = _LoadSpec(kind, mapping, -1 if start_ms is None else start_ms,
                     1 << 62 if end_ms is None else end_ms, max_bytes, fmt == "jsonl")
    if workers > 1 and fmt == "jsonl":
        return _load_parallel(path, spec, rejects, workers, on_progress)
    out = LoadedLog(path=path, kind=kind)

    def reject(number: int, exc: DecodeError, raw: bytes) -> None:
        rejects.add(path, kind, number, exc, raw, fmt)  # type: ignore[arg-type]

    _load_into(out, read_records(path, fmt, max_bytes), spec, reject, on_progress)
    return out


@dataclass(frozen=True)
class _LoadSpec:
    kind: str
    mapping: RecordMapping
    lo: int
    hi: int
    max_bytes: int
    forward_raw: bool


def _load_into(out: LoadedLog, records: Iterable[tuple[int, bytes, Any]], spec: _LoadSpec,
               reject: Callable[[int, DecodeError, bytes], None],
               on_progress: Callable[[int], None] | None = None) -> None:
    is_event = spec.kind == "event"
    decode = event_from_dict if is_event else label_from_dict
    canonical = _EVENT_CANONICAL if is_event else _LABEL_CANONICAL
    time_name = "event_time" if is_event else "label_time"
    key_name = "user_id" if is_event else "merchant_id"
    lo, hi, max_bytes, forward_raw = spec.lo, spec.hi, spec.max_bytes, spec.forward_raw
    apply = spec.mapping.apply
    # Records already in the wire form skip the mapping and the decoder (most of a replay's
    # cost): the check accepts only what the decoder would accept unchanged.
    fast = None
    if forward_raw and spec.mapping.is_identity:
        fast = is_canonical_event if is_event else is_canonical_label
    times, keys, payloads = out.times, out.keys, out.payloads
    read, fast_forwarded = out.read, 0
    for number, raw, obj in records:
        read += 1
        if on_progress is not None and not read & 65535:
            out.read = read
            on_progress(read)
        if fast is not None and fast(obj):
            t = obj[time_name]
            if lo <= t < hi:
                times.append(t)
                keys.append(obj[key_name].encode())
                payloads.append(raw)
                fast_forwarded += 1
            else:
                out.outside += 1
            continue
        try:
            if type(obj) is not dict:
                raise obj
            row = apply(obj)
            record = decode(row)
        except DecodeError as exc:
            out.rejected += 1
            reject(number, exc, raw)
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
                reject(number, DecodeError(f"{spec.kind} is {len(payload)} bytes encoded, over "
                                           f"the {max_bytes}-byte limit", code="too_large"), raw)
                continue
        times.append(t)
        keys.append((record.user_id if is_event else record.merchant_id).encode())
        payloads.append(payload)
    out.read = read
    out.forwarded_as_read += fast_forwarded


_BLOCK_BYTES = 4 << 20


def _load_block(block: bytes, first: int, spec: _LoadSpec, path: Path) -> tuple:
    """Worker side of :func:`_load_parallel`: one block of whole lines."""
    out = LoadedLog(path=path, kind=spec.kind)
    rejected: list[tuple] = []

    def reject(number: int, exc: DecodeError, raw: bytes) -> None:
        rejected.append((number, exc.reason, exc.field, exc.code, raw))

    _load_into(out, _parse_lines([block.split(b"\n")], first, spec.max_bytes), spec,
               reject)
    return (out.times.tobytes(), out.keys, out.payloads, rejected, out.read, out.outside,
            out.forwarded_as_read)


def _blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines and the number of each block's first line."""
    first, rest = 1, b""
    with _open_binary(path) as fh:
        while True:
            data = fh.read(_BLOCK_BYTES)
            if not data:
                break
            data = rest + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                rest = data
                continue
            block, rest = data[:cut], data[cut:]
            yield block, first
            first += block.count(b"\n")
    if rest:
        yield rest, first


def _load_parallel(path: Path, spec: _LoadSpec, rejects: Rejects, workers: int,
                   on_progress: Callable[[int], None] | None) -> LoadedLog:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out = LoadedLog(path=path, kind=spec.kind)
    # spawn, not fork: the parent may already run librdkafka threads (admin client), and a
    # forked child would inherit their locks in whatever state they were.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        pending: list = []
        blocks = _blocks(path)

        def merge(result: tuple) -> None:
            times, keys, payloads, rejected, read, outside, forwarded = result
            out.times.frombytes(times)
            out.keys.extend(keys)
            out.payloads.extend(payloads)
            out.read += read
            out.outside += outside
            out.forwarded_as_read += forwarded
            for number, reason, field_name, code, raw in rejected:
                out.rejected += 1
                rejects.add(path, spec.kind, number, DecodeError(reason, field_name, code=code),
                            raw)
            if on_progress is not None:
                on_progress(out.read)

        for block, first in blocks:
            pending.append(pool.submit(_load_block, block, first, spec, path))
            if len(pending) >= 2 * workers:  # bounded read-ahead
                merge(pending.pop(0).result())
        for fut in pending:
            merge(fut.result())
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
    load_cpu_seconds: float = 0.0  # process CPU time (all threads, librdkafka's included)
    send_cpu_seconds: float = 0.0
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
    started, started_cpu = time.monotonic(), time.process_time()
    try:
        events = load_log(opts.log, "event", fmt=opts.fmt, mapping=opts.mapping,
                          start_ms=opts.start_ms, end_ms=opts.end_ms, max_bytes=max_bytes,
                          rejects=rejects, workers=_workers(opts, opts.log),
                          on_progress=(lambda n: on_load_progress("events", n))
                          if on_load_progress else None)
        labels = None
        if opts.labels is not None:
            labels = load_log(opts.labels, "label", fmt=opts.fmt,
                              mapping=opts.labels_mapping or opts.mapping,
                              start_ms=opts.start_ms, end_ms=opts.end_ms, max_bytes=max_bytes,
                              rejects=rejects, workers=_workers(opts, opts.labels),
                              on_progress=(lambda n: on_load_progress(
                                  "labels", n)) if on_load_progress else None)
    finally:
        rejects.close()
    timeline = build_timeline(events, labels)
    result = ReplayResult(events=events, labels=labels, total=len(timeline),
                          load_seconds=time.monotonic() - started,
                          load_cpu_seconds=time.process_time() - started_cpu,
                          checkpoint=checkpoint)

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
    send_started, send_started_cpu = time.monotonic(), time.process_time()
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
        result.send_cpu_seconds = time.process_time() - send_started_cpu
    return result


def _workers(opts: ReplayOptions, path: Path) -> int:
    if opts.load_workers is not None:
        return max(1, opts.load_workers)
    # Starting worker processes costs about half a second, and the main process and the
    # producer's threads need a core: worth it for logs of a few MB on machines with spare cores.
    compressed = path.name.endswith(".gz")
    cores = os.cpu_count() or 1
    if cores < 3 or path.stat().st_size < (2 << 20 if compressed else 16 << 20):
        return 1
    return min(4, cores - 1)


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
