"""``fraudstream simulate``: write a seeded, labelled synthetic stream as JSON Lines.

The generator itself is :mod:`stream.simulate`; this module only turns flags into a
:class:`~stream.simulate.SimConfig`, writes the files and prints a summary on stderr.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

import click

__all__ = ["simulate"]


def _fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.command("simulate")
@click.option("--out", "-o", "out", required=True,
              help="Events file (JSON Lines; .gz compresses; '-' = stdout).")
@click.option("--labels-out", help="Labels file (JSON Lines; .gz compresses). Default: none.")
@click.option("--events", "n_events", type=click.IntRange(min=1), default=100_000,
              show_default=True, help="Number of events, fraud included (exact).")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=21.0,
              show_default=True, help="Length of the simulated period.")
@click.option("--start", default="2026-01-05T00:00:00Z", show_default=True,
              help="Start of the period: RFC 3339 with offset, or epoch milliseconds.")
@click.option("--users", type=click.IntRange(min=1), help="Users (default: events/40, >= 50).")
@click.option("--merchants", type=click.IntRange(min=1),
              help="Merchants (default: users/25, >= 20).")
@click.option("--fraud-rate", type=click.FloatRange(0.0, 0.5), default=0.01, show_default=True,
              help="Share of events that are fraud.")
@click.option("--mix", help="Scenario weights, e.g. 'card_testing=3,amount_outlier=1' (named "
                            "scenarios only). Default: card_testing=0.25,account_takeover=0.2,"
                            "compromised_merchant=0.15,stolen_card_spree=0.15,"
                            "amount_outlier=0.1,distinct_merchant=0.15.")
@click.option("--login-share", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.05,
              show_default=True, help="Share of legitimate events that are logins.")
@click.option("--maturity-days", type=click.FloatRange(min=0), default=14.0, show_default=True,
              help="Legitimate transactions are labelled this long after the event.")
@click.option("--fraud-unlabelled", type=click.FloatRange(0.0, 1.0), default=0.1,
              show_default=True, help="Share of fraud that is never confirmed.")
@click.option("--distinct-merchants", type=click.IntRange(min=0), default=3, show_default=True,
              help="High-value merchants whose fraud has its own signature (the "
                   "distinct_merchant scenario: orders just below the merchant's step-up "
                   "threshold).")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--id-prefix", default="sim", show_default=True,
              help="Event ids are PREFIX-NNNNNNNN.")
@click.option("--quiet", "-q", is_flag=True, help="No summary.")
def simulate(out: str, labels_out: str | None, n_events: int, days: float, start: str,
             users: int | None, merchants: int | None, fraud_rate: float, mix: str | None,
             login_share: float, maturity_days: float, fraud_unlabelled: float,
             distinct_merchants: int, seed: int, id_prefix: str, quiet: bool) -> None:
    """Generate a seeded, labelled stream of users, merchants and fraud scenarios.

    Events go to --out in event-time order, labels to --labels-out in label-time order. Every
    event's ground truth is in attributes.scenario / attributes.is_fraud. The same seed and
    options give the same files.

    \b
    Example:
      fraudstream simulate --events 200000 --days 21 --fraud-rate 0.01 \\
          --out events.jsonl.gz --labels-out labels.jsonl.gz
    """
    from stream.events import parse_time
    from stream.exceptions import DecodeError
    from stream.simulate import DEFAULT_MIX, SimConfig, parse_mix, simulate as run, write_jsonl

    try:
        start_ms = parse_time(int(start) if start.isdigit() else start, "--start")
    except DecodeError as exc:
        raise click.BadParameter(exc.reason, param_hint="--start") from None
    try:
        weights = parse_mix(mix) if mix else dict(DEFAULT_MIX)
        cfg = SimConfig(events=n_events, days=days, start_ms=start_ms, users=users,
                        merchants=merchants, fraud_rate=fraud_rate, mix=weights,
                        login_share=login_share, maturity_days=maturity_days,
                        fraud_unlabelled=fraud_unlabelled,
                        distinct_merchants=distinct_merchants, seed=seed, id_prefix=id_prefix)
        cfg.validate()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    began = time.perf_counter()
    sim = run(cfg)
    n = write_jsonl(sim.iter_events(), out)
    n_labels = write_jsonl(sim.iter_labels(), labels_out) if labels_out else 0
    secs = time.perf_counter() - began
    if quiet:
        return
    info = sim.summary()
    fraud = info["events"] - info["by_scenario"].get("legit", 0)
    say = lambda line: click.echo(line, err=True)  # noqa: E731 - stdout may carry the events
    say(f"wrote {n:,} events to {out}" + (f" and {n_labels:,} labels to {labels_out}"
                                            if labels_out else " (labels not written)"))
    say(f"  period   {_fmt_time(info['first_event_time'])} .. "
        f"{_fmt_time(info['last_event_time'])}")
    say(f"  fraud    {fraud:,} events ({fraud / max(1, n):.2%})")
    for name, count in info["by_scenario"].items():
        if name != "legit":
            say(f"    {name:<21}{count:>9,}")
    if info["distinct_merchants"]:
        say(f"  distinct merchants  {', '.join(info['distinct_merchants'])}")
    say(f"  labels   {info['labels']:,} ({info['fraud_labels']:,} fraud)")
    say(f"  took     {secs:.2f}s ({n / secs:,.0f} events/s)")
