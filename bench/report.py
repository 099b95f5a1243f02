"""Pure result handling for the peer benchmark: per-run records, medians, ratios, the table.

No Kafka here: the harness measures, this module aggregates, so the arithmetic is unit-tested.

>>> runs = [RunResult("a", 0, 1000, 2.0, 4.0), RunResult("a", 1, 1000, 1.0, 3.0),
...         RunResult("b", 0, 1000, 10.0, 12.0)]
>>> [(s.name, s.median_rate, s.ratio) for s in summarize(runs, baseline="a")]
[('a', 750.0, 1.0), ('b', 100.0, 0.133)]
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

__all__ = ["RunResult", "Summary", "summarize", "render_table", "format_rate"]


@dataclass(frozen=True)
class RunResult:
    """One contender's run in one round.

    ``processing_s``: from the first output record to the moment the output held all ``n``
    records (or to the time-out); ``wall_s``: from process start to the same moment, so it
    includes interpreter start, group join, topic and state set-up.
    """

    name: str
    round: int
    n: int
    processing_s: float | None
    wall_s: float | None
    processed: int | None = None     # output records seen; == n unless the run timed out
    committed_s: float | None = None  # process start until committed offsets reached the end
    error: str | None = None
    verified: bool | None = None      # output checksum equals the reference (None: not checked)
    cpu_s: float | None = None        # the app's CPU seconds (all threads) while processing
    loadavg: float | None = None      # the machine's 1-minute load average when the run started

    @property
    def complete(self) -> bool:
        return self.error is None and (self.processed is None or self.processed >= self.n)

    @property
    def done(self) -> int:
        return self.n if self.processed is None else self.processed

    @property
    def rate(self) -> float | None:
        """Records per second while processing (start-up excluded)."""
        if self.processing_s is None or self.processing_s <= 0 or self.error is not None:
            return None
        return self.done / self.processing_s

    @property
    def wall_rate(self) -> float | None:
        """Records per second including start-up."""
        if self.wall_s is None or self.wall_s <= 0 or self.error is not None:
            return None
        return self.done / self.wall_s

    @property
    def cpu_rate(self) -> float | None:
        """Records per CPU second of the app: less sensitive to a busy machine than ``rate``."""
        if not self.cpu_s or self.error is not None:
            return None
        return self.done / self.cpu_s

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(rate=self.rate, wall_rate=self.wall_rate, cpu_rate=self.cpu_rate,
                 complete=self.complete)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in fields})


@dataclass(frozen=True)
class Summary:
    name: str
    runs: int                    # runs attempted
    rounds: int                  # runs with a rate
    complete_rounds: int         # runs that processed all n
    verified_rounds: int         # runs whose output checksum matched the reference
    median_rate: float | None
    min_rate: float | None
    max_rate: float | None
    median_wall_rate: float | None
    ratio: float | None          # median_rate / the baseline's median_rate, 3 significant places
    median_cpu_rate: float | None = None
    errors: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["errors"] = list(self.errors)
        return d


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    r = value / base
    return float(f"{r:.3g}")


def summarize(runs: list[RunResult], baseline: str, order: list[str] | None = None
              ) -> list[Summary]:
    """One summary per contender (in ``order``, else first-seen order) with medians and ratios."""
    names: list[str] = list(order or [])
    for run in runs:
        if run.name not in names:
            names.append(run.name)
    by_name = {n: [r for r in runs if r.name == n] for n in names}
    medians = {n: _median([r.rate for r in rs if r.rate is not None]) for n, rs in by_name.items()}
    base = medians.get(baseline)
    out = []
    for n in names:
        rs = by_name[n]
        rates = [r.rate for r in rs if r.rate is not None]
        out.append(Summary(
            name=n,
            runs=len(rs),
            rounds=len(rates),
            complete_rounds=sum(1 for r in rs if r.complete),
            verified_rounds=sum(1 for r in rs if r.verified),
            median_rate=medians[n],
            min_rate=min(rates) if rates else None,
            max_rate=max(rates) if rates else None,
            median_wall_rate=_median([r.wall_rate for r in rs if r.wall_rate is not None]),
            ratio=_ratio(medians[n], base),
            median_cpu_rate=_median([r.cpu_rate for r in rs if r.cpu_rate is not None]),
            errors=tuple(r.error for r in rs if r.error),
        ))
    return out


def format_rate(rate: float | None) -> str:
    """Human msgs/s: ``950``, ``4.2k``, ``312k``.

    >>> [format_rate(x) for x in (None, 950.4, 4234.0, 312345.0)]
    ['-', '950', '4.2k', '312k']
    """
    if rate is None:
        return "-"
    if rate < 1000:
        return f"{rate:.0f}"
    if rate < 100_000:
        return f"{rate / 1000:.1f}k"
    return f"{rate / 1000:.0f}k"


def render_table(summaries: list[Summary], states: dict[str, str] | None = None) -> str:
    """A Markdown table of medians and ratios (it also reads well in a terminal)."""
    states = states or {}
    head = ("| contender | state | median msgs/s | min - max | median incl. start-up "
            "| vs baseline | msgs per CPU-s | complete | verified |")
    lines = [head, "| " + " | ".join(["---"] * 9) + " |"]
    for s in summaries:
        ratio = "-" if s.ratio is None else f"{s.ratio:g}x"
        lines.append(
            f"| {s.name} | {states.get(s.name, '')} | {format_rate(s.median_rate)} "
            f"| {format_rate(s.min_rate)} - {format_rate(s.max_rate)} "
            f"| {format_rate(s.median_wall_rate)} | {ratio} | {format_rate(s.median_cpu_rate)} "
            f"| {s.complete_rounds}/{s.runs} | {s.verified_rounds}/{s.runs} |")
    return "\n".join(lines)
