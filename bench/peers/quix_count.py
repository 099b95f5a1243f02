"""Quix Streams contender: the per-key tumbling-window count as a Quix Streams application.

Runs in its own virtualenv (``.cache/bench-venvs/quixstreams/``) with the latest ``quixstreams``.
State: Quix Streams' RocksDB store (rocksdict) under ``--state-dir``, backed by its changelog
topic (the default, ``use_changelog_topics=True``). At-least-once (the default guarantee), with
the commit interval set to the harness's common value.

Semantics as in ``bench/contenders.py``: JSON value, keyed by user_id, tumbling window on the
record's Kafka timestamp, ``.count().current()`` emits ``{"start", "end", "value"}`` for every
input record. ``Application.run`` stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from quixstreams import Application

sys.path.insert(0, str(Path(__file__).resolve().parent))  # contract.py beside each app
from contract import contract_parser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = contract_parser(__doc__.splitlines()[0])
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=args.commit_interval,
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
        loglevel="WARNING",
    )
    events = app.topic(args.input, value_deserializer="json", key_deserializer="bytes")
    counts = app.topic(args.output, value_serializer="json", key_serializer="bytes")
    sdf = app.dataframe(events)
    sdf = (sdf.tumbling_window(duration_ms=args.window_ms, grace_ms=args.grace_ms)
              .count()
              .current())
    sdf.to_topic(counts)
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
