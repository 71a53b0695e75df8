"""Evaluation reports: ``summary.json``, ``summary.md`` (Markdown tables: metrics, thought diversity, a short
robustness section), one PNG chart per task, and ``robustness.json``/``robustness.md`` for the perturbation study."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentrefine_lg.eval.robustness import format_robustness


def format_pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_ci(values: Sequence[float] | None) -> str:
    if not values:
        return ""
    low, high = values
    return f" [{format_pct(low)}, {format_pct(high)}]"


def task_label(task: str, info: Mapping[str, Any] | None = None) -> str:
    """``BabyAI (babyai)``: the task's family (the paper's column) with its command-line name."""
    family = (info or {}).get("family")
    return f"{family} ({task})" if family and family.lower() != task.lower() else task


def model_label(summary: Mapping[str, Any]) -> str:
    """What the evaluated model is (``--label``: tuned, base, oracle...), else its endpoint label."""
    return str(summary.get("label") or summary.get("model") or "?")


def model_caption(summary: Mapping[str, Any]) -> str:
    """One line naming the model behind a label: its endpoint or agent and, when given, its weights."""
    text = f"{model_label(summary)}: {summary.get('model', '?')}"
    return text + (f" serving {summary['model_path']}" if summary.get("model_path") else "")


def markdown_table(summary: Mapping[str, Any]) -> str:
    """The summary as a Markdown table (rates in %, 95% Wilson intervals in brackets) plus notes."""
    lines = [
        (f"Model: {model_caption(summary)} · max steps {summary.get('max_steps', '?')} · seed "
         f"{summary.get('seed', '?')}"),
        "",
        ("| task | episodes | success % | progress % | invalid action % | format error % | repeated mistake % "
         "| steps to success |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    info = summary.get("task_info", {})
    for task, agg in summary.get("tasks", {}).items():
        s2s = agg.get("steps_to_success")
        lines.append(
            f"| {task_label(task, info.get(task))} | {agg['episodes']} | {format_pct(agg['success_rate'])}"
            f"{format_ci(agg.get('success_rate_ci'))} | {format_pct(agg['progress_rate'])}{format_ci(agg.get('progress_rate_ci'))} "
            f"| {format_pct(agg['invalid_action_rate'])} | {format_pct(agg['format_error_rate'])} "
            f"| {format_pct(agg['repeated_mistake_rate'])} | {'–' if s2s is None else f'{s2s:.1f}'} |")
    overall = summary.get("overall")
    if overall and overall.get("episodes"):
        s2s = overall.get("steps_to_success")
        lines.append(
            f"| **overall** (mean of tasks) | {overall['episodes']} | "
            f"{format_pct(overall.get('success_rate_task_mean'))} | {format_pct(overall.get('progress_rate_task_mean'))} "
            f"| {format_pct(overall['invalid_action_rate'])} | {format_pct(overall['format_error_rate'])} "
            f"| {format_pct(overall['repeated_mistake_rate'])} | "
            f"{'–' if s2s is None else f'{s2s:.1f}'} |")
    notes = ["- Success and progress: mean over episodes, 95% Wilson score interval in brackets (it stays wide "
             "for few episodes). Invalid action, format error, repeated mistake: per step, pooled."]
    notes += [f"- `{task}`: {meta['note']}" for task, meta in info.items() if meta.get("note")]
    for task, reason in summary.get("unavailable", {}).items():
        notes.append(f"- `{task}`: **unavailable here** ({reason}); not run, not counted.")
    if summary.get("errors"):
        notes.append(f"- {summary['errors']} episode(s) crashed (see errors.jsonl); they are retried on the next run.")
    lines += ["", "Notes:", *notes]
    return "\n".join(lines)


#: The five reported metrics, in the order of the tables: (summary key, CI key or None, plot label).
METRICS: tuple[tuple[str, str | None, str], ...] = (
    ("success_rate", "success_rate_ci", "success"),
    ("progress_rate", "progress_rate_ci", "progress"),
    ("invalid_action_rate", None, "invalid action"),
    ("format_error_rate", None, "format error"),
    ("repeated_mistake_rate", None, "repeated mistake"),
)


def draw_bars(ax: Any, xs: Sequence[float], values: Sequence[float | None], *, width: float, color: Any,
              label: str | None = None, cis: Sequence[Sequence[float] | None] | None = None) -> None:
    """Bars in % (0-100) with every value written above its bar; a 0 is drawn as a line on the axis and
    labelled, so a zero never looks like missing data, and a missing value is written as "n/a"."""
    pct = [None if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * float(v) for v in values]
    heights = [p or 0.0 for p in pct]
    colors = color if isinstance(color, (list, tuple)) else [color] * len(xs)
    ax.bar(xs, heights, width, color=colors, label=label, edgecolor="#333333", linewidth=0.5)
    for x, p, c in zip(xs, pct, colors):
        if p == 0:
            ax.hlines(0, x - width / 2, x + width / 2, colors=c, linewidth=3, zorder=3)
    tops = list(heights)
    if cis is not None:
        for i, (x, p, ci) in enumerate(zip(xs, pct, cis)):
            if p is None or not ci or any(math.isnan(c) for c in ci):
                continue
            low, high = 100 * ci[0], 100 * ci[1]
            ax.errorbar([x], [p], yerr=[[max(0.0, p - low)], [max(0.0, high - p)]], fmt="none", ecolor="#222222",
                        capsize=3, linewidth=1)
            tops[i] = max(tops[i], high)
    for x, p, top in zip(xs, pct, tops):
        ax.text(x, top + 2, "n/a" if p is None else f"{p:.0f}", ha="center", va="bottom", fontsize=7)


def percent_axis(ax: Any, ylabel: str) -> None:
    # 0-100 always: the scale a rate lives on, so small differences are not magnified; headroom for labels.
    ax.set_ylim(0, 115)
    ax.set_yticks([0, 25, 50, 75, 100])
    ax.set_ylabel(ylabel)


def plot_task(task: str, rows: Sequence[Mapping[str, Any]], agg: Mapping[str, Any], path: Path,
              *, title: str | None = None, caption: str | None = None) -> Path:
    """One PNG per task: final progress per episode (green = success) and the five reported rates."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = sorted(rows, key=lambda r: int(r["episode"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [3, 2]})
    xs = [int(r["episode"]) for r in rows]
    draw_bars(left, xs, [float(r["progress"]) for r in rows], width=0.7,
              color=["#2a9d4b" if r["success"] else "#c8553d" for r in rows])
    left.set_xticks(xs)
    left.set_xlim(min(xs) - 1, max(xs) + 1)  # a lone episode stays a bar, not a band across the panel
    left.set_xlabel("episode")
    percent_axis(left, "final progress (%)")
    left.set_title("final progress per episode")
    left.legend(handles=[Patch(color="#2a9d4b", label="success"), Patch(color="#c8553d", label="failure")],
                fontsize=8, loc="upper right")
    names = [label for _, _, label in METRICS]
    draw_bars(right, range(len(METRICS)), [agg.get(key) for key, _, _ in METRICS], width=0.7,
              color=["#2a9d4b", "#457b9d", "#c8553d", "#e9a03b", "#8d5fa3"],
              cis=[agg.get(ci) if ci else None for _, ci, _ in METRICS])
    right.set_xticks(range(len(METRICS)), names, rotation=25, ha="right")
    percent_axis(right, "% (whiskers: 95% Wilson CI)")
    right.set_xlabel("metric (success, progress: per episode; errors: per step)")
    right.set_title(f"rates over {agg.get('episodes', len(rows))} episode(s), {agg.get('steps', '?')} steps")
    fig.suptitle(title or task)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
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
            chart = f"{task_label(task, info.get(task))}: {model_label(summary)}"
            paths[task] = plot_task(task, task_rows, agg, out / f"{task}.png", title=chart,
                                    caption=f"model {model_caption(summary)}")
    return paths


__all__ = ["METRICS", "diversity_markdown", "draw_bars", "markdown_table", "model_caption", "model_label", "percent_axis",
           "plot_task", "robustness_markdown", "task_label", "write_report", "write_robustness"]
