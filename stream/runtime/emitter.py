"""What the last stage produces, when it is not a score: the :class:`Emitter` interface.

By default the last stage scores each event (``stream.runtime.scoring``) and produces a
:class:`~stream.events.Score` to ``topic_scores``. A worker built with an emitter skips scoring:
for every event the emitter turns the event and its merged feature vector into the key and value
of the one record the last stage produces to ``topic_scores`` instead. Everything else is the
runtime's own: the stages, their state stores and changelogs, the commit protocol, dead letters.

That is how a job that only needs features (a feature export, the peer benchmark's windowed count
in ``bench/peers/fraudstream_count.py``) runs on the same loop as the scoring pipeline.

An emitter is pure: no Kafka, no clock (time comes from the event), no state of its own, since
whatever it kept would be neither changelogged nor restored.

>>> class Echo:
...     def emit(self, event, features):
...         return event["user_id"].encode(), repr(sorted(features.items())).encode()
>>> Echo().emit({"user_id": "u1"}, {"user_count_1m": 2})
(b'u1', b"[('user_count_1m', 2)]")
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

__all__ = ["Emitter"]


class Emitter(Protocol):
    """Shapes the last stage's output record for one event (instead of a score)."""

    def emit(self, event: Mapping[str, Any],
             features: Mapping[str, Any]) -> tuple[bytes | None, bytes]:
        """(key, value) of the record produced for ``event``; ``features`` are every stage's
        features for it, this stage's included. Neither argument may be kept or changed."""
