"""AgentBoard's progress-rate rules, as pure objects fed one observation (or state) at a time.

AgentBoard (github.com/hkust-nlp/AgentBoard) scores every episode by *success* (the environment's ``done``)
and a *progress rate* in [0, 1]: the value of the environment's ``reward`` after the last step, averaged
over episodes (``agentboard/tasks/*.py``: ``progress_rate = reward``). Each environment computes that reward
its own way; the classes below follow them rule by rule, with the file each rule comes from. They are our
own code, written from reading AgentBoard's, and know nothing about engines: the environment wrappers in
:mod:`agentrefine_lg.eval.agentboard_envs` feed them what AgentBoard feeds its rules.

All of them are monotone (a matched subgoal stays matched, rewards are running maxima), so the refine
graph's running maximum of ``StepResult.progress`` equals AgentBoard's final value.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence


class SubgoalRegexProgress:
    """Sticky subgoal regexes (ALFWorld and ScienceWorld).

    ``agentboard/environment/alfworld/alfworld_env.py`` and ``agentboard/environment/scienceworld_env.py``
    (``_check_temperature_string``): after a step, every subgoal pattern is ``re.search``-ed in the
    observation; a match sets that subgoal's slot to 1 and slots are never cleared.

    - ALFWorld (``extra_slot=True``, ``alfworld_env.py`` ``reset``/``_get_reward``): there are
      ``len(subgoals) + 1`` slots, the last never set, so the rate is ``matched / (n + 1)`` and only reaches
      1.0 through ``done`` (``_get_reward`` returns 1.0 once the game is won).
    - ScienceWorld (``extra_slot=False``, ``scienceworld_env.py`` ``get_reward``/``_check_is_done``): the rate
      is ``matched / n`` and the episode is *done* (a success) once every subgoal matched; the simulator's own
      completion flag plays no part.
    """

    def __init__(self, patterns: Sequence[str], *, extra_slot: bool):
        if not patterns and not extra_slot:
            raise ValueError("ScienceWorld progress needs at least one subgoal pattern (AgentBoard divides by n)")
        self.patterns = [str(p) for p in patterns]
        self._compiled = [re.compile(p) for p in self.patterns]
        self.extra_slot = extra_slot
        self.finished = [False] * len(self.patterns)

    def observe(self, observation: str) -> float:
        """Match one observation; returns the rate (without the ALFWorld ``done`` override)."""
        for i, rx in enumerate(self._compiled):
            if rx.search(observation):
                self.finished[i] = True
        return self.rate()

    @property
    def matched(self) -> int:
        return sum(self.finished)

    def rate(self, *, done: bool = False) -> float:
        """The progress rate; ``done`` (ALFWorld's won game) makes it 1.0."""
        if done:
            return 1.0
        return self.matched / (len(self.finished) + (1 if self.extra_slot else 0))

    def all_matched(self) -> bool:
        """ScienceWorld's ``_check_is_done``: every subgoal matched."""
        return self.matched >= len(self.finished)


def babyai_match(observation: str, pattern: str) -> bool:
    """``agentboard/environment/babyai_env.py`` ``match_style``: a pattern is pieces joined by ``**`` (or
    ``*`` when there is no ``**``); it matches when one sentence of the observation (split at ``.``)
    contains every piece (pieces lose surrounding dots, not spaces)."""
    pattern = pattern.strip()
    token = "**" if "**" in pattern else "*"
    pieces = [p.strip(".") for p in pattern.split(token)]
    return any(all(p in sentence for p in pieces) for sentence in observation.split("."))


def jericho_match(observation: str, pattern: str) -> bool:
    """``agentboard/environment/jericho_env.py`` ``match_style``: drop every character but letters, digits
    and whitespace from both, then a plain substring test."""
    clean = re.compile(r"[^a-zA-Z0-9\s]")
    return clean.sub("", pattern) in clean.sub("", observation)


class PatternRewardProgress:
    """Observation patterns that each award one point, reward = running max of points / number of patterns
    (BabyAI and Jericho: ``update_reward`` in ``agentboard/environment/babyai_env.py`` and
    ``agentboard/environment/jericho_env.py``).

    Per observation at most **one** pattern is awarded: the first (in list order) that matches; it is then
    removed. BabyAI also accepts *alternative paths* (a list of equally long lists, AgentBoard's
    ``subgoals_1``, ``subgoals_2``, ... keys): position ``i`` is awarded when any path's ``i``-th pattern
    matches, scanning positions in order, and position ``i`` is then removed from every path.
    """

    def __init__(self, patterns: Sequence[str] | Sequence[Sequence[str]], *, style: str = "babyai"):
        if style not in ("babyai", "jericho"):
            raise ValueError(f"style must be 'babyai' or 'jericho', got {style!r}")
        self.style = style
        self._match = babyai_match if style == "babyai" else jericho_match
        items = list(patterns)
        self.paths: list[list[str]] | None = None
        self.flat: list[str] = []
        if items and not isinstance(items[0], str):
            self.paths = [list(p) for p in items]  # copies: AgentBoard mutates its lists, we keep the input
            lengths = {len(p) for p in self.paths}
            if len(lengths) != 1:
                raise ValueError(f"alternative subgoal paths must have equal lengths, got {sorted(lengths)}")
            self.total = len(self.paths[0])
        else:
            self.flat = [str(p) for p in items]
            self.total = len(self.flat)
        self.points = 0
        self.reward = 0.0

    def observe(self, observation: str) -> float:
        """Award at most one pattern for this observation; returns the reward (running max)."""
        if self.total == 0:
            return self.reward
        if self.paths is not None:
            for i in range(len(self.paths[0])):
                if any(self._match(observation, path[i]) for path in self.paths):
                    self._award()
                    for path in self.paths:
                        del path[i]
                    break
        else:
            for pattern in self.flat:
                if self._match(observation, pattern):
                    self._award()
                    self.flat.remove(pattern)
                    break
        return self.reward

    def _award(self) -> None:
        self.points += 1
        self.reward = max(self.reward, self.points / self.total)


class GoalLiteralProgress:
    """PDDL: the fraction of goal literals true in the state, as a running maximum
    (``agentboard/environment/pddl_env/pddl_env.py`` ``constraint_satisfaction_metric`` and ``step``:
    ``reward = max(self.reward, metric(new state))``). AgentBoard updates it only after an action that changed
    the state (a silently ignored or unparsable action keeps the old reward), and starts every episode at 0
    even when some goal literals already hold (``reset`` sets ``self.reward = 0``)."""

    def __init__(self, goal: Iterable[object]):
        self.goal = list(goal)
        if not self.goal:
            raise ValueError("a PDDL goal needs at least one literal")
        self.reward = 0.0

    def fraction(self, state: Iterable[object]) -> float:
        facts = set(state)
        return sum(1 for lit in self.goal if lit in facts) / len(self.goal)

    def observe_state(self, state: Iterable[object]) -> float:
        """After an effective action: fold the new state's fraction into the running maximum."""
        self.reward = max(self.reward, self.fraction(state))
        return self.reward


__all__ = [
    "GoalLiteralProgress",
    "PatternRewardProgress",
    "SubgoalRegexProgress",
    "babyai_match",
    "jericho_match",
]
