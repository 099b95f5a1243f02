"""The demo behind ``make demo``: a local broker, generated traffic, a worker, scores arriving.

It starts only what is not already running, and stops exactly what it started (the broker by its
recorded PID, the worker by the PID of the process it spawned), also when interrupted.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.settings import Settings

__all__ = ["generate_events", "run_demo"]

_CURRENCIES = ("EUR", "EUR", "EUR", "GBP", "USD")
_COUNTRIES = ("DE", "FR", "NL", "GB", "ES", "IT")


def generate_events(n: int, seed: int, start_ms: int = 1_767_225_600_000,
                    id_prefix: str = "demo") -> list[dict[str, Any]]:
    """``n`` seeded transactions: habitual users plus a few card-testing bursts.

    The full simulator (scenarios, delayed labels) is ``fraudstream simulate``; this is just enough
    traffic to watch the pipeline work.
    """
    rng = random.Random(seed)
    n_users = max(10, n // 25)
    users = [(f"u{i:05d}", rng.lognormvariate(3.5, 0.8), rng.choice(_COUNTRIES))
             for i in range(n_users)]
    merchants = [f"m{i:04d}" for i in range(max(5, n // 200))]
    events: list[dict[str, Any]] = []
    t = start_ms
    i = 0
    while len(events) < n:
        t += int(rng.expovariate(1 / 2_000))  # one event every two seconds on average
        if rng.random() < 0.01:  # a card-testing burst: many tiny amounts within minutes
            user, _, country = rng.choice(users)
            merchant = rng.choice(merchants)
            for _ in range(min(rng.randint(8, 20), n - len(events))):
                t += rng.randint(1_000, 15_000)
                events.append(_txn(f"{id_prefix}-{i:07d}", t, user, merchant,
                                   round(rng.uniform(0.5, 2.0), 2), country, "card_testing"))
                i += 1
            continue
        user, typical, country = rng.choice(users)
        amount = round(rng.lognormvariate(0, 0.6) * typical, 2)
        events.append(_txn(f"{id_prefix}-{i:07d}", t, user, rng.choice(merchants), amount,
                           country, None))
        i += 1
    return events


def _txn(event_id: str, t: int, user: str, merchant: str, amount: float, country: str,
         scenario: str | None) -> dict[str, Any]:
    event = {"event_id": event_id, "event_type": "transaction", "event_time": t,
             "user_id": user, "merchant_id": merchant, "amount": amount,
             "currency": "EUR", "country": country, "channel": "web"}
    if scenario:
        event["attributes"] = {"scenario": scenario}
    return event


# A few malformed records, to show the dead-letter path.
_MALFORMED = [
    b"{not json",
    b'{"event_id":"bad-1","event_type":"transaction","event_time":1767225600000,'
    b'"user_id":"u1","merchant_id":"m1","amount":-5,"currency":"EUR"}',
    b'{"event_id":"bad-2","event_type":"transaction","user_id":"u1"}',
    b"\xff\xfe not utf-8",
]


def _delete_topics(settings: Settings, names: list[str]) -> None:
    """Remove this run's topics (and the worker's internal ones) from a broker we did not start."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(settings.kafka_client_config())
    internal = [t for t in admin.list_topics(timeout=10).topics
                if t.startswith(f"{settings.group_id}.")]
    for fut in admin.delete_topics(names + internal, operation_timeout=30).values():
        try:
            fut.result()
        except Exception:  # noqa: BLE001 - best effort clean-up of demo topics
            pass


def run_demo(settings: Settings, n_events: int, seed: int,
             echo: Callable[[str], None] = print) -> None:
    from stream.consumer import ScoreConsumer
    from stream.localkafka import LocalKafka
    from stream.publisher import EventPublisher
    from stream.topics import ensure_topics

    t0 = time.monotonic()
    broker = LocalKafka(settings.local_kafka_dir, settings.local_kafka_cache_dir,
                        host=settings.local_kafka_host, port=settings.local_kafka_port,
                        heap=settings.local_kafka_heap, log=echo)
    started_broker = not broker.status().running
    worker: subprocess.Popen | None = None
    created_topics: list[str] = []
    log_path = Path(settings.local_kafka_dir) / "demo-worker.log"
    try:
        st = broker.up()
        echo(f"[demo] Apache Kafka {st.version} on {st.bootstrap}")
        # Topics, group and state unique to this run (and deleted at the end), so a demo never
        # re-reads an earlier run's events.
        run_id = f"{int(time.time())}-{os.getpid()}"
        settings = settings.replace(
            topic_events=f"demo-{run_id}.events", topic_labels=f"demo-{run_id}.labels",
            topic_scores=f"demo-{run_id}.scores", topic_dead_letter=f"demo-{run_id}.dead-letter",
            group_id=f"demo-{run_id}", instance_id="demo",
            state_dir=str(Path(settings.local_kafka_dir) / "demo-state"))
        report = ensure_topics(settings)
        created_topics = list(report.created)
        echo(f"[demo] topics ready: {', '.join(report.created)}")
        env = dict(os.environ)
        env.update({f"FRAUDSTREAM_{k.upper()}": str(v) for k, v in (
            ("bootstrap_servers", settings.bootstrap_servers), ("group_id", settings.group_id),
            ("instance_id", "demo"), ("topic_events", settings.topic_events),
            ("topic_labels", settings.topic_labels), ("topic_scores", settings.topic_scores),
            ("topic_dead_letter", settings.topic_dead_letter), ("state_dir", settings.state_dir),
            ("partitions", settings.partitions))})
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log_file:
            worker = subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env,
                                      stdout=log_file, stderr=subprocess.STDOUT)
        echo(f"[demo] worker started (PID {worker.pid}, log {log_path})")

        consumer = ScoreConsumer(settings, from_beginning=True)
        events = generate_events(n_events, seed, id_prefix=f"demo{run_id}")
        sent_at: dict[str, float] = {}
        pub_start = time.monotonic()
        with EventPublisher(settings) as pub:
            for raw in _MALFORMED:
                pub.publish_raw(settings.topic_events, raw, b"u1")
            for event in events:
                pub.publish(event)
                sent_at[event["event_id"]] = time.monotonic()
        del pub  # its connections must not outlive the broker this demo may stop
        pub_secs = time.monotonic() - pub_start
        echo(f"[demo] published {len(events)} events and {len(_MALFORMED)} malformed records in "
             f"{pub_secs:.2f}s")

        latencies: list[float] = []
        decisions: dict[str, int] = {}
        shown = 0
        first_score = last_score = None
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        while len(seen) < len(events) and time.monotonic() < deadline:
            rec = consumer.poll(0.5)
            if rec is None:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with code {worker.returncode}; "
                                       f"see {log_path}")
                continue
            now = time.monotonic()
            sc = rec.score
            if sc.event_id not in sent_at or sc.event_id in seen:
                continue
            seen.add(sc.event_id)
            first_score = first_score or now
            last_score = now
            latencies.append((now - sent_at[sc.event_id]) * 1000)
            decisions[sc.decision] = decisions.get(sc.decision, 0) + 1
            if shown < 8 or (sc.decision != "approve" and shown < 16):
                shown += 1
                top = sc.reasons[0]["feature"] if sc.reasons else "-"
                echo(f"  score {sc.score:.3f} {sc.decision:<7} {sc.event_id} user={sc.user_id} "
                     f"merchant={sc.merchant_id} top reason={top}")
        consumer.close()
        latencies.sort()
        span = (last_score - pub_start) if last_score else float("nan")

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else 0

        echo("[demo] summary")
        echo(f"  events scored       {len(seen)} of {len(events)}")
        echo(f"  decisions           {dict(sorted(decisions.items()))}")
        echo(f"  throughput          {len(seen) / span:,.0f} events/s (publish to last score)")
        echo(f"  publish->read_committed score latency  p50 {pct(0.5):.0f} ms  "
             f"p99 {pct(0.99):.0f} ms  (batched publishing, 100 ms transactions)")
        if len(seen) < len(events):
            raise RuntimeError(f"only {len(seen)} of {len(events)} events were scored in time")
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            echo("[demo] worker stopped")
            for line in log_path.read_text().splitlines()[-1:]:
                echo(f"  {line}")
        if created_topics and not started_broker:
            _delete_topics(settings, created_topics)
        shutil.rmtree(Path(settings.state_dir) / settings.group_id, ignore_errors=True)
        if started_broker:
            broker.down()
            echo("[demo] broker stopped")
        echo(f"[demo] done in {time.monotonic() - t0:.1f}s")
