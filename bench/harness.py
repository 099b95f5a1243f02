"""Peer benchmark: the same per-key windowed count run by every contender, side by side, in one run.

What one run does, in order:

1. creates or reuses each contender's virtualenv (``bench/venvs.py``) and records versions;
2. starts ONE local Apache Kafka (``stream.localkafka.LocalKafka``) on a free port pair in a
   temporary directory, with the jars cached in ``.cache/kafka``;
3. creates the input topic and pre-loads N JSON events keyed by user_id (record timestamp = event
   time), then checks that the topic holds exactly N records;
4. runs the contenders one at a time, for several rounds, rotating the order each round, because
   the machine is shared and noisy. Each run gets a fresh consumer group, a fresh output topic and
   a fresh state directory, so every run consumes all N records from the start;
5. measures from outside each app: the output topic's high watermarks are polled every
   ``--poll-interval`` seconds; the processing time runs from the first output record to the
   moment the output holds N records (each contender emits one output per input), and the wall
   time from process start to that moment. Afterwards it also waits until the group's committed
   offsets reach the end of the input (recorded, not used for the rate, because commit intervals
   would blur the short runs). A contender that runs exactly-once (``Contender.exactly_once``)
   writes transactions, whose commit markers take offsets and whose aborted records stay in the
   log, so high watermarks over-count: its progress is counted by consuming the output
   read_committed instead. Every output is read back read_committed (librdkafka's default),
   so the stamps are append times of committed records; the commit of the last transaction,
   milliseconds here, is not in the processing time;
6. stops the app (SIGTERM to the process group it started, SIGKILL after a grace period), deletes
   that run's output and internal topics, and after the last run stops the broker;
7. writes the results as JSON (``bench/results/peers-latest.json``; ``--quick`` writes to
   ``.cache/bench/peers-quick.json``) and prints a table of medians and ratios to the baseline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from bench.contenders import BASELINE, Contender, by_name, contenders
from bench.report import RunResult, render_table, summarize
from bench.venvs import VenvError, ensure_venv, probe_versions

__all__ = ["main", "Config"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "peers-latest.json"
QUICK_RESULTS = REPO / ".cache" / "bench" / "peers-quick.json"
LOGS = REPO / ".cache" / "bench" / "logs"
INPUT_TOPIC = "bench-events"


@dataclass(frozen=True)
class Config:
    events: int = 200_000
    rounds: int = 3
    partitions: int = 4
    users: int = 10_000
    window_ms: int = 60_000
    grace_ms: int = 10_000
    commit_interval: float = 1.0
    events_per_second: int = 1_000   # event-time density: N/eps seconds of event time
    run_timeout: float = 900.0
    poll_interval: float = 0.02
    seed: int = 7


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--events", "-n", type=int, default=Config.events, help="records to pre-load")
    p.add_argument("--rounds", type=int, default=Config.rounds)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 5,000 events, one round, results in .cache/bench/")
    p.add_argument("--contenders", "-c", nargs="+", metavar="NAME",
                   help="names from --list (default: every default contender)")
    p.add_argument("--list", action="store_true", help="list contenders and exit")
    p.add_argument("--partitions", type=int, default=Config.partitions)
    p.add_argument("--users", type=int, default=Config.users)
    p.add_argument("--window-ms", type=int, default=Config.window_ms)
    p.add_argument("--grace-ms", type=int, default=Config.grace_ms)
    p.add_argument("--commit-interval", type=float, default=Config.commit_interval)
    p.add_argument("--run-timeout", type=float, default=Config.run_timeout,
                   help="seconds per run; a run cut short reports its partial rate")
    p.add_argument("--out", type=Path, help="results JSON path")
    p.add_argument("--refresh-venvs", action="store_true",
                   help="rebuild the peers' venvs (picks up the latest releases)")
    p.add_argument("--venv-root", type=Path, default=REPO / ".cache" / "bench-venvs")
    p.add_argument("--kafka-cache", type=Path, default=REPO / ".cache" / "kafka")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for c in contenders():
            why = c.unavailable()
            flag = "default" if c.default else "opt-in"
            print(f"{c.name:24} {flag:8} {'unavailable: ' + why if why else c.state}")
        return 0
    cfg = Config(
        events=5_000 if args.quick else args.events,
        rounds=1 if args.quick else args.rounds,
        partitions=args.partitions, users=args.users, window_ms=args.window_ms,
        grace_ms=args.grace_ms, commit_interval=args.commit_interval,
        run_timeout=min(args.run_timeout, 180.0) if args.quick else args.run_timeout,
    )
    out_path = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    chosen = ([by_name(n) for n in args.contenders] if args.contenders
              else [c for c in contenders() if c.default])
    if not any(c.baseline for c in chosen):
        chosen.insert(0, by_name(BASELINE))  # ratios need the baseline

    skipped: dict[str, str] = {}
    ready: list[tuple[Contender, Path]] = []
    versions: dict[str, dict] = {"harness": probe_versions(Path(sys.executable),
                                                           ("confluent-kafka", "orjson"))}
    for c in chosen:
        why = c.unavailable()
        if why is None:
            try:
                python = ensure_venv(args.venv_root, c, refresh=args.refresh_venvs, log=log)
            except VenvError as exc:
                why = f"its venv could not be built: {exc}"
        if why is not None:
            log(f"skipping {c.name}: {why}")
            skipped[c.name] = why
            continue
        versions[c.name] = probe_versions(python, c.dists)
        ready.append((c, python))

    result = run_benchmark(cfg, ready, args.kafka_cache)
    result.update(
        benchmark="peers: per-key windowed count",
        date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        command="python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        config=cfg.__dict__,
        machine=_machine(),
        versions=versions,
        skipped=skipped,
        baseline=BASELINE,
    )
    order = [c.name for c, _ in ready]
    runs = [RunResult.from_dict(d) for d in result["runs"]]
    summaries = summarize(runs, baseline=BASELINE, order=order)
    result["summary"] = [s.to_dict() for s in summaries]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(ordered(result), indent=1) + "\n")

    states = {c.name: c.state for c, _ in ready}
    print()
    print(f"{cfg.events:,} events, {cfg.partitions} partitions, {cfg.users:,} keys, "
          f"{cfg.window_ms // 1000}s tumbling windows, {cfg.rounds} round(s), "
          f"Apache Kafka {result['broker']['version']}")
    print(render_table(summaries, states))
    for name, v in versions.items():
        print(f"  {name}: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")
    print(f"results: {out_path}")
    ok = all(s.complete_rounds == s.runs for s in summaries)
    ok = ok and not any(r.verified is False for r in runs)
    return 0 if ok else 1


_KEY_ORDER = ("benchmark", "date", "command", "config", "machine", "broker", "versions", "skipped",
              "baseline", "summary", "runs")


def ordered(result: dict) -> dict:
    """The results with what a reader wants first (set-up and summary) and the runs last."""
    head = {k: result[k] for k in _KEY_ORDER if k in result}
    return head | {k: v for k, v in result.items() if k not in head}


def _machine() -> dict:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg()}


# ---------------------------------------------------------------------- the run
def run_benchmark(cfg: Config, ready: list[tuple[Contender, Path]], kafka_cache: Path) -> dict:
    from stream.localkafka import LocalKafka

    home = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    broker = LocalKafka(home / "kafka", kafka_cache, port=_free_port_pair(), log=log)
    runs: list[dict] = []
    try:
        broker.up()
        bootstrap = broker.bootstrap
        _create_topic(bootstrap, INPUT_TOPIC, cfg.partitions)
        started = time.monotonic()
        checksum = preload(bootstrap, INPUT_TOPIC, cfg)
        log(f"pre-loaded {cfg.events:,} events in {time.monotonic() - started:.1f}s")
        LOGS.mkdir(parents=True, exist_ok=True)
        for rnd in range(cfg.rounds):
            shift = rnd % max(1, len(ready))
            for contender, python in ready[shift:] + ready[:shift]:
                run = run_one(cfg, contender, python, bootstrap, rnd, home, checksum)
                runs.append(run.to_dict())
                rate = f"{run.rate:,.0f} msgs/s" if run.rate else "no rate"
                log(f"round {rnd + 1}/{cfg.rounds} {contender.name}: {rate}"
                    + (f" ({run.error})" if run.error else ""))
    finally:
        broker.down()
        shutil.rmtree(home, ignore_errors=True)
    return {"broker": {"version": broker.version, "bootstrap": broker.bootstrap}, "runs": runs}


def run_one(cfg: Config, c: Contender, python: Path, bootstrap: str, rnd: int,
            home: Path, checksum: int) -> RunResult:
    run_id = uuid.uuid4().hex[:6]
    group = f"{c.group}-r{rnd}-{run_id}"
    output = f"bench-out-{group}"
    state_dir = home / "state" / group
    state_dir.mkdir(parents=True)
    # The broker stamps output records as it appends them: the processing time is read from
    # those stamps, to the millisecond, independent of the harness's polling.
    _create_topic(bootstrap, output, cfg.partitions, append_time=True)
    cmd = [str(python), str(c.script_path), "--bootstrap", bootstrap, "--input", INPUT_TOPIC,
           "--output", output, "--group", group, "--state-dir", str(state_dir),
           "--window-ms", str(cfg.window_ms), "--grace-ms", str(cfg.grace_ms),
           "--commit-interval", str(cfg.commit_interval), "--partitions", str(cfg.partitions),
           *c.extra_args]
    log_path = LOGS / f"{c.name}-r{rnd}.log"
    watch = _Watcher(bootstrap, cfg.partitions, read_committed=c.exactly_once)
    load1 = os.getloadavg()[0]
    with open(log_path, "wb") as log_file:
        t0, t0_wall = time.monotonic(), time.time()
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    first = done = None
    cpu_first = cpu_done = None
    seen = 0
    error = None
    try:
        while True:
            seen = watch.count(output)
            now = time.monotonic()
            if first is None and seen > 0:
                first, cpu_first = now, _cpu_seconds(proc.pid)
            if seen >= cfg.events:
                done, cpu_done = now, _cpu_seconds(proc.pid)
                break
            if proc.poll() is not None:
                error = f"exited with code {proc.returncode} after {seen} outputs; " \
                        f"see {log_path}: {_tail(log_path)}"
                break
            if now - t0 > cfg.run_timeout:  # a partial rate still counts; `processed` < n
                done = now
                log(f"{c.name}: time-out after {cfg.run_timeout:.0f}s with {seen:,} outputs")
                break
            time.sleep(cfg.poll_interval)
        committed_s = None
        if error is None and seen >= cfg.events:
            committed_s = watch.wait_committed(group, INPUT_TOPIC, cfg.events,
                                               timeout=10 + 5 * cfg.commit_interval, t0=t0)
    finally:
        _stop(proc)
    verified = None
    stamps = None
    try:
        if error is None and seen >= cfg.events:  # outside the timing: read the output back
            got, stamps = watch.read_back(output, cfg.events)
            verified = got == checksum
            if not verified:
                log(f"{c.name}: output checksum {got} != expected {checksum}")
    finally:
        watch.close()
        _delete_topics(bootstrap, group)
        shutil.rmtree(state_dir, ignore_errors=True)
    if error is not None:
        return RunResult(c.name, rnd, cfg.events, None, None, processed=seen, error=error,
                         loadavg=load1)
    if stamps is not None:  # broker append times of the first and the last output record
        processing_s, wall_s = (stamps[1] - stamps[0]) / 1000, stamps[1] / 1000 - t0_wall
    else:  # timed out: fall back to the polled times
        processing_s = (done - first) if first is not None else None
        wall_s = done - t0
    return RunResult(c.name, rnd, cfg.events, processing_s=processing_s, wall_s=wall_s,
                     processed=seen, committed_s=committed_s, verified=verified,
                     cpu_s=(cpu_done - cpu_first) if cpu_first is not None and cpu_done else None,
                     loadavg=load1)


class _Watcher:
    """Counts an app's output and reads committed offsets from outside the app under test.

    ``read_committed``: the app writes transactions. High watermarks would count commit markers
    (one offset per partition per transaction) and aborted records, so the output is consumed
    read_committed and its records counted.
    """

    def __init__(self, bootstrap: str, partitions: int, read_committed: bool = False) -> None:
        from confluent_kafka import Consumer

        self._consumer_cls = Consumer
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.read_committed = read_committed
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watch",
                                  "enable.auto.commit": False})
        self._counter = None  # the read_committed consumer counting one topic's records
        self._counted = 0

    def count(self, topic: str) -> int:
        """Records in ``topic`` so far (committed ones only under read_committed)."""
        if self.read_committed:
            return self._count_committed(topic)
        from confluent_kafka import KafkaException, TopicPartition

        total = 0
        for p in range(self.partitions):
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(topic, p),
                                                              timeout=5, cached=False)
            except KafkaException:
                return 0
            total += high
        return total

    def _count_committed(self, topic: str) -> int:
        from confluent_kafka import TopicPartition

        if self._counter is None:
            self._counter = self._consumer_cls({
                "bootstrap.servers": self.bootstrap, "group.id": "bench-watch-committed",
                "enable.auto.commit": False, "isolation.level": "read_committed",
                "fetch.wait.max.ms": 100})
            self._counter.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
        while True:  # take what is fetched already; the caller polls again soon
            msgs = self._counter.consume(10_000, 0)
            if not msgs:
                return self._counted
            self._counted += sum(1 for m in msgs if m.error() is None)

    def wait_committed(self, group: str, topic: str, n: int, timeout: float, t0: float
                       ) -> float | None:
        """Seconds from t0 until the group's committed input offsets sum to n, None on time-out."""
        from confluent_kafka import KafkaException, TopicPartition

        reader = self._consumer_cls({"bootstrap.servers": self.bootstrap, "group.id": group,
                                     "enable.auto.commit": False})
        try:
            deadline = time.monotonic() + timeout
            parts = [TopicPartition(topic, p) for p in range(self.partitions)]
            while time.monotonic() < deadline:
                try:
                    offsets = reader.committed(parts, timeout=5)
                except KafkaException:
                    offsets = []
                if sum(max(tp.offset, 0) for tp in offsets) >= n:
                    return time.monotonic() - t0
                time.sleep(0.1)
            return None
        finally:
            reader.close()

    def read_back(self, topic: str, n: int, timeout: float = 120.0
                  ) -> tuple[int | None, tuple[int, int] | None]:
        """Sum of the ``value`` fields of the first ``n`` records, and their min and max stamps."""
        import orjson
        from confluent_kafka import Consumer, TopicPartition

        reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-verify",
                           "enable.auto.commit": False, "isolation.level": "read_committed"})
        try:
            reader.assign([TopicPartition(topic, p, 0) for p in range(self.partitions)])
            total = seen = 0
            lo, hi = None, None
            deadline = time.monotonic() + timeout
            while seen < n and time.monotonic() < deadline:
                for msg in reader.consume(10_000, 0.5):
                    if msg.error() is None:
                        total += orjson.loads(msg.value())["value"]
                        seen += 1
                        ts = msg.timestamp()[1]
                        lo = ts if lo is None or ts < lo else lo
                        hi = ts if hi is None or ts > hi else hi
            if seen < n:
                return None, None
            return total, (lo, hi)
        finally:
            reader.close()

    def close(self) -> None:
        self.consumer.close()
        if self._counter is not None:
            self._counter.close()


def _stop(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process group this harness started (pgid == its PID), SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            log(f"PID {proc.pid} ignored SIGTERM for {grace:.0f}s; SIGKILL")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, all its threads (librdkafka's included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


# ---------------------------------------------------------------------- broker helpers
def _free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p with p+1 also free (the local broker's controller listens on p+1)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port < 65535 and _port_free(host, port) and _port_free(host, port + 1):
            return port
    raise RuntimeError("no free port pair found on 127.0.0.1")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _create_topic(bootstrap: str, topic: str, partitions: int, append_time: bool = False) -> None:
    """Create a topic that keeps everything; ``append_time``: the broker stamps each record."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"retention.ms": "-1", "retention.bytes": "-1"}  # nothing expires during the run
    if append_time:
        config["message.timestamp.type"] = "LogAppendTime"
    for fut in admin.create_topics([NewTopic(topic, partitions, 1, config=config)]).values():
        fut.result(30)


def _delete_topics(bootstrap: str, containing: str) -> None:
    """Delete the run's output and the app's internal topics (changelogs, assignor topics)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=10).topics if containing in t]
    if not names:
        return
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        try:
            fut.result(60)
        except Exception as exc:  # noqa: BLE001 - clean-up is best effort, the run is measured
            log(f"could not delete a topic of {containing}: {exc}")


# ---------------------------------------------------------------------- input
def event_time_base(cfg: Config, now_ms: int) -> int:
    """Where event time starts: so that it ends near ``now_ms``, on a window boundary.

    Recent timestamps matter: the broker's time-based retention and segment rolling read record
    timestamps, and records dated far back would be deleted during the run.
    """
    span = int(cfg.events * 1000 / cfg.events_per_second)
    return now_ms - now_ms % cfg.window_ms - span


def make_events(cfg: Config, base: int):
    """Yield (key, value, timestamp_ms) for N contract-shaped events, deterministic per seed."""
    from stream.wire import dumps

    rng = random.Random(cfg.seed)
    step = 1000 / cfg.events_per_second
    for i in range(cfg.events):
        ts = base + int(i * step)
        user = f"u{rng.randrange(cfg.users):06d}"
        event = {
            "event_id": f"e{i:09d}", "event_type": "transaction",
            "event_time": dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "user_id": user, "merchant_id": f"m{rng.randrange(500):04d}",
            "amount": round(rng.lognormvariate(3.5, 1.0), 2), "currency": "EUR",
        }
        yield user.encode(), dumps(event), ts


def preload(bootstrap: str, topic: str, cfg: Config) -> int:
    """Produce the N events; returns the checksum every contender's output must have."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    failures: list[str] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            failures.append(str(err))

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 50, "batch.size": 1_000_000})
    windows: dict[tuple[bytes, int], int] = {}
    for key, value, ts in make_events(cfg, event_time_base(cfg, int(time.time() * 1000))):
        w = (key, ts - ts % cfg.window_ms)
        windows[w] = windows.get(w, 0) + 1
        while True:
            try:
                producer.produce(topic, value, key, timestamp=ts, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(120) != 0 or failures:
        raise RuntimeError(f"pre-load failed: {failures[:3]} ({len(failures)} errors)")
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-check"})
    try:
        total = sum(reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in range(cfg.partitions))
    finally:
        reader.close()
    if total != cfg.events:
        raise RuntimeError(f"{topic} holds {total} records, expected {cfg.events}")
    return output_checksum(windows.values())


def output_checksum(window_sizes) -> int:
    """Sum of the ``value`` fields of all outputs when each input emits its window's running count.

    A window holding c records emits 1, 2, ..., c, so the total is the sum of c(c+1)/2.

    >>> output_checksum([1, 3])
    7
    """
    return sum(c * (c + 1) // 2 for c in window_sizes)
