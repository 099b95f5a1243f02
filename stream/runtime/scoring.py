"""The scoring step of the last stage, behind one small interface.

The runtime calls :meth:`Scorer.score` once per event with the merged feature vector and
:meth:`Scorer.learn` once per label. Whatever a scorer keeps per merchant lives in the partition's
state store, so it is changelogged and restored with the partition; that is what lets a restarted
worker produce the same scores as an uninterrupted one.

``model_name`` chooses: a name from ``online_models.registry`` (``default``, ...) gives a
:class:`ModelScorer`; ``heuristic`` gives :class:`HeuristicScorer`, a fixed, deterministic
logistic score over velocity and amount features that learns nothing (useful before any label has
arrived, and as the reference of the exactly-once tests, whose scores must depend on state).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, NamedTuple, Protocol

from features.store import StateStore

if TYPE_CHECKING:  # the online models (river) load only when a model scorer is made
    from online_models.metrics import QualityMonitor

__all__ = ["Scorer", "Outcome", "ModelScorer", "HeuristicScorer", "make_scorer"]


class Outcome(NamedTuple):
    """One event's score. ``decision`` None means: apply the configured thresholds.

    A named tuple rather than a frozen dataclass: one is made per scored event, and a frozen
    dataclass sets each field through ``object.__setattr__`` (three to four times the cost).
    """

    score: float
    decision: str | None
    version: str
    reasons: list[dict[str, Any]]


class Scorer(Protocol):
    """What the last stage needs from a model (one instance per task: per-merchant state lives
    in the task's store)."""

    version: str
    # Progressive-validation quality of this task's scores (None for fixed scorers).
    monitor: QualityMonitor | None

    def score(self, features: Mapping[str, Any], event: Mapping[str, Any]) -> Outcome: ...

    def learn(self, label: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Learn from a label: (status, the joined training example for the trainer or None).

        Status ``unknown`` means no event with that id was scored here (yet): the runtime parks
        the label and applies it when the event is scored."""

    def learn_joined(self, label: Mapping[str, Any]) -> tuple[str, Any]:
        """:meth:`learn` with the joined example as an object (``online_models.labels.Example``)
        rather than its dict form, for callers in the same process (the backtest)."""

    def flush(self) -> None:
        """Write dirty per-merchant state into the store (called before changelogs)."""

    def freeze(self) -> None:
        """Stop learning from labels from now on (the backtest's ``--freeze-after``); labels
        still join. A no-op for fixed scorers."""

    def load_global(self, model: Any) -> None:
        """Swap in a new global model (a decoded snapshot); no-op for fixed scorers."""


class ModelScorer:
    """The online models (``online_models.scorer.Scorer``) behind the runtime's interface.

    The global model is shared by every task of the worker and only ever replaced (by a snapshot
    the trainer published), never learned here; snapshots of scored vectors and per-merchant
    models live in the task's store, so they are changelogged and restored with the partition.
    ``merchant_models=True`` (the setting of that name) learns per-merchant models in the task
    and blends them in; otherwise the global model scores alone and no per-merchant model is
    made, stored or blended. ``reasons=False`` (no reason codes) and ``evaluate=False`` (no
    quality monitor: :attr:`monitor` is None) are for callers that use neither, the backtest:
    the scores and what is learned are the same. ``packed_snapshots=True`` keeps the scored
    vectors that wait for their labels packed (``online_models.labels.SnapshotStore``): only for
    a store that keeps objects in memory as they are (the backtest's ``DictStore``).
    """

    def __init__(self, spec: str, store: StateStore, review: float, block: float,
                 global_model: Any | None = None,
                 per_merchant: Mapping[str, tuple[float, float]] | None = None,
                 budget: float = 0.01, merchant_models: bool = False, reasons: bool = True,
                 evaluate: bool = True, packed_snapshots: bool = False) -> None:
        from online_models.calibration import DecisionPolicy, Thresholds
        from online_models.scorer import Scorer as _Scorer

        policy = DecisionPolicy(Thresholds(review, block),
                                {m: Thresholds(r, b) for m, (r, b) in (per_merchant or {}).items()})
        # The per-merchant spec is online_models' default; None makes no merchant models.
        no_merchants = {} if merchant_models else {"merchant_spec": None}
        self._s = _Scorer.create(spec, kv=store, learn_global=False, write_through=False,
                                 policy=policy, budget=budget, n_reasons=3 if reasons else 0,
                                 evaluate=evaluate, packed_snapshots=packed_snapshots,
                                 **no_merchants)
        if global_model is not None:
            self._s.load_global(global_model)

    @property
    def version(self) -> str:
        return self._s.global_model.version

    @property
    def monitor(self) -> QualityMonitor | None:
        """Quality since this task opened: in memory only (not in the store), so it starts over
        when the partition is restored."""
        return self._s.monitor

    def score(self, features: Mapping[str, Any], event: Mapping[str, Any]) -> Outcome:
        # No defensive copy: the models build their own vector from ``features``.
        rec = self._s.score(features, event.get("merchant_id"), event["event_id"],
                            event["event_time"])
        return Outcome(round(rec.score, 6), rec.decision, rec.model_version, rec.reasons)

    def learn(self, label: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        """Join and learn a label; the joined example as the training topic carries it."""
        status, example = self.learn_joined(label)
        return status, (example.to_dict() if example is not None else None)

    def learn_joined(self, label: Mapping[str, Any]) -> tuple[str, Any]:
        """:meth:`learn`, the joined example as an ``online_models.labels.Example`` (the
        backtest hands it to the global model directly: its dict form round trips exactly)."""
        out = self._s.learn(label["event_id"], bool(label["is_fraud"]), label["label_time"])
        return out.status, out.example

    def flush(self) -> None:
        self._s.flush()

    def freeze(self) -> None:
        """Stop learning: per-merchant models stay as they are (labels still join, and their
        examples are still returned for the trainer). The backtest's ``--freeze-after``."""
        self._s.learn_merchants = False

    @property
    def merchant_models(self) -> bool:
        return self._s.merchants is not None

    def load_global(self, model: Any) -> None:
        self._s.load_global(model)

    def load_challenger(self, model: Any | None) -> None:
        self._s.load_challenger(model)


class HeuristicScorer:
    """The fixed scorecard :class:`online_models.prior.RulePrior` alone: the default model's
    prior, without the learned correction."""

    version = "heuristic-1"
    monitor = None  # learns nothing, so nothing to evaluate

    def __init__(self) -> None:
        from online_models.prior import RulePrior

        self._prior = RulePrior()

    def score(self, features: Mapping[str, Any], event: Mapping[str, Any]) -> Outcome:
        terms = self._prior.terms(features)
        score = 1.0 / (1.0 + math.exp(-self._prior.logit(features, terms)))
        contributions = sorted(((c, name, value) for name, value, c in terms if c > 0),
                               key=lambda item: (-item[0], item[1]))
        reasons = [{"feature": name, "value": value, "contribution": round(c, 4)}
                   for c, name, value in contributions[:3]]
        return Outcome(round(score, 6), None, self.version, reasons)

    def learn(self, label: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
        return "ignored", None

    def learn_joined(self, label: Mapping[str, Any]) -> tuple[str, Any]:
        return "ignored", None

    def flush(self) -> None:
        return None

    def freeze(self) -> None:
        return None

    def load_global(self, model: Any) -> None:
        return None


def make_scorer(model_name: str, store: StateStore, review: float, block: float,
                global_model: Any | None = None,
                per_merchant: Mapping[str, tuple[float, float]] | None = None,
                budget: float = 0.01, merchant_models: bool = False, reasons: bool = True,
                evaluate: bool = True, packed_snapshots: bool = False) -> Scorer:
    """The scorer for one task of the last stage (``per_merchant``: merchant -> (review,
    block) thresholds that win over the global ones; ``budget``: the review budget its quality
    monitor measures precision and recall at; ``merchant_models``: the setting of that name,
    whether per-merchant models are learned and blended in; ``reasons``, ``evaluate``,
    ``packed_snapshots``: see :class:`ModelScorer`)."""
    if model_name == "heuristic":
        return HeuristicScorer()  # its decisions come from the runtime's thresholds
    return ModelScorer(model_name, store, review, block, global_model, per_merchant, budget,
                       merchant_models, reasons, evaluate, packed_snapshots)
