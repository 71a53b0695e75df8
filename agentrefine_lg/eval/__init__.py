"""Held-out evaluation: one module per task family (BabyAI, ScienceWorld, PDDL, AlfWorld, Jericho stand-in),
the shared contract and registry (:mod:`.base`), metrics, the harness (``agentrefine eval``) and reports.

Engines are imported only by their task module, when a task is loaded.
"""

from agentrefine_lg.eval.base import TASKS, TaskInfo, load_task, parse_task_list, task_names, task_unavailable

__all__ = ["TASKS", "TaskInfo", "load_task", "parse_task_list", "task_names", "task_unavailable"]
