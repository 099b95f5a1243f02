"""Offline replay: events and delayed labels merged by time, fed to a :class:`Scorer`.

The backtest and the unit tests use this; the streaming worker calls the same two methods
(:meth:`Scorer.score` per event, :meth:`Scorer.learn` per label) in arrival order. Order here:
by time (an event's ``event_time``, a label's ``label_time``); at equal times events come first,
so a label stamped with its own event's time still joins.

>>> from online_models.scorer import Scorer
>>> events = [EventItem("e1", "m1", 0, {"amount": 3.0}), EventItem("e2", "m1", 5, {"amount": 4.0})]
>>> labels = [LabelItem("e1", False, 5), LabelItem("e9", True, 6)]
>>> s = replay(Scorer.create("logreg"), merge_by_time(events, labels))
>>> s.scored, s.labels
(2, {'joined': 1, 'unknown': 1, 'expired': 0, 'duplicate': 0})
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Union

from online_models.scorer import LearnOutcome, Scorer, ScoreRecord

__all__ = ["EventItem", "LabelItem", "merge_by_time", "replay", "ReplaySummary"]


@dataclass(frozen=True, slots=True)
class EventItem:
    event_id: str
    merchant_id: str | None
    event_time: int
    features: dict


@dataclass(frozen=True, slots=True)
class LabelItem:
    event_id: str
    is_fraud: bool
    label_time: int


Item = Union[EventItem, LabelItem]


def merge_by_time(events: Iterable[EventItem], labels: Iterable[LabelItem]) -> Iterator[Item]:
    """Merge two time-sorted streams; events first at equal times."""
    return (item for _, _, _, item in heapq.merge(
        ((e.event_time, 0, i, e) for i, e in enumerate(events)),
        ((lab.label_time, 1, i, lab) for i, lab in enumerate(labels))))


@dataclass
class ReplaySummary:
    scored: int = 0
    labels: dict = field(default_factory=dict)
    drifts: list = field(default_factory=list)


def replay(scorer: Scorer, items: Iterable[Item],
           on_score: Callable[[ScoreRecord], None] | None = None,
           on_learn: Callable[[LearnOutcome], None] | None = None) -> ReplaySummary:
    """Score every event and learn every label, in the order given."""
    summary = ReplaySummary()
    for item in items:
        if isinstance(item, EventItem):
            rec = scorer.score(item.features, item.merchant_id, item.event_id, item.event_time)
            summary.scored += 1
            if on_score is not None:
                on_score(rec)
        else:
            out = scorer.learn(item.event_id, item.is_fraud, item.label_time)
            summary.drifts.extend(out.drifts)
            if on_learn is not None:
                on_learn(out)
    summary.labels = scorer.snapshots.stats.as_dict()
    return summary
