"""``fraudstream backtest LOG``: score a log offline, prequentially, and write a report.

The work is done by :func:`stream.backtest.run_backtest` (the streaming event path without a
broker) and :mod:`stream.backtest_report` (metrics files, plots, HTML). See ``docs/backtest.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stream.progress import ProgressBar, event_time_label

__all__ = ["backtest"]


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}",
                                 param_hint=what) from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise click.BadParameter(f"each value must be in (0, 1], got {text!r}", param_hint=what)
    return values


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}",
                                 param_hint=what) from None
    if not values or any(v < 1 for v in values):
        raise click.BadParameter(f"each value must be at least 1, got {text!r}", param_hint=what)
    return values


def _duration(text: str | None, what: str) -> int | None:
    from features.exceptions import FeatureError
    from features.windows import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text, what)
    except FeatureError as exc:
        raise click.BadParameter(str(exc), param_hint=what) from None


@click.command("backtest")
@click.argument("log", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Label log: the ground truth, learned from when each label's time comes.")
@click.option("--map", "maps", multiple=True, metavar="COLUMN=FIELD[:FORMAT],...",
              help="Rename a column of the log to a contract field, as for replay. Repeatable.")
@click.option("--set", "sets", multiple=True, metavar="FIELD=VALUE,...",
              help="A constant for a field the log lacks, e.g. event_type=transaction.")
@click.option("--labels-map", "labels_maps", multiple=True, metavar="COLUMN=FIELD[:FORMAT],...",
              help="Mapping for the label log (default: --map).")
@click.option("--tz", metavar="ZONE", help="Zone of ISO times written without an offset.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]),
              help="Log format (default: from the file name, else the content).")
@click.option("--features", "features_file", type=click.Path(exists=True, dir_okay=False),
              help="Feature definitions (TOML); default: the built-in set.")
@click.option("--model", help="'heuristic' or an online_models registry name (default, logreg, "
                              "river-logreg, hat, hst), as the workers' model_name setting; "
                              "default: that setting ('default' unless configured).")
@click.option("--frozen-global", is_flag=True,
              help="Never learn the global model (a stream without a trainer); per-merchant "
                   "models still learn.")
@click.option("--freeze-after", metavar="DURATION",
              help="Stop all model learning (global and per-merchant models) this long after "
                   "the first event, e.g. 14d or 3w: the online model against itself frozen.")
@click.option("--evaluate-from", metavar="DURATION",
              help="Also report the metrics on the labelled events from this long after the "
                   "first event on (e.g. the --freeze-after point, for both runs).")
@click.option("--merchant-models/--no-merchant-models", default=None,
              help="Learn per-merchant models and blend them in, or score with the global model "
                   "alone (default: the merchant_models setting, off unless configured).")
@click.option("--partitions", type=click.IntRange(min=1),
              help="Partitions per stage, as the topics have them (default: settings).")
@click.option("--budget", "budgets", default="0.01,0.005", show_default=True,
              help="Review budgets: shares of labelled events reviewed, highest scores first.")
@click.option("--top-k", "top_k", default="10", show_default=True,
              help="User-level precision at top-k per day, for each k.")
@click.option("--top-merchants", default=10, show_default=True, type=click.IntRange(min=0),
              help="Merchants (largest by volume) with their own metrics row.")
@click.option("--seed", default=42, show_default=True, help="Seed of the online models.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("backtest-report"), show_default=True,
              help="Where report.html, report.json and the PNG plots go.")
@click.option("--scores-out", type=click.Path(dir_okay=False),
              help="Write every event's score as JSON Lines (.gz compresses).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
@click.pass_context
def backtest(ctx: click.Context, log: Path, labels: Path | None, maps: tuple[str, ...],
             sets: tuple[str, ...], labels_maps: tuple[str, ...], tz: str | None,
             fmt: str | None, features_file: str | None, model: str | None,
             frozen_global: bool, freeze_after: str | None, evaluate_from: str | None,
             merchant_models: bool | None,
             partitions: int | None,
             budgets: str, top_k: str, top_merchants: int, seed: int, out_dir: Path,
             scores_out: str | None, progress: bool | None) -> None:
    """Score LOG offline with the streaming feature and model code, prequentially, and report.

    Every event is scored with the features the workers would compute (same stages, same
    partitioning) and the chosen model; each label is learned when its label time comes. Events
    without a label are scored but left out of the metrics.

    \b
    Examples:
      fraudstream backtest events.jsonl.gz --labels labels.jsonl.gz --out-dir report/
      fraudstream backtest payments.csv --labels chargebacks.csv \\
          --map CUSTOMER_ID=user_id,TS=event_time:epoch_s --set event_type=transaction
    """
    from features import config as feature_config
    from features.exceptions import FeatureError
    from stream.backtest import BacktestOptions, compute_report, model_names, run_backtest
    from stream.backtest_report import summary_lines, write_report, write_scores
    from stream.cli import _settings
    from stream.exceptions import ConfigError, FraudstreamError
    from stream.mapping import ColumnMapping
    from stream.replay import RecordMapping, parse_constants

    s = _settings(ctx)
    budget_values = _floats(budgets, "--budget")
    k_values = _ints(top_k, "--top-k")
    model = model or s.model_name
    freeze_after_ms = _duration(freeze_after, "--freeze-after")
    evaluate_from_ms = _duration(evaluate_from, "--evaluate-from")
    if model not in model_names():
        raise click.BadParameter(f"unknown model {model!r} (one of {', '.join(model_names())})",
                                 param_hint="--model")
    try:
        constants = parse_constants(sets)
        mapping = RecordMapping(ColumnMapping.parse(",".join(maps), tz), constants)
        labels_mapping = (RecordMapping(ColumnMapping.parse(",".join(labels_maps), tz),
                                        constants) if labels_maps else None)
        features_file = features_file or getattr(s, "features_file", None)
        fs = feature_config.load(features_file) if features_file else None
    except (ValueError, ConfigError, FeatureError) as exc:
        raise click.UsageError(str(exc)) from None
    opts = BacktestOptions(log=log, labels=labels, mapping=mapping, labels_mapping=labels_mapping,
                           fmt=fmt, feature_set=fs, model=model, learn_global=not frozen_global,
                           freeze_after_ms=freeze_after_ms,
                           merchant_models=merchant_models,
                           partitions=partitions or s.partitions, seed=seed,
                           max_bytes=s.max_message_bytes)
    show_bar = sys.stderr.isatty() if progress is None else progress
    try:
        with _Bar(show_bar) as bar:
            result = run_backtest(opts, s, on_progress=bar.update)
    except (ConfigError, FeatureError, FraudstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    for message in result.rejects:
        click.echo(f"rejected: {message}", err=True)
    rejected = result.events_rejected + result.labels_rejected
    if rejected > len(result.rejects):
        click.echo(f"... {rejected - len(result.rejects)} more rejected", err=True)
    since = None
    if evaluate_from_ms is not None and len(result):
        since = int(result.event_times.min()) + evaluate_from_ms
    report = compute_report(result, budget_values, k_values, top_merchants, since=since)
    paths = write_report(out_dir, result, report)
    for line in summary_lines(report):
        click.echo(line)
    if scores_out:
        n = write_scores(scores_out, result)
        click.echo(f"scores: {n:,} events -> {scores_out}")
    click.echo(f"report: {paths['html']} (plots and report.json in {out_dir})")


class _Bar(ProgressBar):
    """The backtest's bar: scored items out of the timeline, at which event time."""

    def __init__(self, enabled: bool) -> None:
        super().__init__(enabled, "backtest")

    def update(self, done: int, total: int, event_time: int) -> None:  # type: ignore[override]
        super().update(done, total, at=event_time_label(event_time))
