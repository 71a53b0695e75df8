"""Ready synthesis graphs for ``langgraph dev`` / LangGraph Server (registered in ``langgraph.json``).

The teacher comes from environment variables (``langgraph.json``'s ``env`` sets the defaults):

- ``AGENTREFINE_TEACHER``: ``grounded`` (the embedded engine-backed teacher, no key needed) or a LangChain
  model spec such as ``openai:gpt-4o``;
- or ``AGENTREFINE_TEACHER_BASE_URL`` + ``AGENTREFINE_TEACHER_MODEL`` (+ ``AGENTREFINE_TEACHER_API_KEY``): an
  OpenAI-compatible server such as vLLM. (``AGENTREFINE_BASE_URL`` / ``_MODEL`` / ``_API_KEY`` name the served
  *tuned* model of the ``refine_agent`` graph: both graphs run side by side in one ``langgraph dev``.)
- ``AGENTREFINE_MODE``: ``one_shot`` (the paper; LLM default) or ``interactive`` (grounded default);
- ``AGENTREFINE_SETTINGS``: JSON of :class:`agentrefine_lg.synthesis.graphs.SynthesisSettings` overrides,
  e.g. ``{"min_pairs": 3}``; ``AGENTREFINE_CACHE_DIR``: the grounded teacher's world cache.

Inputs: ``{"synth_persona": "..."}`` (``graph``, ``script_graph``) or ``{"synth_script": {...}}``
(``trajectory_graph``). Stream with ``stream_mode="custom"`` to watch every rejected attempt. The graphs are
async (Studio and the Agent Server run them so); the embedded teacher's engine work runs in worker threads, so
``langgraph dev`` needs no ``--allow-blocking``.
"""

from __future__ import annotations

import json
import os

from agentrefine_lg.synthesis.graphs import (
    SynthesisSettings,
    create_script_graph,
    create_synthesis_graph,
    create_trajectory_graph,
    recursion_limit,
)
from agentrefine_lg.synthesis.teachers import build_teacher


def _settings() -> SynthesisSettings:
    raw = os.environ.get("AGENTREFINE_SETTINGS", "").strip()
    return SynthesisSettings.build(None, **(json.loads(raw) if raw else {}))


def _teacher(settings: SynthesisSettings):
    teacher = os.environ.get("AGENTREFINE_TEACHER", "").strip() or None
    base_url = os.environ.get("AGENTREFINE_TEACHER_BASE_URL", "").strip() or None
    return build_teacher(
        teacher=None if base_url else teacher,
        base_url=base_url,
        model=os.environ.get("AGENTREFINE_TEACHER_MODEL") or None,
        api_key=os.environ.get("AGENTREFINE_TEACHER_API_KEY") or None,
        mode=os.environ.get("AGENTREFINE_MODE") or None,
        min_pairs=settings.min_pairs,
        cache_dir=os.environ.get("AGENTREFINE_CACHE_DIR") or None,
    )


settings = _settings()
teacher = _teacher(settings)
if "max_turns" not in os.environ.get("AGENTREFINE_SETTINGS", ""):
    settings = SynthesisSettings.build(settings, max_turns=teacher.default_max_turns)
_limit = {"recursion_limit": recursion_limit(settings, teacher.mode)}  # type: ignore[arg-type]

script_graph = create_script_graph(teacher.script_writer, settings=settings).compile(name="agentrefine-script")
trajectory_graph = (
    create_trajectory_graph(teacher.trajectory_roles, mode=teacher.mode, settings=settings)  # type: ignore[arg-type]
    .compile(name="agentrefine-trajectory").with_config(_limit)
)
graph = (
    create_synthesis_graph(teacher.script_writer, teacher.trajectory_roles, mode=teacher.mode, settings=settings)  # type: ignore[arg-type]
    .compile(name="agentrefine-synthesis").with_config(_limit)
)

__all__ = ["graph", "script_graph", "settings", "teacher", "trajectory_graph"]
