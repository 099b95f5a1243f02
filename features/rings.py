"""Per-entity window state: time buckets plus a running total of the current window.

One *ring* holds everything the features of one entity group need for one window (same length,
delay and resolution): per time bucket a count, label counts, and for every numeric field its
count, sum, sum of squares, min and max, and for every distinct-count field a set of values. The
ring is plain lists, dicts and sets so that it serialises with :mod:`marshal` in one call:

``ring = [head, buckets, run, levels]``

* ``head``: the bucket of the entity's latest event time (``-1`` before the first event);
* ``buckets``: ``{bucket index: bucket}``;
* ``run``: the sum of the buckets inside the window seen from ``head``; distinct slots hold
  ``{value: number of buckets in the window that contain it}``, so expiring a bucket is a
  subtraction and an in-order event reads its window in O(1);
* ``levels``: per distinct field, the sampling level of the distinct-count sketch (below).

Events older than the head (out of order, within the grace period) update their own bucket, and
the running total if that bucket is inside the head window; their own window is then read by
scanning buckets. Buckets that no non-late event can ever see again are dropped, so a ring never
holds more than ``n + d + grace/r + 1`` buckets.

Distinct counts are exact while a window holds at most ``capacity`` distinct values. Past that the
ring keeps only values whose 64-bit BLAKE2b hash ends in ``level`` zero bits and reports
``retained * 2**level`` (distinct sampling): an unbiased estimate whose relative standard error is
below ``1/sqrt(capacity/2)`` (8.8 % at the default capacity of 256). The level falls back to 0
when the window empties.
"""

from __future__ import annotations

from hashlib import blake2b
from math import inf

__all__ = ["RingSpec", "sampled", "BUCKET_HEAD"]

#: Slot layout shared by buckets and running totals.
COUNT, LABELED, FRAUD = 0, 1, 2
BUCKET_HEAD = 3
# Per numeric field: count of values, sum, sum of squares, min, max.
V_N, V_SUM, V_SQ, V_MIN, V_MAX = 0, 1, 2, 3, 4
V_WIDTH = 5


def _hash64(value: object) -> int:
    return int.from_bytes(blake2b(str(value).encode(), digest_size=8).digest(), "little")


def sampled(value: object, level: int) -> bool:
    """Whether ``value`` survives distinct sampling at ``level`` (deterministic across runs)."""
    return level == 0 or _hash64(value) & ((1 << level) - 1) == 0


class RingSpec:
    """The layout and window of one ring; the functions that fold into and read from it."""

    __slots__ = ("n", "d", "res", "lifetime", "nv", "nd", "voffs", "doffs", "width", "capacity",
                 "minmax", "grace", "template")

    def __init__(self, length_ms: int, delay_ms: int, res_ms: int, n_values: int, n_distinct: int,
                 minmax: bool, capacity: int, grace_ms: int) -> None:
        self.lifetime = length_ms == 0
        self.res = res_ms or 1
        self.n = length_ms // self.res if not self.lifetime else 0
        self.d = delay_ms // self.res if not self.lifetime else 0
        self.nv, self.nd = n_values, n_distinct
        self.voffs = tuple(BUCKET_HEAD + V_WIDTH * i for i in range(n_values))
        self.doffs = tuple(BUCKET_HEAD + V_WIDTH * n_values + i for i in range(n_distinct))
        self.width = BUCKET_HEAD + V_WIDTH * n_values + n_distinct
        self.minmax = minmax
        self.capacity = capacity
        self.grace = grace_ms
        row: list = [0, 0, 0]
        for _ in range(n_values):
            row += (0, 0.0, 0.0, inf, -inf)
        self.template = row + [None] * n_distinct

    # ------------------------------------------------------------------ construction
    def new_ring(self) -> list:
        return [-1, {}, self._zeros(dict), [0] * self.nd]

    def _zeros(self, distinct_type: type) -> list:
        row = self.template[:]
        for o in self.doffs:
            row[o] = distinct_type()
        return row

    # ------------------------------------------------------------------ time
    def advance(self, ring: list, max_t: int) -> None:
        """Move the head to the bucket of ``max_t``, expiring and pruning buckets."""
        new = max_t // self.res
        old = ring[0]
        if new <= old:
            return
        ring[0] = new
        bk = ring[1]
        if not bk:
            return
        n, d = self.n, self.d
        gap = new - old
        if gap >= n + d:  # every existing bucket (all <= old) is behind the new window
            ring[2] = self._zeros(dict)
        elif gap >= n:
            self._rebuild(ring)
        elif gap > len(bk):  # sparse entity: walk its few buckets, not the index range
            run = ring[2]
            leave_lo, leave_hi = old - d - n, new - d - n
            enter_lo, enter_hi = old - d, new - d
            for i, b in bk.items():
                if leave_lo < i <= leave_hi:
                    self._sub(run, b)
                elif d and enter_lo < i <= enter_hi:
                    self._add(run, b)
        else:
            run = ring[2]
            get = bk.get
            for i in range(old - d - n + 1, new - d - n + 1):
                b = get(i)
                if b is not None:
                    self._sub(run, b)
            if d:
                for i in range(old - d + 1, new - d + 1):
                    b = get(i)
                    if b is not None:
                        self._add(run, b)
        # Buckets no non-late event can read again. Buckets are mostly inserted in time order,
        # so stop at the first live one; an out-of-order straggler goes on a later advance.
        horizon = (max_t - self.grace) // self.res - d - n
        if max(bk) <= horizon:  # a sparse entity's short window: every bucket is dead (one C call)
            bk.clear()
        else:
            dead = []
            for i in bk:
                if i > horizon:
                    break
                dead.append(i)
            for i in dead:
                del bk[i]
        if self.nd and ring[2][COUNT] == 0 and any(ring[3]):
            self._maybe_reset_levels(ring)

    def _rebuild(self, ring: list) -> None:
        head, bk = ring[0], ring[1]
        lo, hi = head - self.d - self.n, head - self.d
        run = self._zeros(dict)
        ring[2] = run
        for i, b in bk.items():
            if lo < i <= hi:
                self._add(run, b)

    def _add(self, run: list, b: list) -> None:
        run[0] += b[0]
        run[1] += b[1]
        run[2] += b[2]
        for o in self.voffs:
            if b[o]:
                run[o] += b[o]
                run[o + 1] += b[o + 1]
                run[o + 2] += b[o + 2]
                if run[o + 3] is not None:
                    if b[o + 3] < run[o + 3]:
                        run[o + 3] = b[o + 3]
                    if b[o + 4] > run[o + 4]:
                        run[o + 4] = b[o + 4]
        for o in self.doffs:
            m = run[o]
            for v in b[o]:
                m[v] = m.get(v, 0) + 1

    def _sub(self, run: list, b: list) -> None:
        run[0] -= b[0]
        run[1] -= b[1]
        run[2] -= b[2]
        for o in self.voffs:
            if b[o]:
                left = run[o] - b[o]
                run[o] = left
                if left:
                    run[o + 1] -= b[o + 1]
                    run[o + 2] -= b[o + 2]
                    # The window's extremes may have left with this bucket: recompute lazily.
                    if run[o + 3] is not None and (b[o + 3] <= run[o + 3]
                                                   or b[o + 4] >= run[o + 4]):
                        run[o + 3] = run[o + 4] = None
                else:  # an empty window sums to exactly zero, whatever rounding came before
                    run[o + 1] = 0.0
                    run[o + 2] = 0.0
                    run[o + 3] = inf
                    run[o + 4] = -inf
        for o in self.doffs:
            m = run[o]
            for v in b[o]:
                c = m[v] - 1
                if c:
                    m[v] = c
                else:
                    del m[v]

    # ------------------------------------------------------------------ folding
    def fold(self, ring: list, t: int, values: list, distinct: list) -> None:
        """Fold one event at time ``t`` (``values``/``distinct`` are per-field, ``None`` = absent)."""
        run = ring[2]
        if self.lifetime:
            run[0] += 1
            for o, v in zip(self.voffs, values):
                if v is not None:
                    run[o] += 1
                    run[o + 1] += v
                    run[o + 2] += v * v
                    if v < run[o + 3]:
                        run[o + 3] = v
                    if v > run[o + 4]:
                        run[o + 4] = v
            for k, o in enumerate(self.doffs):
                v = distinct[k]
                if v is not None and v not in run[o] and sampled(v, ring[3][k]):
                    run[o][v] = 1
                    if len(run[o]) > self.capacity:
                        self._raise_level(ring, k)
            return
        b = t // self.res
        bk = ring[1]
        bucket = bk.get(b)
        if bucket is None:
            bucket = bk[b] = self._zeros(set)
        head = ring[0]
        inrun = head - self.d - self.n < b <= head - self.d
        bucket[0] += 1
        if inrun:
            run[0] += 1
        for o, v in zip(self.voffs, values):
            if v is not None:
                sq = v * v
                bucket[o] += 1
                bucket[o + 1] += v
                bucket[o + 2] += sq
                if v < bucket[o + 3]:
                    bucket[o + 3] = v
                if v > bucket[o + 4]:
                    bucket[o + 4] = v
                if inrun:
                    run[o] += 1
                    run[o + 1] += v
                    run[o + 2] += sq
                    if run[o + 3] is not None:
                        if v < run[o + 3]:
                            run[o + 3] = v
                        if v > run[o + 4]:
                            run[o + 4] = v
        if self.nd:
            levels = ring[3]
            for k, o in enumerate(self.doffs):
                v = distinct[k]
                if v is None:
                    continue
                s = bucket[o]
                if v in s or (levels[k] and not sampled(v, levels[k])):
                    continue
                s.add(v)
                if inrun:
                    m = run[o]
                    m[v] = m.get(v, 0) + 1
                    if len(m) > self.capacity:
                        self._raise_level(ring, k)
                        continue
                if len(s) > self.capacity:
                    self._raise_level(ring, k)

    def fold_label(self, ring: list, event_t: int, max_t: int, labeled: int, fraud: int) -> None:
        """Add label counts for an event at ``event_t`` (``labeled``/``fraud`` are deltas)."""
        run = ring[2]
        if self.lifetime:
            run[1] += labeled
            run[2] += fraud
            return
        b = event_t // self.res
        if b <= (max_t - self.grace) // self.res - self.d - self.n:
            return  # no window that can still be read contains this bucket
        bk = ring[1]
        bucket = bk.get(b)
        if bucket is None:
            bucket = bk[b] = self._zeros(set)
        bucket[1] += labeled
        bucket[2] += fraud
        head = ring[0]
        if head - self.d - self.n < b <= head - self.d:
            run[1] += labeled
            run[2] += fraud

    def _raise_level(self, ring: list, k: int) -> None:
        o = self.doffs[k]
        while True:
            ring[3][k] += 1
            level = ring[3][k]
            biggest = 0
            if self.lifetime:
                m = ring[2][o]
                for v in [v for v in m if not sampled(v, level)]:
                    del m[v]
                biggest = len(m)
            else:
                for bucket in ring[1].values():
                    bucket[o] = {v for v in bucket[o] if sampled(v, level)}
                    biggest = max(biggest, len(bucket[o]))
                self._rebuild(ring)
                biggest = max(biggest, len(ring[2][o]))
            if biggest <= self.capacity:
                return

    def _maybe_reset_levels(self, ring: list) -> None:
        levels = ring[3]
        for k, o in enumerate(self.doffs):
            if levels[k] and not ring[2][o] and not any(b[o] for b in ring[1].values()):
                levels[k] = 0

    # ------------------------------------------------------------------ reading
    def read(self, ring: list, t: int) -> list:
        """The aggregate row of the window seen from time ``t``.

        In-order reads (``t`` in the head bucket) return the running row itself: callers must not
        modify it. Its min/max slots are kept incrementally and recomputed here when an expired
        bucket held an extreme (marked ``None``). Distinct slots hold a sized container; multiply its length by
        ``2 ** ring[3][k]`` for the estimate.
        """
        if self.lifetime:
            return ring[2]
        b = t // self.res
        if b == ring[0]:
            run = ring[2]
            if self.minmax:
                lo, hi = b - self.d - self.n, b - self.d
                for o in self.voffs:
                    if run[o + 3] is None:
                        mn, mx = inf, -inf
                        for i, bucket in ring[1].items():
                            if lo < i <= hi and bucket[o]:
                                if bucket[o + 3] < mn:
                                    mn = bucket[o + 3]
                                if bucket[o + 4] > mx:
                                    mx = bucket[o + 4]
                        run[o + 3], run[o + 4] = mn, mx
            return run
        return self._scan(ring, b)

    def _scan(self, ring: list, b: int) -> list:
        lo, hi = b - self.d - self.n, b - self.d
        row = self._zeros(set)
        voffs, doffs = self.voffs, self.doffs
        for i in sorted(ring[1]):
            if lo < i <= hi:
                bucket = ring[1][i]
                row[0] += bucket[0]
                row[1] += bucket[1]
                row[2] += bucket[2]
                for o in voffs:
                    if bucket[o]:
                        row[o] += bucket[o]
                        row[o + 1] += bucket[o + 1]
                        row[o + 2] += bucket[o + 2]
                        if bucket[o + 3] < row[o + 3]:
                            row[o + 3] = bucket[o + 3]
                        if bucket[o + 4] > row[o + 4]:
                            row[o + 4] = bucket[o + 4]
                for o in doffs:
                    row[o] |= bucket[o]
        return row
