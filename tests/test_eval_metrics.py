"""Evaluation metrics: per-episode counts (repeated mistakes!), aggregates, bootstrap intervals."""

from __future__ import annotations

import math

import pytest

from agentrefine_lg.eval.metrics import (
    aggregate,
    bootstrap_ci,
    count_repeated_mistakes,
    episode_metrics,
    step_outcomes,
    summarize,
    wilson_interval,
)
from agentrefine_lg.schema import Turn


def _episode(*steps: tuple[str, str | None]) -> list[Turn]:
    """(action, error flag or None) per step -> alternating Player/DM turns as the refine agent records them."""
    turns = [Turn(turn=0, role="DM", observation="start")]
    for action, flag in steps:
        turns.append(Turn(turn=len(turns), role="Player", thought="t", action=action))
        flags = {flag: True} if flag else {}
        turns.append(Turn(turn=len(turns), role="DM", observation="obs", **flags))
    return turns


def test_step_outcomes_pair_player_actions_with_dm_flags():
    turns = _episode(("go north", None), ("jump", "parameter_error"), ("", "parameter_error"))
    assert step_outcomes(turns) == [("go north", False), ("jump", True), (None, True)]
    # paper-format dicts work too
    assert step_outcomes([t.to_paper() for t in turns]) == step_outcomes(turns)


def test_the_same_failed_action_failing_again_is_a_repeated_mistake():
    turns = _episode(("open door", "logic_error"), ("open door", "logic_error"), ("Open  Door", "logic_error"),
                     ("unlock door", None))
    m = episode_metrics(turns, success=False, progress=0.5)
    assert m.repeated_mistakes == 2  # the 2nd and 3rd tries (case and spacing do not hide a repeat)
    assert m.invalid_actions == 3 and m.format_errors == 0 and m.steps == 4


def test_retrying_a_failed_action_that_now_works_is_a_correction_not_a_repeat():
    # "move forward" into a wall fails; after turning, the same words succeed.
    turns = _episode(("move forward", "logic_error"), ("turn left", None), ("move forward", None))
    assert episode_metrics(turns, success=False, progress=0.2).repeated_mistakes == 0


def test_a_different_failing_action_is_not_a_repeat_and_format_errors_are_separate():
    outcomes = [("take key", True), ("take the key", True), (None, True), (None, True)]
    assert count_repeated_mistakes(outcomes) == 0
    turns = _episode(("take key", "logic_error"), ("", "parameter_error"), ("", "parameter_error"))
    m = episode_metrics(turns, success=False, progress=0.0)
    assert (m.format_errors, m.invalid_actions, m.repeated_mistakes) == (2, 1, 0)


def test_steps_to_success_only_for_successful_episodes():
    turns = _episode(("a", None), ("b", None))
    assert episode_metrics(turns, success=True, progress=1.0).steps_to_success == 2
    assert episode_metrics(turns, success=False, progress=0.3).steps_to_success is None


def _row(task, success, progress, steps, invalid=0, fmt=0, repeated=0):
    return {"task": task, "success": success, "progress": progress, "steps": steps, "invalid_actions": invalid,
            "format_errors": fmt, "repeated_mistakes": repeated}


def test_aggregate_means_over_episodes_and_rates_over_steps():
    rows = [_row("x", True, 1.0, 4), _row("x", False, 0.5, 30, invalid=6, fmt=3, repeated=2),
            _row("x", False, 0.0, 30, invalid=0, fmt=30)]
    agg = aggregate(rows)
    assert agg["episodes"] == 3 and agg["steps"] == 64
    assert agg["success_rate"] == pytest.approx(1 / 3)
    assert agg["progress_rate"] == pytest.approx(0.5)
    assert agg["invalid_action_rate"] == pytest.approx(6 / 64)
    assert agg["format_error_rate"] == pytest.approx(33 / 64)
    assert agg["repeated_mistake_rate"] == pytest.approx(2 / 64)
    assert agg["steps_to_success"] == 4
    low, high = agg["success_rate_ci"]
    assert 0.0 <= low <= 1 / 3 <= high <= 1.0


def test_summarize_per_task_and_overall_task_mean():
    rows = [_row("a", True, 1.0, 5), _row("a", True, 1.0, 5), _row("b", False, 0.0, 30), _row("a", False, 0.5, 30)]
    s = summarize(rows)
    assert set(s["tasks"]) == {"a", "b"}
    assert s["tasks"]["a"]["success_rate"] == pytest.approx(2 / 3)
    assert s["overall"]["success_rate"] == pytest.approx(2 / 4)  # pooled
    assert s["overall"]["success_rate_task_mean"] == pytest.approx((2 / 3 + 0) / 2)  # each task weighs the same


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    low, high = bootstrap_ci(values, seed=1)
    assert low < 0.7 < high and 0 <= low and high <= 1
    assert bootstrap_ci(values, seed=1) == (low, high)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_wilson_intervals_stay_honest_for_few_episodes():
    low, high = wilson_interval(0.0, 2)  # 0 successes out of 2 is not certainty of 0%
    assert low == 0.0 and 0.6 < high < 0.7
    low, high = wilson_interval(1.0, 3)
    assert 0.4 < low < 0.5 and high == 1.0
    low, high = wilson_interval(0.5, 1000)
    assert 0.46 < low < 0.5 < high < 0.54  # narrows with N
    assert all(math.isnan(x) for x in wilson_interval(0.0, 0))


def test_aggregate_intervals_do_not_collapse_when_every_episode_agrees():
    agg = aggregate([_row("x", False, 0.0, 30), _row("x", False, 0.0, 30)])
    assert agg["success_rate_ci"][0] == 0.0 and agg["success_rate_ci"][1] > 0.5
    assert agg["progress_rate_ci"][1] > 0.5
    agg = aggregate([_row("x", True, 1.0, 3)] * 3)
    assert agg["success_rate_ci"][0] < 0.5 and agg["success_rate_ci"][1] == 1.0
