"""The DM of the refine loop: the verdict on one executed action, the critic, and the episode's trace.

One implementation shared by the two ways of running the loop — the refine agent's graph
(:func:`agentrefine_lg.refine_agent.create_refine_agent`) and the ``create_agent`` middleware
(:class:`agentrefine_lg.refine_middleware.RefineMiddleware`) — so both give the model the same feedback, set the
paper's three error flags the same way (docs/method.md §2) and write the same trace format:

- :func:`tool_failure` classifies what a tool raised: invalid arguments are a ``parameter_error``, any other
  failure a ``logic_error``; interrupts, handoffs, bugs and configuration errors are raised again;
- :func:`repeated_call` spots a call that repeats the previous one, which had already succeeded;
- :func:`critic_step` / :func:`ask_critic` / :func:`aask_critic` run the optional LLM (or callable) critic;
- :func:`judge` turns an action's execution, the rule check and the critic's verdict into the DM's flags and
  the observation the model sees next;
- :func:`episode_sample` records an episode as a :class:`~agentrefine_lg.schema.RefinementSample` whose
  ``check`` settings (:data:`TRACE_CHECK`) say how ``agentrefine check`` verifies a recorded episode.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_stream_writer
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolInvocationError
from pydantic import BaseModel, Field

from agentrefine_lg import prompts
from agentrefine_lg.agent_format import parse_action, system_prompt, tool_schema
from agentrefine_lg.checks import match_action
from agentrefine_lg.convert import sample_from_trajectory
from agentrefine_lg.errors import InputError
from agentrefine_lg.failures import is_fatal_error
from agentrefine_lg.jsonl import append_jsonl
from agentrefine_lg.schema import ERROR_FLAGS, ActionSpec, RefinementSample, Script, Trajectory

TraceSink = str | os.PathLike | Callable[[RefinementSample], Any]

TRACE_CHECK = {"min_pairs": 0, "require_completion": False, "dm_authoritative": True}
"""How a recorded episode is verified (``sample["check"]``): the executor was the DM, so its flags decide which
turns are erroneous; a recorded episode need not contain refinements nor succeed to be valid data."""


class CriticVerdict(BaseModel):
    """What the LLM critic returns: the DM's three flags and one sentence of feedback."""

    parameter_error: bool = Field(False, description="the action's form or arguments are invalid")
    place_error: bool = Field(False, description="the action refers to something absent or unreachable")
    logic_error: bool = Field(False, description="valid, but makes no sense for the goal at this point")
    feedback: str = Field("", description="one sentence the agent can act on; empty if no error")


Critic = BaseChatModel | Callable[[dict[str, Any]], "CriticVerdict | Mapping[str, Any] | None"]


@dataclass(frozen=True)
class RefineOptions:
    """How the refinement loop judges a step and when it gives up: the one list of these options, read by the
    refine agent's nodes (:func:`~agentrefine_lg.refine_agent.create_refine_agent`) and by
    :class:`~agentrefine_lg.refine_middleware.RefineMiddleware`, whose keyword arguments fill it."""

    critic: Critic | None = None
    max_retries: int | None = 3  # erroneous steps in a row allowed before giving up; None: no limit
    trace_sink: TraceSink | None = None
    action_specs: Script | Mapping[str, ActionSpec | dict] | None = None
    rule_check: bool | None = None  # None: an engine's verdict decides, the rules explain; True: strict
    feedback_to_model: bool = True

    def __post_init__(self) -> None:
        if self.max_retries is not None and self.max_retries < 0:
            raise InputError(f"max_retries must be >= 0 or None, got {self.max_retries}", field="max_retries")

    @property
    def structured_critic(self) -> Any:
        """The critic bound to :class:`CriticVerdict` structured output (a chat model), else None."""
        return structured_critic(self.critic)


# ---------------------------------------------------------------------------------------------- small helpers


def short_error(exc: BaseException) -> str:
    """An exception as one line of at most 300 characters (what the model is shown)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def jsonable(value: Any) -> Any:
    """``value`` if it is JSON-serialisable, else its JSON round trip with ``str`` for the rest."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def model_name(model: Any) -> str | None:
    """The model's name (``model_name`` / ``model`` / ``model_id``), looking through bindings."""
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    bound = getattr(model, "bound", None)
    return model_name(bound) if bound is not None else None


def thought_of(reply: BaseMessage, text: str) -> str | None:
    """The model's reasoning for this reply: our parse, the text before its tool call, or reasoning content."""
    meta = (getattr(reply, "response_metadata", None) or {}).get("agentrefine") or {}
    if meta.get("thought"):
        return str(meta["thought"]).strip()
    thought = parse_action(text).thought
    if thought:
        return thought
    extra = getattr(reply, "additional_kwargs", None) or {}
    reasoning = extra.get("reasoning_content") or extra.get("reasoning")
    if isinstance(reasoning, str) and reasoning.strip():
        return reasoning.strip()
    content = getattr(reply, "content", None)
    if isinstance(content, list):  # Anthropic-style "thinking"/"reasoning" blocks
        parts = [b.get("thinking") or b.get("reasoning") or "" for b in content if isinstance(b, dict)]
        if any(parts):
            return " ".join(p for p in parts if p).strip()
    return None


def write_event(event: dict[str, Any]) -> None:
    """Emit ``event`` on LangGraph's custom stream (a no-op outside a run)."""
    try:
        get_stream_writer()(event)
    except RuntimeError:  # called outside a runnable context (a node run by hand in a test)
        pass


def append_trace(sink: TraceSink, sample: RefinementSample) -> None:
    """Append one episode to a JSONL file (flushed and synced) or hand it to a callable sink."""
    if callable(sink):
        sink(sample)
        return
    append_jsonl(sink, [sample.to_dict()])


async def aappend_trace(sink: TraceSink, sample: RefinementSample) -> None:
    """:func:`append_trace` from async code: an async sink is awaited, file I/O runs off the event loop."""
    if callable(sink) and inspect.iscoroutinefunction(sink):
        await sink(sample)
    else:
        await asyncio.to_thread(append_trace, sink, sample)


def tools_script(tools: Sequence[Any], task: str, names: Sequence[str] = ()) -> Script:
    """A script for tool mode: each tool is an action ``name(...)``; ``finish(...)`` completes.

    The templates have no slots: the rules check the tool's name, the tool checks its own arguments (its
    validation error is the DM's ``parameter_error``), so the script passes ``check_script`` as is. ``names``
    adds tools known only by name (a call the executor answered although no schema was seen).
    """
    actions: dict[str, ActionSpec] = {}
    entries: list[tuple[str, str]] = []
    for t in tools:
        name, description = _tool_entry(t)
        entries.append((name, description))
    known = {name for name, _ in entries}
    entries += [(n, "") for n in dict.fromkeys(names) if n not in known]
    for name, description in [*entries, ("finish", "give the final answer and end the task")]:
        template = f"{name}(...)"
        actions[template] = ActionSpec(template=template, description=description,
                                       verification_code=rf"(?is)\s*{re.escape(name)}\b.*", parameters={})
    environment = {"description": "A tool-using assistant. Tools: " + ", ".join(n for n, _ in entries)}
    return Script(environment=environment, goal=task, completion_conditions=["The task is answered with finish[...]."],
                  available_actions=actions)


def _tool_entry(tool: Any) -> tuple[str, str]:
    if isinstance(tool, BaseTool):
        name, description = tool.name, tool.description or ""
    else:  # a schema dict or a function, as create_agent's model request carries them
        schema = tool_schema(tool)
        name, description = schema["name"], schema.get("description") or ""
    return name, (description.strip().splitlines() or [""])[0]


# ---------------------------------------------------------------------------------------------- tool results


def tool_failure(call: Mapping[str, Any], exc: Exception) -> dict[str, Any]:
    """The executor's result for a tool that raised: feedback for the model, or the exception raised again."""
    if isinstance(exc, GraphBubbleUp) or is_fatal_error(exc):
        raise exc  # interrupts and handoffs bubble up; bugs and configuration errors are loud
    # Invalid arguments are the action's form at fault; any other failure of the tool is a logic error.
    kind = "parameter_error" if isinstance(exc, ToolInvocationError) else "logic_error"
    return {"observation": prompts.REFINE_TOOL_ERROR.format(error=short_error(exc)), "done": False, "error": kind,
            "info": {"tool": call["name"], "args": jsonable(call.get("args") or {})}}


def repeated_call(call: Mapping[str, Any], previous: Mapping[str, Any] | None, previous_failed: bool) -> bool:
    """Does ``call`` repeat the previous call (same tool, same arguments) although that one succeeded?

    Its result is already in the context, so running it again is a loop, not progress (the paper's "repeats
    the same mistake despite feedback"). Repeating a call that *failed* is allowed: tools fail transiently.
    """
    if previous is None or previous_failed:
        return False
    return call.get("name") == previous.get("name") and (call.get("args") or {}) == (previous.get("args") or {})


def repeated_result(call: Mapping[str, Any]) -> dict[str, Any]:
    """The DM's answer to a :func:`repeated_call` (not run again): a ``logic_error`` with the reason."""
    return {"observation": prompts.REFINE_REPEATED_CALL.format(name=call["name"]), "done": False,
            "error": "logic_error", "info": {"tool": call["name"], "args": jsonable(call.get("args") or {}),
                                             "repeated": True}}


# ---------------------------------------------------------------------------------------------- critic


def critic_step(script: Script, item: Mapping[str, Any], result: Mapping[str, Any]) -> dict[str, Any]:
    """What the critic judges: the task, the action and its thought, what the executor answered."""
    return {"task": system_prompt(script), "goal": script.goal, "thought": item.get("thought") or "",
            "action": item.get("action") or "", "observation": result.get("observation") or ""}


def structured_critic(critic: Critic | None) -> Any:
    """A chat-model critic bound to :class:`CriticVerdict` (None for a callable critic or none)."""
    return critic.with_structured_output(CriticVerdict) if isinstance(critic, BaseChatModel) else None


def _critic_prompt(step: Mapping[str, Any]) -> list[BaseMessage]:
    return [HumanMessage(prompts.REFINE_CRITIC.format(task=step["goal"], thought=step["thought"],
                                                      action=step["action"], observation=step["observation"]))]


def _verdict(out: Any) -> CriticVerdict | None:
    if out is None:
        return None
    return out if isinstance(out, CriticVerdict) else CriticVerdict.model_validate(dict(out))


def ask_critic(critic: Critic, structured: Any, step: dict[str, Any],
               config: RunnableConfig | None = None) -> CriticVerdict | None:
    """The critic's verdict on one step (sync: an async callable critic is refused with the fix)."""
    import inspect

    if structured is not None:
        return _verdict(structured.invoke(_critic_prompt(step), config))
    verdict = critic(step)  # type: ignore[operator]
    if inspect.isawaitable(verdict):
        close = getattr(verdict, "close", None)
        if close is not None:
            close()  # never awaited: close it so Python does not warn about it
        raise RuntimeError("the critic is async: run the agent with `await graph.ainvoke(...)`")
    return _verdict(verdict)


async def aask_critic(critic: Critic, structured: Any, step: dict[str, Any],
                      config: RunnableConfig | None = None) -> CriticVerdict | None:
    """The critic's verdict on one step (async: a sync or async callable critic, or a chat model)."""
    import inspect

    if structured is not None:
        return _verdict(await structured.ainvoke(_critic_prompt(step), config))
    verdict = critic(step)  # type: ignore[operator]
    if inspect.isawaitable(verdict):
        verdict = await verdict
    return _verdict(verdict)


# ---------------------------------------------------------------------------------------------- the verdict


@dataclass
class Judgement:
    """The DM's verdict on one action: its flags, the observation the model sees next, and what it was."""

    flags: dict[str, bool]
    observation: str
    done: bool
    invalid: bool  # the action itself was invalid (rule check, bad arguments, unknown tool)
    format_error: bool

    @property
    def erroneous(self) -> bool:
        return any(self.flags.values())


def judge(item: Mapping[str, Any], result: Mapping[str, Any], *, script: Script,
          action_specs: Script | Mapping[str, ActionSpec | dict] | None = None, engine: bool = False,
          rule_check: bool | None = None, verdict: CriticVerdict | None = None,
          feedback_to_model: bool = True) -> Judgement:
    """The DM's verdict on one executed action (docs/method.md §2).

    ``item``: the action (``action``, ``thought``, ``error`` for an unparsable reply, ``final`` for an answer);
    ``result``: its execution (``observation``, ``done``, ``error`` naming a flag, ``format_error``).
    ``engine``: a TextEnv executed it (its verdict is authoritative by default; see ``create_refine_agent``).
    """
    flags = {flag: False for flag in ERROR_FLAGS}
    notes: list[str] = []
    format_error = bool(result.get("format_error"))
    invalid = False
    if result.get("error") in flags:
        flags[result["error"]] = True
    if format_error:
        # A tool-calling model's empty reply gets its own hint: it was never asked for Thought/Action text.
        notes.append(item.get("format_feedback") or prompts.REFINE_FORMAT_ERROR.format(error=item.get("error")))
    elif rule_check is not False and (action_specs is not None or engine) and "final" not in item:
        specs = action_specs if action_specs is not None else script
        match = match_action(specs, item["action"])
        # With an engine, its verdict is authoritative by default (engines fold case, know dynamic object
        # names): the rules then only explain a rejection. Strict mode (rule_check=True) or rules without
        # an engine flag the action themselves.
        engine_rejected = engine and result.get("error") is not None
        if not match.ok and (rule_check is True or not engine or engine_rejected):
            invalid = True
            flags["parameter_error"] = flags["parameter_error"] or not engine_rejected
            actions = specs.available_actions if isinstance(specs, Script) else specs
            # An engine whose reply already says "Invalid action ..." (BabyAI, PDDL) has explained the
            # rejection: a second "Invalid action" note would repeat it in the same observation.
            if "invalid action" not in (result.get("observation") or "").lower():
                notes.append(prompts.REFINE_INVALID_ACTION.format(message=match.message or "invalid",
                                                                  actions=", ".join(actions)))
    if result.get("error") == "parameter_error" and not format_error:
        invalid = True
    done = bool(result.get("done"))
    if verdict is not None:
        for flag in ERROR_FLAGS:
            flags[flag] = flags[flag] or bool(getattr(verdict, flag))
        if verdict.feedback and any(getattr(verdict, f) for f in ERROR_FLAGS):
            notes.append(prompts.REFINE_CRITIC_FEEDBACK.format(feedback=verdict.feedback))
    if any(flags.values()) and not engine:
        done = False  # a flagged finish[...] (e.g. the critic rejects the answer) is refined, not accepted
    # (with an engine, its own `done` is authoritative: the task is complete whatever the checks say)
    observation = (result.get("observation") or "").strip()
    if notes and feedback_to_model:
        observation = "\n".join(x for x in (observation, *notes) if x)
    return Judgement(flags=flags, observation=observation or "(no observation)", done=done, invalid=invalid,
                     format_error=format_error)


# ---------------------------------------------------------------------------------------------- the trace


def episode_sample(script: Script, turns: Sequence[Mapping[str, Any]], *, system: str | None,
                   teacher: str | None, success: bool, progress: float, stop_reason: str | None,
                   env: str | None = None, agent: str | None = None) -> RefinementSample | None:
    """One recorded episode as a training sample (None if the model never acted).

    ``system``: the system prompt to train with, in place of the script's (the tool task's own prompt).
    """
    trajectory = Trajectory.model_validate(list(turns))
    if not any(t.is_player for t in trajectory.turns):
        return None
    sample = sample_from_trajectory(
        script, trajectory, teacher=teacher, source="refine-agent", check=dict(TRACE_CHECK), success=success,
        progress=progress, stop_reason=stop_reason, env=env, agent=agent,
    )
    if system and sample.messages and sample.messages[0].role == "system":
        sample.messages[0].content = system
    return sample


__all__ = [
    "RefineOptions",
    "TRACE_CHECK",
    "Critic",
    "CriticVerdict",
    "Judgement",
    "TraceSink",
    "aask_critic",
    "append_trace",
    "ask_critic",
    "critic_step",
    "episode_sample",
    "jsonable",
    "judge",
    "model_name",
    "repeated_call",
    "repeated_result",
    "short_error",
    "structured_critic",
    "thought_of",
    "tool_failure",
    "tools_script",
    "write_event",
]
