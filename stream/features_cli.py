"""``fraudstream features``: validate feature definitions, compute point-in-time training data.

``features check FILE`` validates a feature TOML file and prints the feature names it defines.
``features compute LOG --config FILE --out OUT`` runs the engine offline over an event log (and a
label log) and writes every event's feature vector as JSON Lines (Parquet for ``OUT.parquet``),
exactly as the worker computes it at that event's time: events in log order (their arrival
order), each label applied before the first event after which the log's latest event time has
reached the label's ``label_time``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import IO, Any, Iterator

import click

from features import config as feature_config
from features.default import default_feature_set
from features.definitions import FeatureSet
from features.engine import FeatureEngine
from features.exceptions import FeatureConfigError, FeatureError
from stream import wire
from stream.events import event_from_dict, label_from_dict
from stream.exceptions import ConfigError, DecodeError
from stream.logfiles import ParquetRows, detect_format, read_records, where
from stream.mapping import IDENTITY, ColumnMapping
from stream.state import open_store

__all__ = ["features", "compute", "iter_log"]

_ID_COLUMNS = ("event_id", "event_time", "user_id", "merchant_id")
# Parquet types of the columns that are not features (those take the types of their values).
_PARQUET_TYPES = {"event_id": "string", "event_time": "int64", "user_id": "string",
                  "merchant_id": "string", "is_fraud": "bool"}


@click.group(name="features")
def features() -> None:
    """Feature definitions and offline feature computation."""


def _load(path: str | None) -> FeatureSet:
    return default_feature_set() if path is None else feature_config.load(path)


@features.command("check")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def check_cmd(file: str | None) -> None:
    """Validate FILE (the default set if omitted) and print its feature names."""
    try:
        fs = _load(file)
    except FeatureConfigError as exc:
        raise click.ClickException(str(exc)) from None
    engine = FeatureEngine(fs)
    for name in engine.names:
        click.echo(name)
    groups = engine._groups  # noqa: SLF001 - summary for humans
    click.echo(f"# {len(engine.names)} features, {len(groups)} entity groups, "
               f"{sum(len(g.rings) for g in groups)} windows; grace {fs.grace}, ttl {fs.ttl}",
               err=True)


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # The readers ``fraudstream replay`` and ``backtest`` use (JSON Lines, CSV, Parquet).
    fmt = detect_format(path)
    for number, _raw, obj in read_records(path, fmt):
        if type(obj) is not dict:
            raise DecodeError(f"{path.parent / where(path, number, fmt)}: {obj}",
                              code=obj.code)
        yield number, obj


def iter_log(path: Path, kind: str, mapping: ColumnMapping) -> Iterator[Any]:
    """Validated events or labels from a JSON Lines/CSV log (``.gz`` too) or a Parquet file, in
    file order; the first invalid record raises :class:`DecodeError` naming its line or row."""
    decode = event_from_dict if kind == "event" else label_from_dict
    fmt = detect_format(path)
    for number, obj in _records(path):
        try:
            yield decode(mapping.apply(obj))
        except DecodeError as exc:
            raise DecodeError(f"{path.parent / where(path, number, fmt)}: {exc}",
                              code=exc.code) from None


def compute(events: Iterator[Any], labels: list[Any], fs: FeatureSet,
            out: IO[bytes] | ParquetRows, *, backend: str = "memory",
            state_path: str | None = None, cache_entries: int = 1_000_000) -> dict[str, int]:
    """Write one row per event: its ids, its features, and ``is_fraud`` when labelled; to
    ``out`` as JSON Lines, or as Parquet rows when ``out`` is a :class:`ParquetRows`."""
    if isinstance(out, ParquetRows):
        write_row = out.write_row
    else:
        def write_row(row: dict[str, Any]) -> None:
            out.write(wire.dumps_line(row))
    labels = sorted(labels, key=lambda lab: lab.label_time)  # stable: file order on ties
    final = {lab.event_id: lab.is_fraud for lab in labels} if labels else None
    # No changelog: the store is flushed only when it closes, and would keep every value
    # written over the whole log until then.
    store = open_store(backend, state_path, cache_entries=cache_entries, changelog=False)
    engine = FeatureEngine(fs, store)
    clash = set(engine.names) & {*_ID_COLUMNS, "is_fraud"}
    if clash:
        raise FeatureConfigError(f"feature names clash with output columns: {sorted(clash)}")
    watermark, li, written = -1, 0, 0
    try:
        for event in events:
            watermark = max(watermark, event.event_time)
            while li < len(labels) and labels[li].label_time <= watermark:
                engine.process_label(labels[li])
                li += 1
            row: dict[str, Any] = {name: getattr(event, name) for name in _ID_COLUMNS}
            row.update(engine.process(event))
            if final is not None:
                row["is_fraud"] = final.get(event.event_id)
            write_row(row)
            written += 1
    finally:
        store.close()
    stats = engine.stats
    return {"events": written, "late": stats.late, "labels": li,
            "labels_unmatched": stats.labels_unmatched}


@features.command("compute")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Feature definition TOML (default: the built-in default set).")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output file: JSON Lines ('-' for stdout), or Parquet when the name ends "
                   "in .parquet.")
@click.option("--labels", "labels_path", type=click.Path(exists=True, dir_okay=False,
                                                         path_type=Path),
              help="Label log (JSON Lines, CSV or Parquet).")
@click.option("--map", "map_spec", default=None,
              help="Column mapping SOURCE=TARGET[:FORMAT],... (as for replay).")
@click.option("--labels-map", "labels_map_spec", default=None,
              help="Column mapping for the label log (default: --map; '' for none).")
@click.option("--tz", "timezone", default=None,
              help="Time zone for ISO timestamps without an offset.")
@click.option("--state", "backend", type=click.Choice(["memory", "rocksdb"]), default="memory",
              show_default=True, help="Where entity state lives while computing.")
@click.option("--state-dir", default=None, help="RocksDB directory for --state rocksdb.")
def compute_cmd(log: Path, config_file: str | None, out_path: str, labels_path: Path | None,
                map_spec: str | None, labels_map_spec: str | None, timezone: str | None,
                backend: str,
                state_dir: str | None) -> None:
    """Compute point-in-time feature vectors for every event in LOG."""
    try:
        fs = _load(config_file)
        mapping = ColumnMapping.parse(map_spec, timezone) if (map_spec or timezone) else IDENTITY
        if backend == "rocksdb" and not state_dir:
            raise ConfigError("--state rocksdb needs --state-dir")
        labels_mapping = (mapping if labels_map_spec is None
                          else ColumnMapping.parse(labels_map_spec, timezone))
        labels = list(iter_log(labels_path, "label", labels_mapping)) if labels_path else []
        out: IO[bytes] | ParquetRows
        if out_path.lower().endswith(".parquet"):
            out = ParquetRows(out_path, _PARQUET_TYPES)
        else:
            out = sys.stdout.buffer if out_path == "-" else open(out_path, "wb")  # noqa: SIM115
        try:
            stats = compute(iter_log(log, "event", mapping), labels, fs, out, backend=backend,
                            state_path=state_dir)
        finally:
            if out_path != "-":
                out.close()
    except (FeatureError, ConfigError, DecodeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{stats['events']} events ({stats['late']} late), {stats['labels']} labels "
               f"({stats['labels_unmatched']} unmatched) -> {out_path}", err=True)
