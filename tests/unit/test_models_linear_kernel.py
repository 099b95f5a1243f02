"""The compiled loops of ScaledLogisticRegression against the plain-Python arithmetic they
replace: same weights, same scores, same contributions, bit for bit."""

from __future__ import annotations

import math
import pickle
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from online_models.linear import ScaledLogisticRegression, sigmoid


class _Reference:
    """The model's arithmetic written out in Python (as it was before it was compiled)."""

    def __init__(self, lr=0.01, l2=1e-4, clip=8.0, max_pos_weight=10.0):
        self.lr, self.l2, self.clip, self.max_pos_weight = lr, l2, clip, max_pos_weight
        self.state: dict[str, list[float]] = {}
        self.bias, self.n_pos, self.n_neg = 0.0, 0, 0

    def raw(self, x, offset=0.0):
        dot = self.bias + offset
        for k, v in x.items():
            s = self.state.get(k)
            if s is None or v is None:
                continue
            z = min(self.clip, max(-self.clip, (v - s[1]) * s[4]))
            dot += s[3] * z
        return dot

    def contributions(self, x):
        out = {}
        for k, v in x.items():
            s = self.state.get(k)
            if s is None or v is None or s[4] == 0.0:
                continue
            out[k] = s[3] * min(self.clip, max(-self.clip, (v - s[1]) * s[4]))
        return out

    def learn(self, x, y, offset=0.0):
        w = 1.0
        if y:
            w *= min(self.max_pos_weight, math.sqrt((self.n_neg + 1) / (self.n_pos + 1)))
            self.n_pos += 1
        else:
            self.n_neg += 1
        sg = self.lr * (sigmoid(self.raw(x, offset)) - (1.0 if y else 0.0)) * w
        decay = 1.0 - self.lr * self.l2
        for k, v in x.items():
            if v is None:
                continue
            s = self.state.setdefault(k, [0.0, 0.0, 0.0, 0.0, 0.0])
            mean = s[1]
            d = v - mean
            z = min(self.clip, max(-self.clip, d * s[4]))
            s[3] = s[3] * decay - sg * z
            n = s[0] + 1.0
            mean += d / n
            m2 = s[2] + d * (v - mean)
            s[0], s[1], s[2] = n, mean, m2
            if m2 > 0.0:
                s[4] = 1.0 / math.sqrt(m2 / n)
        self.bias -= sg


_value = st.one_of(st.none(), st.integers(-5, 50), st.booleans(),
                   st.floats(-1e6, 1e6, allow_nan=False))
_vector = st.dictionaries(st.sampled_from([f"f{i}" for i in range(12)]), _value, max_size=12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(_vector, st.booleans(), st.floats(-3, 3)), min_size=1, max_size=60))
def test_compiled_loops_match_the_python_arithmetic(stream):
    model, ref = ScaledLogisticRegression(), _Reference()
    for x, y, offset in stream:
        assert model.raw_one(x, offset) == ref.raw(x, offset)
        assert model.contributions(x) == ref.contributions(x)
        out = {"f0": 0.5}
        got = model.raw_and_contributions(x, offset, out, skip="f1")
        want = ref.contributions(x)
        want.pop("f1", None)
        want["f0"] = want.get("f0", 0.0) + 0.5 if "f0" in want else 0.5
        assert got == ref.raw(x, offset) and out == want
        model.learn_one(x, y, offset=offset)
        ref.learn(x, y, offset)
    assert model._state == ref.state and model.bias == ref.bias
    # The state stays plain lists of floats: pickles are unchanged.
    assert all(type(v) is float for s in model._state.values() for v in s)
    clone = pickle.loads(pickle.dumps(model))
    probe = {f"f{i}": random.Random(i).random() for i in range(12)}
    assert clone.raw_one(probe) == model.raw_one(probe)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f"f{i}" for i in range(15)]),
                       st.one_of(st.floats(-5, 5, allow_nan=False), st.sampled_from([0.0, 1.5])),
                       max_size=15), st.integers(0, 6))
def test_top_positive_is_the_sorted_prefix(d, k):
    from online_models._linear import top_positive
    want = [(f, c) for c, f in sorted(((c, f) for f, c in d.items() if c > 0.0),
                                      reverse=True)[:k]]
    assert top_positive(d, k) == want


def _python_prior_terms(terms, x):
    out = []
    for name, w, log_scaled in terms:
        value = x.get(name)
        if value is None or type(value) is bool:
            continue
        v = float(value)
        if log_scaled:
            v = math.log1p(max(v, 0.0))
        elif not math.isfinite(v):
            continue
        out.append((name, value, w * v))
    return out


_prior_input = st.dictionaries(
    st.sampled_from(["a_count_1h", "b_sum_x", "c_zscore", "d_rate", "e"]),
    st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6),
              st.floats(allow_nan=True, allow_infinity=True)), max_size=5)


@settings(max_examples=200, deadline=None)
@given(_prior_input)
def test_prior_terms_match_the_python_arithmetic(x):
    from online_models.prior import RulePrior
    prior = RulePrior({"a_count_1h": 0.9, "b_sum_x": 0.2, "c_zscore": 0.35, "d_rate": 4.0})
    got, want = prior.terms(x), _python_prior_terms(prior._terms, x)
    assert [(n, v) for n, v, _ in got] == [(n, v) for n, v, _ in want]
    assert all(a == b or (math.isnan(a) and math.isnan(b))
               for (_, _, a), (_, _, b) in zip(got, want))


def _python_prior_logit(prior, x):
    z = prior.bias
    for _, _, c in _python_prior_terms(prior._terms, x):
        z += c
    return max(-50.0, min(50.0, z))


@settings(max_examples=300, deadline=None)
@given(_prior_input)
def test_prior_logit_is_the_sum_of_the_terms(x):
    from online_models.prior import RulePrior
    prior = RulePrior({"a_count_1h": 0.9, "b_sum_x": 0.2, "c_zscore": 30.0, "d_rate": 4.0})
    got, want = prior.logit(x), _python_prior_logit(prior, x)
    assert type(got) is float
    assert math.copysign(1.0, got) == math.copysign(1.0, want)
    assert got == want  # NaN sums are clipped to 50, as max(-50, min(50, nan)) gives
    assert prior.logit(x, prior.terms(x)) == got


def test_learning_leaves_floats_held_elsewhere_alone():
    """Learning updates a state float in place only when the state list is its sole holder."""
    model = ScaledLogisticRegression()
    model.learn_one({"a": 1.0, "b": 2.0}, False)
    held = model._state["a"]
    mean, weight = held[1], held[3]
    before = (mean, weight)
    for i in range(5):
        model.learn_one({"a": float(i), "b": 1.0}, i % 2 == 0)
    assert (mean, weight) == before and held[1] != mean
    assert all(type(v) is float for s in model._state.values() for v in s)


_packable = st.one_of(st.none(), st.booleans(), st.integers(-2**53, 2**53),
                      st.floats(allow_nan=True, allow_infinity=True))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([f"f{i}" for i in range(8)]),
                                st.one_of(_packable, st.integers(), st.text(max_size=2)),
                                max_size=8), min_size=1, max_size=5))
def test_packed_vectors_unpack_to_equal_dicts(vectors):
    from online_models._linear import PackedVector, VectorPacker
    packer = VectorPacker()
    packed = [packer.pack(v) for v in vectors]
    for v, p in zip(vectors, packed):
        packable = all(type(x) in (float, bool, type(None)) or
                       (type(x) is int and -2**53 <= x <= 2**53) for x in v.values())
        assert (type(p) is PackedVector) == packable
        if not packable:
            assert p is v
            continue
        u = packer.unpack(p)
        assert u is not v and list(u) == list(v)
        assert [type(x) for x in u.values()] == [type(x) for x in v.values()]
        assert all(pickle.dumps(a) == pickle.dumps(b) for a, b in zip(u.values(), v.values()))
