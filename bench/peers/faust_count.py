"""faust-streaming contender: the per-key tumbling-window count as a Faust agent and table.

Runs in its own virtualenv (``.cache/bench-venvs/faust-streaming/``) with the latest
``faust-streaming[rocksdict]``. State: a windowed ``app.Table`` in Faust's ``rocksdb://`` store,
which uses rocksdict when python-rocksdb is absent (as here), under ``--state-dir``, backed by the
table's changelog topic (Faust always has one). ``--store memory`` switches to ``memory://``.
At-least-once (Faust's default guarantee) with the harness's common commit interval; the web
server is off so the app opens no listening port.

Semantics as in ``bench/contenders.py``: JSON value, keyed by user_id, tumbling window on the
record's Kafka timestamp (``relative_to_stream()``), and for every input record the current
window's count is sent as ``{"start", "end", "value"}`` under the same key. The Faust worker
stops gracefully on SIGTERM.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from datetime import timedelta

import faust

sys.path.insert(0, str(Path(__file__).resolve().parent))  # contract.py beside each app
from contract import contract_parser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = contract_parser(__doc__.splitlines()[0], partitions_required=True,
                        partitions_help="partitions of the input topic (Faust's table changelog "
                                        "must match)")
    p.add_argument("--store", choices=("rocksdb", "memory"), default="rocksdb")
    p.add_argument("--log-level", default="warn", help="Faust worker log level (debug, info...)")
    return p.parse_args(argv)


def build_app(args: argparse.Namespace) -> faust.App:
    app = faust.App(
        args.group,  # the app id is the consumer group
        broker=f"kafka://{args.bootstrap}",
        store=f"{args.store}://",
        datadir=args.state_dir,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        broker_commit_interval=args.commit_interval,
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        web_enabled=False,
    )
    events = app.topic(args.input, key_type=bytes, value_serializer="json")
    out = app.topic(args.output, key_type=bytes, value_serializer="json")
    size_s = args.window_ms / 1000.0
    # Faust expires windows against the wall clock (Table._del_old_keys calls
    # window.stale(ts, time.time())), not against stream time. The benchmark replays a backlog
    # whose event time lies in the past, so an expiry of window + grace would delete windows that
    # are still being counted and the counts would come out low (seen: checksums 20-35% short).
    # An hour keeps the same event-time semantics as the other contenders for the whole run.
    expires = timedelta(milliseconds=args.window_ms + args.grace_ms) + timedelta(hours=1)
    counts = (app.Table("counts", default=int, partitions=args.partitions)
              .tumbling(timedelta(milliseconds=args.window_ms), expires=expires)
              .relative_to_stream())

    @app.agent(events)
    async def count(stream):  # noqa: ANN001 - Faust's agent signature
        async for event in stream.events():
            key = event.key
            counts[key] += 1
            ts = event.message.timestamp  # seconds, the record's Kafka timestamp
            start = ts - ts % size_s
            await out.send(key=key, value={
                "start": int(round(start * 1000)),
                "end": int(round(start * 1000)) + args.window_ms,
                "value": counts[key].current(),
            })

    return app


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = build_app(args)
    # Faust's own CLI entry point runs the worker; -l sets its log level.
    sys.argv = [sys.argv[0], "worker", "-l", args.log_level, "--without-web"]
    app.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
