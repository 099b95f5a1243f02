"""Per-merchant models and how their scores are blended with the global model's.

Every merchant has a small model (spec ``logreg`` by default: a few kB pickled) that learns from
that merchant's labelled events from the first label on. It is *used* only once it has learned
``min_labels`` (N) labels; from then on the raw score is

    raw = (1 - w) * global + w * merchant,   w = n / (n + k)

where ``n`` is the number of labels the merchant model has learned and ``k`` (``half_trust``) is
the count at which both models get equal weight. Below N, ``raw = global``. The weight grows with
the evidence behind the merchant model and never reaches 1, so the global model keeps a say.
Both scores go through their calibrators before they are blended (the global model's, each
merchant model's own small :class:`PlattCalibrator`), since raw scores of different models are on
different scales; a model whose raw score is used as is has a pass-through instead
(:func:`online_models.calibration.calibrator_for`; the default global model is one, so its score
and a Platt-calibrated merchant score are not on quite the same scale: one reason the runtime
leaves per-merchant models off by default, docs/models.md). The merchant calibrator learns, per
label, the merchant model's prediction made just before it learns that label (a prequential
prediction: the model has not seen the example yet).

State: :class:`MerchantModels` keeps each merchant's :class:`MerchantModel` in a :class:`KeyValue`
under ``b"mm:" + merchant_id`` as ``[last_event_time, pickle_bytes]`` (plain list, event time
first, like every stored value), so it lives in the scoring stage's partitioned state, moves with
the merchant's partition and is checkpointed and restored like any state. Live objects are kept
in a bounded in-process cache so scoring does not unpickle. Learning writes through to the store
(pickling the model per label), or, with ``write_through=False``, marks it dirty until
:meth:`MerchantModels.flush`, which the I/O layer calls in its commit protocol.
The cache is per instance: build one :class:`MerchantModels` per assigned partition and drop it
when the partition is revoked.

>>> rule = BlendRule(min_labels=2, half_trust=2)
>>> rule.weight(1), rule.weight(2), rule.weight(6)
(0.0, 0.5, 0.75)
>>> from online_models.labels import MemoryKV
>>> mm = MerchantModels(MemoryKV(), rule=rule)
>>> _ = mm.learn("m1", {"amount": 1.0}, False, event_time=0)
>>> mm.score("m1", {"amount": 1.0}) is None      # one label: below N, global only
True
>>> _ = mm.learn("m1", {"amount": 9.0}, True, event_time=1)
>>> p, n, version = mm.score("m1", {"amount": 9.0})
>>> n, version
(2, 'logreg-1/m1/2')
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from dataclasses import dataclass

from online_models.calibration import calibrator_for
from online_models.exceptions import ModelConfigError
from online_models.labels import KeyValue
from online_models.registry import FraudModel, build

__all__ = ["BlendRule", "MerchantModel", "MerchantModels"]


@dataclass(frozen=True)
class BlendRule:
    """``w = n / (n + half_trust)`` once ``n >= min_labels``, else 0 (see the module docstring)."""

    min_labels: int = 200
    half_trust: float = 1000.0

    def __post_init__(self) -> None:
        if self.min_labels < 1 or self.half_trust <= 0:
            raise ModelConfigError("blend rule: need min_labels >= 1 and half_trust > 0")

    def weight(self, n: int) -> float:
        return 0.0 if n < self.min_labels else n / (n + self.half_trust)

    def blend(self, p_global: float, p_merchant: float, n: int) -> float:
        w = self.weight(n)
        return (1.0 - w) * p_global + w * p_merchant


class MerchantModel:
    """One merchant's model and how many labels it has learned."""

    __slots__ = ("merchant_id", "model", "calibrator", "n", "last_event_time")

    def __init__(self, merchant_id: str, model: FraudModel, min_labels: int = 50) -> None:
        self.merchant_id = merchant_id
        self.model = model
        self.calibrator = calibrator_for(model, n_bins=24, refit_every=32,
                                         min_labels=min(50, min_labels))
        self.n = 0
        self.last_event_time = 0

    @property
    def version(self) -> str:
        return f"{self.model.version}/{self.merchant_id}/{self.n}"

    def __getstate__(self) -> tuple:
        return (self.merchant_id, self.model, self.calibrator, self.n, self.last_event_time)

    def __setstate__(self, st: tuple) -> None:
        self.merchant_id, self.model, self.calibrator, self.n, self.last_event_time = st


class MerchantModels:
    """Per-merchant models over a :class:`KeyValue` (see the module docstring)."""

    def __init__(self, kv: KeyValue, spec: str = "logreg", rule: BlendRule = BlendRule(),
                 cache_size: int = 10_000, seed: int = 42, prefix: bytes = b"mm:",
                 write_through: bool = True) -> None:
        self.kv = kv
        self.spec = spec
        self.rule = rule
        self.cache_size = cache_size
        self.seed = seed
        self.prefix = prefix
        self.write_through = write_through
        self._dirty: dict[str, MerchantModel] = {}
        self._cache: OrderedDict[str, MerchantModel] = OrderedDict()

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

    def score(self, merchant_id: str, v: dict) -> tuple[float, int, str] | None:
        """``(calibrated merchant score, n, version)`` if trusted (``n >= N``), else ``None``."""
        m = self.get(merchant_id)
        if m is None or m.n < self.rule.min_labels:
            return None
        return m.calibrator.predict_one(m.model.score_one(v)), m.n, m.version

    def learn(self, merchant_id: str, v: dict, y: bool, event_time: int) -> MerchantModel:
        """Learn one label and write the model through to the store."""
        m = self.get(merchant_id)
        if m is None:
            m = MerchantModel(merchant_id, build(self.spec, self.seed), self.rule.min_labels)
            self._remember(m)
        m.calibrator.learn_one(m.model.score_one(v), y)
        m.model.learn_one(v, y)
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
