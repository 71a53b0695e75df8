"""The LLM teacher: any LangChain chat model in the four synthesis roles of :mod:`agentrefine_lg.synthesis.roles`.

- :class:`LLMScriptWriter`: persona -> script JSON (the paper's keys).
- :class:`LLMTrajectoryWriter`: one-shot (the paper): the whole Player/DM trajectory as JSON, continuing a
  verified prefix.
- :class:`LLMPlayer` / :class:`LLMDM`: interactive mode, one turn per call.

The teacher is any chat model: ``init_chat_model("openai:gpt-4o")``, or ``ChatOpenAI(base_url=...)`` of a
vLLM server. Output goes through structured output where the model supports it
(``with_structured_output(..., include_raw=True)``) and falls back to extracting JSON from text (code fences,
leading prose). A malformed answer is fed back to the model in the same conversation, a bounded number of
times (``format_retries``). Everything the model wrote is data: parsed, never executed.
Token usage comes from ``AIMessage.usage_metadata``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage

from agentrefine_lg import prompts
from agentrefine_lg.agent_format import content_text
from agentrefine_lg.checks import match_action
from agentrefine_lg.convert import format_assistant, system_prompt
from agentrefine_lg.failures import MalformedOutputError, is_fatal_error, is_transient_error
from agentrefine_lg.schema import (
    ERROR_FLAGS,
    Script,
    TokenUsage,
    Turn,
    script_json_schema,
    trajectory_json_schema,
)

StructuredMode = Literal["auto", "json_schema", "function_calling", "json_mode", "text"]


# ---------------------------------------------------------------------------------------------- parsing

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript)?[ \t]*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON value in an LLM reply: the whole text, a fenced block, or after leading prose.

    Raises ``ValueError`` naming what was wrong when nothing parses.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected text, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError("the reply is empty")
    first_error: str | None = None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        first_error = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    for block in _FENCE.findall(stripped):
        try:
            return json.loads(block.strip())
        except json.JSONDecodeError:
            continue
    # Leading or trailing prose: decode from each top-level '{' / '[' (bracket depth 0 before it), so a
    # truncated object is never mistaken for one of its own inner lists.
    decoder = json.JSONDecoder()
    starts, depth = [], 0
    for i, ch in enumerate(stripped):
        if ch in "[{":
            if depth == 0:
                starts.append(i)
            depth += 1
        elif ch in "]}":
            depth = max(0, depth - 1)
    for start in starts[:20]:
        try:
            value, _ = decoder.raw_decode(stripped, start)
        except json.JSONDecodeError:
            continue
        if isinstance(value, (dict, list)) and value:
            return value
    raise ValueError(f"no valid JSON found in the reply ({first_error})")


def usage_of(message: Any) -> TokenUsage:
    """One LLM call's usage from ``AIMessage.usage_metadata`` (zeros when the provider reports none)."""
    meta = getattr(message, "usage_metadata", None) or {}
    inp, out = int(meta.get("input_tokens") or 0), int(meta.get("output_tokens") or 0)
    return TokenUsage(input_tokens=inp, output_tokens=out, total_tokens=int(meta.get("total_tokens") or inp + out), calls=1)


def _text_of(message: Any) -> str:
    """The text a reply carries: content, or the arguments of its first (invalid) tool call."""
    if message is None:
        return ""
    for call in getattr(message, "tool_calls", None) or []:
        if call.get("args"):
            return json.dumps(call["args"])
    for call in getattr(message, "invalid_tool_calls", None) or []:
        if call.get("args"):
            return str(call["args"])
    return content_text(getattr(message, "content", message))


_THOUGHT = re.compile(r"Thought\s*:\s*(.*?)(?=\n\s*Action\s*:|\Z)", re.DOTALL | re.IGNORECASE)
_ACTION = re.compile(r"Action\s*:\s*(.+)", re.IGNORECASE)


def parse_player_reply(text: str) -> tuple[str, str]:
    """``Thought: ...\\nAction: ...`` (or ``{"Thought", "Action"}`` JSON) -> (thought, action).

    The action is the first line after the last ``Action:`` (the parser of docs/method.md §6). Raises ``ValueError``.
    """
    stripped = (text or "").strip()
    if stripped.startswith("{") or stripped.startswith("```"):
        try:
            obj = extract_json(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and str(obj.get("Action") or obj.get("action") or "").strip():
            return str(obj.get("Thought") or obj.get("thought") or "").strip(), str(obj.get("Action") or obj.get("action")).strip()
    actions = _ACTION.findall(stripped)
    if not actions or not actions[-1].strip():
        raise ValueError("the reply has no 'Action: ...' line")
    action = actions[-1].strip().splitlines()[0].strip().strip("`").strip()
    if not action:
        raise ValueError("the action after 'Action:' is empty")
    thought_match = _THOUGHT.search(stripped)
    thought = thought_match.group(1).strip() if thought_match else stripped[: stripped.lower().rfind("action")].strip()
    return thought, action


def _dm_turn(obj: Any) -> Turn:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object for the DM turn, got {type(obj).__name__}")
    observation = obj.get("Observation", obj.get("observation"))
    if not isinstance(observation, str) or not observation.strip():
        raise ValueError("the DM turn needs a non-empty \"Observation\"")
    data: dict[str, Any] = {"role": "DM", "Thought": str(obj.get("Thought", obj.get("thought", "")) or ""), "Observation": observation}
    for flag in (*ERROR_FLAGS, "task_completed"):
        value = obj.get(flag, False)
        if isinstance(value, str):
            value = value.strip().lower() in {"true", "yes", "1"}
        data[flag] = bool(value)
    return Turn.model_validate(data)


# ---------------------------------------------------------------------------------------------- base


def model_name(model: Any) -> str:
    """A readable teacher name: ``provider:model`` where LangChain knows both."""
    name = getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__
    provider = None
    try:
        provider = model._get_ls_params().get("ls_provider")
    except Exception:
        provider = None
    return f"{provider}:{name}" if provider and not str(name).startswith(f"{provider}:") else str(name)


class _LLMRole:
    """Shared machinery: one chat model, structured output with a text fallback, bounded format feedback."""

    what: str = "JSON"

    def __init__(
        self,
        model: BaseChatModel,
        *,
        name: str | None = None,
        structured: StructuredMode = "auto",
        format_retries: int = 1,
    ):
        if format_retries < 0:
            raise ValueError("format_retries must be >= 0")
        if structured not in ("auto", "json_schema", "function_calling", "json_mode", "text"):
            raise ValueError(f"structured must be auto|json_schema|function_calling|json_mode|text, not {structured!r}")
        self.model = model
        self.name = name or model_name(model)
        self.structured = structured
        self.format_retries = format_retries
        # Run-level counters (a role object is shared by every persona of a run).
        self.stats = {"calls": 0, "format_retries": 0, "structured_fallbacks": 0}
        self._runnables: dict[Any, Any] = {}

    # -- structured output --------------------------------------------------------------------------

    def _method(self) -> str | None:
        if self.structured == "text":
            return None
        if self.structured != "auto":
            return self.structured
        # OpenAI-compatible servers (OpenAI, vLLM) constrain decoding to the schema with json_schema.
        return "json_schema" if self._openai_family() else ""

    def _openai_family(self) -> bool:
        return "openai" in type(self.model).__name__.lower()

    def _structured(self, schema: dict[str, Any]):
        method = self._method()
        key = (id(schema), method)
        if key not in self._runnables:
            runnable = None
            if method == "json_schema" and self._openai_family():
                # What ChatOpenAI.with_structured_output(method="json_schema") binds, without its parser
                # chain (several runnables per call): we parse the content ourselves, with the same fallback.
                # Sent as extra_body, the same JSON on the wire: a `response_format` argument makes the openai
                # client take its `parse` path, which re-validates the schema and the reply on every call
                # (5.2 -> 4.6 ms client CPU per call at C=64 in benchmarks/synthesis.py).
                from langchain_core.utils.function_calling import convert_to_openai_function

                function = convert_to_openai_function(schema, strict=False)
                function["schema"] = function.pop("parameters")
                self._runnables[key] = ("bound", self.model.bind(
                    extra_body={"response_format": {"type": "json_schema", "json_schema": function}}))
                return self._runnables[key]
            if method is not None:
                kwargs = {"method": method} if method else {}
                try:
                    runnable = self.model.with_structured_output(schema, include_raw=True, **kwargs)
                except (NotImplementedError, ValueError, TypeError):
                    runnable = None  # the model has no structured output: parse its text instead
            self._runnables[key] = runnable
        return self._runnables[key]

    async def _call(self, messages: list[BaseMessage], schema: dict[str, Any] | None) -> tuple[Any, AIMessage | None]:
        """One model call -> (parsed object or None, raw message)."""
        self.stats["calls"] += 1
        runnable = self._structured(schema) if schema is not None else None
        if isinstance(runnable, tuple):  # a model bound to a response format: the reply is JSON text
            raw = await runnable[1].ainvoke(messages)
            try:
                parsed = json.loads(_text_of(raw))
            except (json.JSONDecodeError, TypeError):
                self.stats["structured_fallbacks"] += 1
                parsed = None
            return parsed, raw
        if runnable is not None:
            out = await runnable.ainvoke(messages)
            raw = out.get("raw")
            parsed = out.get("parsed")
            if parsed is not None and not isinstance(parsed, (dict, list)):
                parsed = parsed.model_dump(by_alias=True) if hasattr(parsed, "model_dump") else None
            if parsed is None:
                self.stats["structured_fallbacks"] += 1
            return parsed, raw
        raw = await self.model.ainvoke(messages)
        return None, raw

    async def _ask(
        self,
        messages: list[BaseMessage],
        validate: Callable[[Any, str], Any],
        *,
        schema: dict[str, Any] | None = None,
    ) -> tuple[Any, TokenUsage, str | None, str]:
        """Ask, validate, and feed problems back up to ``format_retries`` times.

        ``validate(parsed_or_None, text)`` returns the value or raises ``ValueError`` with the problem.
        Returns (value or None, usage, last problem or None, last raw text).
        """
        usage = TokenUsage()
        messages = list(messages)
        problem: str | None = None
        text = ""
        for attempt in range(self.format_retries + 1):
            parsed, raw = await self._call(messages, schema)
            usage = usage.add(usage_of(raw))
            text = _text_of(raw)
            try:
                return validate(parsed, text), usage, None, text
            except ValueError as exc:
                problem = str(exc)
            if attempt < self.format_retries:
                self.stats["format_retries"] += 1
                messages += [
                    AIMessage(content=text or "(empty reply)"),
                    HumanMessage(content=prompts.SYNTH_FORMAT_FEEDBACK.format(problem=problem, what=self.what)),
                ]
        return None, usage, problem, text


def _json_value(kind: type) -> Callable[[Any, str], Any]:
    def validate(parsed: Any, text: str) -> Any:
        value = parsed if parsed is not None else extract_json(text)
        if isinstance(value, dict) and kind is list:
            value = value.get("turns", value.get("trajectory", value.get("Trajectory", value)))
        if not isinstance(value, kind):
            raise ValueError(f"expected a JSON {'object' if kind is dict else 'list'}, got {type(value).__name__}")
        return value

    return validate


def _problems_block(problems: list[str]) -> str:
    if not problems:
        return ""
    return prompts.SYNTH_PROBLEMS.format(problems="\n".join(f"- {p}" for p in problems))


def _script_json(script: Script) -> str:
    return json.dumps(script.to_paper(), ensure_ascii=False, indent=1)


# ---------------------------------------------------------------------------------------------- roles


class LLMScriptWriter(_LLMRole):
    """Persona -> script (the paper's keys). Returns the parsed JSON, or the raw text when it never parsed
    (the graph's ``check_script`` reports it and the next attempt's prompt carries the problem)."""

    what = "JSON object of the script"

    async def awrite_script(self, persona: str, problems: list[str]) -> tuple[dict[str, Any] | str, TokenUsage]:
        messages = [
            SystemMessage(content=prompts.SYNTH_SCRIPT_SYSTEM),
            HumanMessage(content=prompts.SYNTH_SCRIPT_USER.format(
                persona=persona, example=prompts.SYNTH_SCRIPT_EXAMPLE, problems=_problems_block(problems))),
        ]
        value, usage, _, text = await self._ask(messages, _json_value(dict), schema=_SCRIPT_SCHEMA)
        return (value if value is not None else text), usage


class LLMTrajectoryWriter(_LLMRole):
    """One-shot mode (the paper): the whole trajectory as a JSON list, continuing a verified prefix."""

    what = "JSON list of turns"

    def __init__(self, model: BaseChatModel, *, min_pairs: int = 2, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.min_pairs = min_pairs

    async def awrite_trajectory(
        self, script: Script, prefix: list[Turn], problems: list[str]
    ) -> tuple[list[dict[str, Any]] | str, TokenUsage]:
        prefix_block = ""
        if prefix:
            turns = json.dumps([t.to_paper() for t in prefix], ensure_ascii=False, indent=1)
            prefix_block = prompts.SYNTH_TRAJECTORY_PREFIX.format(n=len(prefix), turns=turns)
        messages = [
            SystemMessage(content=prompts.SYNTH_TRAJECTORY_SYSTEM),
            HumanMessage(content=prompts.SYNTH_TRAJECTORY_USER.format(
                script=_script_json(script), min_pairs=self.min_pairs, example=prompts.SYNTH_TRAJECTORY_EXAMPLE,
                prefix=prefix_block, problems=_problems_block(problems))),
        ]
        value, usage, _, text = await self._ask(messages, _json_value(list), schema=_TRAJECTORY_SCHEMA)
        return (value if value is not None else text), usage


class LLMPlayer(_LLMRole):
    """Interactive mode: the acting agent, in the same chat format the tuned model is trained on
    (system = task instruction, user = observations, assistant = ``Thought/Action``), told to make
    ``min_pairs`` realistic mistakes and fix them."""

    what = "answer in the format " + prompts.SYNTH_PLAYER_FORMAT

    def __init__(self, model: BaseChatModel, *, min_pairs: int = 2, **kwargs: Any):
        kwargs.setdefault("structured", "text")  # the agent's own text format, not JSON
        super().__init__(model, **kwargs)
        self.min_pairs = min_pairs

    def messages(self, script: Script, history: list[Turn]) -> list[BaseMessage]:
        mistakes = sum(1 for t in history if t.is_dm and t.flagged)
        system = system_prompt(script) + prompts.SYNTH_PLAYER_TEACHER.format(min_pairs=self.min_pairs, mistakes=mistakes)
        out: list[BaseMessage] = [SystemMessage(content=system)]
        for turn in history:
            if turn.is_dm:
                out.append(HumanMessage(content=(turn.observation or "").strip() or "(no observation)"))
            else:
                if not isinstance(out[-1], HumanMessage):
                    out.append(HumanMessage(content=f"Your task: {script.goal}"))
                out.append(AIMessage(content=format_assistant(turn.thought, turn.action)))
        if not isinstance(out[-1], HumanMessage):
            out.append(HumanMessage(content=f"Your task: {script.goal}"))
        return out

    async def aact(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        def validate(_parsed: Any, text: str) -> tuple[str, str]:
            return parse_player_reply(text)

        value, usage, problem, text = await self._ask(self.messages(script, history), validate)
        if value is None:
            raise MalformedOutputError(f"Player reply unusable: {problem}", usage=usage, raw=text)
        thought, action = value
        return Turn(role="Player", thought=thought, action=action), usage


class LLMDM(_LLMRole):
    """Interactive mode: the environment. Answers the Player's last action with an observation, the three
    error flags and ``task_completed``. With ``rule_hint`` the DM is told the rule check's verdict on the
    action (the same check verification applies), so its ``parameter_error`` agrees with the rules."""

    what = "JSON object of the DM turn"

    def __init__(self, model: BaseChatModel, *, rule_hint: bool = True, **kwargs: Any):
        super().__init__(model, **kwargs)
        self.rule_hint = rule_hint

    def messages(self, script: Script, history: list[Turn]) -> list[BaseMessage]:
        system = SystemMessage(content=prompts.SYNTH_DM_SYSTEM.format(script=_script_json(script)))
        if not history:
            return [system, HumanMessage(content=prompts.SYNTH_DM_OPEN)]
        last = history[-1]
        rule = "(not given)"
        if self.rule_hint:
            try:
                match = match_action(script, last.action or "")
                rule = (f"valid: matches {match.template!r} with {match.values}" if match.ok
                        else f"INVALID ({match.message}): set parameter_error")
            except Exception as exc:  # a broken script regex: let the DM judge alone
                rule = f"unavailable ({exc})"
        lines = json.dumps([t.to_paper() for t in history], ensure_ascii=False, indent=0)
        return [system, HumanMessage(content=prompts.SYNTH_DM_TURN.format(history=lines, action=last.action, rule=rule))]

    async def arespond(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        def validate(parsed: Any, text: str) -> Turn:
            return _dm_turn(parsed if parsed is not None else extract_json(text))

        value, usage, problem, text = await self._ask(self.messages(script, history), validate, schema=_DM_SCHEMA)
        if value is None:
            raise MalformedOutputError(f"DM reply unusable: {problem}", usage=usage, raw=text)
        return value, usage


_SCRIPT_SCHEMA = script_json_schema()
_TRAJECTORY_SCHEMA = trajectory_json_schema()
_DM_SCHEMA: dict[str, Any] = {
    "title": "DMTurn",
    "description": "The DM's answer to the Player's last action.",
    "type": "object",
    "properties": {
        "Thought": {"type": "string"},
        "Observation": {"type": "string"},
        "parameter_error": {"type": "boolean"},
        "place_error": {"type": "boolean"},
        "logic_error": {"type": "boolean"},
        "task_completed": {"type": "boolean"},
    },
    "required": ["Thought", "Observation", "parameter_error", "place_error", "logic_error", "task_completed"],
}


def llm_teacher(
    model: BaseChatModel,
    *,
    mode: Literal["one_shot", "interactive"] = "one_shot",
    min_pairs: int = 2,
    structured: StructuredMode = "auto",
    format_retries: int = 1,
    name: str | None = None,
) -> tuple[LLMScriptWriter, LLMTrajectoryWriter | tuple[LLMPlayer, LLMDM]]:
    """The four roles on one chat model: (script writer, trajectory writer) or (script writer, (player, dm))."""
    common = {"structured": structured, "format_retries": format_retries, "name": name}
    writer = LLMScriptWriter(model, **common)
    if mode == "one_shot":
        return writer, LLMTrajectoryWriter(model, min_pairs=min_pairs, **common)
    if mode == "interactive":
        player_common = dict(common, structured="text")
        return writer, (LLMPlayer(model, min_pairs=min_pairs, **player_common), LLMDM(model, **common))
    raise ValueError(f"mode must be 'one_shot' or 'interactive', not {mode!r}")


# ---------------------------------------------------------------------------------------------- errors
# The classifiers live in agentrefine_lg.failures (one home for the package); re-exported here.

__all__ = [
    "LLMDM",
    "LLMPlayer",
    "LLMScriptWriter",
    "LLMTrajectoryWriter",
    "MalformedOutputError",
    "extract_json",
    "is_fatal_error",
    "is_transient_error",
    "llm_teacher",
    "model_name",
    "parse_player_reply",
    "usage_of",
]
