"""agentrefine-lg: AgentRefine (Fu et al., ICLR 2025) as a LangGraph plugin.

The public API, importable from the package root::

    from agentrefine_lg import create_refine_agent, chat_model, create_synthesis_graph, llm_teacher

- graphs (uncompiled ``StateGraph`` factories, langgraph-supervisor style: ``state_schema``,
  ``context_schema``, ``name``): :func:`create_refine_agent`, :func:`create_synthesis_graph`,
  :func:`create_script_graph`, :func:`create_trajectory_graph`; :class:`RefineMiddleware`, the refinement
  loop as ``langchain.agents.create_agent`` middleware;
- models: :func:`chat_model` (a served tuned model as a LangChain chat model), :func:`tools_prompt`,
  :func:`llm_teacher` (any chat model as the synthesis teacher), :func:`grounded_teacher` (the embedded
  engine-backed teacher; needs the ``grounded`` extra);
- data: :class:`Script`, :class:`Trajectory`, :class:`Turn`, :class:`ActionSpec`,
  :class:`RefinementSample`, :func:`check_script`, :func:`check_trajectory`, :func:`read_samples`;
- settings and states: :class:`SynthesisSettings`, :class:`RefineState` (+ input/output), :class:`SynthesisState`.
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import Any

from agentrefine_lg import _moved
from agentrefine_lg.checks import check_script, check_trajectory, match_action
from agentrefine_lg.convert import read_samples, sample_from_trajectory
from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.refine_agent import (
    CriticVerdict,
    RefineInput,
    RefineOutput,
    RefineState,
    create_refine_agent,
    run_env_episode,
)
from agentrefine_lg.refine_middleware import RefineMiddleware
from agentrefine_lg.schema import ActionSpec, Message, RefinementSample, Script, Trajectory, Turn
from agentrefine_lg.serving.chat_model import chat_model, parse_action, tools_prompt
from agentrefine_lg.synthesis.graphs import (
    SynthesisInput,
    SynthesisOutput,
    SynthesisSettings,
    SynthesisState,
    create_script_graph,
    create_synthesis_graph,
    create_trajectory_graph,
)
from agentrefine_lg.synthesis.llm_roles import llm_teacher

_moved.install()  # the modules' old paths (agentrefine_lg.chat_model, .serve, .grounded, ...) keep working

try:
    __version__ = _metadata.version("agentrefine-lg")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str) -> Any:
    # The grounded teacher imports TextWorld (the `grounded` extra): loaded only when asked for.
    if name == "grounded_teacher":
        from agentrefine_lg.synthesis.grounded.teacher import grounded_teacher

        return grounded_teacher
    raise AttributeError(f"module 'agentrefine_lg' has no attribute {name!r}")


__all__ = [
    "ActionSpec",
    "CriticVerdict",
    "Message",
    "RefineInput",
    "RefineMiddleware",
    "RefineOutput",
    "RefineState",
    "RefinementSample",
    "Script",
    "StepResult",
    "SynthesisInput",
    "SynthesisOutput",
    "SynthesisSettings",
    "SynthesisState",
    "TextEnv",
    "Trajectory",
    "Turn",
    "__version__",
    "chat_model",
    "check_script",
    "check_trajectory",
    "create_refine_agent",
    "create_script_graph",
    "create_synthesis_graph",
    "create_trajectory_graph",
    "grounded_teacher",
    "llm_teacher",
    "match_action",
    "parse_action",
    "read_samples",
    "run_env_episode",
    "sample_from_trajectory",
    "tools_prompt",
]
