"""What the latency benchmark's load generator costs, itself and the broker, per producer setting.

    python bench/generator_cost.py [--rate 5000] [--events 25000] [--rounds 2]

Runs ``bench_runtime.py``'s paced generator alone (no worker, no reader) against a local broker
started here, once per variant (``linger.ms`` 0 or 5, LZ4 or no compression), ``--rounds``
times alternating, and prints the generator's and the broker's CPU in cores and the
generator's CPU by thread. The first variant of the first round meets a cold JVM; compare the
later rounds. A diagnostic for docs/benchmarks.md ("Where an exactly-once event's wait goes").
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_runtime as single  # noqa: E402

from stream.events import event_from_dict  # noqa: E402
from stream.localkafka import LocalKafka  # noqa: E402

VARIANTS = {"linger 0": {"linger.ms": 0}, "linger 5": {"linger.ms": 5},
            "linger 0, no compression": {"linger.ms": 0, "compression.type": "none"},
            "linger 5, no compression": {"linger.ms": 5, "compression.type": "none"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=5_000.0)
    ap.add_argument("--events", type=int, default=25_000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fraudstream-generator-cost-"))
    broker = LocalKafka(work / "kafka", ROOT / ".cache" / "kafka", port=single._free_port())
    status = broker.up()
    try:
        s = single.bench_settings(status.bootstrap, 4, prefix="gencost")
        records = []
        for e in single.bench_events(args.events):
            ev = event_from_dict(e)
            records.append((ev.user_id.encode(), ev.encode()))
        ctx = multiprocessing.get_context("spawn")
        for r in range(args.rounds):
            for name, conf in VARIANTS.items():
                here, there = ctx.Pipe()
                gen = ctx.Process(target=single._generate,
                                  args=(s.producer_config(**conf), s.topic_events,
                                        s.topic_dead_letter, records, args.rate, there))
                gen.start()
                here.recv()  # connected
                broker0, t0 = single._cpu_seconds(status.pid), time.monotonic()
                here.send("go")
                _, _, failed, cpu, threads = here.recv()
                span = time.monotonic() - t0
                broker_cpu = single._cpu_seconds(status.pid) - broker0
                gen.join(30)
                split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(threads.items(),
                                                                     key=lambda kv: -kv[1]) if v)
                print(f"round {r} {name}: generator {cpu / span:.2f} cores ({split} CPU-s), "
                      f"broker {broker_cpu / span:.2f} cores, {failed} failed", flush=True)
    finally:
        broker.down()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
