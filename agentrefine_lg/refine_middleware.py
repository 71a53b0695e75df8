"""The refinement loop as LangChain 1.x ``create_agent`` middleware: :class:`RefineMiddleware`.

For a user whose agent is already ``langchain.agents.create_agent(model, tools, middleware=[...])``: adding
``RefineMiddleware()`` gives it the refine agent's DM (:mod:`agentrefine_lg.refine_feedback`, the same code):

- **wrap_tool_call**: every tool call is judged. A tool that raises (other than an interrupt, a handoff, a bug
  or a configuration error, which are raised again) becomes an error ``ToolMessage`` the model can refine on
  — a ``logic_error``; invalid arguments or an unknown tool are a ``parameter_error``; a call that repeats the
  previous, successful one is not run again and is a ``logic_error``. The optional critic judges the rest.
  The flags ride on the ``ToolMessage`` (``response_metadata["agentrefine"]``), so the episode is its messages:
  nothing is kept in the middleware, and checkpointed threads and concurrent runs need no care.
- **before_model**: more than ``max_retries`` erroneous calls in a row end the run with a closing
  ``AIMessage`` (the refine agent's ``REFINE_STOPPED`` text, ``stop_reason`` ``max_retries``).
- **wrap_model_call**: records the tools the model was offered and its name (for the trace).
- **after_agent**: writes the episode — the messages since the last human message — as a
  :class:`~agentrefine_lg.schema.RefinementSample` in the refine agent's trace format (Player turns
  ``Thought/Action``, DM turns with the flags, erroneous turns ``train: false``): to ``trace_sink``, to the
  custom stream (``{"refine_trace": row}``) and to the state's ``refine_sample``.

Composition with LangChain's middleware (first in the list = outermost): put ``RefineMiddleware`` *before*
``ToolRetryMiddleware`` so transient failures are retried inside it and only a failure that outlasts the
retries is fed back (``on_failure="continue"``'s error message is flagged as a ``logic_error``);
``ModelRetryMiddleware``, ``ModelCallLimitMiddleware`` and ``ToolCallLimitMiddleware`` compose in any order.
A handoff (a tool returning a ``Command``) passes through unjudged and untraced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState, ModelRequest, ModelResponse, hook_config
from langchain.agents.middleware.types import ExtendedModelResponse, OmitFromInput, PrivateStateAttr
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langgraph.prebuilt.tool_node import TOOL_INVOCATION_ERROR_TEMPLATE, ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command

from agentrefine_lg import prompts
from agentrefine_lg.agent_format import content_text, tool_schema, tools_system_prompt
from agentrefine_lg.refine_feedback import (
    Critic,
    CriticVerdict,
    Judgement,
    RefineOptions,
    TraceSink,
    aappend_trace,
    aask_critic,
    append_trace,
    ask_critic,
    critic_step,
    episode_sample,
    judge,
    model_name,
    repeated_call,
    repeated_result,
    thought_of,
    tool_failure,
    tools_script,
    write_event,
)
from agentrefine_lg.schema import ERROR_FLAGS, ActionSpec, RefinementSample, Script, Turn
from agentrefine_lg.serving.chat_model import format_tool_call

# ToolNode answers invalid arguments with this text (langgraph-prebuilt's template, up to its first field).
_INVALID_ARGUMENTS = TOOL_INVOCATION_ERROR_TEMPLATE.split("{", 1)[0]


class RefineMiddlewareState(AgentState):
    """``create_agent``'s state plus what the middleware records; ``refine_sample`` is the episode's trace."""

    refine_tools: NotRequired[Annotated[list[dict[str, Any]], PrivateStateAttr]]  # the tools offered (schemas)
    refine_teacher: NotRequired[Annotated[str | None, PrivateStateAttr]]  # the model's name
    refine_sample: NotRequired[Annotated[dict[str, Any] | None, OmitFromInput]]


# ---------------------------------------------------------------------------------------------- the episode


def _episode(messages: Sequence[AnyMessage]) -> list[AnyMessage]:
    """This run's episode: the messages from the last human message (the task) on."""
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], HumanMessage):
            return list(messages[i:])
    return list(messages)


def _verdict_of(message: ToolMessage) -> dict[str, Any] | None:
    """The flags this middleware put on a tool result (None: it did not judge it)."""
    return (message.response_metadata or {}).get("agentrefine")


def _previous_call(episode: Sequence[AnyMessage], call_id: str) -> tuple[dict[str, Any] | None, bool]:
    """The last call answered before ``call_id`` in this episode, and whether it was erroneous."""
    calls = {c["id"]: c for m in episode if isinstance(m, AIMessage) for c in m.tool_calls}
    for message in reversed(episode):
        if isinstance(message, ToolMessage) and message.tool_call_id != call_id and message.tool_call_id in calls:
            verdict = _verdict_of(message)
            failed = bool(verdict["flags"]) if verdict is not None else message.status == "error"
            return calls[message.tool_call_id], failed
    return None, False


def _caller(episode: Sequence[AnyMessage], call_id: str) -> AIMessage | None:
    for message in reversed(episode):
        if isinstance(message, AIMessage) and any(c["id"] == call_id for c in message.tool_calls):
            return message
    return None


def _thought(message: AIMessage | None) -> str | None:
    return thought_of(message, content_text(message.content)) if message is not None else None


def _task(episode: Sequence[AnyMessage]) -> str:
    first = episode[0] if episode else None
    return content_text(first.content).strip() if isinstance(first, HumanMessage) else ""


def _erroneous_in_a_row(episode: Sequence[AnyMessage]) -> int:
    """Judged tool calls at the end of the episode that were all erroneous (the refine agent's retries)."""
    count = 0
    for message in reversed(episode):
        if isinstance(message, ToolMessage):
            verdict = _verdict_of(message)
            if verdict is None:
                continue
            if not verdict["flags"]:
                break
            count += 1
        elif isinstance(message, AIMessage) and not message.tool_calls:
            break
    return count


def _schemas(tools: Sequence[Any]) -> list[dict[str, Any]]:
    out = []
    for t in tools:
        try:
            out.append({"type": "function", "function": tool_schema(t)})
        except (TypeError, ValueError, KeyError):  # a provider's built-in tool ({"type": "web_search"}): no schema
            continue
    return out


def episode_turns(episode: Sequence[AnyMessage]) -> tuple[list[dict[str, Any]], bool, str]:
    """The episode as paper-format turns (the refine agent's), whether it was answered, and its stop reason.

    One Player turn per judged tool call (each call of a parallel batch carries the reply's thought) with the DM
    turn of its result; a reply without a tool call is the final answer, ``finish[answer]``.
    """
    turns = [Turn(turn=0, role="DM", observation=_task(episode), parameter_error=False, place_error=False,
                  logic_error=False, task_completed=False).to_paper()]
    answers = {m.tool_call_id: m for m in episode if isinstance(m, ToolMessage)}
    success, stop = False, ""
    for message in episode[1:]:
        if not isinstance(message, AIMessage):
            continue
        meta = (message.response_metadata or {}).get("agentrefine") or {}
        if meta.get("stop_reason"):  # our own closing message (the retry budget ran out)
            stop = str(meta["stop_reason"])
            continue
        text = content_text(message.content)
        thought = thought_of(message, text)
        for call in message.tool_calls:
            answer = answers.get(call["id"])
            verdict = _verdict_of(answer) if answer is not None else None
            if verdict is None:  # not run through this middleware (a handoff, structured output): not a turn
                continue
            flags = {flag: flag in verdict["flags"] for flag in ERROR_FLAGS}
            turns.append(Turn(turn=len(turns), role="Player", thought=thought,
                              action=format_tool_call(call["name"], dict(call.get("args") or {}))).to_paper())
            turns.append(Turn(turn=len(turns), role="DM", observation=content_text(answer.content).strip()
                              or "(no observation)", task_completed=False, **flags).to_paper())
        if not message.tool_calls and text.strip():
            turns.append(Turn(turn=len(turns), role="Player", thought=thought,
                              action=format_tool_call("finish", {"answer": text.strip()})).to_paper())
            turns.append(Turn(turn=len(turns), role="DM", observation="Task finished.", parameter_error=False,
                              place_error=False, logic_error=False, task_completed=True).to_paper())
            success, stop = True, "done"
    return turns, success, stop or ("done" if success else "stopped")


# ---------------------------------------------------------------------------------------------- middleware


class RefineMiddleware(AgentMiddleware[RefineMiddlewareState, Any]):
    """AgentRefine's refinement loop for ``langchain.agents.create_agent`` (see the module docstring).

    ``critic``: a chat model (structured output :class:`CriticVerdict`) or a callable ``f(step)`` (may be
    async) judging each tool call that ran. ``max_retries``: erroneous calls in a row allowed before the run
    ends (None: no limit). ``trace_sink``: a JSONL path or a callable receiving each episode's
    :class:`RefinementSample`. ``action_specs`` / ``rule_check``: rule checks of each call's
    ``name[args]`` form, as in ``create_refine_agent``. ``repeat_check``: a repeat of the previous, successful
    call is a ``logic_error`` and is not run. ``agent_name``: recorded in the trace and names the closing message.
    """

    state_schema = RefineMiddlewareState

    def __init__(
        self,
        *,
        critic: Critic | None = None,
        max_retries: int | None = 3,
        trace_sink: TraceSink | None = None,
        action_specs: Script | Mapping[str, ActionSpec | dict] | None = None,
        rule_check: bool | None = None,
        feedback_to_model: bool = True,
        repeat_check: bool = True,
        agent_name: str | None = None,
    ) -> None:
        super().__init__()
        self.options = RefineOptions(critic=critic, max_retries=max_retries, trace_sink=trace_sink,
                                     action_specs=action_specs, rule_check=rule_check,
                                     feedback_to_model=feedback_to_model)
        self.structured_critic = self.options.structured_critic  # bound once
        self.repeat_check = repeat_check
        self.agent_name = agent_name
        self.tools = []  # adds no tools of its own

    # -- model calls -----------------------------------------------------------------------------------

    def _record(self, request: ModelRequest, response: ModelResponse | AIMessage) -> ExtendedModelResponse:
        if isinstance(response, AIMessage):
            response = ModelResponse(result=[response])
        update = {"refine_tools": _schemas(request.tools), "refine_teacher": model_name(request.model)}
        return ExtendedModelResponse(model_response=response, command=Command(update=update))

    def wrap_model_call(self, request: ModelRequest,
                        handler: Callable[[ModelRequest], ModelResponse]) -> ExtendedModelResponse:
        return self._record(request, handler(request))

    async def awrap_model_call(self, request: ModelRequest,
                               handler: Callable[[ModelRequest], Awaitable[ModelResponse]]) -> ExtendedModelResponse:
        return self._record(request, await handler(request))

    def _stop(self, state: RefineMiddlewareState) -> dict[str, Any] | None:
        if self.options.max_retries is None:
            return None
        episode = _episode(state["messages"])
        if _erroneous_in_a_row(episode) <= self.options.max_retries:
            return None
        steps = sum(1 for m in episode if isinstance(m, AIMessage))
        closing = AIMessage(prompts.REFINE_STOPPED.format(reason="max_retries", steps=steps), name=self.agent_name,
                            response_metadata={"agentrefine": {"success": False, "stop_reason": "max_retries",
                                                               "steps": steps}})
        return {"jump_to": "end", "messages": [closing]}

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: RefineMiddlewareState, runtime: Runtime) -> dict[str, Any] | None:
        return self._stop(state)

    @hook_config(can_jump_to=["end"])
    async def abefore_model(self, state: RefineMiddlewareState, runtime: Runtime) -> dict[str, Any] | None:
        return self._stop(state)

    # -- tool calls ------------------------------------------------------------------------------------

    def _before_call(self, request: ToolCallRequest) -> tuple[list[AnyMessage], dict[str, Any] | None]:
        """The episode so far, and the DM's answer if the call is not to be run (a repeat)."""
        episode = _episode((request.state or {}).get("messages") or [])
        if self.repeat_check:
            previous, failed = _previous_call(episode, request.tool_call["id"])
            if repeated_call(request.tool_call, previous, failed):
                return episode, repeated_result(request.tool_call)
        return episode, None

    @staticmethod
    def _result(request: ToolCallRequest, output: ToolMessage) -> dict[str, Any]:
        """The executor's verdict on a tool's answer (ToolNode already turned bad arguments into an error)."""
        text = content_text(output.content) if not isinstance(output.content, str) else output.content
        error = None
        if output.status == "error":
            unknown = request.tool is None  # ToolNode: "Error: X is not a valid tool, try one of [...]"
            error = "parameter_error" if unknown or text.startswith(_INVALID_ARGUMENTS) else "logic_error"
        return {"observation": text, "done": False, "error": error, "info": {"tool": request.tool_call["name"]}}

    def _step(self, request: ToolCallRequest, episode: list[AnyMessage],
              result: dict[str, Any]) -> tuple[dict[str, Any], Script, dict[str, Any] | None]:
        call = request.tool_call
        item = {"thought": _thought(_caller(episode, call["id"])),
                "action": format_tool_call(call["name"], dict(call.get("args") or {}))}
        tools = (request.state or {}).get("refine_tools") or ([request.tool] if request.tool is not None else [])
        script = tools_script(tools, _task(episode), names=[call["name"]])
        step = critic_step(script, item, result) if self.options.critic is not None else None
        return item, script, step

    def _answer(self, request: ToolCallRequest, output: ToolMessage | None, item: dict[str, Any], script: Script,
                result: dict[str, Any], verdict: CriticVerdict | None) -> ToolMessage:
        judgement: Judgement = judge(item, result, script=script, action_specs=self.options.action_specs,
                                     rule_check=self.options.rule_check, verdict=verdict,
                                     feedback_to_model=self.options.feedback_to_model)
        meta = {"flags": [f for f in ERROR_FLAGS if judgement.flags[f]], "invalid": judgement.invalid}
        if output is not None and not judgement.erroneous:
            # Unchanged for the model (its content may be blocks or an artifact); the verdict rides along.
            return output.model_copy(update={"response_metadata": {**(output.response_metadata or {}),
                                                                    "agentrefine": meta}})
        call = request.tool_call
        return ToolMessage(judgement.observation, tool_call_id=call["id"], name=call["name"],
                           status="error" if judgement.erroneous else "success",
                           artifact=output.artifact if output is not None else None,
                           response_metadata={"agentrefine": meta})

    def wrap_tool_call(self, request: ToolCallRequest,
                       handler: Callable[[ToolCallRequest], ToolMessage | Command]) -> ToolMessage | Command:
        episode, result = self._before_call(request)
        output = None
        if result is None:
            try:
                output = handler(request)
            except Exception as exc:  # noqa: BLE001 - classified: feedback, or raised again
                result = tool_failure(request.tool_call, exc)
            else:
                if not isinstance(output, ToolMessage):
                    return output  # a Command (a handoff, a state update): not the DM's to judge
                result = self._result(request, output)
        item, script, step = self._step(request, episode, result)
        verdict = ask_critic(self.options.critic, self.structured_critic, step) if step is not None else None
        return self._answer(request, output, item, script, result, verdict)

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command]],
    ) -> ToolMessage | Command:
        episode, result = self._before_call(request)
        output = None
        if result is None:
            try:
                output = await handler(request)
            except Exception as exc:  # noqa: BLE001 - classified: feedback, or raised again
                result = tool_failure(request.tool_call, exc)
            else:
                if not isinstance(output, ToolMessage):
                    return output
                result = self._result(request, output)
        item, script, step = self._step(request, episode, result)
        verdict = await aask_critic(self.options.critic, self.structured_critic, step) if step is not None else None
        return self._answer(request, output, item, script, result, verdict)

    # -- the trace -------------------------------------------------------------------------------------

    def _sample(self, state: RefineMiddlewareState) -> RefinementSample | None:
        episode = _episode(state.get("messages") or [])
        turns, success, stop = episode_turns(episode)
        task = _task(episode)
        tools = state.get("refine_tools") or []
        called = [c["name"] for m in episode if isinstance(m, AIMessage) for c in m.tool_calls]
        script = tools_script(tools, task, names=called)
        # The tools in the trained format: the trace trains a Thought/Action model whatever protocol acted.
        return episode_sample(script, turns, system=tools_system_prompt(tools, task),
                              teacher=state.get("refine_teacher"), success=success, progress=1.0 if success else 0.0,
                              stop_reason=stop, agent=self.agent_name)

    def _written(self, sample: RefinementSample | None) -> dict[str, Any]:
        row = sample.to_dict() if sample is not None else None
        if row is not None:
            write_event({"refine_trace": row})
        return {"refine_sample": row}

    def after_agent(self, state: RefineMiddlewareState, runtime: Runtime) -> dict[str, Any] | None:
        sample = self._sample(state)
        if sample is not None and self.options.trace_sink is not None:
            append_trace(self.options.trace_sink, sample)
        return self._written(sample)

    async def aafter_agent(self, state: RefineMiddlewareState, runtime: Runtime) -> dict[str, Any] | None:
        sample = self._sample(state)
        if sample is not None and self.options.trace_sink is not None:
            await aappend_trace(self.options.trace_sink, sample)
        return self._written(sample)


__all__ = ["RefineMiddleware", "RefineMiddlewareState", "episode_turns"]
