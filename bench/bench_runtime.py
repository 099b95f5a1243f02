"""The full pipeline's throughput and latency: one ``fraudstream worker`` process on a local broker.

    .venv/bin/python bench/bench_runtime.py [--events 40000] [--rounds 2]
                                            [--rate 5000] [--paced 20000] [--latency-rounds 3]

For each processing guarantee (exactly_once, at_least_once):

* **broker warm-up** (``--broker-warmup``, unmeasured): latency runs at ``--rate`` first, until
  the broker's JIT compiler threads are nearly idle in one (at most 240 s by default). A broker
  that has just started spends half a core or more on JIT compilation for a minute or more of
  this load; a production broker has long done that. Each latency run reports the compiler
  threads' CPU (``broker_jit``) to show it is over.
* **throughput** (``--rounds``, skipped with ``--events 0``): a fresh worker (new group, new state)
  is warmed up with 200 events; then N events (the simulator's; default features, the default
  online model) are published at once and the clock runs from the first publish to the last
  committed score (read_committed): events per second of one worker process running both
  stages. The worker's CPU seconds over the same span give events per CPU-second, which a busy
  machine disturbs less.
* **latency** (``--latency-rounds``, each a fresh worker, warmed up): a generator *process*
  produces ``--paced`` events open loop at ``--rate`` per second (pre-encoded, ``linger.ms=5``
  as the SDK's publisher, ``--generator-linger``; each event timed from its ``produce`` call;
  every event due is sent however late the generator runs, so a slow worker meets a backlog, not
  a slower offer), while this process reads the scores read_committed and times each event from
  its ``produce`` to its score's arrival: p50, p99, p99.9 over every event. Reported with the
  rate the generator achieved, how far it fell behind its schedule, the worker's CPU use in
  cores, and how long after the last send the last score arrived (a worker that cannot keep up
  shows it there first), and every process's CPU (worker, broker, generator, this reader: on a
  small machine they share the cores). Medians over the runs. With ``--probe`` each run also
  leaves per-event send/produce/read times for ``bench/latency_breakdown.py``.

``--pin-worker CPU`` gives the worker that CPU alone and puts everything else (this process, the
broker, the generator) on the other CPUs: the production layout, where the broker and the
publishers run elsewhere, on one small machine.

``--worker-root`` and ``--worker-python`` run the worker from another checkout (a detached
checkout of the base commit) with everything else the same, for side-by-side runs; ``--probe``
runs each worker under ``bench/loop_probe.py`` (its loop timed step by step).

Everything binds to 127.0.0.1; the broker and workers are started and stopped by this script.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
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

from stream.consumer import ScoreConsumer  # noqa: E402
from stream.demo import CHILD_SETTINGS  # noqa: E402
from stream.localkafka import LocalKafka  # noqa: E402
from stream.publisher import EventPublisher  # noqa: E402
from stream.settings import Settings  # noqa: E402
from stream.simulate import SimConfig, simulate  # noqa: E402
from stream.topics import ensure_topics  # noqa: E402
from stream import wire  # noqa: E402


def _free_port() -> int:
    import socket

    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port pair")


def _env(s: Settings, guarantee: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    env.update(s.environment(*CHILD_SETTINGS))
    env["FRAUDSTREAM_PROCESSING_GUARANTEE"] = guarantee
    env["FRAUDSTREAM_METRICS_PORT"] = "0"
    env["FRAUDSTREAM_LOG_LEVEL"] = "WARNING"
    env.update(WORKER_ENV)
    return env


#: Set by --worker-env: extra FRAUDSTREAM_* variables for the worker (settings to compare).
WORKER_ENV: dict[str, str] = {}
#: Set by --profile: a directory where each worker runs under py-spy and leaves a profile.
PROFILE_DIR: Path | None = None
#: Set by --probe: a directory where each worker runs under bench/loop_probe.py.
PROBE_DIR: Path | None = None
#: Set by --worker-root/--worker-python: the checkout and interpreter the worker runs from (a
#: detached checkout of another commit, for side-by-side runs), by default this one.
WORKER_ROOT: Path = ROOT
WORKER_PYTHON: str = sys.executable
#: The local broker's PID (its CPU use is reported per latency run).
BROKER_PID: int | None = None
#: Set by --generator-linger: the load generator's ``linger.ms``. 5, as the SDK's EventPublisher
#: (librdkafka's default); until 2026-11-29 it was 0, a produce request per 1 ms tick, which
#: cost the generator and the broker about 0.3 cores between them at 5,000/s (docs/benchmarks.md).
GENERATOR_LINGER_MS: int = 5
#: Set by --pin-worker: the CPU the worker runs on; this process, the broker and the generator
#: (its children) then run on the other CPUs, as in production, where the broker has machines of
#: its own and the publishers are other services.
WORKER_CPU: int | None = None


def _start_worker(s: Settings, guarantee: str, log: Path, tag: str = "") -> subprocess.Popen:
    cmd = ["-m", "stream", "worker", "--instance-id", "bench"]
    if PROBE_DIR is not None and tag:
        # The worker with its loop timed (bench/loop_probe.py, from this checkout's bench/).
        cmd = [str(Path(__file__).with_name("loop_probe.py")), str(PROBE_DIR / f"{tag}.json"),
               "worker", "--instance-id", "bench"]
    env = _env(s, guarantee)
    if WORKER_ROOT != ROOT:
        env["PYTHONPATH"] = str(WORKER_ROOT)
    argv = [WORKER_PYTHON, *cmd]
    if WORKER_CPU is not None:  # taskset execs the worker: same PID, every thread on that CPU
        argv = ["taskset", "--cpu-list", str(WORKER_CPU), *argv]
    with log.open("ab") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                cwd=WORKER_ROOT)


def _profile(pid: int, tag: str) -> subprocess.Popen | None:
    """Sample the worker with py-spy from outside (--nonblocking: the worker is never paused)
    until SIGINT; collapsed stacks go to PROFILE_DIR/<tag>.txt."""
    if PROFILE_DIR is None:
        return None
    return subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record",
                             "--nonblocking", "--format", "raw", "--rate", "250", "--pid",
                             str(pid), "-o", str(PROFILE_DIR / f"{tag}.txt")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _own_cpu() -> float:
    """This process's CPU seconds, every thread (the score reader's librdkafka threads too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread kind of ``pid`` (thread names without their digits: the Python
    main thread, librdkafka's ``rdk:broker``/``rdk:main``, RocksDB's background threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            head, rest = (task / "stat").read_text().rsplit(")", 1)
        except OSError:  # the thread ended
            continue
        name = "".join(c for c in head.split("(", 1)[1] if not c.isdigit()) or "?"
        fields = rest.split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def _jit_seconds(pid: int) -> float:
    """CPU seconds the JVM ``pid`` spent compiling (its C1/C2 compiler threads)."""
    return sum(v for k, v in _thread_cpu(pid).items() if "CompilerThre" in k)


def bench_settings(bootstrap: str, partitions: int, prefix: str = "bench") -> Settings:
    """Settings for the benchmark's project topics on the local broker (created here)."""
    base = Settings.load(env={}, overrides={
        "bootstrap_servers": bootstrap, "partitions": partitions,
        "topic_events": f"{prefix}.events", "topic_labels": f"{prefix}.labels",
        "topic_dead_letter": f"{prefix}.dead-letter", "topic_training": f"{prefix}.training",
        "topic_models": f"{prefix}.models"})
    ensure_topics(base)
    return base


def bench_events(n: int) -> list[dict]:
    """The simulator's first ``n`` events (14 days, seed 3): the same in every run."""
    return list(simulate(SimConfig(events=n, days=14, seed=3, id_prefix="bench")).iter_events())


def _warm_up(s: Settings, consumer: ScoreConsumer, events: list[dict],
             pub: EventPublisher | None = None) -> None:
    """Score a few events first: group joined, tasks restored, modules imported (and, given
    ``pub``, the publisher connected with its producer id, as a long-lived service's is)."""
    warm = events[:200]  # fewer when a run has fewer events (--paced 100)
    if pub is None:
        with EventPublisher(s, **{"linger.ms": 0}) as own:
            for e in warm:
                own.publish(dict(e, event_id=f"warm-{e['event_id']}"))
    else:
        for e in warm:
            pub.publish(dict(e, event_id=f"warm-{e['event_id']}"))
        pub.flush()
    got = 0
    while got < len(warm):
        if consumer.poll(1.0) is not None:
            got += 1


def throughput(base: Settings, events: list[dict], guarantee: str, tag: str,
               work: Path) -> dict:
    """A caught-up worker is sent N events at once; the clock and the worker's CPU time run from
    the first publish to the last committed score."""
    s = base.replace(group_id=f"bench-{tag}", topic_events=f"bench-{tag}.events",
                     topic_scores=f"bench-{tag}.scores", state_dir=str(work / f"state-{tag}"))
    ensure_topics(s)
    consumer = ScoreConsumer(s, from_beginning=True)
    worker = _start_worker(s, guarantee, work / f"worker-{tag}.log", tag)
    try:
        _warm_up(s, consumer, events)
        spy = _profile(worker.pid, tag)
        t0, cpu0 = time.monotonic(), _cpu_seconds(worker.pid)
        threads0 = _thread_cpu(worker.pid)
        with EventPublisher(s) as pub:
            for e in events:
                pub.publish(e)
        seen = 0
        deadline = time.monotonic() + 1800
        while seen < len(events):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{tag}: {seen} of {len(events)} scored "
                                   f"(worker exit {worker.poll()})")
            if consumer.poll(0.5) is not None:
                seen += 1
        span, cpu = time.monotonic() - t0, _cpu_seconds(worker.pid) - cpu0
        threads = {name: round(t - threads0.get(name, 0.0), 2)
                   for name, t in _thread_cpu(worker.pid).items()
                   if t - threads0.get(name, 0.0) > 0}
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
    finally:
        consumer.close()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    return {"events": seen, "seconds": span, "events_per_s": seen / span,
            "events_per_cpu_s": seen / cpu if cpu else None, "cpu_s": round(cpu, 2),
            "cpu_s_by_thread": threads}


def _generate(producer_conf: dict, topic: str, warm_topic: str,
              records: list[tuple[bytes, bytes]], rate: float, conn) -> None:
    """The paced load generator, in a process of its own (so reading and decoding scores never
    delays a send): produce ``records`` open loop at ``rate`` per second (every record due by now
    is sent, however late the generator is), and send back each record's send time
    (``time.monotonic``, which is system-wide) and how many failed delivery."""
    from confluent_kafka import Producer

    failed = [0]

    def delivered(err, msg) -> None:
        if err is not None:
            failed[0] += 1

    producer = Producer(producer_conf)
    # Connected, the topic's metadata known and the idempotent producer id assigned before the
    # clock starts (one record to a topic nobody reads in the benchmark), as in a long-lived
    # service: else the first records wait for all of that.
    producer.list_topics(topic, timeout=30)
    producer.produce(warm_topic, b"warm-up")
    producer.flush(30)
    n = len(records)
    sent = [0.0] * n
    conn.send("ready")
    conn.recv()
    start, cpu0, threads0 = time.monotonic(), time.process_time(), _thread_cpu(os.getpid())
    i = 0
    while i < n:
        due = min(n, int((time.monotonic() - start) * rate) + 1)
        while i < due:
            key, value = records[i]
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.01)  # never drop: wait for room
            sent[i] = time.monotonic()
            i += 1
        producer.poll(0)
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            # At least a millisecond: at 5,000/s the events due go out in small bursts instead
            # of one wake-up per event (which cost the generator most of a core). Each event is
            # timed from its own send.
            time.sleep(max(delay, 0.001))
    producer.flush(60)
    threads = {k: round(v - threads0.get(k, 0.0), 2) for k, v in _thread_cpu(os.getpid()).items()}
    conn.send((start, sent, failed[0], time.process_time() - cpu0, threads))


def latency(base: Settings, events: list[dict], guarantee: str, tag: str, rate: float,
            work: Path, warmup_s: float = 0.0) -> dict:
    """End-to-end latency at a fixed offered rate: a caught-up worker; a generator process
    produces ``events`` at ``rate`` per second; this process reads the scores read_committed and
    times each from its produce to its arrival."""
    import multiprocessing

    from confluent_kafka import Consumer

    from stream.events import event_from_dict

    s = base.replace(group_id=f"bench-{tag}", topic_events=f"bench-{tag}.events",
                     topic_scores=f"bench-{tag}.scores", state_dir=str(work / f"state-{tag}"))
    ensure_topics(s)
    records = []
    for e in events:
        ev = event_from_dict(e)
        records.append((ev.user_id.encode(), ev.encode()))
    ids = {e["event_id"]: i for i, e in enumerate(events)}
    worker = _start_worker(s, guarantee, work / f"worker-{tag}.log", tag)
    score_consumer = ScoreConsumer(s, from_beginning=True)
    received = [0.0] * len(events)
    # Each score's record timestamp (ms, wall clock): when the worker produced it, which splits
    # an event's wait into before and after that point (``--probe`` keeps them).
    produced = [0] * len(events)
    gen = None
    try:
        _warm_up(s, score_consumer, events)
        score_consumer.close()
        consumer = Consumer(s.consumer_config(f"bench-{tag}-reader",
                                              **{"auto.offset.reset": "earliest"}))
        consumer.subscribe([s.topic_scores])
        while not consumer.assignment():  # assigned before the first paced event is produced
            consumer.poll(0.1)
        ctx = multiprocessing.get_context("spawn")
        here, there = ctx.Pipe()
        gen_conf = s.producer_config(**{"linger.ms": GENERATOR_LINGER_MS})
        gen = ctx.Process(target=_generate, args=(gen_conf,
                                                  s.topic_events, s.topic_dead_letter, records,
                                                  rate, there))
        gen.start()
        if not here.poll(120):
            raise RuntimeError(f"{tag}: the load generator did not start")
        here.recv()  # the generator is connected
        cpu0, t0 = _cpu_seconds(worker.pid), time.monotonic()
        threads0 = _thread_cpu(worker.pid)
        broker0 = _cpu_seconds(BROKER_PID) if BROKER_PID else 0.0
        jit0 = _jit_seconds(BROKER_PID) if BROKER_PID else 0.0
        reader0 = _own_cpu()
        here.send("go")
        got = 0
        deadline = time.monotonic() + len(events) / rate + 120
        result = None
        while got < len(events) and time.monotonic() < deadline:
            # What is already fetched, else wait for one record: consume(n, timeout) returns
            # only when it has n records or the timeout passed, which would add up to the
            # timeout to every latency measured.
            msgs = consumer.consume(500, 0) or consumer.consume(1, 0.05)
            for msg in msgs:
                if msg.error() is not None:
                    continue
                i = ids.get(wire.loads(msg.value())["event_id"])
                if i is not None and not received[i]:
                    received[i] = time.monotonic()
                    produced[i] = msg.timestamp()[1]
                    got += 1
            if result is None and here.poll():
                result = here.recv()
        cpu, span = _cpu_seconds(worker.pid) - cpu0, time.monotonic() - t0
        worker_threads = {k: v - threads0.get(k, 0.0) for k, v in _thread_cpu(worker.pid).items()}
        reader_cpu = _own_cpu() - reader0
        broker_cpu = _cpu_seconds(BROKER_PID) - broker0 if BROKER_PID else 0.0
        broker_jit = _jit_seconds(BROKER_PID) - jit0 if BROKER_PID else 0.0
        wall_offset = time.time() - time.monotonic()
        if result is None:
            if not here.poll(120):
                raise RuntimeError(f"{tag}: the load generator did not finish")
            result = here.recv()
        gen.join(30)
        consumer.close()
    finally:
        if gen is not None and gen.is_alive():
            gen.terminate()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
    start, sent, failed, gen_cpu, gen_threads = result
    if PROBE_DIR is not None:  # per event: sent, score read (wall clock, s), score produced (ms)
        (PROBE_DIR / f"{tag}.events.json").write_bytes(wire.dumps({
            "warmup": int(warmup_s * rate),
            "sent": [t + wall_offset for t in sent],
            "received": [r + wall_offset if r else 0.0 for r in received],
            "produced_ms": produced}))
    # The statistics leave out the events sent in the first ``warmup_s``: a fresh worker's first
    # seconds (the worst latencies of a run were there, at any rate; see "all_p99_ms").
    skip = int(warmup_s * rate)
    everything = sorted(r - t for r, t in zip(received, sent) if r)
    lat = sorted(r - t for r, t in zip(received[skip:], sent[skip:]) if r)
    missing = len(events) - len(everything)
    behind = max(t - (start + i / rate) for i, t in enumerate(sent))

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000

    achieved = (len(sent) - 1) / (sent[-1] - sent[0]) if len(sent) > 1 else 0.0
    # The worst latency of the events sent in each 250 ms, to tell a start-up transient from
    # periodic stalls.
    timeline: dict[int, float] = {}
    for r, t in zip(received, sent):
        if r:
            slot = int((t - start) * 4)
            timeline[slot] = max(timeline.get(slot, 0.0), round((r - t) * 1000, 1))
    return {"rate": rate, "achieved_rate": achieved, "generator_behind_ms": behind * 1000,
            "events": len(lat), "missing": missing, "failed": failed,
            "p50_ms": q(0.5), "p99_ms": q(0.99), "p999_ms": q(0.999), "max_ms": lat[-1] * 1000,
            "warmup_s": warmup_s,
            "all_p99_ms": everything[min(len(everything) - 1, int(0.99 * len(everything)))] * 1000,
            "drain_ms": (max(received) - sent[-1]) * 1000,
            "worker_cores": cpu / span if span else 0.0,
            # Every process's CPU over the same span, in cores: on 2 shared cores what the
            # broker, the generator and this reader use is not the worker's.
            "cores": {"worker": cpu / span, "broker": broker_cpu / span,
                      "generator": gen_cpu / span, "reader": reader_cpu / span,
                      "broker_jit": broker_jit / span},
            "generator_cpu_s_by_thread": gen_threads,
            "worker_cpu_s_by_thread": worker_threads,
            "worst_ms_per_250ms": [timeline.get(i, 0.0) for i in range(max(timeline) + 1)]}


#: Broker warm-up: runs of this many seconds, until one's JIT compiling is below this many cores.
WARM_CHUNK_S = 20.0
WARM_JIT_CORES = 0.05


def warm_up_broker(base: Settings, events: list[dict], guarantee: str, rate: float,
                   budget_s: float, work: Path) -> None:
    """Unmeasured latency runs until the broker's JVM has compiled its hot paths.

    A fresh broker's JIT compiler threads take 0.3-0.6 of a core under this load for a minute
    or more (longer on a busy machine), CPU a broker that has been up for a while does not
    spend; on two cores it is taken from the worker and the broker's own request threads."""
    spent, i = 0.0, 0
    while events and spent < budget_s:
        run = latency(base, events, guarantee, f"{guarantee}-brokerwarm{i}", rate, work)
        spent, i = spent + len(events) / rate, i + 1
        jit = run["cores"]["broker_jit"]
        print(f"{guarantee} broker warm-up {i}: broker {run['cores']['broker']:.2f} cores, "
              f"its JIT {jit:.2f}", file=sys.stderr, flush=True)
        if jit < WARM_JIT_CORES:
            break


def _median_latency(rounds: list[dict]) -> dict:
    out = {k: statistics.median(r[k] for r in rounds)
           for k in ("achieved_rate", "p50_ms", "p99_ms", "p999_ms", "max_ms", "drain_ms",
                     "worker_cores", "generator_behind_ms")}
    out["cores"] = {k: statistics.median(r["cores"][k] for r in rounds)
                    for k in rounds[0]["cores"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000,
                    help="events in each throughput round (0: no throughput rounds)")
    ap.add_argument("--paced", type=int, default=20_000, help="events in each latency run")
    ap.add_argument("--rate", type=float, default=5_000.0, help="offered events/s for latency")
    ap.add_argument("--rounds", type=int, default=2, help="throughput rounds")
    ap.add_argument("--latency-rounds", type=int, default=1,
                    help="latency runs per guarantee (each a fresh worker); medians reported")
    ap.add_argument("--latency-warmup", type=float, default=2.0, metavar="SECONDS",
                    help="leave the events sent in the first SECONDS of each latency run out of "
                         "its statistics (a fresh worker's first seconds); all_p99_ms has them")
    ap.add_argument("--broker-warmup", type=float, default=240.0, metavar="SECONDS",
                    help="before each guarantee's measured runs, unmeasured latency runs of "
                         f"{WARM_CHUNK_S:g} s at --rate until the broker's JIT compiler threads "
                         f"use under {WARM_JIT_CORES} cores in one, or for at most SECONDS: the "
                         "broker's JVM then runs compiled code, as a long-running broker's does "
                         "(0: measure a cold broker, as before 2026-11-29)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--guarantees", default="exactly_once,at_least_once")
    ap.add_argument("--profile", type=Path, default=None,
                    help="run each worker under py-spy (pip install py-spy) and write collapsed "
                         "stacks into this directory")
    ap.add_argument("--probe", type=Path, default=None,
                    help="run each worker under bench/loop_probe.py (its loop timed) and write "
                         "<tag>.json into this directory")
    ap.add_argument("--worker-root", type=Path, default=None,
                    help="run the worker from this checkout (e.g. a detached checkout of the "
                         "base commit, for side-by-side runs)")
    ap.add_argument("--worker-python", default=None,
                    help="the interpreter for the worker (e.g. that checkout's .venv/bin/python)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an extra FRAUDSTREAM_* variable for the worker, e.g. "
                         "FRAUDSTREAM_COMMIT_INTERVAL_MS=200 (repeatable)")
    ap.add_argument("--generator-linger", type=int, default=5, metavar="MS",
                    help="the load generator's linger.ms (default 5, as the SDK's "
                         "EventPublisher; 0, the default until 2026-11-29, sends a produce "
                         "request per 1 ms tick); latency still counts from each event's "
                         "produce call, so it includes the linger")
    ap.add_argument("--pin-worker", type=int, default=None, metavar="CPU",
                    help="run the worker on this CPU alone and the broker, the generator and "
                         "the reader on the others (the production layout, on one machine)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--keep", action="store_true",
                    help="keep the broker data, worker state and logs (a temp dir) after a run")
    args = ap.parse_args()
    global PROFILE_DIR, PROBE_DIR, WORKER_ROOT, WORKER_PYTHON, BROKER_PID, GENERATOR_LINGER_MS
    global WORKER_CPU
    GENERATOR_LINGER_MS = args.generator_linger
    if args.paced and args.paced <= args.latency_warmup * args.rate:
        ap.error(f"--paced {args.paced}: every event would fall in the first "
                 f"{args.latency_warmup:g} s left out (--latency-warmup) at --rate {args.rate:g}")
    if args.pin_worker is not None:
        others = os.sched_getaffinity(0) - {args.pin_worker}
        if args.pin_worker not in os.sched_getaffinity(0) or not others:
            ap.error(f"--pin-worker {args.pin_worker}: needs that CPU and at least one other "
                     f"among this process's {sorted(os.sched_getaffinity(0))}")
        if shutil.which("taskset") is None:
            ap.error("--pin-worker needs taskset (util-linux) on PATH")
        WORKER_CPU = args.pin_worker
        os.sched_setaffinity(0, others)  # inherited by the broker and the generator
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("FRAUDSTREAM_"):
            ap.error(f"--worker-env: expected FRAUDSTREAM_NAME=VALUE, got {item!r}")
        WORKER_ENV[name] = value
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE_DIR = args.profile.resolve()
    if args.probe is not None:
        args.probe.mkdir(parents=True, exist_ok=True)
        PROBE_DIR = args.probe.resolve()
    if args.worker_root is not None:
        WORKER_ROOT = args.worker_root.resolve()
    if args.worker_python is not None:
        WORKER_PYTHON = args.worker_python

    work = Path(tempfile.mkdtemp(prefix="fraudstream-bench-runtime-"))
    broker = LocalKafka(work / "kafka", ROOT / ".cache" / "kafka", port=_free_port())
    status = broker.up()
    BROKER_PID = status.pid
    finished = False
    try:
        base = bench_settings(status.bootstrap, args.partitions)
        events = bench_events(args.events + args.paced)
        bulk, paced = events[:args.events], events[args.events:]
        results: dict[str, dict] = {}
        warm_n = int(min(WARM_CHUNK_S, args.broker_warmup) * args.rate)
        warm_events = bench_events(warm_n) if warm_n > 0 else []
        for guarantee in args.guarantees.split(","):
            warm_up_broker(base, warm_events, guarantee, args.rate, args.broker_warmup, work)
            runs = ([throughput(base, bulk, guarantee, f"{guarantee}-{r}", work)
                     for r in range(args.rounds)] if args.events else [])
            lats = [latency(base, paced, guarantee, f"{guarantee}-lat{r}", args.rate, work,
                            args.latency_warmup)
                    for r in range(args.latency_rounds)] if args.paced else []
            results[guarantee] = {
                "events_per_s_median": (statistics.median(r["events_per_s"] for r in runs)
                                        if runs else None),
                "events_per_cpu_s_median": (statistics.median(r["events_per_cpu_s"]
                                                              for r in runs) if runs else None),
                "rounds": runs, "latency_rounds": lats,
                "latency": _median_latency(lats) if lats else None}
        load = os.getloadavg()
        finished = True
    finally:
        broker.down()
        # The broker's data, the workers' state and logs: about 100 MB a run. Kept when asked
        # or when the run failed (the worker logs say why).
        if finished and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"broker data, worker state and logs kept in {work}", file=sys.stderr)
    if args.json is not None:
        args.json.write_bytes(wire.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                          "load": load, "results": results}))
    print(f"date {time.strftime('%Y-%m-%d')}; python {platform.python_version()}; "
          f"Apache Kafka {status.version}; {os.cpu_count()} cores; load {load[0]:.1f}; "
          f"max RSS of this script {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB"
          + (f"; worker from {WORKER_ROOT}" if WORKER_ROOT != ROOT else ""))
    print(f"{args.events:,} events, {args.partitions} partitions, default features and model; "
          f"latency at {args.rate:.0f} events/s offered, {args.paced:,} events, "
          f"{args.latency_rounds} run(s), the first {args.latency_warmup:g} s of each left out, "
          f"broker warmed up to {args.broker_warmup:g} s per guarantee, "
          f"generator linger.ms={GENERATOR_LINGER_MS}"
          + (f"; worker pinned to CPU {WORKER_CPU}, the rest on "
             f"{sorted(os.sched_getaffinity(0))}" if WORKER_CPU is not None else "")
          + "".join(f"; {k}={v}" for k, v in WORKER_ENV.items()))
    print("| guarantee | events/s (median) | events per CPU-second | achieved rate | p50 ms | "
          "p99 ms | p99.9 ms | worker cores |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for g, r in results.items():
        lat = r["latency"] or {}
        tp = (f"{r['events_per_s_median']:,.0f} | {r['events_per_cpu_s_median']:,.0f}"
              if r["rounds"] else "- | -")
        print(f"| {g} | {tp} | {lat.get('achieved_rate', 0):,.0f} | {lat.get('p50_ms', 0):.0f} | "
              f"{lat.get('p99_ms', 0):.0f} | {lat.get('p999_ms', 0):.0f} | "
              f"{lat.get('worker_cores', 0):.2f} |")
    for g, r in results.items():
        for i, run in enumerate(r["latency_rounds"]):
            print(f"{g} latency run {i}: offered {run['rate']:,.0f}/s, achieved "
                  f"{run['achieved_rate']:,.0f}/s (generator at most "
                  f"{run['generator_behind_ms']:.0f} ms behind), p50/p99/p99.9/max "
                  f"{run['p50_ms']:.0f}/{run['p99_ms']:.0f}/{run['p999_ms']:.0f}/"
                  f"{run['max_ms']:.0f} ms (p99 with the first {run['warmup_s']:g} s: "
                  f"{run['all_p99_ms']:.0f} ms), last score {run['drain_ms']:.0f} ms after the "
                  f"last send, worker {run['worker_cores']:.2f} cores, {run['missing']} missing; "
                  "cores: " + ", ".join(f"{k} {v:.2f}" for k, v in run["cores"].items())
                  + "; generator CPU-s by thread: " + ", ".join(
                      f"{k} {v:.2f}" for k, v in sorted(run["generator_cpu_s_by_thread"].items(),
                                                      key=lambda kv: -kv[1]) if v)
                  + "; worker CPU-s by thread: " + ", ".join(
                      f"{k} {v:.2f}" for k, v in sorted(run["worker_cpu_s_by_thread"].items(),
                                                      key=lambda kv: -kv[1]) if v >= 0.01))
    # The worker's CPU by thread kind (librdkafka and RocksDB threads are invisible to py-spy).
    for g, r in results.items():
        for i, run in enumerate(r["rounds"]):
            split = ", ".join(f"{name} {t:.2f}" for name, t in
                              sorted(run["cpu_s_by_thread"].items(), key=lambda kv: -kv[1]))
            print(f"{g} round {i}: {run['events_per_cpu_s']:,.0f} events/CPU-s, "
                  f"{run['cpu_s']:.2f} CPU-s ({split})")


if __name__ == "__main__":
    main()
