"""AgentBoard's BabyAI episodes: AgentBoard's text and action space on minigrid, scored by its patterns.

AgentBoard's BabyAI progress patterns (``babyai/test.jsonl`` ``subgoals``) are phrased in the observation text
of ``agentboard/environment/babyai_env.py`` ("There is a red ball 1 right in front of you 1 steps away.",
"You are carrying a red ball."), so this module renders observations the way that file's
``postprocess_obs`` does and offers the same actions: ``turn left``, ``turn right``, ``move forward``,
``pickup <object> <k>``, ``drop``, ``toggle``, ``go to <object> <k>``, ``go through <door> <k>``,
``toggle and go through <door> <k>``, ``go to goal``, ``check available actions``; a high-level action runs its
primitive steps until one changes nothing (``step``/``verify_action``). Our own code throughout.

Scoring (``babyai_env.py update``): only executed actions update the reward; the observation (with
"The task is completed." appended when minigrid ends the episode) is matched by
:class:`~agentrefine_lg.eval.agentboard_progress.PatternRewardProgress`; minigrid's success counts only when
the reward is above 0.5, and a reward of 1 completes the episode even without minigrid's success.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.eval.agentboard import Episode
from agentrefine_lg.eval.agentboard_progress import PatternRewardProgress
from agentrefine_lg.eval.base import action_spec, make_script, quiet
from agentrefine_lg.schema import Script

#: minigrid's direction vectors (0 = +x, 1 = +y, 2 = -x, 3 = -y)
_DIRS = [np.array((1, 0)), np.array((0, 1)), np.array((-1, 0)), np.array((0, -1))]
_OBJECTS = {4: "door", 5: "key", 6: "ball", 7: "box", 8: "goal", 9: "lava", 2: "wall"}
_COLORS = {0: "red", 1: "green", 2: "blue", 3: "purple", 4: "yellow", 5: "grey"}
_STATES = {0: "open", 1: "closed", 2: "locked"}
_BLOCKING = ("wall", "box", "lava", "ball", "key")  # what the path search and ``drop`` treat as occupied
LEFT, RIGHT, FORWARD, PICKUP, DROP, TOGGLE = 0, 1, 2, 3, 4, 5
CHECK = "check available actions"


class ABBabyAIEnv(TextEnv):
    """One BabyAI level and seed of AgentBoard's data."""

    def __init__(self, episode: Episode, **options: Any):
        import gymnasium as gym

        if options:
            raise TypeError(f"AgentBoard babyai: unknown options {sorted(options)}")
        with quiet():
            import minigrid  # noqa: F401 - registers the BabyAI ids

            self._env = gym.make(episode.info["env_id"])
        self.episode = episode
        self.seed = int(episode.info["seed"])
        self.name = f"agentboard/babyai/{episode.info['env_id'].removeprefix('BabyAI-').removesuffix('-v0')}/{self.seed}"
        self.goal = ""
        self._actions: dict[str, list[int]] = {}
        self._errors: dict[str, str] = {}
        self._image: Any = None
        self._progress = PatternRewardProgress(episode.subgoals, style="babyai")
        self._done = False
        self._bot: Any = None

    @property
    def _u(self) -> Any:
        return self._env.unwrapped

    # --- AgentBoard's text and action space (babyai_env.py postprocess_obs / find_path) ---
    def _view(self, obs: dict[str, Any]) -> tuple[str, dict[str, list[int]], dict[str, str]]:
        u = self._u
        size = u.agent_view_size
        pos = np.array(u.agent_pos)
        f_vec, r_vec = np.array(u.dir_vec), np.array(u.right_vec)
        heading = int(obs["direction"])
        top_left = pos + f_vec * (size - 1) - r_vec * (size // 2)
        border = top_left + size * (-f_vec + r_vec)
        xrange = range(border[0], top_left[0] + 1) if border[0] < top_left[0] else range(top_left[0], border[0])
        yrange = range(border[1], top_left[1] + 1) if border[1] < top_left[1] else range(top_left[1], border[1])
        grid = obs["image"]
        objs: list[dict[str, Any]] = []
        barriers: list[dict[str, Any]] = []
        for vj in range(size):
            for vi in range(size):
                ax, ay = top_left - f_vec * vj + r_vec * vi
                distance = abs(pos[0] - ax) + abs(pos[1] - ay)
                if ax < 0 or ay < 0 or distance == 0:
                    continue
                kind = _OBJECTS.get(int(grid[vi, vj, 0]))
                if kind is None:
                    continue
                color = _COLORS[int(grid[vi, vj, 1])]
                name = f"{color} {_STATES[int(grid[vi, vj, 2])]} door" if kind == "door" else f"{color} {kind}"
                objs.append({"name": name, "pos": (int(ax), int(ay)), "dis": int(distance)})
                if kind in ("box", "wall"):
                    rel = (ax - pos[0], ay - pos[1])
                    d = _DIRS[heading]
                    if d[0] * rel[1] - d[1] * rel[0] == 0:  # the 2D cross product: straight ahead
                        barriers.append({"name": kind, "pos": (int(ax), int(ay)),
                                         "dis": int(np.dot(_DIRS[heading], rel))})
        objs.sort(key=lambda o: o["dis"])  # stable: ties keep the scan order

        def rel(o: dict[str, Any]) -> tuple[int, int]:
            d = (o["pos"][0] - pos[0], o["pos"][1] - pos[1])
            return int(np.dot(_DIRS[heading], d)), int(np.dot(_DIRS[(heading + 1) % 4], d))

        if objs:
            text = "In front of you in this room, you can see several objects: "
            seen: dict[str, int] = {}
            for o in objs:
                if "wall" in o["name"]:
                    continue
                front, right = rel(o)
                if right == 0:
                    where = f"right in front of you {front} steps away. "
                elif right > 0:
                    where = f"{front} steps in front of you and {right} steps to your right. "
                else:
                    where = f"{front} steps in front of you and {-right} steps to your left. "
                seen[o["name"]] = seen.get(o["name"], 0) + 1
                text += f"There is a {o['name']} {seen[o['name']]} {where} "
        else:
            text = "You cannot see any objects within sight."
        text += "The room has walls around you. "
        if barriers:
            barriers.sort(key=lambda b: b["dis"])
            text += f"You are facing a {barriers[0]['name']} {barriers[0]['dis']} steps away. "
        carrying = u.carrying
        text += f"You are carrying a {carrying.color} {carrying.type}." if carrying else "You are not carrying anything."

        def path(goal: tuple[int, int], arrive: bool) -> list[int] | None:
            return self._find_path(tuple(int(v) for v in pos), goal, objs + barriers, heading, xrange, yrange, arrive)

        actions: dict[str, list[int]] = {"turn left": [LEFT], "turn right": [RIGHT]}
        errors: dict[str, str] = {}
        if not barriers or barriers[0]["dis"] > 1:
            actions["move forward"] = [FORWARD]
        else:
            errors["move forward"] = "There is a barrier in front of you, you can't move forward."
        if carrying is None:
            count: dict[str, int] = {}
            for o in objs:
                if any(k in o["name"] for k in ("wall", "door", "goal")):
                    continue
                steps = path(o["pos"], False)
                self._number("pickup", o["name"], None if steps is None else [*steps, PICKUP], count, actions,
                             errors, "pickup")
            errors["drop"] = "You cannot drop the object, as you are not carrying anything."
        else:
            errors.pop("drop", None)
            ahead = (int(pos[0] + _DIRS[heading][0]), int(pos[1] + _DIRS[heading][1]))
            if any(o["pos"] == ahead and any(k in o["name"] for k in _BLOCKING) for o in objs):
                errors["drop"] = "You cannot drop the object, as there is already an object in front of you."
            else:
                actions["drop"] = [DROP]
        doors: dict[str, int] = {}
        for o in objs:
            if "door" not in o["name"]:
                continue
            doors[o["name"]] = doors.get(o["name"], 0) + 1
            k = doors[o["name"]]
            if "open door" in o["name"]:
                steps = path(o["pos"], True)
                if steps is None:
                    errors[f"go through {o['name']} {k}"] = f"You cannot go through {o['name']} {k}, as there is no path leading to it."
                else:
                    actions[f"go through {o['name']} {k}"] = steps
            elif "closed door" in o["name"] or "locked door" in o["name"]:
                key = f"toggle and go through {o['name']} {k}"
                if "locked door" in o["name"]:
                    if carrying is None or carrying.type != "key":
                        errors[key] = f"You cannot toggle and go through {o['name']} {k}, as you are not carrying a key."
                        continue
                    if carrying.color != o["name"].split(" ")[0]:
                        errors[key] = (f"You cannot toggle and go through {o['name']} {k}, as the color of the key "
                                       "you are carrying does not match the color of door.")
                        continue
                steps = path(o["pos"], False)
                if steps is None:
                    errors[key] = f"You cannot toggle and go through {o['name']} {k}, as there is no path leading to it."
                else:
                    actions[key] = [*steps, TOGGLE, FORWARD]
                    if not steps:
                        actions["toggle"] = [TOGGLE]
                if "closed door" in o["name"]:
                    errors[f"go through {o['name']} {k}"] = (f"You cannot go through {o['name']} {k}, as it is closed. "
                                                             "You should toggle it first.")
        for o in objs:
            if "goal" in o["name"]:
                steps = path(o["pos"], True)
                if steps is None:
                    errors["go to goal"] = "You cannot go to the goal, as there is no path leading to it."
                else:
                    actions["go to goal"] = steps
        count = {}
        for o in objs:
            if "wall" in o["name"] or "goal" in o["name"]:
                continue
            self._number("go to", o["name"], path(o["pos"], False), count, actions, errors, "go to")
        actions[CHECK] = []
        return text, actions, errors

    @staticmethod
    def _number(verb: str, name: str, steps: list[int] | None, count: dict[str, int],
                actions: dict[str, list[int]], errors: dict[str, str], said: str) -> None:
        """babyai_env.py numbering of ``pickup``/``go to`` actions: the k-th *reachable* object of a name; an
        unreachable one gets an error under the next number (so ``1`` is reused while none is reachable)."""
        first = f"{verb} {name} 1"
        if steps is not None:
            if first not in actions:
                actions[first] = steps
                count[name] = 1
            else:
                count[name] += 1
                actions[f"{verb} {name} {count[name]}"] = steps
        elif first not in actions:
            errors[first] = f"You cannot {said} {name} 1, as there is no path leading to it."
        else:
            k = count[name] + 1
            errors[f"{verb} {name} {k}"] = f"You cannot {said} {name} {k}, as there is no path leading to it."

    @staticmethod
    def _find_path(start: tuple[int, int], goal: tuple[int, int], things: list[dict[str, Any]], heading: int,
                   xrange: range, yrange: range, arrive: bool) -> list[int] | None:
        """babyai_env.py ``find_path``: breadth-first over (cell, heading) with forward/left/right inside the
        view, to stand on ``goal`` (``arrive``) or to face it from a neighbouring cell; None when unreachable.

        Kept as AgentBoard searches, quirks included, because the path decides where the agent ends up and so
        what the scored observation says: a state counts as visited once *popped*, it may be queued more than
        once, and every discovery overwrites its recorded parent."""
        blocked = {o["pos"] for o in things if any(k in o["name"] for k in _BLOCKING)}
        origin = (start, heading)
        parent: dict[tuple[tuple[int, int], int], tuple[tuple[tuple[int, int], int], int]] = {}
        queue = deque([origin])
        popped: set[tuple[tuple[int, int], int]] = set()
        while queue:
            cell, facing = queue.popleft()
            popped.add((cell, facing))
            vec = _DIRS[facing]
            reached = cell == goal if arrive else (goal[0] - cell[0], goal[1] - cell[1]) == (int(vec[0]), int(vec[1]))
            if reached:
                steps: list[int] = []
                node = (cell, facing)
                while node != origin:
                    node, act = parent[node]
                    steps.append(act)
                return steps[::-1]
            for act in (FORWARD, LEFT, RIGHT):
                if act == FORWARD:
                    nxt = ((cell[0] + int(vec[0]), cell[1] + int(vec[1])), facing)
                else:
                    nxt = (cell, (facing + (1 if act == RIGHT else -1)) % 4)
                (nx, ny), _ = nxt
                if nx not in xrange or ny not in yrange or nxt in popped or nxt[0] in blocked:
                    continue
                queue.append(nxt)
                parent[nxt] = ((cell, facing), act)
        return None

    # --- TextEnv ---
    def reset(self) -> str:
        with quiet():
            obs, _ = self._env.reset(seed=self.seed)
        goal = self._u.mission  # babyai_env.py reset: "then" and "after you" read as "and"
        self.goal = goal.replace("then", "and") if "then" in goal else goal
        if "after you" in self.goal:
            self.goal = self.goal.replace("after you", "and")
        self._progress = PatternRewardProgress(self.episode.subgoals, style="babyai")
        self._done = False
        self._image = obs["image"]
        text, self._actions, self._errors = self._view(obs)
        self._bot = None
        return text

    def script(self) -> Script:
        forms = {
            "turn left": "turn 90 degrees left", "turn right": "turn 90 degrees right",
            "move forward": "step one cell forward",
            "pickup {object} {k}": "walk to the k-th such visible object and pick it up",
            "drop": "drop the carried object in front of you",
            "toggle": "open the door in front of you",
            "go to {object} {k}": "walk next to the k-th such visible object",
            "go through {door} {k}": "walk through the k-th such open door",
            "toggle and go through {door} {k}": "walk to the k-th such closed or locked door, open it, step through",
            "go to goal": "walk onto the goal square",
            CHECK: "list the actions possible now",
        }
        names = sorted({" ".join(a.split(" ")[1:-1]) for a in self._actions if a.split(" ")[0] in ("pickup", "go")}
                       - {""}) or ["(objects from the observation)"]
        doors = sorted(n for n in names if "door" in n) or ["(doors from the observation)"]
        values = {"object": names, "door": doors, "k": ["1", "2", "3"]}
        return make_script(
            environment={"world": "A 2D grid world of rooms with doors, keys, balls and boxes (BabyAI). Positions "
                                  "are relative to you; objects are numbered per name from near to far.",
                         "level": self.episode.info["env_id"]},
            goal=self.goal,
            completion_conditions=[f"The mission '{self.goal}' is completed."],
            actions=[action_spec(t, d, {s: values[s] for s in values if "{" + s + "}" in t})
                     for t, d in forms.items()])

    def valid_actions(self) -> list[str]:
        return [] if self._done else list(self._actions)

    def step(self, action: str) -> StepResult:
        action = action.lower().strip()
        reward = self._progress.reward
        if self._done:
            return StepResult("The task is completed.", done=True, progress=reward, error="logic_error",
                              info={"episode_over": True})
        if "check" in action:  # babyai_env.py step: any "check" lists the actions, no reward update
            return StepResult("You can take the following actions: " + ", ".join(self._actions), progress=reward)
        if action not in self._actions:
            message = self._errors.get(action, "The action is not recognized. Please check valid actions.")
            return StepResult(message, progress=reward,
                              error="logic_error" if action in self._errors else "parameter_error")
        primitives = self._actions[action]
        if not primitives:
            return StepResult("No change in state.", progress=reward)
        obs: dict[str, Any] = {}
        done = False
        for prim in primitives:
            with quiet():
                obs, _, done, _, _ = self._env.step(prim)
            self._advise(prim)
            if (obs["image"] != self._image).sum() == 0:  # verify_action: stop at the first step that did nothing
                break
            self._image = obs["image"]
        text, self._actions, self._errors = self._view(obs)
        if done:
            text += "\n The task is completed."
        reward = self._progress.observe(text)
        self._done = bool(done)
        if self._done and reward <= 0.5:  # "in case the model find a way to skip a step"
            self._done = False
        if reward == 1 and not self._done:
            self._done = True
            text += "\n The task is completed."
        self._image = obs["image"]
        return StepResult(text, done=self._done, progress=reward, info={"episode_over": True} if self._done else {})

    # --- oracle: minigrid's bot, its primitive action said in AgentBoard's words when one is offered ---
    def _advise(self, taken: int | None = None) -> None:
        from minigrid.utils.baby_ai_bot import BabyAIBot

        try:
            with quiet():
                if self._bot is None:
                    self._bot = BabyAIBot(self._env)
                    self._bot_action = self._bot.replan()
                else:
                    self._bot_action = self._bot.replan(taken)
        except Exception:  # noqa: BLE001 - the bot lost track; no oracle from here
            self._bot, self._bot_action = None, None

    def oracle_action(self) -> str | None:
        if self._done:
            return None
        if self._bot is None:
            self._advise()
        act = getattr(self, "_bot_action", None)
        if act is None:
            return None
        act = int(act)
        simple = {LEFT: "turn left", RIGHT: "turn right", FORWARD: "move forward", DROP: "drop", TOGGLE: "toggle"}
        if act in simple and simple[act] in self._actions:
            return simple[act]
        if act == PICKUP:
            return next((a for a, p in self._actions.items() if a.startswith("pickup") and p == [PICKUP]), None)
        if act == TOGGLE:
            return next((a for a, p in self._actions.items() if p == [TOGGLE, FORWARD]), None)
        if act == FORWARD:  # the bot walks into something AgentBoard treats as a barrier-free cell only
            return None
        return None

    def close(self) -> None:
        self._env.close()


__all__ = ["ABBabyAIEnv"]
