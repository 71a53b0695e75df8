"""Built-in reference agents as LangChain chat models, so they run through the same loop and parser as a
real model: the **oracle** (the engine's own solver: BabyAI bot, pyperplan, gold path) and a seeded
**random** agent over the currently valid actions. They bound the scale: a task whose oracle does not reach
~100% within the step budget is broken, and a model near the random agent has learnt nothing.

Both need a handle to the environment of the episode (``env=``): they read its state, never the prompt.
"""

from __future__ import annotations

import random
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from agentrefine_lg.env import TextEnv

#: what an agent says when the env offers nothing to do (the env answers it as an invalid action)
_IDLE = "wait"


class _EnvAgent(BaseChatModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    env: Any = Field(exclude=True, description="The TextEnv of the current episode.")

    def _reply(self) -> str:
        raise NotImplementedError

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self._reply()))])


class OracleAgent(_EnvAgent):
    """Answers ``Thought: ...\\nAction: <env.oracle_action()>``; falls back to a valid action when the
    solver has nothing to say (e.g. after the agent left a fixed gold path)."""

    @property
    def _llm_type(self) -> str:
        return "agentrefine-oracle"

    def _reply(self) -> str:
        env: TextEnv = self.env
        action = env.oracle_action()
        if action:
            return f"Thought: The solver's next step is '{action}'.\nAction: {action}"
        valid = env.valid_actions()
        action = valid[0] if valid else _IDLE
        return f"Thought: The solver has no next step; I try a valid action.\nAction: {action}"


class RandomAgent(_EnvAgent):
    """Picks uniformly from ``env.valid_actions()`` with its own seeded RNG (reproducible per episode)."""

    seed: int = 0
    _rng: random.Random = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        self._rng = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "agentrefine-random"

    def _reply(self) -> str:
        valid = self.env.valid_actions()
        action = self._rng.choice(valid) if valid else _IDLE
        return f"Thought: I pick a random valid action.\nAction: {action}"


AGENTS: dict[str, type[_EnvAgent]] = {"oracle": OracleAgent, "random": RandomAgent}


def make_agent(name: str, env: TextEnv, *, seed: int = 0) -> BaseChatModel:
    """``make_agent("oracle" | "random", env, seed=...)``."""
    if name not in AGENTS:
        raise ValueError(f"unknown built-in agent {name!r}; choose from {', '.join(AGENTS)}")
    if name == "random":
        return RandomAgent(env=env, seed=seed)
    return AGENTS[name](env=env)


__all__ = ["AGENTS", "OracleAgent", "RandomAgent", "make_agent"]
