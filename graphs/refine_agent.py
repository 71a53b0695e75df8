"""A ready refine agent for ``langgraph dev`` / LangGraph Server (``langgraph.json``: ``refine_agent``).

The model is the served tuned model (``agentrefine serve``), from environment variables:
``AGENTREFINE_BASE_URL`` (default ``http://127.0.0.1:8000/v1``), ``AGENTREFINE_MODEL`` (default
``agentrefine``), ``AGENTREFINE_API_KEY``. Tools: ``AGENTREFINE_TOOLS``, comma-separated import paths
``package.module:name`` (a tool, a function, or a list of them — the operator's own code), else two small
built-ins (``calculator``, ``word_count``) so the graph runs out of the box. ``AGENTREFINE_TRACES``: a JSONL
path that collects every episode as refinement-tuning data. ``AGENTREFINE_MAX_STEPS`` / ``_MAX_RETRIES``.

Input: ``{"messages": [{"role": "user", "content": "..."}]}`` (or ``{"refine_task": "..."}``); the answer is
appended to ``messages``. Stream with ``stream_mode="custom"`` to watch each step and the trace.
"""

from __future__ import annotations

import ast
import importlib
import operator
import os
from typing import Any

from langchain_core.tools import BaseTool, tool

from agentrefine_lg.refine_agent import create_refine_agent
from agentrefine_lg.serving.chat_model import chat_model

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
        ast.USub: operator.neg, ast.UAdd: operator.pos}


def _arith(node: ast.AST) -> float:
    # Walks the parsed tree itself: only numbers and arithmetic operators, nothing is evaluated by Python.
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _arith(node.left), _arith(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 64:
            raise ValueError("exponent too large")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("only numbers and + - * / // % ** are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression, e.g. 3 * (4 + 5)."""
    if len(expression) > 200:
        raise ValueError("expression too long")
    return str(_arith(ast.parse(expression.strip(), mode="eval").body))


@tool
def word_count(text: str) -> str:
    """Count the words of a text."""
    return str(len(text.split()))


def _load_tools(spec: str) -> list[Any]:
    tools: list[Any] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        module_name, _, attr = item.partition(":")
        if not attr:
            raise ValueError(f"AGENTREFINE_TOOLS entry {item!r} must be 'package.module:name'")
        obj = getattr(importlib.import_module(module_name), attr)
        tools.extend(obj if isinstance(obj, (list, tuple)) else [obj])
    return tools


def build_graph():
    """The compiled refine agent configured from the environment (see the module docstring)."""
    model = chat_model(
        base_url=os.environ.get("AGENTREFINE_BASE_URL") or "http://127.0.0.1:8000/v1",
        model=os.environ.get("AGENTREFINE_MODEL") or "agentrefine",
        api_key=os.environ.get("AGENTREFINE_API_KEY") or None,
    )
    spec = os.environ.get("AGENTREFINE_TOOLS", "").strip()
    tools: list[BaseTool | Any] = _load_tools(spec) if spec else [calculator, word_count]
    retries = os.environ.get("AGENTREFINE_MAX_RETRIES")
    return create_refine_agent(
        model,
        tools=tools,
        max_steps=int(os.environ.get("AGENTREFINE_MAX_STEPS") or 30),
        max_retries=int(retries) if retries else 3,
        trace_sink=os.environ.get("AGENTREFINE_TRACES") or None,
        name="refine_agent",
    ).compile()


graph = build_graph()
