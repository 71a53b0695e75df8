"""BabyAI (minigrid) as a text task: our own egocentric rendering, six primitive actions, the BabyAI bot as oracle.

minigrid's observations are 7x7 grids, so the text is ours: every visible object with its position relative to
the agent ("a red key 2 steps forward and 1 step to the left"), what is directly in front, what is carried.
Valid actions follow from the cell in front (ENVIRONMENTS.md); an action that the engine would silently ignore
(walking into a wall, picking up from empty floor) is answered as a ``logic_error`` and not executed, so the
agent gets feedback instead of a wasted move.

Progress is the *oracle distance*: 1 - remaining/initial steps of a fresh bot rolled out on a copy of the
current state, kept as a running maximum (AgentBoard's own BabyAI progress needs annotations we can't get).
"""

from __future__ import annotations

import copy
from typing import Any

from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.eval.base import (
    RunningMax,
    TaskInfo,
    action_spec,
    make_script,
    missing_modules,
    normalize_action,
    quiet,
)
from agentrefine_lg.schema import Script

TASK = TaskInfo(
    name="babyai",
    family="BabyAI",
    description="BabyAI grid-world missions (minigrid levels) rendered as egocentric text; primitive actions.",
    held_out=True,
    note="Own text rendering and oracle-distance progress (AgentBoard's annotated progress patterns are not "
         "available offline); oracle = minigrid's BabyAIBot.",
)

#: Levels the bot solves within ~20 steps on average (ENVIRONMENTS.md), so 30 steps leave room for mistakes.
LEVELS: tuple[str, ...] = (
    "GoToObj",
    "GoToRedBall",
    "GoToLocal",
    "PickupLoc",
    "OpenDoor",
    "PutNextLocal",
    "UnlockPickup",
    "GoToRedBallGrey",
)

ACTIONS: dict[str, str] = {  # our text -> minigrid action name
    "turn left": "left",
    "turn right": "right",
    "move forward": "forward",
    "pick up": "pickup",
    "drop": "drop",
    "toggle": "toggle",
}
_DESCRIPTIONS = {
    "turn left": "turn 90 degrees to the left",
    "turn right": "turn 90 degrees to the right",
    "move forward": "step one cell forward (the cell in front must be free or an open door)",
    "pick up": "pick up the object directly in front of you (you can carry one object)",
    "drop": "put the carried object on the free cell in front of you",
    "toggle": "open/close the door or box in front of you (a locked door needs the key of its colour)",
}
_ALIASES = {
    "left": "turn left", "right": "turn right", "forward": "move forward", "go forward": "move forward",
    "pickup": "pick up", "pick": "pick up", "open": "toggle", "open door": "toggle", "drop it": "drop",
}
_MAX_ROLLOUT = 300


def available() -> str | None:
    return missing_modules("minigrid", "gymnasium")


def make_env(episode: int, seed: int = 0, *, levels: tuple[str, ...] | list[str] | None = None,
             **options: Any) -> BabyAIEnv:
    """Episode ``i`` = level ``levels[i % n]`` with an engine seed derived from ``(episode, seed)``."""
    if options:
        raise TypeError(f"babyai.make_env: unknown options {sorted(options)}")
    levels = tuple(levels or LEVELS)
    level = levels[episode % len(levels)]
    return BabyAIEnv(level, seed=seed * 100_003 + episode, episode=episode)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _describe_obj(obj: Any) -> str:
    if obj.type == "door":
        state = "open" if obj.is_open else ("locked" if obj.is_locked else "closed")
        return f"a {obj.color} door ({state})"
    return f"a {obj.color} {obj.type}"


class BabyAIEnv(TextEnv):
    """One BabyAI level instance."""

    def __init__(self, level: str, *, seed: int, episode: int = 0):
        import gymnasium as gym

        with quiet():
            import minigrid  # noqa: F401 - registers the BabyAI ids

            self._env = gym.make(f"BabyAI-{level}-v0")
        self.level, self.seed, self.episode = level, seed, episode
        self.name = f"babyai/{level}/{episode}"
        self._progress = RunningMax()
        self._bot: Any = None
        self._bot_action: Any = None
        self._initial_cost = 1
        self._over = False
        self._success = False
        self._mission = ""

    # --- engine helpers ---
    @property
    def _u(self) -> Any:
        return self._env.unwrapped

    def _front(self) -> Any:
        return self._u.grid.get(*self._u.front_pos)

    def _rollout_cost(self) -> int | None:
        """Steps the oracle needs from the current state, by playing it out on a copy.

        The persistent bot is copied together with the env so it keeps its map of what it has seen (a fresh
        bot would explore and overestimate); a fresh bot is the fallback. None if neither finishes.
        """
        from minigrid.utils.baby_ai_bot import BabyAIBot

        starts: list[tuple[Any, Any]] = []
        if self._bot is not None and self._bot_action is not None:
            starts.append(copy.deepcopy((self._bot, self._env, self._bot_action)))
        starts.append((None, copy.deepcopy(self._env), None))
        for bot, sim, act in starts:
            try:
                with quiet():
                    if bot is None:
                        bot = BabyAIBot(sim)
                        act = bot.replan()
                    for n in range(_MAX_ROLLOUT):
                        _, reward, term, _, _ = sim.unwrapped.step(act)
                        if term:
                            if reward > 0:
                                return n + 1
                            break
                        act = bot.replan()
            except Exception:  # noqa: BLE001, S112 - the bot asserts on states it can't handle; try the next start
                continue
        return None

    def _advise(self, action_taken: Any = None) -> None:
        """Keep the persistent bot in step with the episode (it adapts to deviations, DAgger-style)."""
        from minigrid.utils.baby_ai_bot import BabyAIBot

        try:
            with quiet():
                if self._bot is None:
                    self._bot = BabyAIBot(self._env)
                    action_taken = None
                self._bot_action = self._bot.replan(action_taken)
        except Exception:  # noqa: BLE001 - bot lost track (e.g. an agent opened a box): start a fresh one
            try:
                with quiet():
                    self._bot = BabyAIBot(self._env)
                    self._bot_action = self._bot.replan()
            except Exception:  # noqa: BLE001
                self._bot, self._bot_action = None, None

    # --- rendering ---
    def _view(self) -> str:
        u = self._u
        obs = u.gen_obs()
        img = obs["image"]
        from minigrid.core.constants import IDX_TO_OBJECT

        grid, _ = u.gen_obs_grid()
        seen: list[tuple[int, str]] = []
        for j in range(img.shape[1]):
            for i in range(img.shape[0]):
                kind = IDX_TO_OBJECT[int(img[i, j, 0])]
                if kind in ("unseen", "empty", "wall", "floor", "agent"):
                    continue
                fwd, right = (img.shape[1] - 1) - j, i - (img.shape[0] // 2)
                if fwd == 0 and right == 0:
                    continue
                obj = grid.get(i, j)
                if obj is None:
                    continue
                where = []
                if fwd:
                    where.append(f"{_plural(fwd, 'step')} forward")
                if right:
                    where.append(f"{_plural(abs(right), 'step')} to the {'right' if right > 0 else 'left'}")
                seen.append((abs(fwd) + abs(right), f"{_describe_obj(obj)} {' and '.join(where)}"))
        seen.sort()
        front = self._front()
        if front is None:
            front_text = "empty floor"
        elif front.type == "wall":
            front_text = "a wall"
        else:
            front_text = _describe_obj(front)
        carrying = u.carrying
        parts = [
            "You see: " + ("; ".join(text for _, text in seen) if seen else "nothing but walls and floor") + ".",
            f"Directly in front of you: {front_text}.",
            f"You carry {_describe_obj(carrying) if carrying else 'nothing'}.",
        ]
        return " ".join(parts)

    # --- TextEnv ---
    def reset(self) -> str:
        with quiet():
            obs, _ = self._env.reset(seed=self.seed)
        self._mission = obs["mission"]
        self._progress = RunningMax()
        self._over = self._success = False
        self._bot = None
        self._advise()
        self._initial_cost = max(1, self._rollout_cost() or 1)
        return f"Mission: {self._mission}. {self._view()}"

    def script(self) -> Script:
        actions = [action_spec(text, _DESCRIPTIONS[text]) for text in ACTIONS]
        environment = {
            "world": "A 2D grid world of rooms separated by walls and doors, seen from your own position. "
                     "You see a few cells ahead and to the sides, not through walls or closed doors.",
            "objects": "balls, boxes and keys in colours red, green, blue, purple, yellow and grey; doors may be "
                       "locked and open only with the key of the same colour; boxes can hold objects.",
            "positions": "Positions are relative to you: 'N steps forward' and 'M steps to the left/right'. "
                         "Turning changes what is forward.",
            "level": self.level,
        }
        mission = self._mission or "the mission shown in the first observation"
        return make_script(
            environment=environment,
            goal=f"Accomplish the mission: {mission}.",
            completion_conditions=[f"The mission '{mission}' is accomplished (the environment says so)."],
            actions=actions,
        )

    def valid_actions(self) -> list[str]:
        if self._over:
            return []
        front, carrying = self._front(), self._u.carrying
        valid = ["turn left", "turn right"]
        if front is None or front.can_overlap():
            valid.append("move forward")
        if front is not None and front.can_pickup() and carrying is None:
            valid.append("pick up")
        if carrying is not None and front is None:
            valid.append("drop")
        has_key = carrying is not None and front is not None and carrying.type == "key" and carrying.color == front.color
        if front is not None and front.type in ("door", "box") and not (front.type == "door" and front.is_locked
                                                                         and not has_key):
            valid.append("toggle")
        return valid

    def _refusal(self, text: str) -> str:
        front, carrying = self._front(), self._u.carrying
        front_name = "empty floor" if front is None else ("a wall" if front.type == "wall" else _describe_obj(front))
        if text == "move forward":
            return f"You can't move forward: {front_name} blocks the way."
        if text == "pick up":
            if carrying is not None:
                return f"You are already carrying {_describe_obj(carrying)}; drop it first."
            return f"There is nothing to pick up in front of you ({front_name})."
        if text == "drop":
            if carrying is None:
                return "You are not carrying anything."
            return f"You can't drop here: {front_name} is in front of you."
        if text == "toggle":
            if front is not None and front.type == "door" and front.is_locked:
                return f"The {front.color} door is locked; you need to carry the {front.color} key."
            return f"There is nothing to open or close in front of you ({front_name})."
        return f"You can't {text} now."

    def step(self, action: str) -> StepResult:
        text = normalize_action(action)
        text = _ALIASES.get(text, text)
        progress = self._progress.value
        if self._over:
            return StepResult("The episode is over.", done=self._success, progress=progress, error="logic_error",
                              info={"episode_over": True})
        if text not in ACTIONS:
            return StepResult(
                f"Invalid action {action!r}. Valid actions are: {', '.join(ACTIONS)}.", done=False,
                progress=progress, error="parameter_error")
        if text not in self.valid_actions():
            return StepResult(self._refusal(text) + " " + self._view(), done=False, progress=progress,
                              error="logic_error")
        act = getattr(self._u.actions, ACTIONS[text])
        with quiet():
            _, reward, terminated, truncated, _ = self._env.step(act)
        info: dict[str, Any] = {"action": text}
        if terminated:
            self._over = True
            self._success = reward > 0
            info["episode_over"] = True
            if self._success:
                self._progress.update(1.0)
                return StepResult(f"You {text}. Mission accomplished: {self._mission}.", done=True,
                                  progress=1.0, info=info)
            return StepResult(f"You {text}. The mission failed.", done=False, progress=progress, info=info)
        self._advise(act)
        remaining = self._rollout_cost()
        if remaining is not None:
            self._progress.update(1.0 - remaining / self._initial_cost)
        if truncated:
            self._over = True
            info["episode_over"] = True
            return StepResult(f"You {text}. Time is up.", done=False, progress=self._progress.value, info=info)
        return StepResult(f"You {text}. {self._view()}", done=False, progress=self._progress.value, info=info)

    def oracle_action(self) -> str | None:
        if self._over or self._bot_action is None:
            return None
        name = self._u.actions(self._bot_action).name
        for text, engine in ACTIONS.items():
            if engine == name:
                return text
        return None  # the bot says "done": nothing left to do

    def close(self) -> None:
        self._env.close()
