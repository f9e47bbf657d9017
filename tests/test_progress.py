"""Progress: log lines with count, percent and ETA when the output is not a terminal."""

from __future__ import annotations

from kebench import progress


def test_log_lines_off_a_terminal(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_enabled", True)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with progress.progress_bar("fitting target values", 4) as bar:
        bar.advance(1)
        bar.advance(3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("fitting target values: 0/4") and lines[0].endswith("start")
    assert "1/4 (25%)" in lines[1] and "eta" in lines[1]
    assert lines[-1].endswith("done") and "4/4 (100%)" in lines[-1]


def test_disabled_is_silent(monkeypatch, capsys):
    monkeypatch.setattr(progress, "_enabled", False)
    with progress.progress_bar("x", 2) as bar:
        bar.advance(2)
    assert capsys.readouterr().err == ""
