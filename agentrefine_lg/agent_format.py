"""The trained model's format — one home for what training, serving, the refine agent and evaluation share.

A refinement-tuned model sees a **system prompt** that states the task (:func:`system_prompt` for an
environment script; :func:`tools_system_prompt` / :func:`tools_prompt` for tools) and answers every turn as::

    Thought: <reasoning>
    Action: <one action>

(:func:`format_assistant`), which :func:`parse_action` reads back (the last ``Action:`` wins:
docs/method.md §6). Conversion writes training rows with these functions, the served chat model and the refine
agent prompt with them, evaluation parses with them. The teacher's prompts live apart, in
:mod:`agentrefine_lg.prompts`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentrefine_lg.schema import Script

# ---------------------------------------------------------------------------------------------- templates
# Training conversion and evaluation alike (docs/method.md §5 and §6).

AGENT_SYSTEM = """You are an agent acting in an interactive environment. Read the environment's feedback after every action and correct yourself when an action fails.

Environment:
{environment}

Goal: {goal}

Completion conditions:
{conditions}

Available actions (use exactly these forms; replace each {{slot}} with one allowed value):
{actions}

Answer format: every reply is one thought and one action, exactly:
Thought: <your reasoning about the last observation and what to do next>
Action: <one action>"""

AGENT_ACTION_LINE = "- {template}{description}\n  allowed values: {values}"

AGENT_TURN = "Thought: {thought}\nAction: {action}"

# Tool mode of the refine agent (no environment script): the tools are the available actions. Action syntax is
# the one chat_model.parse_tool_call reads; `finish[...]` ends the episode with an answer.
TOOLS_SYSTEM = """You are an agent that solves a task by calling tools. Read each tool's result and correct yourself when a call fails.

Task: {task}

{tools}"""

# The tools section alone: what the tuned chat model adds to a user's own system prompt when tools are bound
# (chat_model.tools_prompt), so a served tuned model sees its tools exactly as in training.
TOOLS_SECTION = """Available actions (one per reply):
{actions}
- finish[<answer>] — give the final answer and end the task

Answer format: every reply is one thought and one action, exactly:
Thought: <your reasoning about the last observation and what to do next>
Action: <one action>"""

TOOL_LINE = "- {name}[{args}] — {description}"


# ---------------------------------------------------------------------------------------------- prompts


def render_environment(environment: Any) -> str:
    """The script's environment as text: its description first, the rest as compact JSON."""
    if isinstance(environment, str):
        return environment.strip()
    if isinstance(environment, Mapping):
        env = dict(environment)
        description = env.pop("description", None) or env.pop("Description", None)
        # Compact JSON: the instruction is in every training row and every eval prompt, so tokens count.
        body = json.dumps(env, ensure_ascii=False) if env else ""
        return "\n".join(x for x in (str(description).strip() if description else "", body) if x)
    return json.dumps(environment, ensure_ascii=False)


def render_actions(script: Script) -> str:
    """One line per available action: template, description and allowed values."""
    lines = []
    for template, spec in script.available_actions.items():
        values = "; ".join(f"{slot}: {', '.join(vals)}" for slot, vals in spec.parameters.items()) or "(none)"
        description = f" — {spec.description}" if spec.description else ""
        lines.append(AGENT_ACTION_LINE.format(template=template, description=description, values=values))
    return "\n".join(lines)


def system_prompt(script: Script) -> str:
    """The task instruction used as the system message, in training and in evaluation alike."""
    conditions = "\n".join(f"- {c}" for c in script.completion_conditions) or "- (none given)"
    return AGENT_SYSTEM.format(
        environment=render_environment(script.environment),
        goal=script.goal,
        conditions=conditions,
        actions=render_actions(script),
    )


def format_assistant(thought: str | None, action: str | None) -> str:
    """``Thought: ...\\nAction: ...`` — the tuned output format."""
    return AGENT_TURN.format(thought=(thought or "").strip(), action=(action or "").strip())


def tool_schema(tool: Any) -> dict[str, Any]:
    """OpenAI function schema ``{"name", "description", "parameters"}`` of any tool-like object."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    spec = tool if isinstance(tool, dict) and "function" in tool else convert_to_openai_tool(tool)
    return spec["function"]


def tools_prompt(tools: Sequence[Any]) -> str:
    """The tools section of the tuned format: one ``- name[args] — description`` line per tool, ``finish``,
    and the answer format. The refine agent's system prompt and a tuned chat model with bound tools both use it,
    so a served tuned model sees its tools exactly as it was trained to."""
    lines = []
    for tool in tools:
        schema = tool_schema(tool)
        args = ", ".join((schema.get("parameters") or {}).get("properties") or {})
        description = " ".join((schema.get("description") or "").split())
        lines.append(TOOL_LINE.format(name=schema["name"], args=args, description=description))
    return TOOLS_SECTION.format(actions="\n".join(lines))


def tools_system_prompt(tools: Sequence[Any], task: str) -> str:
    """The whole system prompt of a tool task: instruction, task, then :func:`tools_prompt`."""
    return TOOLS_SYSTEM.format(task=task, tools=tools_prompt(tools))


# ---------------------------------------------------------------------------------------------- parsing


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content or "")


_FENCE = re.compile(r"^\s*```[\w+-]*\s*$")
# "Action:", "**Action:**", "action :", "ACTION：" (full-width colon); not "Action Input:".
ACTION_LINE = re.compile(r"^\s*[*_#>\s]*action[*_]*\s*[:：][*_]*\s*(?P<rest>.*)$", re.IGNORECASE)
_ACTION_INPUT = re.compile(r"^\s*[*_]*action\s+input[*_]*\s*[:：][*_]*\s*(?P<rest>.*)$", re.IGNORECASE)
_THOUGHT_LABEL = re.compile(r"^\s*[*_#>\s]*thought[*_]*\s*[:：][*_]*\s*", re.IGNORECASE)
_STOP_LINE = re.compile(r"^\s*(observation|thought)\s*[:：]", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAction:
    """The reading of one model reply: ``action`` is None exactly when ``error`` says why."""

    thought: str | None
    action: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _clean_action(text: str) -> str:
    text = text.strip()
    # Inline code and quotes around the whole action: `go north`, "go north".
    for left, right in (("`", "`"), ('"', '"'), ("'", "'")):
        if len(text) >= 2 and text.startswith(left) and text.endswith(right) and left not in text[1:-1]:
            text = text[1:-1].strip()
    return " ".join(text.split())


def parse_action(text: str | None) -> ParsedAction:
    """Read ``Thought: ...\\nAction: ...`` robustly.

    Several ``Action:`` lines -> the last one (docs/method.md §6); code fences are ignored; only the action line
    (or, when it is empty, the next non-empty line) is the action, trailing text is dropped; labels match
    in any case; ``Action: x`` + ``Action Input: y`` (LangChain ReAct) -> ``x[y]``. No ``Action:`` line ->
    error ``"no Action: line"``; an empty one -> ``"empty action"``.
    """
    if not isinstance(text, str) or not text.strip():
        return ParsedAction(None, None, "no Action: line")
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if not _FENCE.match(line)]
    idx = None
    for i, line in enumerate(lines):
        if ACTION_LINE.match(line):
            idx = i
    if idx is None:
        thought = _THOUGHT_LABEL.sub("", "\n".join(lines)).strip() or None
        return ParsedAction(thought, None, "no Action: line")
    action = ACTION_LINE.match(lines[idx]).group("rest")  # type: ignore[union-attr]
    after = lines[idx + 1:]
    if not action.strip():
        for line in after:
            if line.strip():
                if not _STOP_LINE.match(line) and not _ACTION_INPUT.match(line):
                    action = line
                break
    action = _clean_action(action)
    for line in after:  # LangChain-style "Action Input:" right below the action
        if not line.strip():
            continue
        m = _ACTION_INPUT.match(line)
        if m and action:
            action = f"{action}[{_clean_action(m.group('rest'))}]"
        break
    # Thought: from the last "Thought:" label before the action, else everything before it.
    before = lines[:idx]
    start = 0
    for j, line in enumerate(before):
        if _THOUGHT_LABEL.match(line):
            start = j
    end = next((j for j in range(start, idx) if ACTION_LINE.match(before[j])), idx)
    thought_text = "\n".join(before[start:end])
    thought = _THOUGHT_LABEL.sub("", thought_text, count=1).strip() or None
    if not action:
        return ParsedAction(thought, None, "empty action")
    return ParsedAction(thought, action, None)


__all__ = [
    "AGENT_ACTION_LINE",
    "AGENT_SYSTEM",
    "AGENT_TURN",
    "TOOLS_SECTION",
    "TOOLS_SYSTEM",
    "TOOL_LINE",
    "ParsedAction",
    "content_text",
    "format_assistant",
    "parse_action",
    "render_actions",
    "render_environment",
    "system_prompt",
    "tools_prompt",
    "tools_system_prompt",
]
