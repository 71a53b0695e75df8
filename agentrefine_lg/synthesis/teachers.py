"""Which teacher a synthesis run uses: the embedded grounded teacher, or an LLM (a model spec or an
OpenAI-compatible server). One construction for ``agentrefine synthesize`` and the ``langgraph.json`` graphs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.serving.chat_model import openai_chat
from agentrefine_lg.synthesis.llm_roles import llm_teacher
from agentrefine_lg.synthesis.turns import turn_http_client


@dataclass
class Teacher:
    """The roles a run uses, with the mode they need and a name for the manifest."""

    script_writer: Any
    trajectory_roles: Any  # a TrajectoryWriter, or (player, dm)
    mode: str
    name: str
    roles: list[Any] = field(default_factory=list)
    grounded: bool = False

    @property
    def default_max_turns(self) -> int:
        """Engine games need more turns than LLM-imagined ones (the grounded teacher's own cap)."""
        return GROUNDED_MAX_TURNS if self.grounded else 40


GROUNDED_MAX_TURNS = 160


def build_teacher(
    *,
    teacher: str | None = None,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    mode: str | None = None,
    structured: str = "auto",
    temperature: float | None = None,
    timeout: float | None = None,
    min_pairs: int = 2,
    format_retries: int = 1,
    cache_dir: str | None = None,
) -> Teacher:
    """The default (no ``teacher`` and no ``base_url``, or ``teacher='grounded'``) is the embedded,
    engine-backed teacher (interactive). Otherwise an LLM: ``teacher`` is an ``init_chat_model`` spec
    (``openai:gpt-4o``) or ``base_url`` + ``model`` an OpenAI-compatible server (vLLM).

    LLM clients get ``max_retries=0``: the graph's RetryPolicy is the one retry layer, so every retry is counted.
    """
    if base_url or (teacher and teacher != "grounded"):
        kwargs: dict[str, Any] = {"max_retries": 0}
        if base_url or teacher.startswith("openai:"):  # an OpenAI client: replies handled in turns (turns.py)
            kwargs["http_async_client"] = turn_http_client()
        if temperature is not None:
            kwargs["temperature"] = temperature
        if timeout is not None:
            kwargs["timeout"] = timeout
        if base_url:
            if not model:
                raise InputError("--base-url needs --model (the served model's name)", field="model")
            chat = openai_chat(base_url=base_url, model=model,
                               api_key=api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY", **kwargs)
            name = model
        else:
            from langchain.chat_models import init_chat_model

            try:
                chat = init_chat_model(teacher, **kwargs)
            except (ImportError, ValueError) as exc:
                raise AgentRefineError(f"--teacher {teacher!r}: {exc}") from None
            name = teacher
        mode = mode or "one_shot"
        writer, roles = llm_teacher(chat, mode=mode, min_pairs=min_pairs, structured=structured,  # type: ignore[arg-type]
                                    format_retries=format_retries, name=name)
        flat = [writer, *(roles if isinstance(roles, tuple) else (roles,))]
        return Teacher(writer, roles, mode, name, flat)
    from agentrefine_lg.synthesis.grounded import grounded_teacher

    if mode not in (None, "interactive"):
        raise InputError("the grounded teacher is interactive (its DM is an engine); drop --mode or use --teacher",
                         field="mode")
    kwargs = {}
    if min_pairs + 1 > 3:  # the grounded Player's default of 3-4 mistakes guarantees 2 pairs
        kwargs = {"min_errors": min_pairs + 1, "max_errors": min_pairs + 2}
    writer, player, dm = grounded_teacher(cache_dir, **kwargs)
    return Teacher(writer, (player, dm), "interactive", getattr(writer, "name", "grounded"), [writer, player, dm],
                   grounded=True)


__all__ = ["GROUNDED_MAX_TURNS", "Teacher", "build_teacher"]
