"""The demo behind ``make demo``: the whole pipeline on a local broker, in a few minutes.

1. start the local Apache Kafka (unless one runs already) and create this run's topics;
2. simulate three weeks of labelled traffic (``stream.simulate``);
3. start two workers and the trainer as separate processes;
4. replay the log at full speed, events and labels on one timeline, and show scores arriving;
5. measure publish-to-score latency on a paced stream (200 events/s) once the backlog is gone;
6. compute quality on the streamed scores (labels from the log), write the backtest's HTML report
   for the same log, print a summary;
7. stop exactly what it started (workers and trainer by PID, the broker by its recorded PID) and
   delete this run's topics and state, also when interrupted.
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

__all__ = ["generate_events", "run_demo", "CHILD_SETTINGS"]

# The settings a child process (worker, trainer) must share with the demo that starts it.
CHILD_SETTINGS = ("bootstrap_servers", "group_id", "state_dir", "topic_events", "topic_labels",
                  "topic_scores", "topic_dead_letter", "topic_training", "topic_models",
                  "partitions")

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
             echo: Callable[[str], None] = print, days: float = 21.0) -> dict[str, Any]:
    """Run the demo; returns the summary figures (also printed)."""
    from stream.localkafka import LocalKafka

    t0 = time.monotonic()
    broker = LocalKafka(settings.local_kafka_dir, settings.local_kafka_cache_dir,
                        host=settings.local_kafka_host, port=settings.local_kafka_port,
                        heap=settings.local_kafka_heap, log=echo)
    started_broker = not broker.status().running
    run_id = f"{int(time.time())}-{os.getpid()}"
    work = Path(settings.local_kafka_dir).parent / "demo" / run_id
    work.mkdir(parents=True, exist_ok=True)
    procs: dict[str, subprocess.Popen] = {}
    created_topics: list[str] = []
    try:
        st = broker.up()
        echo(f"[demo] Apache Kafka {st.version} on {st.bootstrap}")
        # Topics, group and state unique to this run (deleted at the end), so a demo never
        # re-reads an earlier run's data.
        names = {f"topic_{t}": f"demo-{run_id}.{t.replace('_', '-')}" for t in
                 ("events", "labels", "scores", "dead_letter", "training", "models")}
        settings = settings.replace(group_id=f"demo-{run_id}", state_dir=str(work / "state"),
                                    **names)
        from stream.topics import ensure_topics
        created_topics = list(ensure_topics(settings).created)
        echo(f"[demo] created {len(created_topics)} topics for run {run_id}")

        events_path, labels_path, n_labels = _simulate(work, n_events, days, seed, echo)
        procs = _start_processes(settings, work, echo)
        summary = _stream(settings, events_path, labels_path, n_events, n_labels, procs, echo)
        summary.update(_paced_latency(settings, seed, procs, echo))
        summary.update(_quality(summary.pop("_scores"), labels_path))
        summary["report"] = str(_report(events_path, labels_path, work, echo))
        summary["trainer"] = _trainer_line(work)
        _print_summary(summary, echo, time.monotonic() - t0)
        return summary
    finally:
        _stop_processes(procs, echo)
        if created_topics and not started_broker:
            _delete_topics(settings, created_topics)
        shutil.rmtree(work / "state", ignore_errors=True)
        if started_broker:
            broker.down()
            echo("[demo] broker stopped")
        echo(f"[demo] done in {time.monotonic() - t0:.1f}s; logs and report in {work}")


def _simulate(work: Path, n_events: int, days: float, seed: int,
              echo: Callable[[str], None]) -> tuple[Path, Path, int]:
    from stream.simulate import SimConfig, simulate, write_jsonl

    started = time.monotonic()
    sim = simulate(SimConfig(events=n_events, days=days, fraud_rate=0.02, seed=seed,
                             id_prefix=f"demo{seed}"))
    events_path, labels_path = work / "events.jsonl.gz", work / "labels.jsonl.gz"
    write_jsonl(sim.iter_events(), events_path)
    n_labels = write_jsonl(sim.iter_labels(), labels_path)
    echo(f"[demo] simulated {n_events:,} events over {days:g} days and {n_labels:,} labels "
         f"in {time.monotonic() - started:.1f}s ({events_path})")
    return events_path, labels_path, n_labels


def _start_processes(settings: Settings, work: Path,
                     echo: Callable[[str], None]) -> dict[str, subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env.update(settings.environment(*CHILD_SETTINGS))
    env["FRAUDSTREAM_METRICS_PORT"] = "0"
    env["FRAUDSTREAM_TRAINER_PUBLISH_EVERY"] = "2000"
    env["FRAUDSTREAM_TRAINER_PUBLISH_INTERVAL_S"] = "5"
    commands = {"worker-1": ["worker", "--instance-id", "demo-1"],
                "worker-2": ["worker", "--instance-id", "demo-2"],
                "trainer": ["trainer", "--no-metrics"]}
    procs = {}
    for name, args in commands.items():
        with (work / f"{name}.log").open("wb") as log:
            procs[name] = subprocess.Popen([sys.executable, "-m", "stream", *args], env=env,
                                           stdout=log, stderr=subprocess.STDOUT)
        echo(f"[demo] {name} started (PID {procs[name].pid}, log {work / (name + '.log')})")
    return procs


def _stream(settings: Settings, events_path: Path, labels_path: Path, n_events: int,
            n_labels: int, procs: dict[str, subprocess.Popen],
            echo: Callable[[str], None]) -> dict[str, Any]:
    """Replay at full speed while reading scores; returns throughput and every score."""
    import threading

    from stream.consumer import ScoreConsumer
    from stream.replay import ReplayOptions, replay

    consumer = ScoreConsumer(settings, from_beginning=True)
    outcome: dict[str, Any] = {}

    def run_replay() -> None:
        try:
            outcome["result"] = replay(settings, ReplayOptions(log=events_path, labels=labels_path),
                                       checkpoint=events_path.with_suffix(".checkpoint"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            outcome["error"] = exc

    started = time.monotonic()
    sender = threading.Thread(target=run_replay, name="replay", daemon=True)
    sender.start()
    scores: dict[str, float] = {}
    shown, last_report = 0, started
    deadline = started + 600
    try:
        while len(scores) < n_events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(scores)} of {n_events} events were scored in time")
            if "error" in outcome:
                raise RuntimeError(f"replay failed: {outcome['error']}")
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {proc.returncode}")
            rec = consumer.poll(0.5)
            if rec is None:
                continue
            sc = rec.score
            scores[sc.event_id] = sc.score
            if sc.decision != "approve" and shown < 8:
                shown += 1
                top = sc.reasons[0]["feature"] if sc.reasons else "-"
                echo(f"  {sc.decision:<6} {sc.score:.3f} {sc.event_id} user={sc.user_id} "
                     f"merchant={sc.merchant_id} model={sc.model_version} top reason={top}")
            now = time.monotonic()
            if now - last_report >= 5:
                last_report = now
                echo(f"[demo] {len(scores):,}/{n_events:,} scored "
                     f"({len(scores) / (now - started):,.0f}/s)")
    finally:
        consumer.close()
    sender.join(60)
    elapsed = time.monotonic() - started
    sent = outcome.get("result")
    echo(f"[demo] all {n_events:,} events scored in {elapsed:.1f}s"
         + (f"; replay sent {sent.events_sent:,} events and {sent.labels_sent:,} labels"
            if sent is not None else ""))
    return {"events": n_events, "labels": n_labels, "seconds": elapsed,
            "throughput": n_events / elapsed, "_scores": scores}


def _paced_latency(settings: Settings, seed: int, procs: dict[str, subprocess.Popen],
                   echo: Callable[[str], None], rate: float = 200.0,
                   count: int = 600) -> dict[str, Any]:
    """Publish ``count`` events at ``rate``/s and time each from publish to committed score."""
    from stream.consumer import ScoreConsumer
    from stream.publisher import EventPublisher

    events = generate_events(count, seed + 1, start_ms=1_800_000_000_000,
                             id_prefix=f"paced{seed}")
    consumer = ScoreConsumer(settings, from_beginning=False)
    consumer.poll(1.0)
    while not consumer._consumer.assignment():  # joined: only scores from now on are read
        consumer.poll(0.2)
    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    with EventPublisher(settings, **{"linger.ms": 0}) as pub:
        start = time.monotonic()
        for i, event in enumerate(events):
            due = start + i / rate
            while time.monotonic() < due:
                rec = consumer.poll(max(0.0, min(0.002, due - time.monotonic())))
                if rec is not None and rec.score.event_id in sent_at:
                    latencies.append(time.monotonic() - sent_at[rec.score.event_id])
            pub.publish(event)
            pub.poll(0)
            sent_at[event["event_id"]] = time.monotonic()
    deadline = time.monotonic() + 60
    while len(latencies) < count and time.monotonic() < deadline:
        rec = consumer.poll(0.2)
        if rec is not None and rec.score.event_id in sent_at:
            latencies.append(time.monotonic() - sent_at[rec.score.event_id])
    consumer.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    echo(f"[demo] paced {count} events at {rate:.0f}/s: {len(latencies)} scored")
    return {"latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": latencies[-1] * 1000}
            if latencies else None, "paced_rate": rate}


def _quality(scores: dict[str, float], labels_path: Path) -> dict[str, Any]:
    """ROC AUC, average precision and precision/recall at a 1% review budget on the streamed
    scores of every labelled event."""
    import gzip

    import numpy as np

    from stream import wire
    from stream.backtest import average_precision, precision_recall_at_budget, roc_auc

    truth: dict[str, bool] = {}
    with gzip.open(labels_path, "rb") as fh:
        for line in fh:
            label = wire.loads(line)
            truth[label["event_id"]] = bool(label["is_fraud"])
    ids = [eid for eid in truth if eid in scores]
    s = np.array([scores[eid] for eid in ids])
    y = np.array([truth[eid] for eid in ids])
    _, precision, recall, _ = precision_recall_at_budget(s, y, 0.01)
    return {"labelled": len(ids), "frauds": int(y.sum()), "auc": roc_auc(s, y),
            "ap": average_precision(s, y),
            "at_budget_1pct": {"precision": precision, "recall": recall}}


def _report(events_path: Path, labels_path: Path, work: Path,
            echo: Callable[[str], None]) -> Path:
    """The backtest's HTML report for the same log (same feature and model code, offline)."""
    from stream.backtest import BacktestOptions, compute_report, run_backtest
    from stream.backtest_report import write_report

    started = time.monotonic()
    result = run_backtest(BacktestOptions(log=events_path, labels=labels_path))
    paths = write_report(work / "report", result, compute_report(result))
    echo(f"[demo] backtest report written in {time.monotonic() - started:.1f}s")
    return paths["html"]


def _trainer_line(work: Path) -> str:
    lines = [line for line in (work / "trainer.log").read_text(errors="replace").splitlines()
             if "publish" in line.lower()]
    return lines[-1].split(": ", 1)[-1] if lines else "no model published yet"


def _print_summary(summary: dict[str, Any], echo: Callable[[str], None], total: float) -> None:
    lat = summary.get("latency_ms")
    budget = summary.get("at_budget_1pct") or {}

    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    echo("[demo] summary")
    echo(f"  events processed      {summary['events']:,} (+ {summary['labels']:,} labels)")
    echo(f"  throughput            {summary['throughput']:,.0f} events/s "
         "(replay at full speed to last committed score; 2 workers, 2 stages, exactly-once)")
    if lat:
        echo(f"  end-to-end latency    p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms, max "
             f"{lat['max']:.0f} ms (publish to read_committed score, "
             f"{summary['paced_rate']:.0f} events/s paced)")
    echo(f"  quality (streamed)    ROC AUC {fmt(summary['auc'])}, AP {fmt(summary['ap'])}, "
         f"precision@1% {fmt(budget.get('precision'))}, recall@1% {fmt(budget.get('recall'))} "
         f"over {summary['labelled']:,} labelled events ({summary['frauds']:,} fraud)")
    echo("                        (at full replay speed labels reach the worker with almost no "
         "delay, so this is an upper bound; the report below is the backtest of the same log "
         "with every label at its true time)")
    echo(f"  trainer               {summary['trainer']}")
    echo(f"  HTML report           {summary['report']}")
    echo(f"  wall time so far      {total:.0f}s")


def _stop_processes(procs: dict[str, subprocess.Popen], echo: Callable[[str], None]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for name, proc in procs.items():
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        echo(f"[demo] {name} stopped (exit {proc.returncode})")
