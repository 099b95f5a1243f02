"""fraudstream contender: the per-key tumbling-window count on fraudstream's own streaming runtime.

Runs in the project's virtualenv. A thin app over ``stream.runtime.Worker``: a chain of one stage
keyed by ``user_id`` whose feature set is a single count per user, and an emitter
(``stream.runtime.emitter``) that makes the last stage produce ``{"start", "end", "value"}`` under
the user's key instead of a score. The loop, the decoding of the event contract (with dead
letters), the state store (RocksDB behind the write-back cache, one per partition), the
changelog topic and the commit protocol are the worker's own, unchanged.

A tumbling window is our sliding count at a resolution of one window: the window of an event in
time bucket ``b`` of width ``--window-ms`` is that bucket alone (``features/windows.py``), i.e.
the tumbling window holding the event. ``--grace-ms`` is the feature set's grace (later events are
not counted). Our features run on the event's ``event_time``; the harness publishes events in our
contract with ``event_time`` equal to the record's Kafka timestamp, so that is the same clock as
the other contenders' (the output checksum checks it).

``--guarantee at_least_once`` (default; the like-for-like comparison: every peer runs
at-least-once) or ``exactly_once`` (transactions; the harness then counts committed outputs
read_committed). Offsets are committed every ``--commit-interval`` seconds or every 5,000 records,
whichever comes first (the worker's ``commit_every_records``). SIGTERM: finish the batch, commit,
checkpoint, exit 0.

Every topic the worker creates besides input and output (labels, dead letters, training, models,
the changelog) is named after ``--group``, so the harness deletes it with the run's topics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

from features.definitions import Feature, FeatureSet
from stream import wire
from stream.logs import configure as configure_logging
from stream.runtime import Worker
from stream.settings import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))  # contract.py beside each app
from contract import contract_parser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = contract_parser(__doc__.splitlines()[0], partitions_required=True,
                        partitions_help="partitions of the input and output topics (the "
                                        "changelog gets as many)")
    p.add_argument("--guarantee", choices=("at_least_once", "exactly_once"),
                   default="at_least_once")
    p.add_argument("--log-level", default="WARNING")
    return p.parse_args(argv)


class WindowCount:
    """The last stage's output: the event's tumbling window and the key's count in it.

    >>> e = WindowCount("user_count_1m_res1m", 60_000)
    >>> e.emit({"user_id": "u1", "event_time": 125_000}, {"user_count_1m_res1m": 3})
    (b'u1', b'{"start":120000,"end":180000,"value":3}')
    """

    def __init__(self, feature: str, window_ms: int) -> None:
        self.feature = feature
        self.window_ms = window_ms

    def emit(self, event: Mapping[str, Any], features: Mapping[str, Any]
             ) -> tuple[bytes | None, bytes]:
        t = event["event_time"]
        start = t - t % self.window_ms
        return event["user_id"].encode(), wire.dumps(
            {"start": start, "end": start + self.window_ms, "value": features[self.feature]})


def build(args: argparse.Namespace) -> Worker:
    g = args.group
    settings = Settings.load(env={}, overrides={  # the command line only, as for every contender
        "bootstrap_servers": args.bootstrap,
        "topic_events": args.input,
        "topic_scores": args.output,
        "topic_labels": f"{g}.labels",
        "topic_dead_letter": f"{g}.dead-letter",
        "topic_training": f"{g}.training",
        "topic_models": f"{g}.models",
        "partitions": args.partitions,
        "group_id": g,
        "instance_id": "bench",
        "state_dir": args.state_dir,
        "processing_guarantee": args.guarantee,
        "commit_interval_ms": max(1, round(args.commit_interval * 1000)),
        "metrics_port": 0,
        "log_level": args.log_level,
    })
    count = Feature("count", entity="user_id", window=args.window_ms, resolution=args.window_ms)
    features = FeatureSet((count,), grace=args.grace_ms,
                          ttl=2 * args.window_ms + args.grace_ms)  # must exceed window + grace
    return Worker(settings, feature_set=features, stage_keys=("user_id",),
                  emitter=WindowCount(count.name, args.window_ms))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level)
    worker = build(args)
    worker.install_signal_handlers()
    worker.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
