"""Per-user velocity features for the first end-to-end slice of the worker.

Three small pure functions, the shape every aggregation here has: make an empty state, fold one
event in, read the features. Time comes from the event, never from a clock. The full feature
engine (windows of any width, any entity, bounded state) supersedes this module when the runtime
adopts it.

>>> s = empty_state()
>>> s = fold(s, event_time=1_000, amount=10.0)
>>> s = fold(s, event_time=61_000, amount=30.0)
>>> read(s, event_time=61_000)
{'user_txn_count_1h': 2, 'user_amount_sum_1h': 40.0, 'user_amount_mean_1h': 20.0, 'user_seconds_since_prev': 60.0}
"""

from __future__ import annotations

__all__ = ["WINDOW_MS", "empty_state", "fold", "read"]

WINDOW_MS = 3_600_000

# State: the [event_time, amount] pairs inside the hour before the newest event, oldest first.
State = list


def empty_state() -> State:
    return []


def fold(state: State, event_time: int, amount: float) -> State:
    """Add one event and drop entries that fell out of ``(event_time - 1h, event_time]``."""
    state.append([event_time, amount])
    if len(state) > 1 and state[-2][0] > event_time:  # out of order: keep the list sorted
        state.sort(key=lambda pair: pair[0])
    horizon = state[-1][0] - WINDOW_MS
    cut = 0
    while cut < len(state) and state[cut][0] <= horizon:
        cut += 1
    if cut:
        del state[:cut]
    return state


def read(state: State, event_time: int) -> dict[str, float]:
    """Features as seen by the event at ``event_time`` (already folded in)."""
    inside = [amount for t, amount in state if event_time - WINDOW_MS < t <= event_time]
    count = len(inside)
    total = float(sum(inside))
    earlier = [t for t, _ in state if t < event_time]
    since = (event_time - max(earlier)) / 1000.0 if earlier else -1.0
    return {
        "user_txn_count_1h": count,
        "user_amount_sum_1h": total,
        "user_amount_mean_1h": total / count if count else 0.0,
        "user_seconds_since_prev": since,
    }
