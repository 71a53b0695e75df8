"""The inference-time refine agent: act -> execute -> feedback -> (refine | next step | end), with a trace sink.

``create_refine_agent`` builds the loop AgentRefine trains for (Figure 4, decision 2): the model answers
``Thought/Action``; the action runs against an executor — a :class:`~agentrefine_lg.env.TextEnv` engine or
LangChain tools; the ``feedback`` node plays the DM: it sets the three error flags from the rule check
(:func:`agentrefine_lg.checks.match_action` against the action specs), the engine's
:class:`~agentrefine_lg.env.StepResult` ``error``, an unparsable reply (a format error is a
``parameter_error``), and an optional LLM critic. An erroneous step goes back to ``act`` with the feedback
appended to the observation (a refinement) while retries are left; a good step continues; completion, the
step budget or the retry budget ends the episode.

Every episode is recorded in our schema — Player turns (thought, action), DM turns (observation, flags,
``task_completed``) — converted with :func:`agentrefine_lg.convert.sample_from_trajectory` (erroneous turns
``train=False``), emitted on the custom stream (``{"refine_trace": row}``; each step also emits
``{"refine_step": ...}``) and appended to a JSONL sink, flushed per episode, which ``agentrefine convert`` and
``training.sft`` read as is. So deployed agents produce new refinement-tuning data.

State keys are all ``refine_*`` so the compiled graph drops into a user's app as a subgraph. The model sees
``refine_messages``; input is ``refine_task`` (tool mode; the env supplies its own first observation);
outputs are ``refine_answer``, ``refine_success``, ``refine_progress``, ``refine_stop_reason`` and
``refine_sample``. In env mode the engine lives in the factory's closure: one compiled graph runs one episode
at a time.

``run_env_episode`` runs one evaluation episode on a TextEnv: the harness measures exactly what users deploy.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages
from langgraph.types import Command, RetryPolicy
from pydantic import BaseModel, Field

from agentrefine_lg import prompts
from agentrefine_lg.chat_model import format_tool_call, parse_action, parse_tool_call
from agentrefine_lg.checks import match_action
from agentrefine_lg.convert import format_assistant, sample_from_trajectory, system_prompt
from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import ERROR_FLAGS, ActionSpec, RefinementSample, Script, Trajectory, Turn

TraceSink = str | os.PathLike | Callable[[RefinementSample], Any]


class RefineState(TypedDict, total=False):
    """The refine agent's state. Every key is ``refine_*`` so it can share a parent graph's state."""

    refine_task: str  # input in tool mode: the user's request
    refine_messages: Annotated[list[AnyMessage], add_messages]  # what the model sees
    refine_script: dict[str, Any]  # the task as a paper-format script (system prompt, rule checks, trace)
    refine_system: str  # the system prompt the model saw
    refine_turns: list[dict[str, Any]]  # paper-format turns recorded so far
    refine_pending: dict[str, Any]  # this step: thought, action, raw text, parse error
    refine_result: dict[str, Any]  # this step's execution: observation, done, progress, error, info
    refine_step: int  # model actions taken
    refine_retries: int  # consecutive erroneous steps
    refine_format_errors: int
    refine_invalid_actions: int
    refine_progress: float
    refine_success: bool
    refine_answer: str | None
    refine_stop_reason: str  # "done" | "max_steps" | "max_retries" | "episode_over"
    refine_sample: dict[str, Any] | None  # the episode as a RefinementSample row


class CriticVerdict(BaseModel):
    """What the LLM critic returns: the DM's three flags and one sentence of feedback."""

    parameter_error: bool = Field(False, description="the action's form or arguments are invalid")
    place_error: bool = Field(False, description="the action refers to something absent or unreachable")
    logic_error: bool = Field(False, description="valid, but makes no sense for the goal at this point")
    feedback: str = Field("", description="one sentence the agent can act on; empty if no error")


Critic = BaseChatModel | Callable[[dict[str, Any]], "CriticVerdict | Mapping[str, Any] | None"]


def is_transient(exc: BaseException) -> bool:
    """Model-call errors worth retrying: connection problems, timeouts, rate limits, 5xx."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = {"APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError",
                 "TransportError", "TimeoutException", "ServiceUnavailableError"}
    return bool(names & transient) or isinstance(exc, (ConnectionError, TimeoutError))


# ---------------------------------------------------------------------------------------------- tools


def _as_tools(tools: Sequence[Any] | None) -> list[BaseTool]:
    from langchain_core.tools import tool as to_tool

    return [t if isinstance(t, BaseTool) else to_tool(t) for t in (tools or [])]


def tools_script(tools: Sequence[BaseTool], task: str) -> Script:
    """A script for tool mode: each tool is an action ``name[{args}]``; ``finish[{answer}]`` completes."""
    actions: dict[str, ActionSpec] = {}
    for t in [*tools, None]:
        name = t.name if t is not None else "finish"
        slot = "args" if t is not None else "answer"
        description = (t.description or "").strip().splitlines()[0] if t is not None and t.description else (
            "give the final answer and end the task")
        # One capture group for the whole argument text: argument checking is the tool's own job.
        actions[f"{name}[{{{slot}}}]"] = ActionSpec(
            template=f"{name}[{{{slot}}}]", description=description,
            verification_code=rf"(?i)^\s*{re.escape(name)}\b\s*(.*?)\s*$", parameters={})
    environment = {"description": "A tool-using assistant. Tools: " + ", ".join(t.name for t in tools)}
    return Script(environment=environment, goal=task, completion_conditions=["The task is answered with finish[...]."],
                  available_actions=actions)


def _tools_system(tools: Sequence[BaseTool], task: str) -> str:
    lines = []
    for t in tools:
        props = (t.tool_call_schema.model_json_schema() if hasattr(t, "tool_call_schema") else {}).get("properties", {})
        args = ", ".join(props) if props else ""
        lines.append(prompts.REFINE_TOOL_LINE.format(name=t.name, args=args,
                                                     description=" ".join((t.description or "").split())))
    return prompts.REFINE_TOOLS_SYSTEM.format(task=task, actions="\n".join(lines))


def _run_tool(tools: Sequence[BaseTool], action: str) -> dict[str, Any]:
    from pydantic import ValidationError

    call = parse_tool_call(action, tools)
    if call.finish:
        answer = str(call.args.get("answer", "")).strip()
        return {"observation": "Task finished.", "done": True, "progress": 1.0, "error": None,
                "info": {"answer": answer}}
    if not call.known:
        names = ", ".join(t.name for t in tools)
        return {"observation": prompts.CHAT_UNKNOWN_TOOL.format(name=call.name, tools=names), "done": False,
                "error": "parameter_error", "info": {"tool": call.name}}
    tool = next(t for t in tools if t.name == call.name)
    try:
        output = tool.invoke(call.args)
    except (ValidationError, TypeError) as exc:  # wrong arguments: the form of the action is at fault
        return {"observation": prompts.REFINE_TOOL_ERROR.format(error=_short(exc)), "done": False,
                "error": "parameter_error", "info": {"tool": call.name, "args": call.args}}
    except Exception as exc:  # noqa: BLE001 - a failing tool is feedback for the model, not a crash
        return {"observation": prompts.REFINE_TOOL_ERROR.format(error=_short(exc)), "done": False,
                "error": "logic_error", "info": {"tool": call.name, "args": call.args}}
    text = output.content if hasattr(output, "content") else output
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False, default=str)
    return {"observation": text, "done": False, "error": None, "info": {"tool": call.name, "args": call.args}}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# ---------------------------------------------------------------------------------------------- factory


def create_refine_agent(
    model: BaseChatModel | Runnable,
    *,
    tools: Sequence[Any] | None = None,
    env: TextEnv | None = None,
    action_specs: Script | Mapping[str, ActionSpec | dict] | None = None,
    critic: Critic | None = None,
    max_retries: int | None = 3,
    max_steps: int = 30,
    trace_sink: TraceSink | None = None,
    rule_check: bool | None = None,
    feedback_to_model: bool = True,
    model_retry: RetryPolicy | None = None,
    teacher: str | None = None,
) -> StateGraph:
    """Build the refine agent (uncompiled ``StateGraph`` over :class:`RefineState`).

    Exactly one executor: ``env`` (a TextEnv; its script gives the system prompt and the action specs) or
    ``tools`` (LangChain tools or functions; input ``refine_task``). ``action_specs`` adds rule checks in
    tool mode (or replaces the env's). ``rule_check``: None (default) lets an engine's verdict decide and uses
    the rules to explain its rejections (without an engine the rules decide); True: a rule failure always
    flags the step (strict); False: no rule check. ``critic``: a chat model (structured output :class:`CriticVerdict`) or
    a callable ``f(step) -> CriticVerdict | dict | None``. ``max_retries``: consecutive erroneous steps
    allowed before giving up (None: no limit but ``max_steps``). ``feedback_to_model``: append the rule
    check / critic feedback to the observation. ``model_retry``: LangGraph retry policy for transient model
    errors (default 3 attempts on connection errors, timeouts, 429, 5xx).
    """
    if (env is None) == (tools is None):
        raise InputError("give exactly one executor: env=TextEnv(...) or tools=[...]", field="env/tools")
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}", field="max_steps")
    tool_list = _as_tools(tools)
    if tools is not None and not tool_list:
        raise InputError("tools is empty", field="tools")
    teacher = teacher or _model_name(model)
    structured_critic = critic.with_structured_output(CriticVerdict) if isinstance(critic, BaseChatModel) else None

    # -------------------------------------------------------------------------------- nodes

    def start(state: RefineState) -> dict[str, Any]:
        if env is not None:
            observation = env.reset()
            script = env.script()
            system = system_prompt(script)
        else:
            task = (state.get("refine_task") or "").strip() or _last_human(state.get("refine_messages") or [])
            if not task:
                raise InputError("the refine agent needs a task: set 'refine_task'", field="refine_task")
            script = tools_script(tool_list, task)
            system = _tools_system(tool_list, task)
            observation = task
        # Progress of the start state (PDDL counts goal facts already true), so an episode without one valid
        # step reports the same as one whose steps all failed.
        initial = float(getattr(env, "current_progress", lambda: 0.0)() or 0.0) if env is not None else 0.0
        old = [RemoveMessage(id=REMOVE_ALL_MESSAGES)] if state.get("refine_messages") else []
        return {
            "refine_messages": [*old, SystemMessage(system), HumanMessage(observation)],
            "refine_script": script.to_paper(),
            "refine_system": system,
            "refine_turns": [Turn(turn=0, role="DM", observation=observation).to_paper()],
            "refine_step": 0, "refine_retries": 0, "refine_format_errors": 0, "refine_invalid_actions": 0,
            "refine_progress": initial, "refine_success": False, "refine_answer": None, "refine_sample": None,
            "refine_pending": {}, "refine_result": {},
        }

    def act(state: RefineState, config: RunnableConfig) -> dict[str, Any]:
        reply = model.invoke(state["refine_messages"], config)
        text = _text(reply.content if isinstance(reply, BaseMessage) else reply)
        calls = getattr(reply, "tool_calls", None) or []
        if calls:  # a tool-calling model (or ours with tools bound): its first call is the action
            call = calls[0]
            parsed = parse_action(text)
            pending = {"thought": parsed.thought or text.strip() or None,
                       "action": format_tool_call(call["name"], call.get("args") or {}), "error": None, "raw": text}
        else:
            parsed = parse_action(text)
            pending = {"thought": parsed.thought, "action": parsed.action, "error": parsed.error, "raw": text}
        shown = format_assistant(pending["thought"], pending["action"]) if pending["error"] is None else text
        return {"refine_messages": [AIMessage(shown)], "refine_pending": pending,
                "refine_step": state.get("refine_step", 0) + 1}

    def execute(state: RefineState) -> dict[str, Any]:
        pending = state["refine_pending"]
        if pending.get("error"):
            result = {"observation": "", "done": False, "error": "parameter_error", "format_error": True}
        elif env is not None:
            r: StepResult = env.step(pending["action"])
            result = {"observation": r.observation, "done": bool(r.done), "progress": float(r.progress or 0.0),
                      "error": r.error, "info": _jsonable(r.info)}
        else:
            result = _run_tool(tool_list, pending["action"])
        return {"refine_result": result}

    def feedback(state: RefineState) -> Command[Literal["act", "finish"]]:
        pending, result = state["refine_pending"], state["refine_result"]
        script = Script.model_validate(state["refine_script"])
        flags = {flag: False for flag in ERROR_FLAGS}
        notes: list[str] = []
        format_error = bool(result.get("format_error"))
        invalid = False
        if result.get("error") in flags:
            flags[result["error"]] = True
        if format_error:
            notes.append(prompts.REFINE_FORMAT_ERROR.format(error=pending.get("error")))
        elif rule_check is not False and (action_specs is not None or env is not None):
            match = match_action(action_specs if action_specs is not None else script, pending["action"])
            # With an engine, its verdict is authoritative by default (engines fold case, know dynamic object
            # names): the rules then only explain a rejection. Strict mode (rule_check=True) or rules without
            # an engine flag the action themselves.
            engine_rejected = env is not None and result.get("error") is not None
            if not match.ok and (rule_check is True or env is None or engine_rejected):
                invalid = True
                flags["parameter_error"] = flags["parameter_error"] or not engine_rejected
                specs = action_specs if action_specs is not None else script.available_actions
                templates = ", ".join(specs.available_actions if isinstance(specs, Script) else specs)
                # An engine whose reply already says "Invalid action ..." (BabyAI, PDDL) has explained the
                # rejection: a second "Invalid action" note would repeat it in the same observation.
                if "invalid action" not in (result.get("observation") or "").lower():
                    notes.append(prompts.REFINE_INVALID_ACTION.format(message=match.message or "invalid",
                                                                      actions=templates))
        if result.get("error") == "parameter_error" and not format_error:
            invalid = True
        done = bool(result.get("done"))
        if critic is not None and not format_error:
            verdict = _ask_critic(critic, structured_critic, script, pending, result, config=None)
            if verdict is not None:
                for flag in ERROR_FLAGS:
                    flags[flag] = flags[flag] or bool(getattr(verdict, flag))
                if verdict.feedback and any(getattr(verdict, f) for f in ERROR_FLAGS):
                    notes.append(prompts.REFINE_CRITIC_FEEDBACK.format(feedback=verdict.feedback))
        erroneous = any(flags.values())
        if erroneous and env is None:
            done = False  # a flagged finish[...] (e.g. the critic rejects the answer) is refined, not accepted
        # (with an engine, its own `done` is authoritative: the task is complete whatever the checks say)
        observation = (result.get("observation") or "").strip()
        if notes and feedback_to_model:
            observation = "\n".join(x for x in (observation, *notes) if x)
        step = state.get("refine_step", 0)
        turns = list(state.get("refine_turns") or [])
        # A reply without an action is recorded with an empty action (it trains nothing: the turn is flagged).
        turns.append(Turn(turn=len(turns), role="Player", thought=pending.get("thought"),
                          action=pending.get("action") if not format_error else "").to_paper())
        turns.append(Turn(turn=len(turns), role="DM", observation=observation, task_completed=done, **flags).to_paper())
        retries = state.get("refine_retries", 0) + 1 if erroneous else 0
        progress = max(state.get("refine_progress", 0.0), float(result.get("progress") or 0.0))
        if done:
            progress = max(progress, 1.0) if env is None else progress
        update: dict[str, Any] = {
            "refine_turns": turns, "refine_retries": retries, "refine_progress": progress,
            "refine_format_errors": state.get("refine_format_errors", 0) + int(format_error),
            "refine_invalid_actions": state.get("refine_invalid_actions", 0) + int(invalid),
            "refine_success": done,
        }
        if done and env is None:
            update["refine_answer"] = (result.get("info") or {}).get("answer")
        _write({"refine_step": {"step": step, "thought": pending.get("thought"), "action": pending.get("action"),
                                "observation": observation, "flags": [f for f in ERROR_FLAGS if flags[f]],
                                "done": done, "progress": progress}})
        if done:
            return Command(update={**update, "refine_stop_reason": "done"}, goto="finish")
        if (result.get("info") or {}).get("episode_over"):
            # The engine ended the episode without success (e.g. a lost game): no further step can help.
            return Command(update={**update, "refine_stop_reason": "episode_over"}, goto="finish")
        if step >= max_steps:
            return Command(update={**update, "refine_stop_reason": "max_steps"}, goto="finish")
        if erroneous and max_retries is not None and retries > max_retries:
            return Command(update={**update, "refine_stop_reason": "max_retries"}, goto="finish")
        update["refine_messages"] = [HumanMessage(observation or "(no observation)")]
        return Command(update=update, goto="act")

    def finish(state: RefineState) -> dict[str, Any]:
        script = Script.model_validate(state["refine_script"])
        trajectory = Trajectory.model_validate(state.get("refine_turns") or [])
        if not any(t.is_player for t in trajectory.turns):
            return {"refine_sample": None}
        sample = sample_from_trajectory(
            script, trajectory, teacher=teacher, source="refine-agent",
            success=bool(state.get("refine_success")), progress=state.get("refine_progress", 0.0),
            stop_reason=state.get("refine_stop_reason"), env=getattr(env, "name", None) if env is not None else None,
        )
        if env is None and sample.messages and sample.messages[0].role == "system":
            sample.messages[0].content = state.get("refine_system") or sample.messages[0].content  # what it saw
        if trace_sink is not None:
            append_trace(trace_sink, sample)
        row = sample.to_dict()
        _write({"refine_trace": row})
        return {"refine_sample": row}

    graph = StateGraph(RefineState)
    graph.add_node("start", start)
    graph.add_node("act", act, retry_policy=model_retry or RetryPolicy(max_attempts=3, retry_on=is_transient))
    graph.add_node("execute", execute)
    graph.add_node("feedback", feedback, destinations=("act", "finish"))
    graph.add_node("finish", finish)
    graph.add_edge(START, "start")
    graph.add_edge("start", "act")
    graph.add_edge("act", "execute")
    graph.add_edge("execute", "feedback")
    graph.add_edge("finish", END)
    return graph


def _ask_critic(critic: Critic, structured: Runnable | None, script: Script, pending: dict, result: dict,
                config: RunnableConfig | None) -> CriticVerdict | None:
    step = {"task": system_prompt(script), "goal": script.goal, "thought": pending.get("thought") or "",
            "action": pending.get("action") or "", "observation": result.get("observation") or ""}
    if structured is not None:
        prompt = prompts.REFINE_CRITIC.format(task=script.goal, thought=step["thought"], action=step["action"],
                                              observation=step["observation"])
        out = structured.invoke([HumanMessage(prompt)], config)
    else:
        out = critic(step)  # type: ignore[operator]
    if out is None:
        return None
    return out if isinstance(out, CriticVerdict) else CriticVerdict.model_validate(dict(out))


def append_trace(sink: TraceSink, sample: RefinementSample) -> None:
    """Append one episode to a JSONL file (flushed and synced) or hand it to a callable sink."""
    if callable(sink):
        sink(sample)
        return
    path = Path(sink)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write(event: dict[str, Any]) -> None:
    try:
        get_stream_writer()(event)
    except RuntimeError:  # called outside a runnable context (a node run by hand in a test)
        pass


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


def _last_human(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return _text(message.content).strip()
    return ""


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def _model_name(model: Any) -> str | None:
    for attr in ("model_name", "model", "model_id"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    bound = getattr(model, "bound", None)
    return _model_name(bound) if bound is not None else None


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class EpisodeResult:
    """One episode of :func:`run_env_episode`."""

    turns: list[Turn]
    trajectory: Trajectory
    success: bool
    progress: float  # max over steps of StepResult.progress
    steps: int  # model actions taken (erroneous ones included)
    messages: list[BaseMessage]
    sample: RefinementSample | None
    format_errors: int
    invalid_actions: int
    stop_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def run_env_episode(model: BaseChatModel | Runnable, env: TextEnv, *, max_steps: int = 30,
                    config: RunnableConfig | None = None, **kw: Any) -> EpisodeResult:
    """Run the refine agent for one episode of ``env`` (reset included); ends within ``max_steps`` actions.

    ``kw`` goes to :func:`create_refine_agent`; by default there is no retry limit below ``max_steps``
    (decision 6: an episode runs until done or 30 steps).
    """
    kw.setdefault("max_retries", None)
    graph = create_refine_agent(model, env=env, max_steps=max_steps, **kw).compile()
    run_config: dict[str, Any] = {"recursion_limit": 4 * max_steps + 20, **(config or {})}
    out = graph.invoke({"refine_step": 0}, run_config)
    trajectory = Trajectory.model_validate(out.get("refine_turns") or [])
    sample = RefinementSample.model_validate(out["refine_sample"]) if out.get("refine_sample") else None
    return EpisodeResult(
        turns=list(trajectory.turns), trajectory=trajectory, success=bool(out.get("refine_success")),
        progress=float(out.get("refine_progress") or 0.0), steps=int(out.get("refine_step") or 0),
        messages=list(out.get("refine_messages") or []), sample=sample,
        format_errors=int(out.get("refine_format_errors") or 0),
        invalid_actions=int(out.get("refine_invalid_actions") or 0),
        stop_reason=str(out.get("refine_stop_reason") or ""),
    )


__all__ = [
    "CriticVerdict",
    "EpisodeResult",
    "RefineState",
    "append_trace",
    "create_refine_agent",
    "is_transient",
    "run_env_episode",
    "tools_script",
]
