"""``fraudstream replay LOG``: send a log of events (and labels) into Kafka in event-time order.

The work is done by :func:`stream.replay.replay`; this module parses flags, shows a progress bar
with rate and ETA, and prints the summary. See ``docs/replay.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stream.progress import ProgressBar, event_time_label

__all__ = ["replay"]


@click.command("replay")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", "labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labels log, sent to the labels topic at their label time.")
@click.option("--speed", default="max", show_default=True,
              help="'max', or a factor such as 60x (keeps inter-arrival times, 60 times faster).")
@click.option("--from", "from_", metavar="TIME",
              help="Only records at or after TIME (ISO 8601 or epoch s/ms).")
@click.option("--to", metavar="TIME", help="Only records before TIME.")
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD[:FORMAT],...",
              help="Rename a column of the log to a contract field; FORMAT (auto, epoch_ms, "
                   "epoch_s, iso) says how a time column is written. Repeatable.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE,...",
              help="A constant for a field the log lacks, e.g. event_type=transaction.")
@click.option("--labels-map", "labels_maps", multiple=True, metavar="COLUMN=FIELD[:FORMAT],...",
              help="Mapping for the labels log (default: --map).")
@click.option("--tz", "tz", metavar="ZONE",
              help="Zone of ISO times written without an offset (e.g. UTC, Europe/Berlin).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="Log format (default: from the file name, else the content).")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="Progress file for resuming (default: .fraudstream/replay/<log>-<hash>."
                   "checkpoint.json).")
@click.option("--restart", is_flag=True, help="Ignore an existing checkpoint; replay everything.")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
              help="Where rejected records go, with reasons and line numbers (default: next to "
                   "the checkpoint, <log>-<hash>.rejects.jsonl).")
@click.option("--create-topics/--no-create-topics", default=True, show_default=True,
              help="Create the project's topics when missing.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
@click.pass_context
def replay(ctx: click.Context, log: Path, labels: Path | None, speed: str, from_: str | None,
           to: str | None, maps: tuple[str, ...], sets: tuple[str, ...],
           labels_maps: tuple[str, ...], tz: str | None, fmt: str | None, checkpoint: Path | None,
           restart: bool, rejects: Path | None, create_topics: bool, progress: bool | None,
           quiet: bool) -> None:
    """Replay LOG (JSON Lines or CSV, .gz too, or Parquet) into the events topic in time order.

    Invalid records are reported with their line (Parquet: row) numbers, written to the rejects
    file and never sent (exit status 1 when there were any). An interrupted replay resumes
    where it stopped when run again with the same arguments, without sending any record twice.

    \b
    Examples:
      fraudstream replay events.jsonl.gz --labels labels.jsonl.gz --speed max
      fraudstream replay payments.csv --map CUSTOMER_ID=user_id,TS=event_time:epoch_s \\
          --set event_type=transaction --speed 60x --from 2026-01-05T00:00:00Z
    """
    from stream.cli import _settings, _setup_logging
    from stream.mapping import ColumnMapping
    from stream.replay import (RecordMapping, ReplayOptions, Rejects, default_checkpoint_path,
                               parse_bound, parse_constants, parse_speed, replay as run)

    s = _settings(ctx)
    _setup_logging(s)
    try:
        constants = parse_constants(sets)
        mapping = RecordMapping(ColumnMapping.parse(",".join(maps), tz), constants)
        labels_mapping = None
        if labels_maps:
            labels_mapping = RecordMapping(ColumnMapping.parse(",".join(labels_maps), tz),
                                           constants)
        opts = ReplayOptions(log=log, labels=labels, speed=parse_speed(speed),
                             start_ms=parse_bound(from_, tz, "--from"),
                             end_ms=parse_bound(to, tz, "--to"), mapping=mapping,
                             labels_mapping=labels_mapping, fmt=fmt)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if opts.start_ms is not None and opts.end_ms is not None and opts.start_ms >= opts.end_ms:
        raise click.UsageError("--from must be before --to")
    checkpoint = checkpoint or default_checkpoint_path(log)
    rejects_path = rejects or checkpoint.with_name(
        checkpoint.name.replace(".checkpoint.json", "") + ".rejects.jsonl")
    if create_topics:
        from stream.topics import ensure_topics

        ensure_topics(s)

    say = (lambda m: None) if quiet else (lambda m: click.echo(m, err=True))
    show_bar = sys.stderr.isatty() if progress is None else progress
    sink = Rejects(rejects_path)
    bar = _Bar(show_bar and not quiet)
    try:
        with bar:
            result = run(s, opts, checkpoint=checkpoint, rejects=sink, restart=restart,
                         on_progress=bar.update, on_load_progress=bar.loading)
    except KeyboardInterrupt:
        click.echo(f"interrupted; progress saved in {checkpoint}. Run the same command again "
                   "to resume.", err=True)
        ctx.exit(130)
    for message in sink.first:
        say(f"rejected: {message}")
    if sink.count > len(sink.first):
        say(f"... and {sink.count - len(sink.first)} more")
    if result.already_done:
        click.echo(f"already replayed ({result.events_sent:,} events, {result.labels_sent:,} "
                   f"labels) according to {checkpoint}; use --restart to replay again", err=True)
        return
    rate = (result.sent / result.send_seconds) if result.send_seconds > 0 else 0.0
    outside = result.events.outside + (result.labels.outside if result.labels else 0)
    parts = [f"replayed {result.events_sent:,} events"]
    if opts.labels is not None:
        parts.append(f"{result.labels_sent:,} labels")
    line = (", ".join(parts) + f" in {result.send_seconds:.1f}s ({rate:,.0f}/s; reading "
            f"{result.load_seconds:.1f}s)")
    if sink.count:
        line += f"; {sink.count:,} rejected -> {rejects_path}"
    if outside:
        line += f"; {outside:,} outside --from/--to"
    if result.resumed_at:
        line += (f"; resumed at {result.resumed_at:,} of {result.total:,}"
                 f" ({result.skipped_in_flight:,} already delivered)")
    click.echo(line, err=True)
    if sink.count:
        ctx.exit(1)


class _Bar(ProgressBar):
    """Replay's bar: lines read while loading, then items sent, rate and event time."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled, "reading")

    def loading(self, what: str, lines: int) -> None:
        super().update(lines, rate=f"{lines:,} lines", description=f"reading {what}")

    def update(self, p) -> None:  # type: ignore[override]
        rate = (p.events_sent + p.labels_sent) / p.elapsed if p.elapsed > 0 else 0.0
        super().update(p.position, p.total, rate=f"{rate:,.0f}/s", at=event_time_label(p.event_time),
                       description="replaying")
