"""The shared CLI progress bar."""

from __future__ import annotations

from stream.progress import ProgressBar, event_time_label


def test_disabled_bar_is_silent(capsys):
    with ProgressBar(False, "replaying") as bar:
        bar.update(5, 10, rate="1/s", at="x")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_enabled_bar_renders_description_counts_and_event_time(capsys):
    with ProgressBar(True, "backtest") as bar:
        bar.update(7, 20, rate="3/s", at=event_time_label(1_767_225_600_000))
    err = capsys.readouterr().err
    assert "backtest" in err and "7/20" in err and "2026-01-01 00:00" in err


def test_event_time_label():
    assert event_time_label(None) == "" and event_time_label(-1) == ""
    assert event_time_label(1_767_225_660_000) == "2026-01-01 00:01"
