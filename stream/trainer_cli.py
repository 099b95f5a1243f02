"""``fraudstream trainer``: learn the global model from training examples and publish snapshots.

Run one or more; the instance holding partition 0 of the training topic is active, the others wait
as standby (see :mod:`stream.trainer` and docs/models.md).
"""

from __future__ import annotations

import click

__all__ = ["trainer"]


@click.command("trainer")
@click.option("--instance-id", help="Name of this instance in logs and client ids "
                                    "(default: host name).")
@click.option("--publish-every", "trainer_publish_every", type=int,
              help="Publish after this many new examples (default: trainer_publish_every).")
@click.option("--publish-interval", "trainer_publish_interval_s", type=float,
              help="...or this many seconds after the first unpublished one "
                   "(default: trainer_publish_interval_s).")
@click.option("--metrics-port", type=int, help="Port of /metrics, /healthz, /readyz "
                                               "(default: metrics_port).")
@click.option("--metrics/--no-metrics", "serve_metrics", default=True, show_default=True,
              help="Serve the metrics and health endpoints.")
@click.option("--exit-when-idle", type=float,
              help="Exit after this many seconds without input (after publishing).")
@click.pass_context
def trainer(ctx: click.Context, instance_id: str | None, trainer_publish_every: int | None,
            trainer_publish_interval_s: float | None, metrics_port: int | None,
            serve_metrics: bool, exit_when_idle: float | None) -> None:
    """Learn the global model from the training topic; publish versions to the models topic."""
    from stream.cli import _settings, _setup_logging
    from stream.trainer import Trainer

    s = _settings(ctx, instance_id=instance_id, trainer_publish_every=trainer_publish_every,
                  trainer_publish_interval_s=trainer_publish_interval_s,
                  metrics_port=metrics_port)
    _setup_logging(s)
    t = Trainer(s, serve_metrics=serve_metrics)
    t.install_signal_handlers()
    stats = t.run(exit_when_idle=exit_when_idle)
    click.echo(f"trainer {t.instance_id}: consumed {stats.consumed}, learned {stats.learned} "
               f"(challenger {stats.learned_challenger}), dead-lettered {stats.dead_lettered}, "
               f"published {stats.published}"
               + (f" (last {stats.versions[-1]})" if stats.versions else "")
               + f", adopted {stats.adopted}, activations {stats.activations}", err=True)
