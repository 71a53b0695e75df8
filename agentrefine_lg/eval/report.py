"""Evaluation reports: ``summary.json``, ``summary.md`` (Markdown tables: metrics, thought diversity, a short
robustness section), one PNG chart per task, and ``robustness.json``/``robustness.md`` for the perturbation study."""

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


def _num(value: Any, fmt: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def diversity_markdown(block: Mapping[str, Any]) -> str:
    """The thought-diversity block of a summary (see ``harness.thought_diversity_block``) as Markdown."""
    if not block:
        return ""
    lines = ["## Thought diversity", "",
             ("Over the `Thought` texts of all Player turns: distinct-n = distinct word n-grams / all n-grams "
              "(pooled); embedding distance = 1 − mean pairwise cosine similarity of the thoughts' sentence "
              "embeddings (higher = more diverse)."), "",
             "| task | thoughts | mean words | distinct-1 | distinct-2 | embedding distance |",
             "|---|---|---|---|---|---|"]
    rows = [*block.get("tasks", {}).items(), ("**overall**", block.get("overall") or {})]
    for name, d in rows:
        if not d:
            continue
        label = name if name.startswith("**") else f"`{name}`"
        lines.append(f"| {label} | {d.get('thoughts', 0)} | {_num(d.get('mean_words'), '.1f')} | "
                     f"{_num(d.get('distinct_1'))} | {_num(d.get('distinct_2'))} | "
                     f"{_num(d.get('mean_pairwise_cosine_distance'))} |")
    lines += ["", f"Embeddings: {block.get('embeddings', '?')}."]
    return "\n".join(lines)


def _noop_lines(block: Mapping[str, Any]) -> list[str]:
    lines = [f"- `{task}` × `{scheme}`: the scheme rewords none of this task's action templates; a no-op, "
             "not run and not counted (no drop to report)." for task, schemes in block.get("noop", {}).items()
             for scheme in schemes]
    lines += [f"- `{task}` × `{scheme}`: {n} episode(s) with no reworded template left out of the comparison."
              for task, per in block.get("unchanged_episodes", {}).items() for scheme, n in per.items()]
    return lines


def robustness_markdown(block: Mapping[str, Any], *, short: bool = False) -> str:
    """The robustness block (``harness.robustness_block``): the full report, or a short section for summary.md."""
    from agentrefine_lg.eval.robustness import format_robustness

    report = block.get("report") or {}
    schemes = ", ".join(f"`{s}`" for s in block.get("schemes", []))
    if short:
        lines = ["## Robustness (perturbation study)", "",
                 (f"Same episodes with reworded action forms ({schemes}); success rate in %, drop in points "
                  "(unperturbed − perturbed, positive = worse). Details: `robustness.md`, runs in "
                  "`perturbed/<scheme>/`."),
                 ""]
        if report:
            lines += ["| task | SR unperturbed | SR per scheme (drop) | mean SR drop (std) | mean PR drop |",
                      "|---|---|---|---|---|"]
            for task, entry in report.items():
                per = ", ".join(f"{name} {s['success']:.1f} ({s['success_drop']:+.1f})"
                                for name, s in entry["schemes"].items())
                label = "**overall** (episodes pooled)" if task == "overall" else f"`{task}`"
                lines.append(f"| {label} | {entry['base_success']:.1f} | {per} | "
                             f"{entry['mean_success_drop']:+.1f} ({entry['success_std']:.1f}) | "
                             f"{entry['mean_progress_drop']:+.1f} |")
        else:
            lines.append("No episode could be compared (no finished unperturbed and perturbed episode in common).")
        noop = _noop_lines(block)
        return "\n".join([*lines, *([""] + noop if noop else [])])

    lines = ["# Robustness (perturbation study)", "",
             (f"Model: `{block.get('model', '?')}` · max steps {block.get('max_steps', '?')} · seed "
              f"{block.get('seed', '?')} · schemes: {schemes}"), "",
             ("The same episodes as the unperturbed run, with the action templates reworded (same meaning, other "
              "tokens or order; `agentrefine_lg.eval.robustness`); the model's reworded actions are mapped back to "
              "the engine's commands and the original forms are rejected. SR = success rate, PR = progress rate, "
              "in %; drop = unperturbed − perturbed in points (positive = worse when reworded); **mean (std)**: the "
              "mean drop across schemes and the standard deviation of the perturbed rate across schemes. Only "
              "episodes finished in both runs are compared; `overall` pools the episodes of all tasks."), ""]
    lines.append(format_robustness(report) if report else
                 "No episode could be compared (no finished unperturbed and perturbed episode in common).")
    noop = _noop_lines(block)
    if noop:
        lines += ["", "No-ops:", *noop]
    reworded = block.get("reworded") or {}
    if reworded:
        lines += ["", "## Reworded templates", ""]
        for task, per in reworded.items():
            for scheme, mapping in per.items():
                forms = ", ".join(f"`{a}` → `{b}`" for a, b in mapping.items()) or "none (no-op)"
                lines.append(f"- `{task}` × `{scheme}`: {forms}")
    return "\n".join(lines)


def write_robustness(out_dir: str | Path, block: Mapping[str, Any]) -> dict[str, Path]:
    """Write ``robustness.json`` and ``robustness.md``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "robustness.json", "md": out / "robustness.md"}
    paths["json"].write_text(json.dumps(block, indent=2, default=str) + "\n")
    paths["md"].write_text(robustness_markdown(block) + "\n")
    return paths


def write_report(out_dir: str | Path, summary: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], *,
                 plots: bool = True, title: str = "Evaluation summary") -> dict[str, Path]:
    """Write summary.json, summary.md and (with ``plots``) ``<task>.png``; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {"json": out / "summary.json", "md": out / "summary.md"}
    paths["json"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    sections = [f"# {title}", markdown_table(summary)]
    if summary.get("diversity"):
        sections.append(diversity_markdown(summary["diversity"]))
    if summary.get("robustness"):
        sections.append(robustness_markdown(summary["robustness"], short=True))
    paths["md"].write_text("\n\n".join(sections) + "\n")
    if not plots:
        return paths
    info = summary.get("task_info", {})
    for task, agg in summary.get("tasks", {}).items():
        task_rows = [r for r in rows if r["task"] == task]
        if task_rows:
            family = info.get(task, {}).get("family")
            chart = f"{family} ({task}) — {summary.get('model', '')}" if family else task
            paths[task] = plot_task(task, task_rows, agg, out / f"{task}.png", title=chart)
    return paths


__all__ = ["diversity_markdown", "markdown_table", "plot_task", "robustness_markdown", "write_report",
           "write_robustness"]
