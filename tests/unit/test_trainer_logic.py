"""The trainer's pure parts: publish cadence, version names, decoding training records, learning
the challenger lineage, and its settings. No broker."""

from __future__ import annotations

import pytest

from online_models.labels import Example, Snapshot
from online_models.scorer import GlobalModel, Scorer
from stream import wire
from stream.exceptions import ConfigError, DecodeError
from stream.settings import Settings
from stream.trainer import _Lineage, decode_example, publish_due, trainer_group, version_label


# ---------------------------------------------------------------------- cadence
@pytest.mark.parametrize("pending, first, now, due", [
    (0, None, 1e9, False),          # nothing new: never
    (999, 0.0, 59.9, False),        # neither count nor time reached
    (1000, 0.0, 0.0, True),         # count reached
    (1500, 0.0, 0.0, True),
    (1, 0.0, 60.0, True),           # the oldest pending one waited the interval
    (1, 10.0, 69.0, False),         # time counts from the first pending record, not the last publish
])
def test_publish_due(pending, first, now, due):
    assert publish_due(pending, first, now, every=1000, interval_s=60.0) is due


# ---------------------------------------------------------------------- names
def test_version_label_is_spec_version_and_count_unless_taken():
    assert version_label("default-1", 0, set()) == "default-1.0"
    taken = {"default-1.5"}
    first = version_label("default-1", 5, taken)
    taken.add(first)
    assert first == "default-1.5~2"
    assert version_label("default-1", 5, taken) == "default-1.5~3"
    assert version_label("default-1", 6, taken) == "default-1.6"


def test_default_label_matches_global_model_version():
    g = GlobalModel.create("logreg")
    assert version_label(g.model.version, g.n_learned, set()) == g.version


def test_trainer_group_name():
    assert trainer_group(Settings.load(env={}, overrides={"group_id": "g1"})) == "g1-trainer"


# ---------------------------------------------------------------------- decoding
def _examples(challenger: bool = False) -> list[Example]:
    sc = Scorer.create("logreg", learn_global=False, challenger="logreg" if challenger else None)
    out = []
    for i in range(20):
        sc.score({"amount": float(i), "n": float(i % 3)}, f"m{i % 2}", f"e{i}", i * 1000)
    for i in range(20):
        out.append(sc.learn(f"e{i}", i % 4 == 0, 10**6 + i).example)
    return out


def test_decode_round_trips_worker_examples():
    for ex in _examples(challenger=True):
        assert decode_example(wire.dumps(ex.to_dict())) == ex


def _doc(**changes):
    d = _examples()[0].to_dict()
    snap = list(d["snapshot"])
    for k, v in changes.items():
        if k.startswith("s"):
            snap[int(k[1:])] = v
        else:
            d[k] = v
    d["snapshot"] = snap
    return wire.dumps(d)


@pytest.mark.parametrize("raw, code, field", [
    (b"", "empty", None),
    (b"{nope", "bad_json", None),
    (b"[1, 2]", "invalid", None),
    (b'{"snapshot": [1], "is_fraud": true, "label_time": 1}', "invalid", "snapshot"),
    (_doc(is_fraud=1), "invalid", "is_fraud"),
    (_doc(label_time="soon"), "invalid", "label_time"),
    (_doc(label_time=1.5), "invalid", "label_time"),
    (_doc(s3=["not", "a", "dict"]), "invalid", "snapshot.vector"),
    (_doc(s3={"amount": "12"}), "invalid", "snapshot.vector"),
    (_doc(s4="0.3"), "invalid", "snapshot.raw"),
    (_doc(s11={"amount": 1.0}, s12=None), "invalid", "snapshot.challenger_raw"),
])
def test_malformed_records_raise_decode_errors(raw, code, field):
    with pytest.raises(DecodeError) as info:
        decode_example(raw)
    assert info.value.code == code
    assert info.value.field == field


def test_null_feature_values_are_accepted():
    ex = decode_example(_doc(s3={"amount": None, "n": 1}))
    assert ex.snapshot.vector == {"amount": None, "n": 1}


# ---------------------------------------------------------------------- lineages
def test_global_lineage_learns_like_global_model():
    exs = _examples()
    lineage, ref = _Lineage("global", GlobalModel.create("logreg")), GlobalModel.create("logreg")
    for ex in exs:
        lineage.learn(ex)
        ref.learn(ex)
    assert lineage.dirty == len(exs) == lineage.model.n_learned
    v = exs[3].snapshot.vector
    assert lineage.model.model.score_one(v) == ref.model.score_one(v)


def test_challenger_lineage_learns_only_challenger_vectors():
    with_c, without = _examples(challenger=True), _examples()
    c = GlobalModel.create("logreg")
    c.set_version("chal-1")
    lineage = _Lineage("challenger", c)
    assert not any(lineage.learn(ex) for ex in without)
    assert lineage.dirty == 0 and c.version == "chal-1"
    assert all(lineage.learn(ex) for ex in with_c)
    assert c.n_learned == len(with_c) and c.version == f"logreg-1.{len(with_c)}"


def test_learning_leaves_the_example_unchanged():
    ex = _examples()[5]
    before = wire.dumps(ex.to_dict())
    _Lineage("global", GlobalModel.create("logreg")).learn(ex)
    assert wire.dumps(ex.to_dict()) == before


# ---------------------------------------------------------------------- settings
def test_trainer_settings_defaults_and_validation():
    s = Settings.load(env={})
    assert (s.trainer_publish_every, s.trainer_publish_interval_s) == (1000, 60.0)
    env = {"FRAUDSTREAM_TRAINER_PUBLISH_EVERY": "50", "FRAUDSTREAM_TRAINER_PUBLISH_INTERVAL_S": "2.5"}
    s = Settings.load(env=env)
    assert (s.trainer_publish_every, s.trainer_publish_interval_s) == (50, 2.5)
    with pytest.raises(ConfigError, match="trainer_publish_every"):
        Settings.load(env={}, overrides={"trainer_publish_every": 0})
    with pytest.raises(ConfigError, match="trainer_publish_interval_s"):
        Settings.load(env={}, overrides={"trainer_publish_interval_s": 0})
