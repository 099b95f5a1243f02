"""The scoring facade: feature dict in, score record out; labels in through the snapshot store.

Per event, :meth:`Scorer.score` (predict, never learn):

1. take the current :class:`GlobalModel` reference once (a concurrent :meth:`Scorer.load_global`
   swaps the reference and cannot change a score call in progress);
2. ``v = model.prepare_one(x)``: the vector scored and later learned from;
3. raw global score and the top reason codes in one pass (the score alone with ``n_reasons=0``);
4. calibrate it (or not: :func:`online_models.calibration.calibrator_for`); if the merchant's
   model is trusted, apply its correction to the global log-odds, weighted by the labels behind
   it (:class:`online_models.merchant.BlendRule`);
5. decide with the global or the merchant's thresholds;
6. score the challenger, if any (recorded, never decided on);
7. store the :class:`online_models.labels.Snapshot` under the event id; return a
   :class:`ScoreRecord`.

Per label, :meth:`Scorer.learn` joins the stored snapshot (counting unknown, expired and duplicate
labels) and, in this order: updates the quality monitor, if it has one, with the scores *as
they were stored* (progressive validation), learns the merchant model (when
``learn_merchants``), the challenger and (when ``learn_global``) the global model and its
calibrator, all from the stored vectors (the merchant model with the global log-odds the
event was scored with as its offset). It returns a :class:`LearnOutcome` whose ``example`` is
what a worker sends to the trainer when the global model is learned elsewhere
(``learn_global=False``); the trainer calls
:meth:`GlobalModel.learn` with it. The streaming worker and the backtest both call exactly these two
methods (the backtest through :func:`online_models.replay.replay`), so predict-then-learn order is
the same in both.

Global snapshots (:meth:`GlobalModel.to_bytes` / :meth:`GlobalModel.from_bytes`) carry a format
tag, the spec name and the version label; loading checks them.

>>> from online_models.labels import MemoryKV
>>> scorer = Scorer.create("logreg", kv=MemoryKV(), seed=1)
>>> rec = scorer.score({"amount": 12.0}, merchant_id="m1", event_id="e1", event_time=0)
>>> rec.score, rec.decision, rec.versions["global"]   # untrained: 0.5
(0.5, 'review', 'logreg-1.0')
>>> scorer.learn("e1", is_fraud=False, label_time=86_400_000).status
'joined'
>>> scorer.learn("e404", is_fraud=True, label_time=86_400_000).status
'unknown'
>>> g = GlobalModel.from_bytes(scorer.global_model.to_bytes())
>>> g.version, g.n_learned
('logreg-1.1', 1)
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

from online_models.calibration import (DecisionPolicy, PassThrough, PlattCalibrator,
                                       calibrator_for, reason_codes)
from online_models.exceptions import SnapshotError
from online_models.labels import (DEFAULT_TTL_MS, JOINED, Example, KeyValue, Snapshot,
                                  SnapshotStore)
from online_models.merchant import BlendRule, MerchantModels, logit
from online_models.metrics import DriftRecord, QualityMonitor
from online_models.registry import FraudModel, build, get_spec

__all__ = ["GlobalModel", "Scorer", "ScoreRecord", "LearnOutcome"]

_MAGIC = b"FSGM1\n"


class GlobalModel:
    """A registry model plus its calibrator, with a version label and a learned-examples count.

    The calibrator is a :class:`PlattCalibrator`, or a :class:`PassThrough` for models whose raw
    score is used as is (``needs_calibration = False``, the default spec).

    The default version label is ``"<spec version>.<n_learned>"``; a trainer publishing snapshots
    may set its own with :meth:`set_version`.
    """

    def __init__(self, model: FraudModel, calibrator: PlattCalibrator | PassThrough | None = None,
                 version: str | None = None) -> None:
        self.model = model
        # A Platt calibrator unless the model's raw score is used as is (calibrator_for).
        self.calibrator = calibrator if calibrator is not None else calibrator_for(model)
        self.n_learned = 0
        self._version = version

    @classmethod
    def create(cls, spec: str = "default", seed: int = 42) -> "GlobalModel":
        return cls(build(spec, seed))

    @property
    def version(self) -> str:
        return self._version or f"{self.model.version}.{self.n_learned}"

    def set_version(self, version: str | None) -> None:
        """Pin the version label (``None``: back to ``"<spec version>.<n_learned>"``)."""
        self._version = version

    def learn(self, example: Example) -> None:
        """Learn one joined example: the model from the stored vector, the calibrator from the
        stored raw global score."""
        s = example.snapshot
        self.model.learn_one(s.vector, example.is_fraud)
        self.calibrator.learn_one(s.raw, example.is_fraud)
        self.n_learned += 1
        if self._version is not None:
            self._version = None  # learned past a published version: no longer that version

    def to_bytes(self) -> bytes:
        """A self-describing snapshot: format tag, spec name, version, pickle."""
        head = f"{self.model.name}\n{self.version}\n".encode()
        return _MAGIC + head + pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes) -> "GlobalModel":
        """Load a snapshot written by :meth:`to_bytes`; :class:`SnapshotError` if it is not one.

        Snapshots are pickles: load only those from the project's own ``models`` topic.
        """
        if not data.startswith(_MAGIC):
            raise SnapshotError("not a fraudstream global-model snapshot (bad format tag)")
        try:
            name, version, body = data[len(_MAGIC):].split(b"\n", 2)
            obj = pickle.loads(body)
        except Exception as exc:  # truncated or corrupt: say so, whatever pickle raised
            raise SnapshotError(f"corrupt global-model snapshot: {exc}") from exc
        if not isinstance(obj, cls) or obj.model.name != name.decode():
            raise SnapshotError("global-model snapshot header does not match its content")
        get_spec(obj.model.name)  # a spec this code does not know cannot be served
        obj._version = version.decode()
        return obj


@dataclass(slots=True)
class ScoreRecord:
    """What :meth:`Scorer.score` returns for one event."""

    event_id: str
    merchant_id: str | None
    event_time: int
    score: float                # calibrated probability of fraud
    decision: str               # approve | review | block
    model_version: str          # one string for the wire: global[+merchant]
    versions: dict              # {"global", "merchant", "challenger"}: str or None
    reasons: list[dict]         # [{"feature", "value", "contribution"}], largest first
    raw: float                  # the global model's raw score before calibration
    challenger_score: float | None = None


@dataclass(slots=True)
class LearnOutcome:
    """What :meth:`Scorer.learn` did with one label."""

    status: str                         # joined | unknown | expired | duplicate
    example: Example | None = None      # the joined example (send it to the trainer)
    drifts: list[DriftRecord] = field(default_factory=list)


class Scorer:
    """Score events and learn from delayed labels (see the module docstring)."""

    def __init__(self, global_model: GlobalModel, snapshots: SnapshotStore,
                 merchants: MerchantModels | None = None, policy: DecisionPolicy | None = None,
                 monitor: QualityMonitor | None = None, challenger: GlobalModel | None = None,
                 learn_global: bool = True, n_reasons: int = 3,
                 learn_merchants: bool = True, evaluate: bool = True) -> None:
        self._global = global_model
        self._challenger = challenger
        self.snapshots = snapshots
        self.merchants = merchants
        self.policy = policy if policy is not None else DecisionPolicy()
        # ``evaluate=False``: no quality monitor (None), for callers that never read it (the
        # backtest computes its own metrics); scores and learning are the same.
        self.monitor: QualityMonitor | None = (
            (monitor if monitor is not None else QualityMonitor()) if evaluate else None)
        self.learn_global = learn_global
        # False freezes the per-merchant models (and their calibrators) as they are; they still
        # score. Labels still join and count.
        self.learn_merchants = learn_merchants
        # 0: no reason codes. The score is the same (``score_one`` is ``score_explain_one``
        # without the explanation); the prior's terms and the contributions are not computed.
        self.n_reasons = n_reasons

    @classmethod
    def create(cls, spec: str = "default", kv: KeyValue | None = None, *, seed: int = 42,
               merchant_spec: str | None = "merchant-correction", blend: BlendRule = BlendRule(),
               policy: DecisionPolicy | None = None, ttl_ms: int = DEFAULT_TTL_MS,
               challenger: str | None = None, learn_global: bool = True,
               budget: float = 0.01, write_through: bool = True, n_reasons: int = 3,
               evaluate: bool = True, packed_snapshots: bool = False) -> "Scorer":
        """A scorer with fresh models; ``kv`` holds snapshots and per-merchant models.

        ``write_through=False`` keeps learned merchant models dirty in memory until
        :meth:`flush` (one pickle per merchant per flush instead of one per label); the I/O layer
        then calls :meth:`flush` in its commit protocol before changelogs and checkpoints.
        ``n_reasons=0`` scores without reason codes and ``evaluate=False`` keeps no quality
        monitor: the same scores and learning for callers that use neither (the backtest).
        ``packed_snapshots=True`` keeps stored vectors packed (:class:`SnapshotStore`; for a
        ``kv`` that holds objects in memory, such as :class:`MemoryKV`).
        """
        from online_models.labels import MemoryKV

        kv = kv if kv is not None else MemoryKV()
        merchants = (MerchantModels(kv, merchant_spec, blend, seed=seed,
                                    write_through=write_through)
                     if merchant_spec is not None else None)
        return cls(GlobalModel.create(spec, seed),
                   SnapshotStore(kv, ttl_ms, packed=packed_snapshots), merchants, policy,
                   QualityMonitor(budget=budget) if evaluate else None,
                   GlobalModel.create(challenger, seed) if challenger else None, learn_global,
                   n_reasons, evaluate=evaluate)

    # ------------------------------------------------------------------ models
    @property
    def global_model(self) -> GlobalModel:
        return self._global

    @property
    def challenger(self) -> GlobalModel | None:
        return self._challenger

    def load_global(self, data: bytes | GlobalModel) -> str:
        """Swap in a new global model (snapshot bytes or object); returns its version.

        The snapshot is fully decoded before the swap, which is a single reference assignment:
        a score call in progress finishes with the model it started with.
        """
        g = data if isinstance(data, GlobalModel) else GlobalModel.from_bytes(data)
        self._global = g
        return g.version

    def load_challenger(self, data: bytes | GlobalModel | None) -> str | None:
        """Run a challenger in shadow (``None`` stops it)."""
        c = data if data is None or isinstance(data, GlobalModel) else GlobalModel.from_bytes(data)
        self._challenger = c
        return c.version if c is not None else None

    def promote_challenger(self) -> str:
        """The challenger becomes the global model; the old global model is dropped."""
        if self._challenger is None:
            raise SnapshotError("no challenger to promote")
        self._global, self._challenger = self._challenger, None
        return self._global.version

    # ------------------------------------------------------------------ per event
    def score(self, x: dict, merchant_id: str | None, event_id: str,
              event_time: int) -> ScoreRecord:
        """Score one event with the models as they are now and store its snapshot."""
        g = self._global
        model = g.model
        v = model.prepare_one(x)
        if self.n_reasons:
            raw_global, top = model.score_explain_one(v, self.n_reasons)
        else:
            raw_global, top = model.score_one(v), None
        p_global = p = g.calibrator.predict_one(raw_global)
        p_merchant = None
        merchant_n = 0
        merchant_version = None
        if merchant_id is not None and self.merchants is not None:
            m = self.merchants.score(merchant_id, v, logit(p_global))
            if m is not None:
                p_merchant, merchant_n, merchant_version = m
                p = self.merchants.rule.blend(p_global, p_merchant, merchant_n)
        decision = self.policy.decide(p, merchant_id)
        c = self._challenger
        c_version = c_vector = c_raw = c_score = None
        if c is not None:
            c_vector = c.model.prepare_one(x)
            c_raw = c.model.score_one(c_vector)
            c_score = c.calibrator.predict_one(c_raw)
            c_version = c.version
        version = g.version
        self.snapshots.put(Snapshot(event_id, merchant_id, event_time, v, raw_global, p, version,
                                    raw_global, p_merchant, merchant_n, c_version, c_vector,
                                    c_raw, p_global))
        return ScoreRecord(
            event_id, merchant_id, event_time, p, decision,
            version if merchant_version is None else f"{version}+{merchant_version}",
            {"global": version, "merchant": merchant_version, "challenger": c_version},
            reason_codes(top, v) if top else [], raw_global, c_score)

    # ------------------------------------------------------------------ per label
    def learn(self, event_id: str, is_fraud: bool, label_time: int) -> LearnOutcome:
        """Join a label with its stored snapshot and learn from it (see the module docstring)."""
        snap, status = self.snapshots.take(event_id, label_time)
        if status != JOINED:
            return LearnOutcome(status)
        y = bool(is_fraud)
        example = Example(snap, y, label_time)
        drifts = self._evaluate(example) if self.monitor is not None else []
        if snap.merchant_id is not None and self.merchants is not None and self.learn_merchants:
            p_global = snap.p_global if snap.p_global is not None else snap.raw
            self.merchants.learn(snap.merchant_id, snap.vector, y, snap.event_time,
                                 logit(p_global))
        c = self._challenger
        if c is not None and snap.challenger_vector is not None:
            c.model.learn_one(snap.challenger_vector, y)
            c.calibrator.learn_one(snap.challenger_raw, y)
            c.n_learned += 1
        if self.learn_global:
            self._global.learn(example)
        return LearnOutcome(JOINED, example, drifts)

    def _evaluate(self, ex: Example) -> list[DriftRecord]:
        s, y, mon = ex.snapshot, ex.is_fraud, self.monitor
        et, lt = s.event_time, ex.label_time
        mon.delay.update(ex.delay_ms)
        out = [mon.update_model("final", s.score, y, et, lt),
               mon.update_model("global", s.p_global, y, et, lt)]
        if s.raw_merchant is not None:
            out.append(mon.update_model("merchant", s.raw_merchant, y, et, lt))
        if s.challenger_raw is not None:
            out.append(mon.update_model("challenger", s.challenger_raw, y, et, lt))
        if s.merchant_id is not None:
            mon.update_merchant(s.merchant_id, s.score, y)
        return [d for d in out if d is not None]

    def flush(self) -> int:
        """Write dirty per-merchant models to the store (see :meth:`create`); how many."""
        return self.merchants.flush() if self.merchants is not None else 0

    def report(self, merchants: bool = True) -> dict:
        """Quality metrics, label-join counts and the model versions in use."""
        out = self.monitor.report(merchants) if self.monitor is not None else {}
        out["labels"] = self.snapshots.stats.as_dict()
        out["versions"] = {"global": self._global.version,
                           "challenger": self._challenger.version if self._challenger else None}
        return out
