"""The ``fraudstream`` command line.

Global options (``--config``, ``--bootstrap-servers``) and per-command flags become overrides of the
one :class:`~stream.settings.Settings` object: flags win over ``FRAUDSTREAM_*`` variables, which win
over the TOML file. Errors that fraudstream raises on purpose print as one ``error:`` line and exit 1;
an invalid setting exits 2.
"""

from __future__ import annotations

import gzip
import logging
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, BinaryIO

import click

from stream.exceptions import ConfigError, DecodeError, FraudstreamError
from stream.settings import Settings

__all__ = ["main"]


def _version() -> str:
    try:
        return metadata.version("fraudstream")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    obj = ctx.find_root().obj or {}
    merged = dict(obj.get("overrides", {}))
    merged.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings.load(obj.get("config"), merged)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _setup_logging(settings: Settings) -> None:
    from stream.logs import configure

    configure(settings.log_level, settings.log_format)


class _Group(click.Group):
    """Turns fraudstream's own errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from None
        except FraudstreamError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(_version(), prog_name="fraudstream")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="TOML settings file (default: $FRAUDSTREAM_CONFIG).")
@click.option("--bootstrap-servers", help="Kafka bootstrap servers (host:port,...).")
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                               case_sensitive=False))
@click.pass_context
def main(ctx: click.Context, config_file: str | None, bootstrap_servers: str | None,
         log_level: str | None) -> None:
    """Real-time fraud features and scoring on Kafka."""
    ctx.obj = {"config": config_file,
               "overrides": {"bootstrap_servers": bootstrap_servers, "log_level": log_level}}


# ---------------------------------------------------------------------- kafka
@main.group()
def kafka() -> None:
    """Fetch, start, stop and inspect a local single-node Apache Kafka (KRaft)."""


def _local_kafka(ctx: click.Context, port: int | None, home: str | None, cache: str | None):
    from stream.localkafka import LocalKafka

    s = _settings(ctx, local_kafka_port=port, local_kafka_dir=home, local_kafka_cache_dir=cache)
    return LocalKafka(s.local_kafka_dir, s.local_kafka_cache_dir, host=s.local_kafka_host,
                      port=s.local_kafka_port, heap=s.local_kafka_heap,
                      log=lambda m: click.echo(m, err=True))


_port_opt = click.option("--port", type=int, help="Broker port (controller: port+1). Default 9092.")
_dir_opt = click.option("--dir", "home", help="Config, data, log and PID directory.")
_cache_opt = click.option("--cache", help="Where the fetched jars are kept.")


@kafka.command("up")
@_port_opt
@_dir_opt
@_cache_opt
@click.option("--timeout", default=90.0, show_default=True, help="Seconds to wait for the broker.")
@click.pass_context
def kafka_up(ctx: click.Context, port: int | None, home: str | None, cache: str | None,
             timeout: float) -> None:
    """Fetch Kafka if needed, start it, wait until it answers."""
    broker = _local_kafka(ctx, port, home, cache)
    st = broker.up(timeout=timeout)
    click.echo(f"running: Apache Kafka {st.version}, PID {st.pid}, bootstrap {st.bootstrap}, "
               f"logs {broker.log_file}")


@kafka.command("down")
@_port_opt
@_dir_opt
@_cache_opt
@click.pass_context
def kafka_down(ctx: click.Context, port: int | None, home: str | None, cache: str | None) -> None:
    """Stop the broker started by `kafka up` (exactly the PID it recorded)."""
    broker = _local_kafka(ctx, port, home, cache)
    click.echo("stopped" if broker.down() else "not running")


@kafka.command("status")
@_port_opt
@_dir_opt
@_cache_opt
@click.pass_context
def kafka_status(ctx: click.Context, port: int | None, home: str | None, cache: str | None) -> None:
    """Say whether the local broker runs; exit 3 when it does not."""
    broker = _local_kafka(ctx, port, home, cache)
    st = broker.status()
    if st.running:
        click.echo(f"running: Apache Kafka {st.version}, PID {st.pid}, bootstrap {st.bootstrap} "
                   f"({st.detail})")
    else:
        click.echo(f"stopped (jars {'cached' if broker.is_fetched() else 'not fetched'})")
        ctx.exit(3)


# ---------------------------------------------------------------------- topics
@main.group()
def topics() -> None:
    """Manage the project's Kafka topics."""


@topics.command("create")
@click.option("--partitions", type=int, help="Partitions per topic.")
@click.option("--replication-factor", type=int)
@click.pass_context
def topics_create(ctx: click.Context, partitions: int | None,
                  replication_factor: int | None) -> None:
    """Create missing topics and check existing ones (idempotent)."""
    from stream.topics import ensure_topics, project_topics

    s = _settings(ctx, partitions=partitions, replication_factor=replication_factor)
    report = ensure_topics(s)
    for spec in project_topics(s):
        state = "created" if spec.name in report.created else "exists"
        click.echo(f"{state:8} {spec.name} partitions={spec.partitions} "
                   f"replication={spec.replication_factor} cleanup.policy={spec.cleanup_policy}")


# ---------------------------------------------------------------------- publish
def _open_input(path: str) -> BinaryIO:
    if path == "-":
        return sys.stdin.buffer
    p = Path(path)
    if not p.exists():
        raise click.BadParameter(f"no such file: {path}", param_hint="FILE")
    with p.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(p, "rb")
    return p.open("rb")


def _lines(stream: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if line:
            yield number, line


@main.command()
@click.argument("file", default="-")
@click.option("--labels", is_flag=True, help="The file holds label events (to the labels topic).")
@click.option("--rejects", type=click.Path(dir_okay=False),
              help="Also write rejected lines here, as they were.")
@click.option("--quiet", "-q", is_flag=True, help="Only the summary line.")
@click.pass_context
def publish(ctx: click.Context, file: str, labels: bool, rejects: str | None, quiet: bool) -> None:
    """Validate and publish JSON Lines events (or labels) from FILE ('-' for stdin; .gz too).

    Invalid lines are reported with their line numbers and never sent. Exit status 1 when any
    line was rejected, 0 when all were published.
    """
    from stream.events import decode_event, decode_label
    from stream.publisher import EventPublisher

    s = _settings(ctx)
    _setup_logging(s)
    decode = decode_label if labels else decode_event
    rejected = 0
    started = time.monotonic()
    source = _open_input(file)
    reject_out = open(rejects, "wb") if rejects else None
    try:
        with source as stream, EventPublisher(s) as pub:
            send = pub.publish_label if labels else pub.publish
            for number, line in _lines(stream):
                try:
                    record = decode(line, s.max_message_bytes)
                except DecodeError as exc:
                    rejected += 1
                    if not quiet:
                        click.echo(f"line {number}: rejected: {exc}", err=True)
                    if reject_out:
                        reject_out.write(line + b"\n")
                    continue
                send(record)
            sent = pub.stats.sent
    finally:
        if reject_out:
            reject_out.close()
    elapsed = time.monotonic() - started
    kind = "labels" if labels else "events"
    click.echo(f"published {sent} {kind} in {elapsed:.2f}s ({sent / max(elapsed, 1e-9):,.0f}/s); "
               f"rejected {rejected}", err=True)
    if rejected:
        ctx.exit(1)


# ---------------------------------------------------------------------- tail
@main.command()
@click.option("--min-score", type=click.FloatRange(0.0, 1.0), default=0.0,
              help="Only print scores at or above this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--group", help="Consumer group (default: a private one, nothing committed).")
@click.option("--from-beginning/--latest", default=False,
              help="Start at the oldest retained score instead of new ones.")
@click.option("--max", "max_records", type=int, help="Stop after this many scores were read.")
@click.option("--idle-timeout", type=float, help="Stop when no score arrives for this many seconds.")
@click.pass_context
def tail(ctx: click.Context, min_score: float, as_json: bool, group: str | None,
         from_beginning: bool, max_records: int | None, idle_timeout: float | None) -> None:
    """Print scores as they arrive (read_committed)."""
    from stream import wire
    from stream.consumer import ScoreConsumer

    s = _settings(ctx)
    _setup_logging(s)
    out = sys.stdout.buffer
    with ScoreConsumer(s, group_id=group, from_beginning=from_beginning) as consumer:
        try:
            for rec in consumer.stream(idle_timeout=idle_timeout, max_records=max_records):
                sc = rec.score
                if sc.score < min_score:
                    continue
                if as_json:
                    out.write(wire.dumps_line(sc.to_dict()))
                else:
                    reasons = ", ".join(r.get("feature", "?") for r in sc.reasons[:3])
                    line = (f"{sc.score:.3f} {sc.decision:<7} {sc.event_id} user={sc.user_id} "
                            f"merchant={sc.merchant_id} model={sc.model_version}"
                            + (f" [{reasons}]" if reasons else "") + "\n")
                    out.write(line.encode())
                out.flush()
                if group:
                    consumer.commit()
        except KeyboardInterrupt:
            pass
        except BrokenPipeError:  # e.g. `fraudstream tail | head`
            sys.stderr.close()


# ---------------------------------------------------------------------- worker
@main.command()
@click.option("--instance-id", help="Stable id of this worker (names its transactional id); "
                                    "default: host name.")
@click.option("--group-id", help="Consumer group shared by the workers.")
@click.option("--processing-guarantee", type=click.Choice(["exactly_once", "at_least_once"]))
@click.option("--features", "features_file", type=click.Path(exists=True, dir_okay=False),
              help="Feature definitions (TOML); default: the built-in set.")
@click.option("--metrics-port", type=int,
              help="Port of /metrics, /healthz, /readyz (default 9400; 0: none).")
@click.option("--exit-when-idle", type=float,
              help="Exit after this many seconds without input (batch back-fills, demos).")
@click.pass_context
def worker(ctx: click.Context, instance_id: str | None, group_id: str | None,
           processing_guarantee: str | None, features_file: str | None,
           metrics_port: int | None, exit_when_idle: float | None) -> None:
    """Consume events, compute features, score, produce scores and dead letters."""
    from stream.runtime import Worker

    s = _settings(ctx, instance_id=instance_id, group_id=group_id,
                  processing_guarantee=processing_guarantee, features_file=features_file,
                  metrics_port=metrics_port)
    _setup_logging(s)
    w = Worker(s, serve_metrics=True)
    w.install_signal_handlers()
    stats = w.run(exit_when_idle=exit_when_idle)
    logging.getLogger("stream.worker").info(
        "worker %s: consumed %d, scored %d, forwarded %d (handed off locally %d), labels %d "
        "(%d before their event), examples %d, dead-lettered %d, commits %d, restored %d, "
        "recoveries %d", w.instance_id, stats.consumed, stats.scored, stats.forwarded,
        stats.handed_off, stats.labels, stats.labels_parked,
        stats.examples, stats.dead_lettered, stats.commits, stats.restored_records,
        stats.recoveries)


# ---------------------------------------------------------------------- config
@main.group()
def config() -> None:
    """Inspect configuration."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def config_show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings, secrets masked."""
    from stream import wire

    data = _settings(ctx).redacted()
    if as_json:
        click.echo(wire.dumps(data).decode())
        return
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key == "kafka":
            for prop, pval in sorted(value.items()):
                click.echo(f"{'kafka.' + prop:<{width}}  {pval}")
            continue
        click.echo(f"{key:<{width}}  {'' if value is None else value}")


# ---------------------------------------------------------------------- demo
@main.command()
@click.option("--events", "n_events", default=60_000, show_default=True,
              help="Events to simulate (labels come on top).")
@click.option("--days", default=21.0, show_default=True, help="Event-time span of the traffic.")
@click.option("--port", type=int, default=9092, show_default=True,
              help="Port of the local broker (started unless one already runs there).")
@click.option("--seed", default=7, show_default=True)
@click.pass_context
def demo(ctx: click.Context, n_events: int, days: float, port: int, seed: int) -> None:
    """Simulate, replay, score with two workers and the trainer, summarise; stop everything."""
    from stream.demo import run_demo

    s = _settings(ctx, local_kafka_port=port, bootstrap_servers=f"127.0.0.1:{port}")
    run_demo(s, n_events=n_events, seed=seed, echo=click.echo, days=days)


# Command groups that live in their own modules, attached when the module is present. A module
# that exists but fails to import is an error, never silently skipped.
_EXTENSIONS = (
    ("stream.features_cli", "features"),
    ("stream.simulate_cli", "simulate"),
    ("stream.replay_cli", "replay"),
    ("stream.backtest_cli", "backtest"),
    ("stream.models_cli", "models"),
    ("stream.trainer_cli", "trainer"),
)


def _register_extensions() -> None:
    import importlib
    import importlib.util

    for module_name, attr in _EXTENSIONS:
        if importlib.util.find_spec(module_name) is None:
            continue
        main.add_command(getattr(importlib.import_module(module_name), attr))


_register_extensions()
