"""Replay throughput at ``--speed max`` into a running broker, and simulate throughput.

    .venv/bin/fraudstream kafka up --port 39092 --dir /tmp/bench-kafka
    .venv/bin/python bench/bench_replay.py --bootstrap-servers 127.0.0.1:39092 --events 500000

Simulates a log (events only, so the figure is events/s; ``--log FILE`` replays an existing log
instead), replays it ``--repeat`` times into fresh topics and prints, per run and as medians, the
time spent reading and validating, the time spent sending, events/s end to end, and the CPU time
of this process (``time.process_time``: on a shared, noisy machine it moves less than wall time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--log", type=Path, help="replay this log instead of simulating one")
    parser.add_argument("--labels", type=Path, help="labels log to replay with --log")
    parser.add_argument("--repeat", type=int, default=1, help="replays (medians reported)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--workers", type=int, default=None,
                        help="validating processes (default: by file size and cores)")
    args = parser.parse_args()

    from stream.replay import ReplayOptions, replay
    from stream.settings import Settings
    from stream.simulate import SimConfig, simulate, write_jsonl
    from stream.topics import ensure_topics

    with tempfile.TemporaryDirectory() as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "events.jsonl.gz"
            cpu, wall = time.process_time(), time.perf_counter()
            sim = simulate(SimConfig(events=args.events, days=21, seed=1))
            write_jsonl(sim.iter_events(), log)
            sim_wall = time.perf_counter() - wall
            print(f"simulate: {args.events:,} events in {sim_wall:.2f}s = "
                  f"{args.events / sim_wall:,.0f} events/s written (.jsonl.gz; CPU "
                  f"{time.process_time() - cpu:.2f}s)")
            del sim
        runs = []
        for _ in range(args.repeat):
            tag = uuid.uuid4().hex[:8]
            settings = Settings.load(env={}, overrides={
                "bootstrap_servers": args.bootstrap_servers, "partitions": args.partitions,
                "topic_events": f"bench-{tag}.events", "topic_labels": f"bench-{tag}.labels",
                "topic_scores": f"bench-{tag}.scores", "topic_dead_letter": f"bench-{tag}.dlq"})
            ensure_topics(settings)
            cpu, began = time.process_time(), time.perf_counter()
            result = replay(settings, ReplayOptions(log=log, labels=args.labels,
                                                    load_workers=args.workers))
            total, cpu = time.perf_counter() - began, time.process_time() - cpu
            n = result.sent
            runs.append((n / total, n / result.load_seconds, n / result.send_seconds, cpu))
            print(f"replay:   {n:,} records; reading+validating {result.load_seconds:.2f}s "
                  f"({n / result.load_seconds:,.0f}/s), sending {result.send_seconds:.2f}s "
                  f"({n / result.send_seconds:,.0f}/s), end to end {total:.2f}s = "
                  f"{n / total:,.0f} records/s; CPU {cpu:.2f}s ({n / cpu:,.0f} records per "
                  f"CPU-second; {result.events.forwarded_as_read:,} events forwarded as read)",
                  flush=True)
    if len(runs) > 1:
        med = [statistics.median(r[i] for r in runs) for i in range(4)]
        print(f"median of {len(runs)}: end to end {med[0]:,.0f}/s, reading+validating "
              f"{med[1]:,.0f}/s, sending {med[2]:,.0f}/s, CPU {med[3]:.2f}s")
    print(f"machine:  {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
