"""Evaluation reports: ``summary.json``, ``summary.md`` (Markdown table) and one PNG chart per task."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def _ci(values: Sequence[float] | None) -> str:
    if not values:
        return ""
    low, high = values
    return f" [{_pct(low)}, {_pct(high)}]"


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table (rates in %, 95% bootstrap CIs in brackets) plus notes."""
    lines = [
        (f"Model: `{summary.get('model', '?')}` · max steps {summary.get('max_steps', '?')} · seed "
         f"{summary.get('seed', '?')}"),
        "",
        ("| task | episodes | success % | progress % | invalid action % | format error % | repeated mistake % "
         "| steps to success |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    info = summary.get("task_info", {})
    for task, agg in summary.get("tasks", {}).items():
        name = info.get(task, {}).get("family") or task
        s2s = agg.get("steps_to_success")
        lines.append(
            f"| {name} (`{task}`) | {agg['episodes']} | {_pct(agg['success_rate'])}{_ci(agg.get('success_rate_ci'))} "
            f"| {_pct(agg['progress_rate'])}{_ci(agg.get('progress_rate_ci'))} | {_pct(agg['invalid_action_rate'])} "
            f"| {_pct(agg['format_error_rate'])} | {_pct(agg['repeated_mistake_rate'])} "
            f"| {'–' if s2s is None else f'{s2s:.1f}'} |")
    overall = summary.get("overall")
    if overall and overall.get("episodes"):
        s2s = overall.get("steps_to_success")
        lines.append(
            f"| **overall** (mean of tasks) | {overall['episodes']} | "
            f"{_pct(overall.get('success_rate_task_mean'))} | {_pct(overall.get('progress_rate_task_mean'))} "
            f"| {_pct(overall['invalid_action_rate'])} | {_pct(overall['format_error_rate'])} "
            f"| {_pct(overall['repeated_mistake_rate'])} | "
            f"{'–' if s2s is None else f'{s2s:.1f}'} |")
    notes = [f"- `{task}`: {meta['note']}" for task, meta in info.items() if meta.get("note")]
    for task, reason in summary.get("unavailable", {}).items():
        notes.append(f"- `{task}`: **unavailable here** ({reason}); not run, not counted.")
    if summary.get("errors"):
        notes.append(f"- {summary['errors']} episode(s) crashed (see errors.jsonl); they are retried on the next run.")
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)


def plot_task(task: str, rows: Sequence[Mapping[str, Any]], agg: Mapping[str, Any], path: Path,
              *, title: str | None = None) -> Path:
    """One PNG per task: final progress per episode (green = success) and the aggregate rates with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: int(r["episode"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [3, 1.4]})
    xs = [int(r["episode"]) for r in rows]
    left.bar(xs, [float(r["progress"]) for r in rows],
             color=["#2a9d4b" if r["success"] else "#c8553d" for r in rows])
    left.xaxis.get_major_locator().set_params(integer=True)
    left.set_xlabel("episode")
    left.set_ylabel("final progress")
    left.set_ylim(0, 1.05)
    left.set_title("per episode (green = success)")
    names = ["success", "progress", "invalid", "repeated"]
    values = [agg["success_rate"], agg["progress_rate"], agg["invalid_action_rate"], agg["repeated_mistake_rate"]]
    errs = []
    for key, value in (("success_rate_ci", values[0]), ("progress_rate_ci", values[1])):
        ci = agg.get(key) or [value, value]
        errs.append([max(0.0, value - ci[0]), max(0.0, ci[1] - value)])
    errs += [[0.0, 0.0], [0.0, 0.0]]
    right.bar(names, values, yerr=list(zip(*errs, strict=True)), capsize=3,
              color=["#2a9d4b", "#457b9d", "#c8553d", "#e9a03b"])
    right.set_ylim(0, 1.05)
    right.set_title("rates (95% CI)")
    right.tick_params(axis="x", labelrotation=30)
    fig.suptitle(title or task)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Path]:
    """Write summary.json, summary.md and ``<task>.png``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out / "summary.json", "md": out / "summary.md"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    paths["md"].write_text("# Evaluation summary\n\n" + markdown_table(summary) + "\n")
    info = summary.get("task_info", {})
    for task, agg in summary.get("tasks", {}).items():
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            family = info.get(task, {}).get("family")
            title = f"{family} ({task}) — {summary.get('model', '')}" if family else task
            paths[task] = plot_task(task, task_rows, agg, out / f"{task}.png", title=title)
    return paths


__all__ = ["markdown_table", "plot_task", "write_report"]
