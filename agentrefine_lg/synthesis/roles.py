"""The three roles of AgentRefine synthesis — script writer, Player and DM — behind one small interface.

An LLM (``synthesis.LLM*`` classes) or an engine (``grounded.Grounded*`` classes) can fill each role; the
graphs in :mod:`agentrefine_lg.synthesis.graphs` only call these methods and never know which.
Every call returns the usage it cost so runs can report tokens and cost per accepted sample.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from agentrefine_lg.schema import Script, TokenUsage, Turn


@runtime_checkable
class ScriptWriter(Protocol):
    """Writes a script for a persona. ``problems`` are the checker's findings on the last attempt."""

    name: str

    async def awrite_script(self, persona: str, problems: list[str]) -> tuple[Script | dict[str, Any] | str, TokenUsage]:
        ...


@runtime_checkable
class TrajectoryWriter(Protocol):
    """One-shot mode (the paper): writes the whole Player/DM trajectory, continuing ``prefix``."""

    name: str

    async def awrite_trajectory(
        self, script: Script, prefix: list[Turn], problems: list[str]
    ) -> tuple[list[Turn] | list[dict[str, Any]] | str, TokenUsage]:
        ...


@runtime_checkable
class Player(Protocol):
    """Interactive mode: the acting agent. Returns the next Player turn given the history."""

    name: str

    async def aact(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        ...


@runtime_checkable
class DM(Protocol):
    """Interactive mode: the environment / critic. With an empty history it gives the opening
    observation; otherwise it answers the last Player turn with an observation and error flags."""

    name: str

    async def arespond(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        ...
