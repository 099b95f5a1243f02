"""What one exactly-once commit costs on the local broker, under given client and broker settings.

    python bench/txn_probe.py [--partitions 12] [--txns 50] [--producer linger.ms=0 ...]
                              [--broker transaction.partition.verification.enable=false ...]

A transactional producer writes one record to each of ``--partitions`` partitions, then flushes,
sends consumer offsets to the transaction and commits, ``--txns`` times; the medians (and p90) of
the three steps are printed. Each ``--variant`` (a ``;``-separated list of producer settings) runs
on the same broker, alternating, so they can be compared side by side. A diagnostic for
docs/benchmarks.md ("Runtime"), starting its own broker on loopback.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from bench.bench_runtime import _free_port  # noqa: E402
from stream.localkafka import LocalKafka  # noqa: E402


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"expected NAME=VALUE, got {item!r}")
        out[k] = v
    return out


def run(bootstrap: str, topic: str, partitions: int, txns: int, conf: dict, tag: str,
        reader_conf: dict, worker_order: bool = False) -> dict:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"probe-{tag}",
                         "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", **conf})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{tag}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0)])
    # A read_committed reader of every partition: how long after the commit returns are the
    # transaction's records delivered to it ("visible")?
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"probe-{tag}-reader",
                       "isolation.level": "read_committed", "enable.auto.commit": False,
                       **reader_conf})
    reader.assign([TopicPartition(topic, p, -1) for p in range(partitions)])  # from the end
    reader.poll(0.5)
    producer.init_transactions(30)
    steps: dict[str, list[float]] = {"flush": [], "offsets": [], "commit": [], "total": [],
                                     "visible": []}
    for i in range(txns + 3):
        producer.begin_transaction()
        t0 = time.perf_counter()
        for p in range(partitions):
            producer.produce(topic, b"x" * 200, b"k", p)
        if not worker_order:
            producer.flush(30)
        t1 = time.perf_counter()
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, i + 1)],
                                             consumer.consumer_group_metadata(), 30)
        t2 = time.perf_counter()
        producer.commit_transaction(30)
        t3 = time.perf_counter()
        got = 0
        while got < partitions and time.perf_counter() - t3 < 10:
            got += sum(1 for m in reader.consume(partitions, 0.001) if m.error() is None)
        t4 = time.perf_counter()
        if i >= 3:  # the first transactions pay for connections and coordinator lookups
            steps["visible"].append(t4 - t3)
            steps["flush"].append(t1 - t0)
            steps["offsets"].append(t2 - t1)
            steps["commit"].append(t3 - t2)
            steps["total"].append(t3 - t0)
    consumer.close()
    reader.close()

    def p90(xs: list[float]) -> float:
        return sorted(xs)[int(0.9 * len(xs))]

    return {k: (statistics.median(v) * 1000, p90(v) * 1000) for k, v in steps.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--txns", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variant", action="append", default=[],
                    help="producer settings 'a=1;b=2' (repeatable; default: the defaults)")
    ap.add_argument("--broker", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--worker-order", action="store_true",
                    help="as the worker does: produce, send the offsets, commit (the commit "
                         "flushes), with no pause between transactions; 'flush' is then ~0 "
                         "and the flush is inside 'commit'")
    ap.add_argument("--reader", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the read_committed reader, e.g. fetch.wait.max.ms=10")
    args = ap.parse_args()
    variants = args.variant or [""]
    work = Path(tempfile.mkdtemp(prefix="fraudstream-txn-probe-"))
    broker = LocalKafka(work / "kafka", ROOT / ".cache" / "kafka", port=_free_port(),
                        properties=_pairs(args.broker))
    status = broker.up()
    try:
        admin = AdminClient({"bootstrap.servers": status.bootstrap})
        topic = "probe"
        for f in admin.create_topics([NewTopic(topic, args.partitions, 1)]).values():
            f.result()
        results: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for j, v in enumerate(variants):
                conf = _pairs([x for x in v.split(";") if x])
                results[v].append(run(status.bootstrap, topic, args.partitions, args.txns, conf,
                                      f"{r}-{j}", _pairs(args.reader), args.worker_order))
    finally:
        broker.down()
        shutil.rmtree(work, ignore_errors=True)
    print(f"broker {status.version}, extra broker settings {args.broker or 'none'}, reader "
          f"{args.reader or 'defaults'}; "
          f"{args.partitions} partitions, {args.txns} transactions x {args.rounds} rounds; "
          "ms, median of round medians (p90 in brackets)")
    for v, rounds in results.items():
        cells = []
        for step in ("flush", "offsets", "commit", "total", "visible"):
            med = statistics.median(r[step][0] for r in rounds)
            p90 = statistics.median(r[step][1] for r in rounds)
            cells.append(f"{step} {med:.1f} ({p90:.1f})")
        print(f"  [{v or 'defaults'}] " + ", ".join(cells))


if __name__ == "__main__":
    main()
