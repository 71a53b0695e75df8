"""The inference-time refine agent: act -> execute -> feedback -> (refine | next call | next step | end).

``create_refine_agent`` builds the loop AgentRefine trains for (Figure 4, docs/method.md §2): our tuned model
(or one declared ``text_protocol=True``) answers ``Thought/Action``; any other model is a tool-calling model,
its tools bound, its reply without a tool call its final answer. Each action runs against an executor — a
:class:`~agentrefine_lg.env.TextEnv` engine or LangChain tools (through LangGraph's ``ToolNode``, so async and
MCP tools, injected state/runtime, ``Command`` handoffs and ``interrupt()`` all work); the ``feedback`` node
plays the DM (:mod:`agentrefine_lg.refine_feedback`, shared with the ``create_agent`` middleware): it sets
the three error flags from the executor's verdict, the rule check
(:func:`agentrefine_lg.checks.match_action`), an unparsable reply (a format error is a ``parameter_error``)
and an optional LLM critic. An erroneous step goes back to ``act`` with the feedback in the observation (a
refinement) while retries are left; completion, the step budget or the retry budget ends the episode.

**In a user's app** the agent speaks ``messages``: it reads its task from ``refine_task`` or else the last
human message, and appends its final answer (an ``AIMessage`` named after the agent) to ``messages``. Its
working keys are private: the graph declares :class:`RefineInput` and :class:`RefineOutput`, so Studio's form
shows the task, a parent ``MessagesState`` app, ``create_supervisor`` and ``create_swarm`` take it as an
agent, and two agents fanned out with ``Send`` do not collide. Every node has a sync and an async form:
``invoke`` calls the model and tools with ``invoke``, ``ainvoke``/``astream`` with ``ainvoke`` and runs
blocking work (engines, the trace file) off the event loop.

**Traces are training data.** Every episode is recorded in our schema — Player turns (thought, action), DM
turns (observation, flags, ``task_completed``) — as a :class:`~agentrefine_lg.schema.RefinementSample` whose
``check`` settings say how ``agentrefine check`` verifies a recorded (not synthesized) episode: the executor
is the DM and is authoritative, no minimum of error->refine pairs, completion not required. It is emitted on
the custom stream (``{"refine_trace": row}``; each step also emits ``{"refine_step": ...}``) and appended to a
JSONL sink that ``agentrefine check``, ``agentrefine convert`` and ``python -m training.sft --data`` read as is.

``run_env_episode`` runs one evaluation episode on a TextEnv: the harness measures exactly what users deploy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, RunnableLambda
from langchain_core.tools import BaseTool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import REMOVE_ALL_MESSAGES, add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Command, RetryPolicy
from typing_extensions import TypedDict

from agentrefine_lg import prompts
from agentrefine_lg.agent_format import content_text
from agentrefine_lg.convert import format_assistant, system_prompt
from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.failures import is_context_overflow, is_transient_error
from agentrefine_lg.named_graph import NamedStateGraph, check_state_schema, with_user_keys
from agentrefine_lg.refine_feedback import (
    TRACE_CHECK,
    Critic,
    CriticVerdict,
    RefineOptions,
    TraceSink,
    aappend_trace,
    aask_critic,
    append_trace,
    ask_critic,
    critic_step,
    episode_sample,
    jsonable,
    judge,
    model_name,
    thought_of,
    tool_failure,
    tools_script,
    write_event,
)
from agentrefine_lg.schema import ERROR_FLAGS, ActionSpec, RefinementSample, Script, Trajectory, Turn
from agentrefine_lg.serving.chat_model import (
    FINISH_NAMES,
    format_tool_call,
    parse_action,
    parse_tool_call,
    speaks_thought_action,
    tools_system_prompt,
)

MAX_STEPS = 30
"""Model replies per episode by default: AgentBoard's budget, which the paper evaluates with (docs/method.md §6)."""

MAX_RECORDED_REPLY = 2000
"""A reply without an action is recorded (as the erroneous turn's action) up to this many characters."""


# ---------------------------------------------------------------------------------------------- state


class _Messages(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]  # the user's conversation (shared with a parent app)


class RefineInput(_Messages, total=False):
    """What the agent reads: ``refine_task`` if given, else the last human message of ``messages``."""

    refine_task: str | None


class RefineOutput(_Messages, total=False):
    """What the agent returns: its final answer appended to ``messages``, and the episode's outcome."""

    refine_answer: str | None
    refine_success: bool
    refine_progress: float
    refine_stop_reason: str  # "done" | "max_steps" | "max_retries" | "episode_over" | "context_full"
    refine_stats: dict[str, int]  # steps, format_errors, invalid_actions, tool_calls
    refine_sample: dict[str, Any] | None  # the episode as a RefinementSample row (the trace)


class RefineState(RefineInput, RefineOutput, total=False):
    """The whole state; the ``refine_*`` working keys below stay inside the agent."""

    refine_messages: Annotated[list[AnyMessage], add_messages]  # what the model sees
    refine_script: dict[str, Any]  # the task as a paper-format script (system prompt, rule checks, trace)
    refine_system: str  # the system prompt the model saw
    refine_tool_calling: bool  # the model returned a tool call in this episode: a plain reply is its answer
    refine_turns: list[dict[str, Any]]  # paper-format turns recorded so far
    refine_queue: list[dict[str, Any]]  # this step's actions still to run (a parallel batch runs in order)
    refine_result: dict[str, Any]  # the first queued action's execution: observation, done, error, info
    refine_step: int  # model replies so far
    refine_retries: int  # consecutive erroneous actions
    refine_format_errors: int
    refine_invalid_actions: int
    refine_tool_calls: int


# ---------------------------------------------------------------------------------------------- tools


def _as_tools(tools: Sequence[Any] | None) -> list[BaseTool]:
    from langchain_core.tools import tool as to_tool

    return [t if isinstance(t, BaseTool) else to_tool(t) for t in (tools or [])]


def _last_human(messages: Sequence[BaseMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return content_text(message.content).strip()
    return ""


def _binds_tools(model: Any) -> bool:
    """Does the model's binding carry tools (``bind_tools`` through a ``RunnableBinding``)?"""
    while isinstance(model, RunnableBinding):
        if model.kwargs.get("tools"):
            return True
        model = model.bound
    return False


def _with_tools(model: BaseChatModel | Runnable, tools: Sequence[BaseTool]) -> BaseChatModel | Runnable:
    """A tool-calling model with ``tools`` bound (as ``create_agent`` binds them), unless they already are."""
    if _binds_tools(model) or not hasattr(model, "bind_tools"):
        return model  # bound already, or a plain runnable that answers by itself
    try:
        return model.bind_tools(tools)  # type: ignore[union-attr]
    except NotImplementedError as exc:
        raise InputError(f"{type(model).__name__} cannot bind tools: pass text_protocol=True if it answers "
                         "'Thought: ...\\nAction: ...' text, or give a tool-calling chat model",
                         field="model") from exc


# ---------------------------------------------------------------------------------------------- nodes


class RefineNodes:
    """The refine agent's nodes over :class:`RefineState`, each a plain method with a sync and an async form.

    ``start`` / ``act`` / ``execute`` / ``feedback`` / ``finish`` (sync) and ``astart`` ... ``afinish`` (async)
    share their logic; only the I/O differs (``invoke`` vs ``ainvoke``, blocking work in a thread).
    """

    def __init__(
        self,
        model: BaseChatModel | Runnable,
        *,
        options: RefineOptions = RefineOptions(),
        tools: Sequence[BaseTool] = (),
        env: TextEnv | None = None,
        max_steps: int = MAX_STEPS,
        teacher: str | None = None,
        text_protocol: bool | None = None,
        name: str = "refine_agent",
    ):
        self.env, self.tools, self.options, self.max_steps = env, list(tools), options, max_steps
        self.teacher = teacher or model_name(model)
        self.name = name
        self.tool_names = {t.name for t in self.tools}
        # handle_tool_errors=False: we classify each failure ourselves (parameter vs logic error vs a bug).
        self.tool_node = ToolNode(self.tools, handle_tool_errors=False) if self.tools else None
        # Only our tuned models (or one the user declares) answer Thought/Action text; any other model speaks
        # tool calls, so its reply without one is its final answer — not a malformed action.
        self.text_protocol = speaks_thought_action(model) if text_protocol is None else bool(text_protocol)
        self.tool_calling = env is None and (_binds_tools(model) or not self.text_protocol)
        self.model = _with_tools(model, self.tools) if self.tool_calling and not self.text_protocol else model
        self.structured_critic = options.structured_critic  # bound once

    # -- start ---------------------------------------------------------------------------------------

    def _env_begin(self) -> tuple[str, Script, float]:
        observation = self.env.reset()  # type: ignore[union-attr]
        # Progress of the start state (PDDL counts goal facts already true), so an episode without one valid
        # step reports the same as one whose steps all failed.
        initial = float(getattr(self.env, "current_progress", lambda: 0.0)() or 0.0)
        return observation, self.env.script(), initial  # type: ignore[union-attr]

    def _begin(self, state: RefineState, begun: tuple[str, Script, float] | None) -> dict[str, Any]:
        if begun is not None:
            observation, script, initial = begun
            system = system_prompt(script)
        else:
            task = (state.get("refine_task") or "").strip() or _last_human(state.get("messages") or [])
            if not task:
                raise InputError("the refine agent needs a task: a human message in 'messages' or 'refine_task'",
                                 field="refine_task")
            script, observation, initial = tools_script(self.tools, task), task, 0.0
            # A tool-calling model gets its tools as schemas, not the Thought/Action format it was never asked for.
            system = (tools_system_prompt(self.tools, task) if self.text_protocol
                      else prompts.REFINE_TOOL_CALLING_SYSTEM.format(task=task))
        old = [RemoveMessage(id=REMOVE_ALL_MESSAGES)] if state.get("refine_messages") else []
        opening = Turn(turn=0, role="DM", observation=observation, parameter_error=False, place_error=False,
                       logic_error=False, task_completed=False)
        return {
            "refine_messages": [*old, SystemMessage(system), HumanMessage(observation)],
            "refine_script": script.to_paper(), "refine_system": system,
            "refine_turns": [opening.to_paper()], "refine_queue": [], "refine_result": {}, "refine_tool_calling": False,
            "refine_step": 0, "refine_retries": 0, "refine_format_errors": 0, "refine_invalid_actions": 0,
            "refine_tool_calls": 0, "refine_progress": initial, "refine_success": False, "refine_answer": None,
            "refine_sample": None, "refine_stop_reason": "", "refine_stats": {},
        }

    def start(self, state: RefineState) -> dict[str, Any]:
        return self._begin(state, self._env_begin() if self.env is not None else None)

    async def astart(self, state: RefineState) -> dict[str, Any]:
        begun = await asyncio.to_thread(self._env_begin) if self.env is not None else None
        return self._begin(state, begun)

    # -- act -----------------------------------------------------------------------------------------

    def _final(self, thought: str | None, answer: str, raw: str) -> dict[str, Any]:
        return {"thought": thought, "action": format_tool_call("finish", {"answer": answer}), "final": answer,
                "raw": raw, "via": "text"}

    def _queue(self, reply: BaseMessage, called_tools: bool) -> tuple[list[dict[str, Any]], BaseMessage]:
        """The actions of one reply, in order, and the message to keep in the model's history.

        ``called_tools``: the model returned a tool call earlier in this episode (it speaks tool calls).
        """
        text = content_text(reply.content)
        calls = list(getattr(reply, "tool_calls", None) or [])
        thought = thought_of(reply, text)
        tool_mode = self.env is None
        if calls and tool_mode:
            calls = [{**c, "id": c.get("id") or f"call_{uuid.uuid4().hex[:24]}"} for c in calls]
            items = []
            for call in calls:
                args = dict(call.get("args") or {})
                if call["name"].lower() in FINISH_NAMES and call["name"] not in self.tool_names:
                    answer = str(args.get("answer", next(iter(args.values()), "")) if args else "").strip()
                    items.append({**self._final(thought, answer, text), "via": "tool_call", "call": call})
                else:
                    # Every call of a batch carries the reply's thought: each becomes one trained turn.
                    items.append({"thought": thought, "action": format_tool_call(call["name"], args), "call": call,
                                  "raw": text, "via": "tool_call"})
            kept = AIMessage(content=reply.content, tool_calls=calls, id=reply.id,
                             response_metadata=getattr(reply, "response_metadata", {}) or {})
            return items, kept
        meta = (getattr(reply, "response_metadata", None) or {}).get("agentrefine") or {}
        if tool_mode and meta.get("finish"):  # our tuned chat model already read finish[...] / Final Answer:
            return [self._final(thought, text.strip(), meta.get("raw") or text)], AIMessage(meta.get("raw") or text)
        if tool_mode and (self.tool_calling or called_tools):
            if text.strip():  # a tool-calling model that answers without a tool call has given its final answer
                return [self._final(thought, text.strip(), text)], AIMessage(text)
            return [{"thought": thought, "action": None, "error": "empty reply", "raw": text, "via": "text",
                     "format_feedback": prompts.REFINE_EMPTY_REPLY}], AIMessage("(empty reply)")
        parsed = parse_action(text)
        if parsed.ok:
            item: dict[str, Any] = {"thought": parsed.thought, "action": parsed.action, "raw": text, "via": "text"}
            if tool_mode:
                call = parse_tool_call(parsed.action or "", self.tools)
                if call.finish:
                    item = self._final(parsed.thought, str(call.args.get("answer", "")).strip(), text)
                else:
                    item["call"] = {"name": call.name, "args": call.args, "id": f"call_{uuid.uuid4().hex[:24]}",
                                    "type": "tool_call"}
                    item["action"] = parsed.action
            return [item], AIMessage(format_assistant(item["thought"], item["action"]))
        return [{"thought": parsed.thought, "action": None, "error": parsed.error, "raw": text, "via": "text"}], \
            AIMessage(text or "(empty reply)")

    def _after_reply(self, state: RefineState, reply: Any) -> Command:
        if not isinstance(reply, BaseMessage):
            reply = AIMessage(content_text(reply))
        called = bool(state.get("refine_tool_calling")) or bool(getattr(reply, "tool_calls", None))
        queue, kept = self._queue(reply, called)
        return Command(goto="execute", update={"refine_messages": [kept], "refine_queue": queue,
                                               "refine_step": state.get("refine_step", 0) + 1,
                                               "refine_tool_calling": called})

    @staticmethod
    def _context_full(exc: Exception) -> Command:
        if not is_context_overflow(exc):
            raise exc
        # The conversation no longer fits the model's context: the episode ends here (its trace is kept),
        # as it would for a human whose notes ran out; retrying the same prompt cannot help.
        write_event({"refine_context_full": str(exc)[:300]})
        return Command(goto="finish", update={"refine_stop_reason": "context_full"})

    def act(self, state: RefineState, config: RunnableConfig) -> Command:
        try:
            reply = self.model.invoke(state["refine_messages"], config)
        except Exception as exc:  # noqa: BLE001 - only a context overflow is handled; the rest is raised again
            return self._context_full(exc)
        return self._after_reply(state, reply)

    async def aact(self, state: RefineState, config: RunnableConfig) -> Command:
        try:
            reply = await self.model.ainvoke(state["refine_messages"], config)
        except Exception as exc:  # noqa: BLE001 - only a context overflow is handled; the rest is raised again
            return self._context_full(exc)
        return self._after_reply(state, reply)

    # -- execute -------------------------------------------------------------------------------------

    def _precheck(self, item: dict[str, Any]) -> dict[str, Any] | None:
        """Results that need no executor: a format error, a final answer, a call of an unknown tool."""
        if item.get("action") is None:
            return {"observation": "", "done": False, "error": "parameter_error", "format_error": True}
        if "final" in item and self.env is None:
            return {"observation": "Task finished.", "done": True, "progress": 1.0, "error": None,
                    "info": {"answer": item["final"]}}
        call = item.get("call")
        if self.env is None and call is not None and call["name"] not in self.tool_names:
            names = ", ".join(sorted(self.tool_names))
            return {"observation": prompts.CHAT_UNKNOWN_TOOL.format(name=call["name"], tools=names), "done": False,
                    "error": "parameter_error", "info": {"tool": call["name"]}}
        return None

    def _env_step(self, action: str) -> dict[str, Any]:
        r: StepResult = self.env.step(action)  # type: ignore[union-attr]
        return {"observation": r.observation, "done": bool(r.done), "progress": float(r.progress or 0.0),
                "error": r.error, "info": jsonable(r.info)}

    def _tool_input(self, state: RefineState, call: dict[str, Any]) -> dict[str, Any]:
        # Tools with InjectedState see the app's keys and its messages ending in this call (a swarm handoff
        # tool forwards exactly that to the next agent).
        public = {k: v for k, v in state.items() if not k.startswith("refine_")}
        calling = AIMessage(content="", tool_calls=[call], name=self.name)
        return {**public, "messages": [*(state.get("messages") or []), calling]}

    def _tool_result(self, call: dict[str, Any], output: Any) -> dict[str, Any] | Command:
        messages: list[Any] = []
        if isinstance(output, list):  # tools that returned Commands
            for item in output:
                if isinstance(item, Command):
                    if item.graph == Command.PARENT:
                        return item  # a handoff (swarm, supervisor): the parent graph takes over
                    update = item.update if isinstance(item.update, dict) else {}
                    messages.extend(update.get("messages") or [])
                else:
                    messages.extend(item if isinstance(item, list) else [item])
        elif isinstance(output, dict):
            messages = list(output.get("messages") or [])
        answer = next((m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == call["id"]), None)
        content = answer.content if answer is not None else ""
        text = content if isinstance(content, str) else (
            content_text(content) if isinstance(content, list) else json.dumps(content, ensure_ascii=False, default=str))
        error = "logic_error" if answer is not None and answer.status == "error" else None
        return {"observation": text, "done": False, "error": error,
                "info": {"tool": call["name"], "args": jsonable(call.get("args") or {})}}

    def execute(self, state: RefineState, config: RunnableConfig) -> dict[str, Any] | Command:
        item = state["refine_queue"][0]
        result = self._precheck(item)
        if result is None and self.env is not None:
            result = self._env_step(item["action"])
        elif result is None:
            call = item["call"]
            try:
                output = self.tool_node.invoke(self._tool_input(state, call), config)  # type: ignore[union-attr]
            except NotImplementedError as exc:
                raise RuntimeError(f"tool {call['name']!r} cannot run synchronously ({exc}): async tools (MCP tools "
                                   "among them) need the async API — use `await graph.ainvoke(...)` or "
                                   "`graph.astream(...)`") from exc
            except Exception as exc:  # noqa: BLE001 - classified: feedback, or raised again
                result = tool_failure(call, exc)
            else:
                result = self._tool_result(call, output)
        return result if isinstance(result, Command) else {"refine_result": result}

    async def aexecute(self, state: RefineState, config: RunnableConfig) -> dict[str, Any] | Command:
        item = state["refine_queue"][0]
        result = self._precheck(item)
        if result is None and self.env is not None:
            result = await asyncio.to_thread(self._env_step, item["action"])  # engines block (JVM, files)
        elif result is None:
            call = item["call"]
            try:
                output = await self.tool_node.ainvoke(self._tool_input(state, call), config)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - classified: feedback, or raised again
                result = tool_failure(call, exc)
            else:
                result = self._tool_result(call, output)
        return result if isinstance(result, Command) else {"refine_result": result}

    # -- feedback ------------------------------------------------------------------------------------

    def _critic_step(self, state: RefineState) -> dict[str, Any] | None:
        item, result = state["refine_queue"][0], state["refine_result"]
        if self.options.critic is None or result.get("format_error"):
            return None
        return critic_step(Script.model_validate(state["refine_script"]), item, result)

    def feedback(self, state: RefineState, config: RunnableConfig) -> Command:
        step = self._critic_step(state)
        critic = self.options.critic
        verdict = ask_critic(critic, self.structured_critic, step, config) if step is not None else None
        return self._judge(state, verdict)

    async def afeedback(self, state: RefineState, config: RunnableConfig) -> Command:
        step = self._critic_step(state)
        critic = self.options.critic
        verdict = await aask_critic(critic, self.structured_critic, step, config) if step is not None else None
        return self._judge(state, verdict)

    def _judge(self, state: RefineState, verdict: CriticVerdict | None) -> Command:
        """The DM's verdict on the first queued action; records its turns and routes."""
        queue = list(state.get("refine_queue") or [])
        item, result = queue.pop(0), state["refine_result"]
        env = self.env
        verdict_ = judge(item, result, script=Script.model_validate(state["refine_script"]),
                         action_specs=self.options.action_specs, engine=env is not None,
                         rule_check=self.options.rule_check, verdict=verdict,
                         feedback_to_model=self.options.feedback_to_model)
        flags, observation, done = verdict_.flags, verdict_.observation, verdict_.done
        format_error, invalid, erroneous = verdict_.format_error, verdict_.invalid, verdict_.erroneous
        step = state.get("refine_step", 0)
        turns = list(state.get("refine_turns") or [])
        # A reply without an action is recorded with its text as the action: the DM flags it, so it trains nothing.
        action = item.get("action") if not format_error else (" ".join((item.get("raw") or "").split())
                                                              [:MAX_RECORDED_REPLY] or "(empty reply)")
        player = Turn(turn=len(turns), role="Player", thought=item.get("thought"), action=action).to_paper()
        if format_error:
            player["format_error"] = True  # evaluation counts format errors apart from invalid actions
        turns.append(player)
        turns.append(Turn(turn=len(turns), role="DM", observation=observation, task_completed=done, **flags).to_paper())
        retries = state.get("refine_retries", 0) + 1 if erroneous else 0
        progress = max(state.get("refine_progress", 0.0), float(result.get("progress") or 0.0))
        if done and env is None:
            progress = max(progress, 1.0)
        answer_message: BaseMessage = (
            ToolMessage(observation, tool_call_id=item["call"]["id"], name=item["call"]["name"])
            if item.get("via") == "tool_call" else HumanMessage(observation))
        update: dict[str, Any] = {
            "refine_turns": turns, "refine_retries": retries, "refine_progress": progress, "refine_queue": queue,
            "refine_format_errors": state.get("refine_format_errors", 0) + int(format_error),
            "refine_invalid_actions": state.get("refine_invalid_actions", 0) + int(invalid),
            "refine_tool_calls": state.get("refine_tool_calls", 0) + int("call" in item and "final" not in item),
            "refine_success": done, "refine_messages": [answer_message],
        }
        if done and env is None:
            update["refine_answer"] = (result.get("info") or {}).get("answer")
        write_event({"refine_step": {"step": step, "thought": item.get("thought"), "action": action,
                                "observation": observation, "flags": [f for f in ERROR_FLAGS if flags[f]],
                                "done": done, "progress": progress}})
        if done:
            return Command(update={**update, "refine_stop_reason": "done"}, goto="finish")
        if (result.get("info") or {}).get("episode_over"):
            # The engine ended the episode without success (e.g. a lost game): no further step can help.
            return Command(update={**update, "refine_stop_reason": "episode_over"}, goto="finish")
        if erroneous and self.options.max_retries is not None and retries > self.options.max_retries:
            return Command(update={**update, "refine_stop_reason": "max_retries"}, goto="finish")
        if queue:  # the rest of a parallel batch, in order, each with its own feedback
            return Command(update=update, goto="execute")
        if step >= self.max_steps:
            return Command(update={**update, "refine_stop_reason": "max_steps"}, goto="finish")
        return Command(update=update, goto="act")

    # -- finish --------------------------------------------------------------------------------------

    def _sample(self, state: RefineState) -> RefinementSample | None:
        script = Script.model_validate(state["refine_script"])
        env = self.env
        # Tool mode trains on the tools in the trained format (what a text-protocol model saw; a tool-calling
        # model's turns are recorded as Thought/Action too, so its trace trains a tuned model alike).
        system = tools_system_prompt(self.tools, script.goal) if env is None else None
        return episode_sample(
            script, state.get("refine_turns") or [], system=system, teacher=self.teacher,
            success=bool(state.get("refine_success")), progress=state.get("refine_progress", 0.0),
            stop_reason=state.get("refine_stop_reason"), env=getattr(env, "name", None) if env is not None else None,
            agent=self.name,
        )

    def _outcome(self, state: RefineState, sample: RefinementSample | None) -> dict[str, Any]:
        steps = int(state.get("refine_step", 0))
        success, reason = bool(state.get("refine_success")), state.get("refine_stop_reason") or ""
        progress = float(state.get("refine_progress", 0.0))
        answer = state.get("refine_answer")
        if self.env is not None:
            text = prompts.REFINE_ENV_DONE.format(outcome="success" if success else f"not solved ({reason})",
                                                  steps=steps, progress=progress)
        elif success:
            text = answer or ""
        else:
            text = prompts.REFINE_STOPPED.format(reason=reason, steps=steps)
        stats = {"steps": steps, "format_errors": int(state.get("refine_format_errors", 0)),
                 "invalid_actions": int(state.get("refine_invalid_actions", 0)),
                 "tool_calls": int(state.get("refine_tool_calls", 0))}
        meta = {"success": success, "stop_reason": reason, "progress": progress, **stats,
                "sample_id": sample.id if sample is not None else None}
        row = sample.to_dict() if sample is not None else None
        if row is not None:
            write_event({"refine_trace": row})
        return {
            "messages": [AIMessage(text, name=self.name, response_metadata={"agentrefine": meta})],
            "refine_sample": row, "refine_stats": stats, "refine_task": None,  # a reused thread starts afresh
        }

    def finish(self, state: RefineState) -> dict[str, Any]:
        sample = self._sample(state)
        if sample is not None and self.options.trace_sink is not None:
            append_trace(self.options.trace_sink, sample)
        return self._outcome(state, sample)

    async def afinish(self, state: RefineState) -> dict[str, Any]:
        sample = self._sample(state)
        if sample is not None and self.options.trace_sink is not None:
            await aappend_trace(self.options.trace_sink, sample)
        return self._outcome(state, sample)


# ---------------------------------------------------------------------------------------------- factory


def create_refine_agent(
    model: BaseChatModel | Runnable,
    *,
    tools: Sequence[Any] | None = None,
    env: TextEnv | None = None,
    action_specs: Script | Mapping[str, ActionSpec | dict] | None = None,
    critic: Critic | None = None,
    max_retries: int | None = 3,
    max_steps: int = MAX_STEPS,
    trace_sink: TraceSink | None = None,
    rule_check: bool | None = None,
    feedback_to_model: bool = True,
    model_retry: RetryPolicy | None = None,
    teacher: str | None = None,
    text_protocol: bool | None = None,
    state_schema: type | None = None,
    context_schema: type | None = None,
    name: str = "refine_agent",
) -> StateGraph:
    """Build the refine agent: an uncompiled ``StateGraph`` (``compile()`` names it ``name``).

    Exactly one executor: ``env`` (a TextEnv; its script gives the system prompt and the action specs) or
    ``tools`` (LangChain tools or functions, sync or async; run through LangGraph's ``ToolNode``). The task is
    ``refine_task`` or the last human message of ``messages``; the final answer is appended to ``messages``.
    ``action_specs`` adds rule checks in tool mode (or replaces the env's). ``rule_check``: None (default)
    lets an engine's verdict decide and uses the rules to explain its rejections (without an engine the rules
    decide); True: a rule failure always flags the step (strict); False: no rule check. ``critic``: a chat
    model (structured output :class:`CriticVerdict`) or a callable ``f(step) -> CriticVerdict | dict | None``
    (may be async). ``max_retries``: consecutive erroneous actions allowed before giving up (None: no limit
    but ``max_steps``, the number of model replies). ``feedback_to_model``: append the rule check / critic
    feedback to the observation. ``model_retry``: retry policy for transient model errors (default 3
    attempts on connection errors, timeouts, 429, 5xx). ``text_protocol``: the model answers ``Thought/Action``
    text (default: only our tuned models do, :func:`~agentrefine_lg.serving.chat_model.speaks_thought_action`); any
    other model is a tool-calling model — the tools are bound to it if they are not, and its reply without a
    tool call is its final answer (so is any such reply once it has called a tool). ``state_schema`` (extending :class:`RefineState`) and
    ``context_schema`` as in langgraph-supervisor: tools see them through ``InjectedState`` / ``ToolRuntime``.
    """
    if (env is None) == (tools is None):
        raise InputError("give exactly one executor: env=TextEnv(...) or tools=[...]", field="env/tools")
    if max_steps < 1:
        raise InputError(f"max_steps must be >= 1, got {max_steps}", field="max_steps")
    tool_list = _as_tools(tools)
    if tools is not None and not tool_list:
        raise InputError("tools is empty", field="tools")
    if state_schema is not None:
        check_state_schema(state_schema, RefineState, "create_refine_agent")
    options = RefineOptions(critic=critic, max_retries=max_retries, trace_sink=trace_sink, action_specs=action_specs,
                            rule_check=rule_check, feedback_to_model=feedback_to_model)
    nodes = RefineNodes(model, options=options, tools=tool_list, env=env, max_steps=max_steps, teacher=teacher,
                        text_protocol=text_protocol, name=name)

    def node(sync: Callable, asynchronous: Callable, label: str) -> Runnable:
        return RunnableLambda(sync, afunc=asynchronous, name=label)

    graph = NamedStateGraph(state_schema or RefineState, context_schema,
                            input_schema=with_user_keys(RefineInput, state_schema, RefineState),
                            output_schema=with_user_keys(RefineOutput, state_schema, RefineState), name=name)
    graph.add_node("start", node(nodes.start, nodes.astart, "start"))
    graph.add_node("act", node(nodes.act, nodes.aact, "act"), destinations=("execute", "finish"),
                   retry_policy=model_retry or RetryPolicy(max_attempts=3, retry_on=is_transient_error))
    graph.add_node("execute", node(nodes.execute, nodes.aexecute, "execute"))
    graph.add_node("feedback", node(nodes.feedback, nodes.afeedback, "feedback"),
                   destinations=("execute", "act", "finish"))
    graph.add_node("finish", node(nodes.finish, nodes.afinish, "finish"))
    graph.add_edge(START, "start")
    graph.add_edge("start", "act")
    graph.add_edge("execute", "feedback")
    graph.add_edge("finish", END)
    return graph


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


_ROLE_MESSAGE = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}


def run_env_episode(model: BaseChatModel | Runnable, env: TextEnv, *, max_steps: int = MAX_STEPS,
                    config: RunnableConfig | None = None, **kw: Any) -> EpisodeResult:
    """Run the refine agent for one episode of ``env`` (reset included); ends within ``max_steps`` actions.

    ``kw`` goes to :func:`create_refine_agent`; by default there is no retry limit below ``max_steps``
    (docs/method.md §6: an episode runs until done or 30 steps).
    """
    kw.setdefault("max_retries", None)
    graph = create_refine_agent(model, env=env, max_steps=max_steps, **kw).compile()
    run_config: dict[str, Any] = {"recursion_limit": 4 * max_steps + 20, **(config or {})}
    out = graph.invoke({}, run_config)
    sample = RefinementSample.model_validate(out["refine_sample"]) if out.get("refine_sample") else None
    trajectory = sample.trajectory if sample is not None and sample.trajectory is not None else Trajectory(turns=[])
    stats = out.get("refine_stats") or {}
    messages = [_ROLE_MESSAGE[m.role](m.content) for m in (sample.messages if sample is not None else [])]
    return EpisodeResult(
        turns=list(trajectory.turns), trajectory=trajectory, success=bool(out.get("refine_success")),
        progress=float(out.get("refine_progress") or 0.0), steps=int(stats.get("steps") or 0),
        messages=messages, sample=sample, format_errors=int(stats.get("format_errors") or 0),
        invalid_actions=int(stats.get("invalid_actions") or 0), stop_reason=str(out.get("refine_stop_reason") or ""),
    )


__all__ = [
    "MAX_STEPS",
    "TRACE_CHECK",
    "CriticVerdict",
    "EpisodeResult",
    "RefineInput",
    "RefineNodes",
    "RefineOutput",
    "RefineState",
    "append_trace",
    "create_refine_agent",
    "run_env_episode",
    "tools_script",
]
