"""Exactly-once under SIGKILL: a worker killed at random points and restarted, against a reference.

The reference is an uninterrupted in-process run over the same input into its own scores topic.
The crash run is a real ``fraudstream worker`` process killed with SIGKILL several times and
restarted; state is restored from the changelog (no checkpoint survives a kill). The committed
scores must hold exactly one score per event, each equal to the reference's.

The model is the runtime's default (the rule prior's log-odds plus a learned correction) with
per-merchant models learning from labels in the worker, so the state a kill must not disturb is
the features' and the models': the scorer snapshots labels join against, and the per-merchant
models they train. The stream comes in three phases, each run to its end by both runs before the
next is published: the first half of the events, then labels for those events, then the second
half. Labels thus reach the models at the same point of the stream in both runs, and the second
half's scores depend on what was learned.

Both stages read one partition here, so the order in which the merchant stage sees events is the
same in every run and exact score equality is a fair demand; with several upstream partitions
that order depends on timing (see docs/runtime.md).
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.backtest import BacktestOptions, run_backtest
from stream.publisher import EventPublisher
from stream.runtime import Worker
from stream.simulate import SimConfig, simulate, write_jsonl
from stream.topics import ensure_topics
from tests.conftest import ROOT
from tests.kafka_util import (FAST_FAILOVER, assert_reference_scores, process_env,
                              scores_by_event)

N_EVENTS = 50_000


def _crash_lives(cmd: list[str], env: dict[str, str], log_path: Path, rng: random.Random,
                 kills: int) -> int:
    """Run the worker ``kills`` times, each SIGKILLed after a random 3-8 s, then once more until
    it has been idle 8 s (its exit code must be 0). Returns how many lives were really killed."""
    killed = 0
    with log_path.open("ab") as log:
        for _ in range(kills):
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            time.sleep(rng.uniform(3.0, 8.0))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()
        final = subprocess.Popen(cmd + ["--exit-when-idle", "8"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            assert final.wait(600) == 0, log_path.read_text()[-3000:]
        finally:
            if final.poll() is None:
                final.kill()
                final.wait()
    return killed


def test_sigkill_at_random_points_gives_exactly_once_and_reference_scores(kafka_settings,
                                                                          tmp_path: Path):
    rng = random.Random(20261129)
    base = kafka_settings.replace(partitions=1, model_name="default", merchant_models=True)
    ensure_topics(base)
    sim = simulate(SimConfig(events=N_EVENTS, days=4, fraud_rate=0.04, seed=47, users=1500,
                             merchants=8, maturity_days=0.5, id_prefix="crash"))
    events = list(sim.iter_events())
    cut = N_EVENTS // 2
    while events[cut - 1]["event_time"] == events[cut]["event_time"]:
        cut += 1
    first_ids = {e["event_id"] for e in events[:cut]}
    labels = [lab for lab in sim.iter_labels() if lab["event_id"] in first_ids]
    assert len(labels) > 5000

    reference = base.replace(group_id=base.group_id + "-ref",
                             topic_scores=base.topic_scores + "-ref",
                             state_dir=str(tmp_path / "ref-state"))
    ensure_topics(reference)
    crash = base.replace(group_id=base.group_id + "-crash", state_dir=str(tmp_path / "crash"))
    env = process_env(crash, FRAUDSTREAM_TRANSACTION_TIMEOUT_MS="10000",
                      FRAUDSTREAM_MODEL_NAME="default", FRAUDSTREAM_MERCHANT_MODELS="true",
                      **FAST_FAILOVER)
    cmd = [sys.executable, "-m", "stream", "worker", "--instance-id", "c1"]
    log_path = tmp_path / "worker.log"

    phases = [("events", events[:cut], 2), ("labels", labels, 1), ("events", events[cut:], 2)]
    kills = examples = 0
    with EventPublisher(base) as pub:
        for kind, records, lives in phases:
            send = pub.publish if kind == "events" else pub.publish_label
            for record in records:
                send(record)
            pub.flush()
            stats = Worker(reference, instance_id="ref").run(exit_when_idle=5)
            examples += stats.examples
            kills += _crash_lives(cmd, env, log_path, rng, lives)
    assert examples == len(labels)
    assert kills >= 3, "the worker finished before it could be killed: make the stream longer"
    text = log_path.read_text()
    restored = [int(n) for n in re.findall(r"(\d+) changelog records restored", text)]
    assert any(n > 0 for n in restored), "no restart restored state from the changelog"

    expected = scores_by_event(reference, reference.topic_scores, N_EVENTS)
    got = scores_by_event(base, base.topic_scores, N_EVENTS)
    assert_reference_scores(got, expected, {e["event_id"] for e in events})

    # Learning mattered: without labels every score is the untrained model's (the rule prior);
    # with them the per-merchant models move most of the second half's scores.
    log = tmp_path / "events.jsonl"
    write_jsonl(events, log)
    untrained = run_backtest(BacktestOptions(log=log, model="default", partitions=1,
                                             learn_global=False), base)
    prior = dict(zip(untrained.event_ids, untrained.scores.tolist()))
    assert all(prior[e["event_id"]] == got[e["event_id"]][0] for e in events[:cut])
    moved = sum(prior[e["event_id"]] != got[e["event_id"]][0] for e in events[cut:])
    assert moved > 0.5 * (N_EVENTS - cut), f"only {moved} second-half scores moved"
