"""Progress of long stages: summary lines in logs (no terminal), read back by the quickstart."""

from __future__ import annotations

import io

from agentrefine_lg.progress import LogProgress, parse_progress, progress_bar


def test_without_a_terminal_a_bar_is_a_few_log_lines_that_parse_back():
    out = io.StringIO()
    bar = progress_bar(80, "train", "steps", file=out)
    assert isinstance(bar, LogProgress)
    for _ in range(80):
        bar.set_postfix(loss=2.5, refresh=False)
        bar.update(1)
    bar.close()
    bar.close()  # idempotent: one summary line
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # 9 tenths before the end + the closing summary
    assert [parse_progress(line)[1] for line in lines] == [8, 16, 24, 32, 40, 48, 56, 64, 72, 80]
    assert parse_progress(lines[-1]) == ("train", 80, 80)
    assert lines[-1].startswith("progress: train 80/80 steps in ") and lines[-1].endswith("(loss=2.5)")


def test_small_totals_and_resumed_runs():
    out = io.StringIO()
    with progress_bar(3, "synthesize", "samples", initial=1, file=out) as bar:
        bar.update(1)
        bar.update(1)
    done = [parse_progress(line) for line in out.getvalue().splitlines()]
    assert done == [("synthesize", 2, 3), ("synthesize", 3, 3)]


def test_other_lines_are_not_progress_and_disabled_bars_are_silent(capsys):
    assert parse_progress("[eval] babyai #0: success progress=1.00") is None
    assert parse_progress("progress: nonsense") is None
    bar = progress_bar(5, "eval", "episodes", enabled=False)
    bar.update(5)
    bar.close()
    assert capsys.readouterr().err == ""
