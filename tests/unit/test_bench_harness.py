"""The peer benchmark's pure parts: run records, medians, ratios, the table, the registry."""

from __future__ import annotations

import pytest

from bench.contenders import BASELINE, by_name, contenders
from bench.harness import output_checksum
from bench.report import RunResult, render_table, summarize


def _runs() -> list[RunResult]:
    return [
        RunResult("base", 0, 1000, processing_s=0.010, wall_s=1.0),   # 100k/s
        RunResult("base", 1, 1000, processing_s=0.005, wall_s=1.0),   # 200k/s
        RunResult("base", 2, 1000, processing_s=0.004, wall_s=2.0),   # 250k/s
        RunResult("slow", 0, 1000, processing_s=1.0, wall_s=2.0),     # 1k/s
        RunResult("slow", 1, 1000, processing_s=0.5, wall_s=1.0),     # 2k/s
        RunResult("slow", 2, 1000, None, None, processed=3, error="exited with code 1"),
    ]


def test_medians_and_ratios() -> None:
    base, slow = summarize(_runs(), baseline="base")
    assert base.median_rate == pytest.approx(200_000)
    assert (base.min_rate, base.max_rate) == (pytest.approx(100_000), pytest.approx(250_000))
    assert base.median_wall_rate == pytest.approx(1000)
    assert base.ratio == 1.0
    assert slow.median_rate == pytest.approx(1500)          # the failed run has no rate
    assert slow.ratio == 0.0075
    assert (slow.runs, slow.rounds, slow.complete_rounds) == (3, 2, 2)
    assert slow.errors == ("exited with code 1",)


def test_partial_run_counts_what_it_processed() -> None:
    run = RunResult("x", 0, 1000, processing_s=2.0, wall_s=4.0, processed=500, cpu_s=0.5)
    assert run.rate == 250 and run.wall_rate == 125 and run.cpu_rate == 1000
    assert not run.complete
    assert RunResult.from_dict(run.to_dict()) == run


def test_order_and_missing_baseline() -> None:
    summaries = summarize(_runs(), baseline="absent", order=["slow", "base"])
    assert [s.name for s in summaries] == ["slow", "base"]
    assert all(s.ratio is None for s in summaries)


def test_table_shows_medians_ratios_and_rounds() -> None:
    table = render_table(summarize(_runs(), baseline="base"), {"base": "dict"})
    lines = table.splitlines()
    assert lines[0].startswith("| contender | state | median msgs/s")
    assert lines[2] == "| base | dict | 200k | 100k - 250k | 1.0k | 1x | - | 3/3 | 0/3 |"
    assert lines[3] == "| slow |  | 1.5k | 1.0k - 2.0k | 750 | 0.0075x | - | 2/3 | 0/3 |"


def test_checksum_of_running_counts() -> None:
    # windows of 1, 2 and 3 records emit 1; 1, 2; 1, 2, 3
    assert output_checksum([1, 2, 3]) == 1 + 3 + 6


def test_registry_has_the_baseline_and_the_fraudstream_hook() -> None:
    names = [c.name for c in contenders()]
    assert names[0] == BASELINE and by_name(BASELINE).baseline
    assert {"quixstreams", "faust-streaming", "fraudstream"} <= set(names)
    assert by_name("fraudstream").requirements is None  # runs in the project venv
    for c in contenders():
        if c.requirements is not None:
            assert c.script_path.exists(), c.name
    with pytest.raises(KeyError):
        by_name("nope")


def test_docstring_examples() -> None:
    import doctest
    import importlib.util

    import bench.harness
    import bench.report

    # The fraudstream contender is a script in bench/peers/ (not a package): load it by path.
    script = by_name("fraudstream").script_path
    spec = importlib.util.spec_from_file_location("fraudstream_count", script)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    for module in (bench.report, bench.harness, app):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_our_runtime_runs_both_guarantees() -> None:
    alo, eos = by_name("fraudstream"), by_name("fraudstream-eos")
    assert alo.script == eos.script and alo.unavailable() is None
    assert (alo.exactly_once, eos.exactly_once) == (False, True)
    assert alo.extra_args == ("--guarantee", "at_least_once")
    assert eos.extra_args == ("--guarantee", "exactly_once")
