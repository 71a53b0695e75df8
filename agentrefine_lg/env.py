"""The interactive-environment contract shared by evaluation, the refine agent and the grounded teacher.

An environment is anything that can describe itself as a :class:`~agentrefine_lg.schema.Script`
(environment, goal, completion conditions, available actions with verification regexes) and answer an
action with an observation. Evaluation, the refine agent's ``execute`` node and the grounded teacher's
DM all speak to engines through this one interface, so what we measure is what users deploy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from agentrefine_lg.schema import Script

ErrorKind = Literal["parameter_error", "place_error", "logic_error"]


@dataclass
class StepResult:
    """What the engine says to one action."""

    observation: str
    done: bool = False  # the task is completed (success)
    progress: float = 0.0  # AgentBoard-style progress in [0, 1], a running maximum
    error: ErrorKind | None = None  # the engine's judgement of the action, None when it was accepted
    info: dict[str, Any] = field(default_factory=dict)


class TextEnv(ABC):
    """A text environment with a goal. Subclasses wrap an engine (TextWorld, BabyAI, ScienceWorld, ...)."""

    #: task family and instance, e.g. ``"babyai/GoToObj/3"``
    name: str = "env"

    @abstractmethod
    def reset(self) -> str:
        """Start (or restart) the episode; return the first observation."""

    @abstractmethod
    def script(self) -> Script:
        """The environment as a script: what the agent's system prompt shows (docs/method.md §5, §6)."""

    @abstractmethod
    def step(self, action: str) -> StepResult:
        """Apply one action (already parsed from the model's text)."""

    def valid_actions(self) -> list[str]:
        """Currently valid commands, when the engine can list them (may be costly)."""
        return []

    def current_progress(self) -> float:
        """Progress of the current state, e.g. right after ``reset`` (AgentBoard's PDDL progress counts goal
        facts that already hold at the start). Episodes that never get a valid step still report it."""
        return 0.0

    def oracle_action(self) -> str | None:
        """The next action of the engine's own solver (gold path, bot, planner); None when done or unknown."""
        return None

    def mistake(self, kind: str) -> str | None:
        """A realistic mistake of ``kind`` (``place_error``, ``logic_error``; ``parameter_error``) in the current
        state, confirmed against the engine, for error-injection evaluation; None when this engine cannot make
        one (:mod:`agentrefine_lg.eval.injection` then builds parameter errors from the script alone)."""
        return None

    def close(self) -> None:
        """Release engine resources (JVMs, subprocesses)."""

    def __enter__(self) -> TextEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
