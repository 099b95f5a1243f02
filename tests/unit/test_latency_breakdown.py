"""bench/latency_breakdown.py: commit marks from the loop and the call thread put back together."""

from __future__ import annotations

from bench.latency_breakdown import commits


def test_commits_pair_interleaved_marks() -> None:
    # Two overlapped commits; the call thread's marks land among the loop's, and a commit()
    # that found nothing to commit ("enter" without "start") is skipped.
    marks = [("enter", 1.0), ("start", 1.02), ("txn", 1.05), ("enter", 1.06),
             ("txn_end", 1.09), ("settle", 1.10), ("settled", 1.11),
             ("enter", 1.12), ("start", 1.13), ("txn", 1.20), ("txn_end", 1.25),
             ("settle", 1.26), ("settled", 1.27)]
    got = commits(marks)
    assert [(c["enter"], c["start"], c["txn"], c["txn_end"], c["settle"], c["settled"])
            for c in got] == [(1.0, 1.02, 1.05, 1.09, 1.10, 1.11),
                              (1.12, 1.13, 1.20, 1.25, 1.26, 1.27)]


def test_commit_still_in_flight_is_left_out() -> None:
    marks = [("enter", 1.0), ("start", 1.01), ("txn", 1.02), ("txn_end", 1.03),
             ("enter", 1.04), ("start", 1.05), ("txn", 1.06)]
    assert [c["enter"] for c in commits(marks)] == [1.0]
