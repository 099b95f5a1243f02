"""Two checkouts of the worker side by side, at the same time, on one broker: a paired A/B.

    .venv/bin/python bench/bench_runtime_ab.py --before /path/to/base-checkout \\
        [--before-python /path/to/base-checkout/.venv/bin/python] [--after .] [--rounds 3]

On a shared machine two runs one after the other see different neighbours (±30 % between
identical runs). Here both workers run at once, each with its own group, topics and state, and
every event is published to both, so whatever disturbs one disturbs the other. Per round and
guarantee, as in ``bench_runtime.py``:

* **throughput**: both workers warmed up with 200 events, then N events published to both; each
  worker's CPU seconds from the first publish to its last committed score (read_committed) give
  its events per CPU-second. (The wall-clock rate is bound by the one load generator feeding both,
  so it is not reported.)
* **latency**: events offered to both at ``--rate`` per second (alternating which gets each event
  first), each timed from ``produce`` to its score at a read_committed consumer.

A worker runs from its checkout (``cwd`` and ``PYTHONPATH``) with the given interpreter, whose
compiled kernels must be built in place there (or be the same as this checkout's). Prints each
round and the medians.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_runtime as single  # noqa: E402
from stream.consumer import ScoreConsumer  # noqa: E402
from stream.localkafka import LocalKafka  # noqa: E402
from stream.publisher import EventPublisher  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402


class Pair:
    """Both variants' workers, consumers and publishers for one run."""

    def __init__(self, variants: dict[str, tuple[Path, str]], base: Settings, guarantee: str,
                 tag: str, work: Path) -> None:
        self.names = list(variants)
        self.settings = {v: base.replace(group_id=f"ab-{v}-{tag}",
                                         topic_events=f"ab-{v}-{tag}.events",
                                         topic_scores=f"ab-{v}-{tag}.scores",
                                         state_dir=str(work / f"state-{v}-{tag}"))
                         for v in self.names}
        for s in self.settings.values():
            ensure_topics(s)
        self.workers = {}
        for v, (checkout, python) in variants.items():
            env = single._env(self.settings[v], guarantee)
            env["PYTHONPATH"] = str(checkout)
            with (work / f"worker-{v}-{tag}.log").open("ab") as log:
                self.workers[v] = subprocess.Popen(
                    [python, "-m", "stream", "worker", "--instance-id", "bench"], env=env,
                    cwd=checkout, stdout=log, stderr=subprocess.STDOUT)
        self.consumers = {v: ScoreConsumer(s, from_beginning=True)
                          for v, s in self.settings.items()}
        self.publishers = {v: EventPublisher(s, **{"linger.ms": 0})
                           for v, s in self.settings.items()}

    def warm_up(self, events: list[dict]) -> None:
        for v in self.names:
            single._warm_up(self.settings[v], self.consumers[v], events, self.publishers[v])

    def close(self) -> None:
        for c in self.consumers.values():
            c.close()
        for p in self.publishers.values():
            p.close()
        for w in self.workers.values():
            w.send_signal(signal.SIGTERM)
        for w in self.workers.values():
            w.wait(60)


def throughput(pair: Pair, events: list[dict]) -> dict[str, float]:
    """Events per worker CPU-second of each variant."""
    pair.warm_up(events)
    cpu0 = {v: single._cpu_seconds(w.pid) for v, w in pair.workers.items()}
    for e in events:
        for v in pair.names:
            pair.publishers[v].publish(e)
    seen = dict.fromkeys(pair.names, 0)
    cpu: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    while len(cpu) < len(pair.names):
        for v in pair.names:
            if v in cpu:
                continue
            if time.monotonic() > deadline or pair.workers[v].poll() is not None:
                raise RuntimeError(f"{v}: {seen[v]} of {len(events)} scored")
            if pair.consumers[v].poll(0.02) is not None:
                seen[v] += 1
                if seen[v] == len(events):
                    cpu[v] = single._cpu_seconds(pair.workers[v].pid) - cpu0[v]
    return {v: len(events) / cpu[v] for v in pair.names}


def latency(pair: Pair, events: list[dict], rate: float) -> dict[str, dict[str, float]]:
    """p50, p99, p99.9 in ms of each variant at ``rate`` events/s offered to both."""
    pair.warm_up(events)
    sent: dict[str, float] = {}
    lat: dict[str, list[float]] = {v: [] for v in pair.names}

    def take(timeout: float) -> None:
        for v in pair.names:
            rec = pair.consumers[v].poll(timeout)
            if rec is not None and rec.score.event_id in sent:
                lat[v].append(time.monotonic() - sent[rec.score.event_id])

    start = time.monotonic()
    for i, e in enumerate(events):
        while time.monotonic() < start + i / rate:
            take(0.0005)
        for v in (pair.names if i % 2 else pair.names[::-1]):
            pair.publishers[v].publish(e)
            pair.publishers[v].poll(0)
        sent[e["event_id"]] = time.monotonic()
    deadline = time.monotonic() + 120
    while any(len(x) < len(events) for x in lat.values()) and time.monotonic() < deadline:
        take(0.05)
    out = {}
    for v, x in lat.items():
        x.sort()
        out[v] = {f"{name}_ms": x[min(len(x) - 1, int(p * len(x)))] * 1000
                  for name, p in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True, help="checkout of the 'before' code")
    ap.add_argument("--before-python", default=None,
                    help="its interpreter (default: <before>/.venv/bin/python)")
    ap.add_argument("--after", type=Path, default=ROOT, help="checkout of the 'after' code")
    ap.add_argument("--after-python", default=sys.executable)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--paced", type=int, default=2_000,
                    help="events in each latency run (0: throughput only)")
    ap.add_argument("--rate", type=float, default=500.0, help="offered events/s for latency")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--guarantees", default="exactly_once,at_least_once")
    args = ap.parse_args()
    variants = {"before": (args.before.resolve(),
                           args.before_python or str(args.before / ".venv" / "bin" / "python")),
                "after": (args.after.resolve(), args.after_python)}

    work = Path(tempfile.mkdtemp(prefix="fraudstream-bench-ab-"))
    broker = LocalKafka(work / "kafka", ROOT / ".cache" / "kafka", port=single._free_port())
    status = broker.up()
    rows: list[tuple[str, dict, dict]] = []
    try:
        base = single.bench_settings(status.bootstrap, args.partitions, prefix="ab")
        events = single.bench_events(args.events + args.paced)
        bulk, paced = events[:args.events], events[args.events:]
        for g in args.guarantees.split(","):
            for r in range(args.rounds):
                pair = Pair(variants, base, g, f"{g}-t{r}", work)
                try:
                    tp = throughput(pair, bulk)
                finally:
                    pair.close()
                lat: dict = {}
                if args.paced:
                    pair = Pair(variants, base, g, f"{g}-l{r}", work)
                    try:
                        lat = latency(pair, paced, args.rate)
                    finally:
                        pair.close()
                rows.append((g, tp, lat))
                print(f"{g} round {r} (load {os.getloadavg()[0]:.1f}): " + "; ".join(
                    f"{v} {tp[v]:,.0f} events/CPU-s" + (
                        f", p50/p99/p99.9 {lat[v]['p50_ms']:.0f}/{lat[v]['p99_ms']:.0f}/"
                        f"{lat[v]['p999_ms']:.0f} ms" if lat else "") for v in variants),
                      flush=True)
    finally:
        broker.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.events:,} events, {args.partitions} partitions, default features and model; "
          f"latency at {args.rate:.0f} events/s offered, {args.paced:,} events; "
          f"{args.rounds} rounds; before {variants['before'][0]}, after {variants['after'][0]}")
    print("| guarantee | run | events per CPU-second (median) | p50 ms | p99 ms | p99.9 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for g in args.guarantees.split(","):
        mine = [(tp, lat) for gg, tp, lat in rows if gg == g]
        for v in variants:
            cells = [f"{statistics.median(tp[v] for tp, _ in mine):,.0f}"]
            for q in ("p50_ms", "p99_ms", "p999_ms"):
                cells.append(f"{statistics.median(lat[v][q] for _, lat in mine):.0f}"
                             if mine[0][1] else "-")
            print(f"| {g} | {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
