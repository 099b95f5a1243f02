"""Per-merchant models: a correction to the global model's score, learned per merchant.

Every merchant has a small model (spec ``merchant-correction`` by default: a logistic regression
with standardised values clipped to +-2, a few kB pickled) that learns, from that merchant's
labelled events and from the first label on, a *correction* to the global model's log-odds: it
is trained with the event's global log-odds (as the event was scored, from its snapshot) as a
fixed offset, so it learns only what the global model gets wrong at that merchant, and it starts
at zero. It is *used* only once it has learned ``min_labels`` (N, 200) labels; from then on the
score is

    logit(p) = logit(p_global) + w * c,   c = logit(p_merchant) - logit(p_global),
    w = n / (n + k)

where ``p_merchant`` is the merchant model's score with the global log-odds as its offset (the
correction applied in full), ``n`` the number of labels it has learned and ``k``
(``half_trust``, 200) the count at which half of the correction is applied. Below N, ``p =
p_global``. The weight grows with the evidence behind the correction and never reaches 1, so a
correction learned from few labels moves the score only part of the way.

Why a correction in log-odds rather than a mix of two probabilities: the merchant model learns on
the global score's own scale (whatever it is: the default global model's score is used
uncalibrated and over-states the odds, docs/models.md), so nothing needs calibrating per
merchant, and a merchant model that has learned nothing (``c = 0``) gives exactly the global
score. Mixing a separately calibrated merchant probability with an uncalibrated global one (the
rule before 2026-11-28) moved scores between two scales and lost ranking overall.

The correction does not see the merchant's own label-aware features (``exclude``: names
starting ``merchant_txn_fraud_``, the merchant's fraud count and rate). At one merchant they are
the same for every event at a given time and a delayed echo of the very labels the correction
learns from: learning from them, it learns *when* that merchant had fraud (an incident the
global model already sees through the same features) rather than *which* of its events are
fraud, and keeps pushing the merchant's events up after the incident. (Chosen on backtests,
docs/models.md.)

A spec qualifies if its model takes an ``offset`` (``FraudModel.supports_offset``).

State: :class:`MerchantModels` keeps each merchant's :class:`MerchantModel` in a :class:`KeyValue`
under ``b"mm:" + merchant_id`` as ``[last_event_time, pickle_bytes]`` (plain list, event time
first, like every stored value), so it lives in the scoring stage's partitioned state, moves with
the merchant's partition and is checkpointed and restored like any state. A merchant model stored
by the old rule (a probability model with its own calibrator) is not a correction and is
dropped when read: that merchant starts over. Live objects are kept in a bounded in-process cache
so scoring does not unpickle. Learning writes through to the store (pickling the model per
label), or, with ``write_through=False``, marks it dirty until :meth:`MerchantModels.flush`,
which the I/O layer calls in its commit protocol. The cache is per instance: build one
:class:`MerchantModels` per assigned partition and drop it when the partition is revoked.

>>> rule = BlendRule(min_labels=2, half_trust=2)
>>> rule.weight(1), rule.weight(2), rule.weight(6)
(0.0, 0.5, 0.75)
>>> round(rule.blend(0.2, 0.6, 2), 4)    # half-way in log-odds
0.3798
>>> from online_models.labels import MemoryKV
>>> mm = MerchantModels(MemoryKV(), rule=rule)
>>> _ = mm.learn("m1", {"amount": 1.0}, False, event_time=0, global_logit=-2.0)
>>> mm.score("m1", {"amount": 1.0}, global_logit=-2.0) is None   # one label: global only
True
>>> _ = mm.learn("m1", {"amount": 9.0}, True, event_time=1, global_logit=-2.0)
>>> p, n, version = mm.score("m1", {"amount": 9.0}, global_logit=-2.0)
>>> n, version, p > 1 / (1 + math.exp(2.0))     # corrected upwards after a fraud label
(2, 'merchant-correction-1/m1/2', True)
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass

from online_models.exceptions import ModelConfigError
from online_models.labels import KeyValue
from online_models.linear import logit
from online_models.linear import sigmoid as _sigmoid
from online_models.registry import FraudModel, build

__all__ = ["BlendRule", "MerchantModel", "MerchantModels", "logit", "EXCLUDE"]

#: Name prefixes of the features a merchant's correction does not see (module docstring).
EXCLUDE: tuple[str, ...] = ("merchant_txn_fraud_",)

#: Tag of the stored state of a correction model (what the rule before 2026-11-28 stored has none).
_FORMAT = 2


@dataclass(frozen=True)
class BlendRule:
    """``w = n / (n + half_trust)`` once ``n >= min_labels``, else 0 (see the module docstring)."""

    min_labels: int = 200
    half_trust: float = 200.0

    def __post_init__(self) -> None:
        if self.min_labels < 1 or self.half_trust <= 0:
            raise ModelConfigError("blend rule: need min_labels >= 1 and half_trust > 0")

    def weight(self, n: int) -> float:
        return 0.0 if n < self.min_labels else n / (n + self.half_trust)

    def blend(self, p_global: float, p_merchant: float, n: int) -> float:
        """``p_global`` moved by ``weight(n)`` of the way to ``p_merchant``, in log-odds."""
        w = self.weight(n)
        if w == 0.0:
            return p_global
        g = logit(p_global)
        return _sigmoid(g + w * (logit(p_merchant) - g))


class MerchantModel:
    """One merchant's correction model and how many labels it has learned."""

    __slots__ = ("merchant_id", "model", "n", "last_event_time", "legacy")

    def __init__(self, merchant_id: str, model: FraudModel) -> None:
        if not model.supports_offset:
            raise ModelConfigError(f"per-merchant models: spec {model.name!r} cannot learn a "
                                   "correction (no offset); use 'merchant-correction'")
        self.merchant_id = merchant_id
        self.model = model
        self.n = 0
        self.last_event_time = 0
        self.legacy = False

    @property
    def version(self) -> str:
        return f"{self.model.version}/{self.merchant_id}/{self.n}"

    def __getstate__(self) -> tuple:
        return (_FORMAT, self.merchant_id, self.model, self.n, self.last_event_time)

    def __setstate__(self, st: tuple) -> None:
        if st[0] == _FORMAT:
            _, self.merchant_id, self.model, self.n, self.last_event_time = st
            self.legacy = False
        else:  # (merchant_id, model, calibrator, n, last_event_time): a probability model
            self.merchant_id, self.model, _, self.n, self.last_event_time = st
            self.legacy = True


class MerchantModels:
    """Per-merchant models over a :class:`KeyValue` (see the module docstring)."""

    def __init__(self, kv: KeyValue, spec: str = "merchant-correction",
                 rule: BlendRule = BlendRule(),
                 cache_size: int = 10_000, seed: int = 42, prefix: bytes = b"mm:",
                 write_through: bool = True,
                 exclude: tuple[str, ...] = EXCLUDE) -> None:
        self.kv = kv
        self.spec = spec
        self.rule = rule
        self.cache_size = cache_size
        self.seed = seed
        self.prefix = prefix
        self.write_through = write_through
        self.exclude = tuple(exclude)
        self._dirty: dict[str, MerchantModel] = {}
        self._cache: OrderedDict[str, MerchantModel] = OrderedDict()

    def _inputs(self, v: dict) -> dict:
        """``v`` without the excluded features (``v`` itself if nothing is excluded)."""
        ex = self.exclude
        return {k: x for k, x in v.items() if not k.startswith(ex)} if ex else v

    def get(self, merchant_id: str) -> MerchantModel | None:
        """The merchant's model, or ``None`` if it has never learned a label."""
        m = self._cache.get(merchant_id)
        if m is not None:
            self._cache.move_to_end(merchant_id)
            return m
        stored = self.kv.get(self.prefix + merchant_id.encode())
        if stored is None:
            return None
        m = pickle.loads(stored[1])
        if m.legacy:
            return None  # not a correction (see the module docstring): start over
        self._remember(m)
        return m

    def _remember(self, m: MerchantModel) -> None:
        self._cache[m.merchant_id] = m
        if len(self._cache) > self.cache_size:
            _, old = self._cache.popitem(last=False)
            if old.merchant_id in self._dirty:
                self._write(self._dirty.pop(old.merchant_id))

    def _write(self, m: MerchantModel) -> None:
        self.kv.put(self.prefix + m.merchant_id.encode(),
                    [m.last_event_time, pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)])

    def score(self, merchant_id: str, v: dict, global_logit: float
              ) -> tuple[float, int, str] | None:
        """``(p_merchant, n, version)`` if trusted (``n >= N``), else ``None``; ``p_merchant`` is
        the global log-odds with the merchant's full correction (blend it with
        :meth:`BlendRule.blend`)."""
        m = self.get(merchant_id)
        if m is None or m.n < self.rule.min_labels:
            return None
        return m.model.score_one(self._inputs(v), offset=global_logit), m.n, m.version

    def learn(self, merchant_id: str, v: dict, y: bool, event_time: int,
              global_logit: float) -> MerchantModel:
        """Learn one label (``global_logit``: the global log-odds the event was scored with) and
        write the model through to the store."""
        m = self.get(merchant_id)
        if m is None:
            m = MerchantModel(merchant_id, build(self.spec, self.seed))
            self._remember(m)
        m.model.learn_one(self._inputs(v), y, offset=global_logit)
        m.n += 1
        m.last_event_time = max(m.last_event_time, event_time)
        if self.write_through:
            self._write(m)
        else:
            self._dirty[merchant_id] = m
        return m

    def flush(self) -> int:
        """Write the models learned since the last flush (``write_through=False``); how many.

        The I/O layer calls this in its commit protocol before producing changelogs and
        checkpointing, like any write-back state.
        """
        dirty, self._dirty = self._dirty, {}
        for m in dirty.values():
            self._write(m)
        return len(dirty)

    def clear_cache(self) -> None:
        """Forget live objects after flushing (the store stays authoritative)."""
        self.flush()
        self._cache.clear()
