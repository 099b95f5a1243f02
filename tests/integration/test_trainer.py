"""The global-model trainer and ``fraudstream models`` on the real broker.

Training examples are made the way a worker makes them: ``Scorer.score`` on synthetic feature
dicts, then ``Scorer.learn`` with each label (``learn_global=False``), and ``LearnOutcome.example``
produced to the training topic. The ``logreg`` spec keeps snapshots small and learning quick.

* publish: a trainer learns every example, publishes versions at the configured cadence and
  dead-letters a malformed record; ``models list`` shows the versions.
* failover: two trainer processes; the active one is SIGKILLed mid-stream; the standby takes over
  from the last snapshot and its committed offset. The final model is identical (same scores) to
  one trained in-process on every example once, in order: nothing learned twice, nothing lost.
* lifecycle: export, import (as challenger, with a new label), the running trainer adopting the
  challenger and learning it, ``promote --challenger``, ``promote VERSION``, bad input.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from online_models.scorer import GlobalModel, Scorer
from online_models.synthetic import generate
from stream import wire
from stream.modelstore import read_models
from stream.settings import Settings
from stream.topics import ensure_topics, project_topics
from tests.kafka_util import FAST_FAILOVER, headers_of, process_env, read_topic

ROOT = Path(__file__).resolve().parents[2]
SPEC = "logreg"

pytestmark = pytest.mark.kafka


def _examples(n: int, seed: int = 1, challenger: bool = False) -> list[dict]:
    """``n`` training examples (dicts) as a worker would send them, in label order."""
    events, labels = generate(n_events=n, days=3.0, n_merchants=8, seed=seed)
    scorer = Scorer.create(SPEC, seed=seed, learn_global=False,
                           challenger=SPEC if challenger else None)
    for e in events:
        scorer.score(e.features, e.merchant_id, e.event_id, e.event_time)
    out = []
    for lab in sorted(labels, key=lambda x: x.label_time):
        ex = scorer.learn(lab.event_id, lab.is_fraud, lab.label_time).example
        assert ex is not None
        out.append(ex.to_dict())
    return out


def _produce(settings: Settings, docs: list[dict], extra: list[bytes] = ()) -> None:
    p = Producer(settings.producer_config())
    for d in docs:
        p.produce(settings.topic_training, wire.dumps(d), (d["snapshot"][2] or "").encode())
        p.poll(0)
    for raw in extra:
        p.produce(settings.topic_training, raw, b"bad")
    assert p.flush(30) == 0


def _reference(docs: list[dict]) -> GlobalModel:
    from online_models.labels import Example

    g = GlobalModel.create(SPEC)
    for d in docs:
        g.learn(Example.from_dict(d))
    return g


def _same_model(a: GlobalModel, b: GlobalModel, docs: list[dict]) -> None:
    assert a.n_learned == b.n_learned
    for d in docs[:: max(1, len(docs) // 50)]:
        v = d["snapshot"][3]
        assert a.model.score_one(v) == b.model.score_one(v)
        assert a.calibrator.predict_one(0.3) == b.calibrator.predict_one(0.3)


def _wait_for(pred, timeout: float, what: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def _global_n(settings: Settings) -> int | None:
    rec = read_models(settings, timeout=10).get("role/global")
    return rec.n_learned if rec is not None and rec.data is not None else None


def _trainer(settings: Settings, name: str, log: Path, *args: str) -> subprocess.Popen:
    env = process_env(settings, FRAUDSTREAM_MODEL_NAME=SPEC, **FAST_FAILOVER)
    return subprocess.Popen([sys.executable, "-m", "stream", "trainer", "--instance-id", name,
                             "--no-metrics", *args], env=env, cwd=ROOT,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _cli(settings: Settings, *args: str):
    from stream.cli import main

    env = process_env(settings, FRAUDSTREAM_MODEL_NAME=SPEC)
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_trainer_learns_every_example_and_publishes(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s, project_topics(s))
    docs = _examples(600)
    _produce(s, docs[:400], extra=[b"not json"])
    _produce(s, docs[400:])
    log = tmp_path / "trainer.log"
    proc = _trainer(s, "t1", log, "--publish-every", "250", "--publish-interval", "10",
                    "--exit-when-idle", "3")
    assert proc.wait(60) == 0, log.read_text()

    listed = json.loads(_cli(s, "models", "list", "--json").output)
    by_version = {r["version"]: r for r in listed["versions"]}
    # 601 records (one malformed): publishes after 250 and 500 records, then the rest.
    assert sorted(r["n_learned"] for r in listed["versions"]) == [250, 499, 600], listed
    top = by_version[listed["roles"]["global"]]
    assert top["n_learned"] == 600 and top["roles"] == ["global"] and top["spec"] == SPEC
    assert listed["roles"]["global"] == "logreg-1.600"
    _same_model(GlobalModel.from_bytes(read_models(s)["role/global"].data), _reference(docs),
                docs)

    dead = read_topic(s, s.topic_dead_letter, expected=1, timeout=20, idle=1)
    assert [m.value() for m in dead] == [b"not json"]
    h = headers_of(dead[0])
    assert h["fraudstream.error.code"] == b"bad_json"
    assert h["fraudstream.source.topic"] == s.topic_training.encode()

    table = _cli(s, "models", "list").output
    assert "logreg-1.600" in table and "global" in table
    shown = _cli(s, "models", "show", "global")
    assert shown.exit_code == 0 and "snapshot_n_learned: 600" in shown.output


def test_standby_takes_over_from_last_snapshot_after_sigkill(kafka_settings, tmp_path):
    s = kafka_settings
    ensure_topics(s, project_topics(s))
    docs = _examples(2400, seed=2)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    args = ("--publish-every", "150", "--publish-interval", "0.5")
    a = _trainer(s, "a", log_a, *args)
    b = None
    try:
        _wait_for(lambda: "ACTIVE" in log_a.read_text(), 30, "trainer a to become active")
        b = _trainer(s, "b", log_b, *args)
        _wait_for(lambda: "STANDBY" in log_b.read_text(), 30, "trainer b to join as standby")

        def feed() -> None:  # a steady stream while a is killed
            for i in range(0, len(docs), 100):
                _produce(s, docs[i:i + 100])
                time.sleep(0.2)

        producer = threading.Thread(target=feed)
        producer.start()
        _wait_for(lambda: (_global_n(s) or 0) >= 600, 30, "a to publish a few versions")
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        killed_at = _global_n(s)
        producer.join(60)
        assert killed_at is not None and killed_at < len(docs)
        _wait_for(lambda: _global_n(s) == len(docs), 60, "b to learn every example", every=1)
        b.send_signal(signal.SIGTERM)
        assert b.wait(30) == 0, log_b.read_text()
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(10)

    text_b = log_b.read_text()
    assert "ACTIVE" in text_b and "activations 1" in text_b, text_b
    models = read_models(s)
    final = GlobalModel.from_bytes(models["role/global"].data)
    assert final.n_learned == len(docs)
    # Identical to one pass over every example in order: none learned twice, none skipped.
    _same_model(final, _reference(docs), docs)
    # Versions by n_learned: the ones a published, then b's continuing from a's last snapshot.
    ns = sorted(r.n_learned for k, r in models.items() if k.startswith("version/"))
    assert ns[-1] == len(docs) and len(ns) == len(set(ns))


def test_models_cli_round_trip_and_challenger_flow(kafka_settings, tmp_path):
    from stream.trainer import Trainer

    s = kafka_settings.replace(model_name=SPEC, trainer_publish_every=100,
                               trainer_publish_interval_s=0.3)
    ensure_topics(s, project_topics(s))
    docs = _examples(450, seed=3, challenger=True)
    _produce(s, docs[:200])
    trainer = Trainer(s, instance_id="inproc")
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: _global_n(s) == 200, 30, "the first 200 examples")

        # export, then import as a challenger under a new label: the trainer adopts and learns it
        exported = tmp_path / "global.fsm"
        r = _cli(s, "models", "export", "global", str(exported))
        assert r.exit_code == 0, r.output
        assert exported.read_bytes() == read_models(s)["role/global"].data
        r = _cli(s, "models", "import", str(exported), "--role", "challenger",
                 "--version", "chal-1")
        assert r.exit_code == 0 and "imported chal-1" in r.output, r.output
        _wait_for(lambda: trainer.stats.adopted >= 1, 20, "the trainer to adopt the challenger")
        _produce(s, docs[200:300])

        def challenger_n():
            c = read_models(s, timeout=10).get("role/challenger")
            return c.n_learned if c is not None and c.data is not None else None

        _wait_for(lambda: challenger_n() == 300 and _global_n(s) == 300, 30,
                  "global and challenger at 300")
        models = read_models(s)
        # Same spec and count: the challenger's name gets a suffix, never overwrites the global's.
        assert models["role/global"].version == "logreg-1.300"
        assert models["role/challenger"].version == "logreg-1.300~2"

        # promote --challenger: the challenger's lineage becomes global, the role is cleared
        r = _cli(s, "models", "promote", "--challenger")
        assert r.exit_code == 0 and "global: logreg-1.300~2" in r.output, r.output
        _wait_for(lambda: trainer.stats.adopted >= 3, 20, "the trainer to adopt the promotion")
        _produce(s, docs[300:450])
        _wait_for(lambda: _global_n(s) == 450, 30, "global at 450")
        models = read_models(s)
        assert models["role/challenger"].data is None
        assert models["role/global"].version == "logreg-1.450"
    finally:
        trainer.request_stop()
        thread.join(30)
    assert not thread.is_alive()

    listed = json.loads(_cli(s, "models", "list", "--json").output)
    assert listed["roles"] == {"global": "logreg-1.450"}
    versions = {r["version"] for r in listed["versions"]}
    assert {"logreg-1.200", "chal-1", "logreg-1.300", "logreg-1.300~2",
            "logreg-1.450"} <= versions

    # promote an older version; round trip of its bytes through export / import
    r = _cli(s, "models", "promote", "logreg-1.200")
    assert r.exit_code == 0 and "global: logreg-1.200 (was logreg-1.450)" in r.output
    out = tmp_path / "v200.fsm"
    assert _cli(s, "models", "export", "logreg-1.200", str(out)).exit_code == 0
    assert GlobalModel.from_bytes(out.read_bytes()).n_learned == 200
    r = _cli(s, "models", "import", str(out))  # same bytes, same version: nothing new
    assert r.exit_code == 0, r.output
    shown = json.loads(_cli(s, "models", "show", "logreg-1.200", "--json").output)
    assert shown["roles"] == ["global"] and shown["snapshot_n_learned"] == 200

    # clear errors
    junk = tmp_path / "junk.fsm"
    junk.write_bytes(b"hello")
    r = _cli(s, "models", "import", str(junk))
    assert r.exit_code == 1 and "not a usable fraudstream model snapshot" in r.output
    r = _cli(s, "models", "import", str(exported), "--version", "logreg-1.450")
    assert r.exit_code == 1 and "already exists" in r.output
    r = _cli(s, "models", "show", "nope")
    assert r.exit_code == 1 and "no version 'nope'" in r.output
    r = _cli(s, "models", "promote", "--challenger")
    assert r.exit_code == 1 and "no challenger model" in r.output
