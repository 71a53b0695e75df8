"""The served, refinement-tuned model as a LangChain chat model, and the parsing of its ``Thought/Action`` text.

A tuned model answers in the training format (docs/method.md §5)::

    Thought: <reasoning>
    Action: <one action>

:func:`parse_action` reads that text the way evaluation does (docs/method.md §6: the action is the text after the
*last* ``Action:``). :func:`chat_model` returns a ``ChatOpenAI`` (chat-completions API, temperature 0, stop at
``\\nObservation:``) that also speaks LangChain's tool-calling protocol *through* that format, so the tuned
model drops into ``langchain.agents.create_agent``, ``langgraph.prebuilt.create_react_agent`` or any
``ToolNode`` graph:

* ``bind_tools`` does **not** send tool schemas to the server (a tuned model was never trained on them); the
  tools are kept on the client, written into the system prompt in the training format (:func:`tools_prompt`,
  the same text the refine agent shows), and the reply's action is parsed into a tool call (conventions below);
* history is rendered back into the tuned format before each call: an ``AIMessage`` with tool calls becomes
  its ``Thought/Action`` text, a ``ToolMessage`` becomes a plain user turn with the tool's output — exactly
  how DM observations were shown in training (docs/method.md §5 puts observations in user turns *without* a label;
  ``observation_prefix`` can add one);
* an action naming no bound tool is still returned as a tool call under the name the model wrote: LangGraph's
  ``ToolNode`` (used by both agent factories) answers it with an error ``ToolMessage`` listing the valid
  tools, which the model sees as its next observation and can refine on — the AgentRefine loop;
* ``finish[answer]`` / ``Final Answer: ...`` / a reply without an ``Action:`` line ends the agent loop: the
  message has no tool calls (``response_metadata["agentrefine"]`` says which case it was).

Action conventions (``parse_tool_call``), tool names matched case-insensitively, ``_`` also written as a space:

==================================  ==================================================================
``search[langgraph retries]``       bracket form (ReAct / AgentBoard): the text is the first parameter
``search(query="x", k=3)``          call form: keyword and/or positional literals (JSON or Python)
``search({"query": "x"})``          call form with one JSON object: the arguments
``search {"query": "x"}``           a JSON object after the name: the arguments
``go north``                        command form (the text environments): the rest is the first parameter
``inventory``                       no arguments
==================================  ==================================================================

Argument values are *data*: literals are read with ``json`` or ``ast.literal_eval``-style constant folding
(nothing is evaluated), then coerced to the parameter's JSON-schema type where that is unambiguous.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

# The trained format (system prompt, Thought/Action, parsing) lives in agent_format; re-exported here.
from agentrefine_lg.agent_format import (
    ACTION_LINE,
    ParsedAction,
    content_text,
    parse_action,
    tool_schema,
    tools_prompt,
    tools_system_prompt,
)
from agentrefine_lg.errors import InputError

DEFAULT_STOP = ["\nObservation:"]
"""Tuned models sometimes go on to invent the environment's answer; stop before it."""

FINISH_NAMES = ("finish", "final_answer", "final answer", "answer")
"""Actions that end a tool-calling loop with an answer (unless a bound tool has that name)."""

# ---------------------------------------------------------------------------------------------- tool calls


@dataclass(frozen=True)
class ParsedCall:
    """An action read as a tool call. ``known`` is False when no bound tool has that name."""

    name: str
    args: dict[str, Any]
    known: bool
    finish: bool = False
    error: str | None = None


def _literal(node: ast.AST) -> Any:
    """Constant-fold a literal (strings, numbers, lists, dicts, true/false/null); anything else is refused."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in {"true", "false", "null", "True", "False", "None"}:
        return {"true": True, "True": True, "false": False, "False": False}.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Name):  # a bare word: the model meant a string (search(langgraph))
        return node.id
    raise ValueError(f"not a literal: {ast.dump(node)[:60]}")


def _call_args(inner: str) -> tuple[list[Any], dict[str, Any]]:
    """Arguments of ``name(...)`` as literals; raises ValueError when they are not plain literals."""
    tree = ast.parse(f"f({inner})", mode="eval")  # parsed only, never evaluated
    call = tree.body
    # "x) + (y" parses as f(x) + (y): only a single plain call is an argument list.
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise ValueError("not a plain argument list")  # noqa: TRY004 - caught with the SyntaxErrors
    args = [_literal(a) for a in call.args]
    kwargs = {kw.arg: _literal(kw.value) for kw in call.keywords if kw.arg}
    return args, kwargs


def _coerce(value: Any, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
        if kind == "boolean" and text.lower() in {"true", "false", "yes", "no"}:
            return text.lower() in {"true", "yes"}
        if kind in {"array", "object"}:
            return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        pass  # left as text: the tool's own validation names the problem to the model
    return value


def _bind_args(positional: list[Any], keywords: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = parameters.get("properties") or {}
    required = [p for p in parameters.get("required") or [] if p in props]
    order = required + [p for p in props if p not in required]
    args = dict(keywords)
    if len(positional) == 1 and isinstance(positional[0], dict) and not keywords and (
        not order or set(positional[0]) <= set(props)
    ):
        args = dict(positional[0])
    else:
        free = [p for p in order if p not in args]
        for i, value in enumerate(positional):
            key = free[i] if i < len(free) else ("input" if not order and i == 0 else f"arg{i}")
            args[key] = value
    return {k: _coerce(v, props.get(k, {})) for k, v in args.items()}


def _split_head(action: str, names: Sequence[str]) -> tuple[str | None, str]:
    """Find which tool name the action starts with (longest first); returns (name or None, rest)."""
    low = action.lower()
    for name in sorted(names, key=len, reverse=True):
        for spelling in {name.lower(), name.lower().replace("_", " "), name.lower().replace("_", "-")}:
            if low.startswith(spelling):
                rest = action[len(spelling):]
                if not rest or rest[0] in " \t[({:":
                    return name, rest
    return None, action


def parse_tool_call(action: str, tools: Sequence[Any]) -> ParsedCall:
    """Read an action as a call of one of ``tools`` (BaseTool, function, or OpenAI tool dicts).

    See the module docstring for the accepted forms. An unknown name gives ``known=False`` with the first
    word as the name; ``finish[...]`` (when no tool is called that) gives ``finish=True`` with ``args
    {"answer": ...}``.
    """
    schemas = [tool_schema(t) for t in tools]
    by_name = {s["name"]: s for s in schemas}
    action = action.strip()
    name, rest = _split_head(action, list(by_name))
    finish = False
    if name is None:
        head, fin_rest = _split_head(action, list(FINISH_NAMES))
        if head is not None:
            name, rest, finish = "finish", fin_rest, True
        else:
            m = re.match(r"^([\w.-]+)(.*)$", action, re.DOTALL)
            name, rest = (m.group(1), m.group(2)) if m else (action, "")
    parameters = (by_name.get(name) or {}).get("parameters") or (
        {"type": "object", "properties": {"answer": {"type": "string"}}} if finish else {}
    )
    rest = rest.strip()
    if rest.startswith(":"):
        rest = rest[1:].strip()
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    error = None
    if rest.startswith("[") and rest.endswith("]"):
        inner = rest[1:-1].strip()
        positional = [_json_object(inner) or inner] if inner else []
    elif rest.startswith("(") and rest.endswith(")"):
        inner = rest[1:-1].strip()
        if inner:
            try:
                positional, keywords = _call_args(inner)
            except (SyntaxError, ValueError):
                positional = [inner]  # free text in parentheses: search(what is langgraph)
    elif rest.startswith("{"):
        obj = _json_object(rest)
        if obj is None:
            error = "arguments look like JSON but do not parse"
            positional = [rest]
        else:
            positional = [obj]
    elif rest:
        positional = [rest]
    args = _bind_args(positional, keywords, parameters)
    return ParsedCall(name=name, args=args, known=name in by_name, finish=finish, error=error)


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.startswith("{"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def format_tool_call(name: str, args: dict[str, Any]) -> str:
    """The action text of a tool call: ``name[value]`` for one string argument, else ``name(k=v, ...)``."""
    if not args:
        return name
    if len(args) == 1:
        (value,) = args.values()
        if isinstance(value, str) and "]" not in value and "\n" not in value:
            return f"{name}[{value}]"
    inner = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    return f"{name}({inner})"


# ---------------------------------------------------------------------------------------------- messages


def to_tuned_messages(messages: Sequence[BaseMessage], *, observation_prefix: str = "") -> list[BaseMessage]:
    """Render a tool-calling history in the tuned format (see the module docstring)."""
    out: list[BaseMessage] = []
    for message in messages:
        if isinstance(message, ToolMessage):
            text = observation_prefix + content_text(message.content).strip()
            if out and isinstance(out[-1], HumanMessage) and out[-1].additional_kwargs.get("agentrefine_tool"):
                out[-1] = HumanMessage(content_text(out[-1].content) + "\n" + text, additional_kwargs={"agentrefine_tool": True})
            else:
                out.append(HumanMessage(text, additional_kwargs={"agentrefine_tool": True}))
        elif isinstance(message, AIMessage) and message.tool_calls:
            raw = (message.response_metadata or {}).get("agentrefine", {}).get("raw")
            text = raw or content_text(message.content)
            if not any(ACTION_LINE.match(line) for line in (text or "").splitlines()):
                call = message.tool_calls[0]
                thought = (text or "").strip()
                text = f"Thought: {thought}\nAction: {format_tool_call(call['name'], call.get('args') or {})}"
            out.append(AIMessage(text))
        elif isinstance(message, AIMessage):
            raw = (message.response_metadata or {}).get("agentrefine", {}).get("raw")
            out.append(AIMessage(raw or content_text(message.content)) if raw or not isinstance(message.content, str) else message)
        else:
            out.append(message)
    return out


def with_tools_prompt(messages: Sequence[BaseMessage], tools: Sequence[Any]) -> list[BaseMessage]:
    """Put the bound tools into the system prompt in the training format (:func:`tools_prompt`).

    A user's system message keeps its text and gains the tools section; without one, the system prompt is the
    refine agent's own (:func:`tools_system_prompt`) with the first user message as the task. A system
    prompt that already lists these tools (the refine agent's) is left alone.
    """
    section = tools_prompt(tools)
    out = list(messages)
    for i, message in enumerate(out):
        if isinstance(message, SystemMessage):
            text = content_text(message.content)
            if section not in text:
                out[i] = SystemMessage(f"{text.rstrip()}\n\n{section}" if text.strip() else section)
            return out
    task = next((content_text(m.content).strip() for m in out if isinstance(m, HumanMessage)), "")
    return [SystemMessage(tools_system_prompt(tools, task) if task else section), *out]


def interpret(message: AIMessage, tools: Sequence[Any] | None) -> AIMessage:
    """Attach the parse (``response_metadata["agentrefine"]``) and, when tools are bound, the tool call."""
    text = content_text(message.content)
    parsed = parse_action(text)
    meta: dict[str, Any] = {"thought": parsed.thought, "action": parsed.action, "error": parsed.error, "raw": text}
    content: Any = message.content
    tool_calls: list[dict[str, Any]] = []
    if tools is not None:
        if parsed.ok:
            call = parse_tool_call(parsed.action or "", tools)
            meta["tool"] = call.name
            if call.finish:
                meta["finish"] = True
                content = str(call.args.get("answer", "")).strip() or text
            else:
                meta["known_tool"] = call.known
                tool_calls = [{"name": call.name, "args": call.args, "id": f"call_{uuid.uuid4().hex[:24]}",
                               "type": "tool_call"}]
        elif parsed.error == "no Action: line":
            final = re.search(r"final\s+answer\s*[:：]\s*(.*)", text, re.IGNORECASE | re.DOTALL)
            if final:
                meta["finish"] = True
                content = final.group(1).strip()
    return AIMessage(
        content=content,
        tool_calls=tool_calls,
        id=message.id,
        additional_kwargs=dict(message.additional_kwargs or {}),
        response_metadata={**(message.response_metadata or {}), "agentrefine": meta},
        usage_metadata=message.usage_metadata,
    )


_TOOL_KWARGS = ("tools", "tool_choice", "parallel_tool_calls", "strict", "response_format")


class TunedFormatMixin:
    """Makes a text chat model speak tool calls through the ``Thought/Action`` format.

    Mix in *before* a concrete chat model class: ``class M(TunedFormatMixin, ChatOpenAI)``. It overrides the
    four generation hooks and ``bind_tools`` only; transport, retries and usage stay the base model's.
    """

    observation_prefix: str = ""
    # Our tuned models answer Thought/Action text: the refine agent parses it (speaks_thought_action).
    agentrefine_text_protocol: ClassVar[bool] = True

    def bind_tools(self, tools: Sequence[dict[str, Any] | type | Callable | BaseTool], *,
                   tool_choice: Any = None, **kwargs: Any) -> Runnable:
        """Keep the tools client-side; the reply's action is parsed into a tool call."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)  # type: ignore[attr-defined]

    def _split_kwargs(self, kwargs: dict[str, Any]) -> list[dict[str, Any]] | None:
        tools = kwargs.get("tools")
        for key in _TOOL_KWARGS:
            kwargs.pop(key, None)
        return tools

    def _render(self, messages: list[BaseMessage], tools: Sequence[Any] | None = None) -> list[BaseMessage]:
        rendered = to_tuned_messages(messages, observation_prefix=self.observation_prefix)
        return with_tools_prompt(rendered, tools) if tools else rendered

    @staticmethod
    def _map(result: ChatResult, tools: Sequence[Any] | None) -> ChatResult:
        generations = [
            ChatGeneration(message=interpret(g.message, tools), generation_info=g.generation_info)  # type: ignore[arg-type]
            for g in result.generations
        ]
        return ChatResult(generations=generations, llm_output=result.llm_output)

    @staticmethod
    def _as_chunk(message: AIMessage) -> ChatGenerationChunk:
        chunks = [{"name": c["name"], "args": json.dumps(c["args"], ensure_ascii=False), "id": c["id"], "index": i,
                   "type": "tool_call_chunk"} for i, c in enumerate(message.tool_calls)]
        return ChatGenerationChunk(message=AIMessageChunk(
            content=message.content, id=message.id, tool_call_chunks=chunks,
            response_metadata=message.response_metadata, usage_metadata=message.usage_metadata,
            additional_kwargs=message.additional_kwargs))

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        tools = self._split_kwargs(kwargs)
        result = super()._generate(self._render(messages, tools), stop=stop, run_manager=run_manager, **kwargs)  # type: ignore[misc]
        return self._map(result, tools)

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        tools = self._split_kwargs(kwargs)
        result = await super()._agenerate(self._render(messages, tools), stop=stop, run_manager=run_manager, **kwargs)  # type: ignore[misc]
        return self._map(result, tools)

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        if kwargs.get("tools") is not None:
            # A tool call is known only once the action line is complete: generate, then emit one chunk.
            result = self._generate(messages, stop=stop, run_manager=None, **kwargs)
            chunk = self._as_chunk(result.generations[0].message)  # type: ignore[arg-type]
            if run_manager:
                run_manager.on_llm_new_token(content_text(chunk.message.content), chunk=chunk)
            yield chunk
            return
        self._split_kwargs(kwargs)
        yield from super()._stream(self._render(messages), stop=stop, run_manager=run_manager, **kwargs)  # type: ignore[misc]

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        if kwargs.get("tools") is not None:
            result = await self._agenerate(messages, stop=stop, run_manager=None, **kwargs)
            chunk = self._as_chunk(result.generations[0].message)  # type: ignore[arg-type]
            if run_manager:
                await run_manager.on_llm_new_token(content_text(chunk.message.content), chunk=chunk)
            yield chunk
            return
        self._split_kwargs(kwargs)
        async for chunk in super()._astream(self._render(messages), stop=stop, run_manager=run_manager, **kwargs):  # type: ignore[misc]
            yield chunk


def speaks_thought_action(model: Any) -> bool:
    """Is ``model`` one of our tuned models, answering in the ``Thought/Action`` text protocol?

    True for :func:`chat_model`'s model, a :class:`TunedFormatMixin` model and the in-process
    :class:`~agentrefine_lg.serving.local_model.LocalChatModel`, bound (``bind``/``bind_tools``) or not. Any other
    model is taken to speak LangChain's tool-calling protocol: its reply without a tool call is its answer.
    """
    while isinstance(model, RunnableBinding):
        model = model.bound
    return bool(getattr(type(model), "agentrefine_text_protocol", False))


def _chat_openai_classes() -> tuple[type[BaseChatModel], type[BaseChatModel]]:
    from langchain_openai import ChatOpenAI

    class LoopSafeChatOpenAI(ChatOpenAI):
        """``ChatOpenAI`` whose async client follows the running event loop.

        langchain-openai shares one cached ``httpx`` client per endpoint across event loops, so a second
        ``asyncio.run(graph.ainvoke(...))`` (a notebook, a test, a script that runs two episodes, a server with
        several loops) would fail with "Event loop is closed".
        """

        def _use_running_loop(self) -> None:
            loop = asyncio.get_running_loop()
            clients = self.__dict__.setdefault("_agentrefine_loop_clients", weakref.WeakKeyDictionary())
            if not clients:  # the client built at construction serves the first loop that uses it
                clients[loop] = self.root_async_client
            root = clients.get(loop)
            if root is None:
                import openai

                root = clients[loop] = self.root_async_client.copy(
                    http_client=openai.DefaultAsyncHttpxClient(timeout=self.request_timeout))
            if root is not self.root_async_client:
                self.root_async_client, self.async_client = root, root.chat.completions

        async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
            self._use_running_loop()
            return await super()._agenerate(*args, **kwargs)

        async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
            self._use_running_loop()
            async for chunk in super()._astream(*args, **kwargs):
                yield chunk

    class TunedChatOpenAI(TunedFormatMixin, LoopSafeChatOpenAI):
        """``ChatOpenAI`` (chat-completions API) for a refinement-tuned model: see :mod:`agentrefine_lg.serving.chat_model`."""

        @property
        def _llm_type(self) -> str:
            return "agentrefine-openai"

    return LoopSafeChatOpenAI, TunedChatOpenAI


_CLASSES: tuple[type[BaseChatModel], type[BaseChatModel]] | None = None


def _classes() -> tuple[type[BaseChatModel], type[BaseChatModel]]:
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _chat_openai_classes()
    return _CLASSES


def openai_chat(**kwargs: Any) -> BaseChatModel:
    """A ``ChatOpenAI`` (any keywords) whose async client follows the running event loop: the LLM teacher's."""
    return _classes()[0](**kwargs)


def chat_model(base_url: str | None = None, model: str = "agentrefine", api_key: str | None = None,
               **kwargs: Any) -> BaseChatModel:
    """The served tuned model as a LangChain chat model (a ``ChatOpenAI`` subclass).

    Defaults: chat-completions API (``use_responses_api=False``: vLLM and ``transformers serve`` speak it),
    ``temperature=0`` (docs/method.md §6), ``stop=["\\nObservation:"]``. Any ``ChatOpenAI`` keyword overrides them.
    ``api_key`` falls back to env ``AGENTREFINE_API_KEY``, ``base_url`` to ``AGENTREFINE_BASE_URL``.
    """
    import os

    base_url = base_url or os.environ.get("AGENTREFINE_BASE_URL")
    if not base_url:
        raise InputError("no base_url given and AGENTREFINE_BASE_URL is not set (e.g. http://127.0.0.1:8000/v1)",
                         field="base_url")
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": model,
        "api_key": api_key or os.environ.get("AGENTREFINE_API_KEY") or "EMPTY",
        "use_responses_api": False,
        "temperature": 0,
        "stop": list(DEFAULT_STOP),
    }
    settings.update(kwargs)
    return _classes()[1](**settings)


__all__ = [
    "DEFAULT_STOP",
    "ParsedAction",
    "ParsedCall",
    "TunedFormatMixin",
    "chat_model",
    "format_tool_call",
    "interpret",
    "openai_chat",
    "parse_action",
    "parse_tool_call",
    "speaks_thought_action",
    "to_tuned_messages",
    "tools_prompt",
    "tools_system_prompt",
    "with_tools_prompt",
]
