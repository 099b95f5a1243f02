"""Where an exactly-once event's end-to-end wait goes, from ``bench_runtime.py --probe DIR`` runs.

    python bench/latency_breakdown.py DIR/exactly_once-lat0 [DIR/exactly_once-lat1 ...]

Joins the reader's per-event times (``<tag>.events.json``: sent, score read, and the score
record's timestamp, i.e. when the worker produced it) with the worker's commit marks
(``<tag>.json`` from ``bench/loop_probe.py``); several runs are pooled. For each event after the
warm-up, its wait splits into: **to_produce** (sent until its score was produced: the input
fetch, queueing behind other work, processing and, with a commit in flight, being held until
that commit returned), **to_commit** (until its transaction's commit began), **flush** (the
changelog flush at the commit, in the loop), **send_offsets** and **commit_txn** (the two calls
on the transactional-call thread; ``commit_transaction`` waits for every record of the
transaction to be acknowledged, then EndTxn), and **visible** (the commit returned until the
reader had the score: markers, the last stable offset, the reader's fetch).

Then the commit cycle, commit by commit: the flush, the two calls, **notice** (the commit
returned until the loop took it up), **produce_held** (producing the held outputs into the next
transaction) and the time from one commit's start to the next.
"""

from __future__ import annotations

import bisect
import statistics
import sys
from pathlib import Path

from stream import wire

PARTS = ("total", "to_produce", "to_commit", "flush", "send_offsets", "commit_txn", "visible")
CYCLE = ("flush", "send_offsets", "commit_txn", "notice", "produce_held", "cycle")


def commits(marks: list[tuple[str, float]]) -> list[dict]:
    """Each overlapped exactly-once commit's times (wall clock, s): enter, start, txn, txn_end,
    settle, settled (see ``bench/loop_probe.py``)."""
    out: list[dict] = []
    enter = None
    for what, t in marks:
        if what == "enter":
            enter = t
        elif what == "start" and enter is not None:
            out.append({"enter": enter, "start": t})
            enter = None
    # The loop's marks interleave with the call thread's: each start's commit_transaction is
    # the first txn mark after it, its end the first txn_end after that.
    def after(kind: str) -> list[float]:
        return sorted(t for what, t in marks if what == kind)
    txn, txn_end, settle, settled = after("txn"), after("txn_end"), after("settle"), after("settled")

    def first(times: list[float], t: float) -> float | None:
        k = bisect.bisect_left(times, t)
        return times[k] if k < len(times) else None
    for c in out:
        c["txn"] = first(txn, c["start"])
        c["txn_end"] = first(txn_end, c["txn"]) if c["txn"] else None
        c["settle"] = first(settle, c["txn_end"]) if c["txn_end"] else None
        c["settled"] = first(settled, c["settle"]) if c["settle"] else None
    return [c for c in out if c["txn_end"] is not None]


def _events(base: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    probe = wire.loads(base.with_suffix(".json").read_bytes())
    ev = wire.loads(Path(f"{base}.events.json").read_bytes())
    cs = commits([tuple(m) for m in probe["marks"]])
    enters = [c["enter"] for c in cs]
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    for i in range(ev["warmup"], len(ev["sent"])):
        sent, got, made = ev["sent"][i], ev["received"][i], ev["produced_ms"][i] / 1000
        k = bisect.bisect_left(enters, made)
        if not got or k >= len(cs):
            continue
        c = cs[k]
        row = (got - sent, made - sent, c["enter"] - made, c["start"] - c["enter"],
               c["txn"] - c["start"], c["txn_end"] - c["txn"], got - c["txn_end"])
        for name, v in zip(PARTS, row):
            parts[name].append(v)
    cycle: dict[str, list[float]] = {k: [] for k in CYCLE}
    first_sent = ev["sent"][ev["warmup"]]
    for a, b in zip(cs, cs[1:]):
        if a["enter"] < first_sent or a["settled"] is None:
            continue
        row = (a["start"] - a["enter"], a["txn"] - a["start"], a["txn_end"] - a["txn"],
               a["settle"] - a["txn_end"], a["settled"] - a["settle"], b["enter"] - a["enter"])
        for name, v in zip(CYCLE, row):
            cycle[name].append(v)
    return parts, cycle


def _table(title: str, data: dict[str, list[float]]) -> None:
    print(f"| {title} | p50 ms | p99 ms | mean ms |")
    print("| --- | --- | --- | --- |")
    for name, vals in data.items():
        if not vals:
            continue
        vals = sorted(vals)
        print(f"| {name} | {vals[len(vals) // 2] * 1000:.1f} | "
              f"{vals[int(0.99 * len(vals))] * 1000:.1f} | {statistics.fmean(vals) * 1000:.1f} |")


def main() -> None:
    parts: dict[str, list[float]] = {k: [] for k in PARTS}
    cycle: dict[str, list[float]] = {k: [] for k in CYCLE}
    for arg in sys.argv[1:]:
        p, c = _events(Path(arg))
        for k in parts:
            parts[k].extend(p[k])
        for k in cycle:
            cycle[k].extend(c[k])
    print(f"{len(parts['total'])} events, {len(cycle['cycle'])} commits, "
          f"{len(sys.argv) - 1} run(s)")
    _table("event's wait", parts)
    print()
    _table("commit cycle", cycle)


if __name__ == "__main__":
    main()
