"""The paper's main table (8B rows) beside a run on AgentBoard's own episodes (``--agentboard-data``).

The numbers are the AgentRefine authors' results table as published in their repository's README
(github.com/Fu-Dayuan/AgentRefine, ``README.md``, section "Results", commit 0fcf1a3; the same table is the
"Main Results" figure of agentrefine.github.io). The paper PDF's own text could not be searched here, so the
table is quoted from that README, not from the PDF. Success and progress rates in %, AgentBoard's episodes,
at most 30 steps. ``held_in`` marks the underlined cells: the model was trained on data from that environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SOURCE = ("AgentRefine authors' results table: github.com/Fu-Dayuan/AgentRefine README.md, \"Results\" "
          "(commit 0fcf1a3), LLaMA-3-8B rows; the paper PDF's text was not searchable here, so these are "
          "quoted from the README, not from the PDF")

#: the paper's column order: our task name -> column title
COLUMNS: tuple[tuple[str, str], ...] = (
    ("alfworld", "Alfworld"), ("babyai", "BabyAI"), ("sciworld", "SciWorld"), ("pddl", "PDDL"), ("jericho", "Jericho"),
)

#: method -> task -> (success %, progress %); LLaMA-3-8B family
PAPER_8B: dict[str, dict[str, tuple[float, float]]] = {
    "LLaMA-3-8B-Instruct": {"alfworld": (22.4, 46.1), "babyai": (45.5, 56.5), "sciworld": (7.8, 41.1),
                            "pddl": (10.0, 38.4), "jericho": (0.0, 24.3)},
    "AgentGym": {"alfworld": (61.9, 76.9), "babyai": (47.3, 61.4), "sciworld": (18.9, 47.5),
                 "pddl": (1.7, 16.6), "jericho": (0.0, 12.9)},
    "Agent-FLAN": {"alfworld": (67.2, 79.7), "babyai": (25.0, 35.3), "sciworld": (1.1, 10.9),
                   "pddl": (8.3, 25.5), "jericho": (0.0, 10.1)},
    "AgentRefine": {"alfworld": (44.8, 63.8), "babyai": (37.5, 50.4), "sciworld": (14.4, 42.6),
                    "pddl": (16.6, 37.8), "jericho": (10.0, 32.3)},
}
#: (method, task) cells the table underlines (held-in evaluation)
HELD_IN: frozenset[tuple[str, str]] = frozenset({
    ("AgentGym", "alfworld"), ("AgentGym", "babyai"), ("AgentGym", "sciworld"), ("Agent-FLAN", "alfworld"),
})
#: AgentBoard's episode counts per task (what the paper's rates are over)
PAPER_EPISODES: dict[str, int] = {"alfworld": 134, "babyai": 112, "sciworld": 90, "pddl": 60, "jericho": 20}


def _cell(value: float, held_in: bool) -> str:
    return f"{value:.1f}*" if held_in else f"{value:.1f}"


def comparison_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The table as data: the paper's 8B rows, then this run (rates in %, None where a task did not run)."""
    rows: list[dict[str, Any]] = []
    for method, cells in PAPER_8B.items():
        rows.append({"method": method, "source": "paper",
                     "cells": {t: {"success": s, "progress": p, "held_in": (method, t) in HELD_IN}
                               for t, (s, p) in cells.items()}})
    tasks = summary.get("tasks", {})
    ours: dict[str, Any] = {}
    for task, _ in COLUMNS:
        agg = tasks.get(task)
        ours[task] = None if not agg else {
            "success": 100 * float(agg["success_rate"]), "progress": 100 * float(agg["progress_rate"]),
            "episodes": int(agg["episodes"]), "paper_episodes": PAPER_EPISODES[task]}
    rows.append({"method": f"this run: {summary.get('model', '?')}", "source": "run", "cells": ours})
    return rows


def comparison_markdown(summary: Mapping[str, Any]) -> str:
    """A Markdown section: the paper's 8B rows and this run with the paper's columns, plus notes on coverage."""
    head = "| Method | " + " | ".join(f"{title} SR | {title} PR" for _, title in COLUMNS) + " |"
    lines = ["## Beside the paper (AgentBoard episodes, 8B rows)", "",
             f"Paper rows: {SOURCE}. `*` = held-in (underlined in the paper). Rates in %.", "",
             head, "|" + "---|" * (1 + 2 * len(COLUMNS))]
    notes: list[str] = []
    for row in comparison_rows(summary):
        cells = []
        for task, title in COLUMNS:
            cell = row["cells"].get(task)
            if cell is None:
                cells += ["–", "–"]
            elif row["source"] == "paper":
                cells += [_cell(cell["success"], cell["held_in"]), _cell(cell["progress"], cell["held_in"])]
            else:
                cells += [f"{cell['success']:.1f}", f"{cell['progress']:.1f}"]
                if cell["episodes"] != cell["paper_episodes"]:
                    notes.append(f"- {title}: this run has {cell['episodes']} episode(s), the paper "
                                 f"{cell['paper_episodes']}: not comparable until the whole data set is run.")
        name = f"**{row['method']}**" if row["source"] == "run" else row["method"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", (f"Max steps: {summary.get('max_steps', '?')} (the paper: 30). Protocol differences from the "
                   "paper: our refine-agent graph's multi-turn chat prompt, not AgentBoard's single-message "
                   "VanillaAgent prompt.")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


__all__ = ["COLUMNS", "HELD_IN", "PAPER_8B", "PAPER_EPISODES", "SOURCE", "comparison_markdown", "comparison_rows"]
