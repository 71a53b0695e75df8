"""Evaluation metrics, per episode and aggregated per task and overall.

Per episode (from the recorded turns, our schema): success, progress (the final running maximum), steps,
format errors (a reply with no parsable action), invalid actions (a parsable action that the rule check or the
engine flagged), repeated mistakes (an action that already failed once, with error feedback, issued again and
failing again: the failure AgentRefine targets), steps to success.

Aggregates: success rate and progress rate are means over episodes (AgentBoard); the three error rates are
pooled over all steps of all episodes (errors / steps); steps to success is the mean over successful episodes.
Success and progress rates carry 95% Wilson score intervals (:func:`wilson_interval`): with the 2-20
episodes an evaluation usually has, a percentile bootstrap collapses to ``[0, 0]`` or ``[1, 1]`` whenever
every episode agrees, a false certainty, while Wilson's interval for 0/2 is [0, 66%].
:func:`bootstrap_ci` (percentile bootstrap of a mean) stays for ratio statistics over larger samples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from agentrefine_lg.eval.base import normalize_action
from agentrefine_lg.schema import Turn


@dataclass
class EpisodeMetrics:
    """Metrics of one episode."""

    success: bool
    progress: float
    steps: int
    format_errors: int
    invalid_actions: int
    repeated_mistakes: int
    steps_to_success: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_turn(turn: Turn | Mapping[str, Any]) -> Turn:
    return turn if isinstance(turn, Turn) else Turn.model_validate(turn)


def step_outcomes(turns: Sequence[Turn | Mapping[str, Any]]) -> list[tuple[str | None, bool]]:
    """Pair every Player turn with the DM turn that answers it: ``[(action or None, erroneous), ...]``.

    ``action`` is None for a reply without a parsable action (recorded with ``"format_error": true`` and the
    reply's text as its action, or, in older traces, with an empty action).
    """
    parsed = [_as_turn(t) for t in turns]
    out: list[tuple[str | None, bool]] = []
    for i, turn in enumerate(parsed):
        if not turn.is_player:
            continue
        reply = parsed[i + 1] if i + 1 < len(parsed) and parsed[i + 1].is_dm else None
        action = None if (turn.model_extra or {}).get("format_error") else ((turn.action or "").strip() or None)
        out.append((action, bool(reply is not None and reply.flagged)))
    return out


def count_repeated_mistakes(outcomes: Sequence[tuple[str | None, bool]]) -> int:
    """Steps whose action already failed earlier in the episode (after error feedback) and fails again.

    Re-issuing a once-failed action that now succeeds (e.g. ``move forward`` after turning away from a wall)
    is a correction, not a repeated mistake. Format errors (no action) are not counted here.
    """
    failed: set[str] = set()
    repeated = 0
    for action, erroneous in outcomes:
        if action is None or not erroneous:
            continue
        key = normalize_action(action)
        if key in failed:
            repeated += 1
        failed.add(key)
    return repeated


def episode_metrics(turns: Sequence[Turn | Mapping[str, Any]], *, success: bool, progress: float,
                    steps: int | None = None) -> EpisodeMetrics:
    """Metrics of one episode from its turns (Player/DM alternating, as the refine agent records them)."""
    outcomes = step_outcomes(turns)
    n = len(outcomes) if steps is None else steps
    format_errors = sum(1 for action, _ in outcomes if action is None)
    invalid = sum(1 for action, erroneous in outcomes if action is not None and erroneous)
    return EpisodeMetrics(
        success=bool(success),
        progress=float(progress),
        steps=int(n),
        format_errors=format_errors,
        invalid_actions=invalid,
        repeated_mistakes=count_repeated_mistakes(outcomes),
        steps_to_success=int(n) if success else None,
    )


def wilson_interval(mean: float, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (95% by default) of a rate ``mean`` observed over ``n`` episodes.

    Exact for a proportion of successes. For a mean of values in [0, 1] (progress) it is the same interval
    with the largest variance such a variable can have at that mean, mu(1 - mu), so it is not narrower than
    the data allow. It never collapses at 0/n or n/n; ``(nan, nan)`` for ``n == 0``.
    """
    if n <= 0:
        return float("nan"), float("nan")
    p = min(1.0, max(0.0, float(mean)))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; ``(nan, nan)`` for no values.

    It collapses to a point when every value is the same (any N): use :func:`wilson_interval` for rates.
    """
    import numpy as np

    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(n_boot, data.size))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def aggregate(records: Iterable[Mapping[str, Any]], *, ci: bool = True) -> dict[str, Any]:
    """Aggregate episode records (each with the :class:`EpisodeMetrics` fields, e.g. a harness JSONL row)."""
    rows = list(records)
    n = len(rows)
    steps = sum(int(r["steps"]) for r in rows)
    successes = [1.0 if r["success"] else 0.0 for r in rows]
    progresses = [float(r["progress"]) for r in rows]
    to_success = [int(r["steps"]) for r in rows if r["success"]]

    def rate(key: str) -> float:
        return sum(int(r[key]) for r in rows) / steps if steps else 0.0

    out: dict[str, Any] = {
        "episodes": n,
        "steps": steps,
        "success_rate": sum(successes) / n if n else 0.0,
        "progress_rate": sum(progresses) / n if n else 0.0,
        "invalid_action_rate": rate("invalid_actions"),
        "format_error_rate": rate("format_errors"),
        "repeated_mistake_rate": rate("repeated_mistakes"),
        "repeated_mistakes": sum(int(r["repeated_mistakes"]) for r in rows),
        "steps_to_success": sum(to_success) / len(to_success) if to_success else None,
    }
    if ci and n:
        out["success_rate_ci"] = list(wilson_interval(out["success_rate"], n))
        out["progress_rate_ci"] = list(wilson_interval(out["progress_rate"], n))
    return out


def summarize(records: Iterable[Mapping[str, Any]], *, ci: bool = True) -> dict[str, Any]:
    """``{"tasks": {task: aggregate}, "overall": aggregate}``; records need a ``task`` key.

    ``overall`` is the plain mean of the per-task success and progress rates (each task weighs the same,
    as in the paper's table, whatever its episode count) next to the pooled counts.
    """
    rows = list(records)
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(str(row["task"]), []).append(row)
    tasks = {task: aggregate(items, ci=ci) for task, items in by_task.items()}
    overall = aggregate(rows, ci=ci)
    if tasks:
        overall["success_rate_task_mean"] = sum(t["success_rate"] for t in tasks.values()) / len(tasks)
        overall["progress_rate_task_mean"] = sum(t["progress_rate"] for t in tasks.values()) / len(tasks)
    return {"tasks": tasks, "overall": overall}


__all__ = [
    "EpisodeMetrics",
    "aggregate",
    "bootstrap_ci",
    "count_repeated_mistakes",
    "episode_metrics",
    "step_outcomes",
    "summarize",
    "wilson_interval",
]
