"""AgentBoard's episodes as :class:`~agentrefine_lg.env.TextEnv`: the same engines, AgentBoard's step rules.

Each class replays what AgentBoard's environment does with one action (the file is named in each class) and
scores it with the rules of :mod:`agentrefine_lg.eval.agentboard_progress`, so an episode run through the
refine-agent graph gets AgentBoard's success and progress. What the agent reads (observation wording, the
script's action templates) is ours where AgentBoard's text does not enter the scoring; where it does (BabyAI,
whose patterns are phrased in AgentBoard's own observation text, see :mod:`.agentboard_babyai`) we render it
the same way.

``StepResult.error`` tells the refine graph which steps AgentBoard counts as invalid (its
``action_is_valid``/grounding check); it never changes the score.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from agentrefine_lg.env import ErrorKind, StepResult, TextEnv
from agentrefine_lg.eval.agentboard import Episode, load_episodes
from agentrefine_lg.eval.agentboard_babyai import ABBabyAIEnv
from agentrefine_lg.eval.agentboard_progress import (
    GoalLiteralProgress,
    PatternRewardProgress,
    SubgoalRegexProgress,
)
from agentrefine_lg.eval.base import action_spec, make_script, quiet, quiet_fds
from agentrefine_lg.schema import Script

CHECK_VALID = "check valid actions"


def build(episode: Episode, **options: Any) -> TextEnv:
    """The environment of one AgentBoard episode."""
    if episode.task == "alfworld":
        return ABAlfWorldEnv(episode, **options)
    if episode.task == "sciworld":
        return ABSciWorldEnv(episode, **options)
    if episode.task == "pddl":
        return ABPddlEnv(episode, **options)
    if episode.task == "jericho":
        return ABJerichoEnv(episode, **options)
    if episode.task == "babyai":
        return ABBabyAIEnv(episode, **options)
    raise ValueError(f"no AgentBoard environment for task {episode.task!r}")


# ------------------------------------------------------------------------------------------------ ALFWorld

_ALF_TEMPLATES: dict[str, str] = {
    "go to {recep}": "walk to a receptacle",
    "open {recep}": "open a receptacle",
    "close {recep}": "close a receptacle",
    "take {obj} from {recep}": "pick up an object from the receptacle you are at",
    "put {obj} in/on {recep}": "put the object you hold in or on the receptacle you are at",
    "use {obj}": "switch an appliance such as a desk lamp on or off",
    "heat {obj} with {recep}": "heat the object you hold with a microwave",
    "cool {obj} with {recep}": "cool the object you hold with a fridge",
    "clean {obj} with {recep}": "clean the object you hold with a sinkbasin",
    "examine {something}": "look closely at an object or receptacle",
    "inventory": "list what you carry",
    "look": "look around you",
    CHECK_VALID: "list the actions that are possible right now",
}
_PUT_INON = re.compile(r"^put (?P<obj>.+?) in/on (?P<recep>.+)$")


class ABAlfWorldEnv(TextEnv):
    """An ALFWorld game file of AgentBoard's data, stepped as ``agentboard/environment/alfworld/alfworld_env.py``
    does and scored by its subgoal regexes (``/(n+1)``, 1.0 when won)."""

    def __init__(self, episode: Episode, **options: Any):
        if options:
            raise TypeError(f"AgentBoard alfworld: unknown options {sorted(options)}")
        self.episode = episode
        self.name = f"agentboard/alfworld/{episode.info['name']}"
        self._env = self._make(policy=False)
        # the planner's policy (our oracle) is costly on ALFRED scenes: a second engine computes it only when
        # the oracle is asked, replaying the episode's commands
        self._oracle_env: Any = None
        self._taken: list[str] = []
        self._oracle_seen = 0
        self._infos: dict[str, Any] = {}
        self._progress = SubgoalRegexProgress(episode.subgoals, extra_slot=True)
        self._done = False
        self.init_obs = ""
        self.goal = episode.goal
        self._env_ob = ""

    def _make(self, *, policy: bool) -> Any:
        import textworld
        import textworld.gym
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

        # alfworld's AlfredTWEnv.init_env for evaluation: AlfredDemangler(shuffle=False) + AlfredInfos
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=True, policy_commands=policy,
                                   extras=["gamefile"])
        with quiet():
            env_id = textworld.gym.register_game(self.episode.info["game_file"], request_infos=infos,
                                                 max_episode_steps=1000, asynchronous=False,
                                                 wrappers=[AlfredDemangler(shuffle=False), AlfredInfos])
            return textworld.gym.make(env_id)

    def reset(self) -> str:
        with quiet():
            obs, infos = self._env.reset()
        self._infos = dict(infos)
        self._taken, self._oracle_seen = [], 0
        if self._oracle_env is not None:
            with contextlib.suppress(Exception):
                self._oracle_env.close()
            self._oracle_env = None
        self._progress = SubgoalRegexProgress(self.episode.subgoals, extra_slot=True)
        self._done = False
        # alfworld_env.py reset: drop the banner (first "\n\n" block); line 0 = the room, line 1 = the task
        body = "\n".join(obs.split("\n\n")[1:]).split("\n")
        self.init_obs = body[0].strip() if body else obs.strip()
        if len(body) > 1 and "Your task is to:" in body[1]:
            self.goal = body[1].split("Your task is to:", 1)[1].strip()
        self._env_ob = self.init_obs
        return self.init_obs

    def _admissible(self) -> list[str]:
        return list(self._infos.get("admissible_commands") or [])

    def _receptacles(self) -> list[str]:
        facts = self._infos.get("facts") or []
        return sorted({f.arguments[0].name for f in facts if f.name.lower() == "receptacletype"})

    def script(self) -> Script:
        receps = self._receptacles() or ["(receptacles from the observations)"]
        objs = ["(objects from the observations)"]
        values = {"recep": receps, "obj": objs, "something": receps}
        actions = [action_spec(t, d, {s: values[s] for s in re.findall(r"\{(\w+)\}", t)})
                   for t, d in _ALF_TEMPLATES.items()]
        return make_script(
            environment={"description": "A household room with receptacles (furniture, appliances) and objects "
                                        "in or on them (ALFWorld).", "receptacles": receps},
            goal=f"Your task is to: {self.goal}",
            completion_conditions=[f"The task '{self.goal}' is accomplished (the environment says so)."],
            actions=actions)

    def valid_actions(self) -> list[str]:
        return [] if self._done else self._admissible()

    @staticmethod
    def _parse(action: str) -> str:
        """``agentboard/tasks/alfworld.py parseAction``: ``put X in Y`` / ``on Y`` -> ``in/on``; no final dot."""
        action = action.strip()
        if "put" in action:
            if " in " in action:
                action = action.replace(" in ", " in/on ")
            elif " on " in action:
                action = action.replace(" on ", " in/on ")
        if action.endswith("."):
            action = action[:-1].strip()
        return action

    def _engine_command(self, action: str) -> str:
        """alfworld 0.4.2's grammar says ``move X to Y`` where ALFWorld's data games say ``put X in/on Y``."""
        m = _PUT_INON.match(action)
        if m and action not in self._admissible():
            move = f"move {m.group('obj')} to {m.group('recep')}"
            if move in self._admissible():
                return move
        return action

    def step(self, action: str) -> StepResult:
        action = self._parse(action)
        if self._done:
            return StepResult("The episode is over.", done=True, progress=1.0, error="logic_error",
                              info={"episode_over": True})
        admissible = action in self._admissible() or self._engine_command(action) != action
        error: ErrorKind | None = None
        # alfworld_env.py step: "look" shows the last arrival text, "check valid actions" lists admissible
        # commands without an engine step, anything else goes to the engine (no validity filter)
        if action == "look":
            with quiet():
                _, _, done, infos = self._env.step("look")
            self._infos = dict(infos)
            self._taken.append("look")
            observation = self._env_ob
        elif action == CHECK_VALID:
            observation = f"Choose an action from these valid actions: {', '.join(self._admissible())}"
            done = False
        else:
            command = self._engine_command(action)
            with quiet():
                observation, _, done, infos = self._env.step(command)
            self._infos = dict(infos)
            self._taken.append(command)
            if not admissible:
                error = "logic_error"
        if ("go to" in action or "open" in action) and "Nothing happens" not in observation:
            self._env_ob = observation
        if observation.startswith("You arrive at loc "):  # alfworld_env.py _process_ob
            observation = observation[observation.find(". ") + 2:]
        won = bool(self._infos.get("won"))
        self._done = bool(done) and won
        self._progress.observe(observation)  # every step's text, "check valid actions" included
        progress = self._progress.rate(done=self._done)
        info: dict[str, Any] = {"episode_over": True} if self._done else {}
        return StepResult(observation.strip(), done=self._done, progress=progress, error=error, info=info)

    def oracle_action(self) -> str | None:
        if self._done:
            return None
        if self._oracle_env is None:
            self._oracle_env = self._make(policy=True)
            with quiet():
                _, self._oracle_infos = self._oracle_env.reset()
            self._oracle_seen = 0
        with quiet():
            for command in self._taken[self._oracle_seen:]:
                _, _, _, self._oracle_infos = self._oracle_env.step(command)
        self._oracle_seen = len(self._taken)
        plan = self._oracle_infos.get("policy_commands") or []
        if not plan:
            return None
        m = re.match(r"^move (.+?) to (.+)$", plan[0])  # the 0.4.2 grammar's placement, in AgentBoard's words
        return f"put {m.group(1)} in/on {m.group(2)}" if m else plan[0]

    def close(self) -> None:
        for attr in ("_env", "_oracle_env"):
            env = getattr(self, attr, None)
            if env is not None:
                with contextlib.suppress(Exception):
                    env.close()
                setattr(self, attr, None)


# ------------------------------------------------------------------------------------------------ ScienceWorld

#: ``agentboard/tasks/scienceworld.py build_simplification_str``
SCIWORLD_SIMPLIFICATIONS = "selfWateringFlowerPots,openContainers,openDoors,noElectricalAction"


class ABSciWorldEnv(TextEnv):
    """A ScienceWorld (task, variation) of AgentBoard's data, stepped as
    ``agentboard/environment/scienceworld_env.py`` does: subgoal regexes / n, done when all matched."""

    def __init__(self, episode: Episode, *, heap: str | None = "512m", **options: Any):
        from agentrefine_lg.eval.sciworld import start_jvm

        if options:
            raise TypeError(f"AgentBoard sciworld: unknown options {sorted(options)}")
        self.episode = episode
        self.task, self.var = episode.info["env_name"], episode.info["var"]
        self.name = f"agentboard/sciworld/{self.task}/{self.var}"
        self._sw = start_jvm(heap)
        self._closed = False
        try:
            # the gold path is for our oracle only; it does not change the episode
            self._sw.load(self.task, self.var, SCIWORLD_SIMPLIFICATIONS, generateGoldPath=True)
            self._gold = [str(a) for a in self._sw.get_gold_action_sequence()]
            self._templates = [str(a) for a in self._sw.get_possible_actions() if "reset" not in str(a)]
        except Exception:
            self.close()
            raise
        self._progress = SubgoalRegexProgress(episode.subgoals, extra_slot=False)
        self._done = False
        self._gold_pos = 0

    def reset(self) -> str:
        obs, _ = self._sw.reset()
        self._progress = SubgoalRegexProgress(self.episode.subgoals, extra_slot=False)
        self._done = False
        self._gold_pos = 0
        # tasks/scienceworld.py evaluate_env: the first observation is reset's text plus the inventory
        return f"{obs}\n{self._sw.inventory()}"

    def script(self) -> Script:
        actions = [action_spec(t.replace("OBJ", "{object}", 1).replace("OBJ", "{target}", 1),
                               "an action of the simulator") for t in self._templates]
        actions.append(action_spec(CHECK_VALID, "list the action templates"))
        seen: dict[str, Any] = {}
        for spec in actions:
            seen.setdefault(spec.template, spec)
        return make_script(
            environment={"description": "A simulated house with rooms, objects, substances, devices, plants and "
                                        "animals following elementary science (ScienceWorld).", "task": self.task},
            goal=self.episode.goal,
            completion_conditions=["Every step the task needs is observed (AgentBoard's subgoals)."],
            actions=list(seen.values()))

    def valid_actions(self) -> list[str]:
        if self._done:
            return []
        return sorted({str(a) for a in self._sw.get_valid_action_object_combinations()} - {"reset task"},
                      key=lambda a: (len(a), a))

    def step(self, action: str) -> StepResult:
        action = action.strip()  # scienceworld_env.py parseAction
        if self._done:
            return StepResult("The episode is over.", done=True, progress=1.0, error="logic_error",
                              info={"episode_over": True})
        if action == CHECK_VALID:  # the abstract templates, no engine step, no subgoal check
            text = f"Choose an action from these valid actions: {', '.join([*self._templates, CHECK_VALID])}"
            return StepResult(text, progress=self._progress.rate())
        observation, _, _, _ = self._sw.step(action)
        observation = str(observation)
        if self._gold_pos < len(self._gold) and action == self._gold[self._gold_pos]:
            self._gold_pos += 1
        self._progress.observe(observation)
        self._done = self._progress.all_matched()
        error: ErrorKind | None = None
        if observation.lower().startswith("no known action matches that input"):
            error = "parameter_error"
        info: dict[str, Any] = {"episode_over": True} if self._done else {}
        return StepResult(observation, done=self._done, progress=1.0 if self._done else self._progress.rate(),
                          error=error, info=info)

    def oracle_action(self) -> str | None:
        if self._done or self._gold_pos >= len(self._gold):
            return None
        return self._gold[self._gold_pos]

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        sw = self._sw
        with contextlib.suppress(Exception), quiet():
            sw.close()
            proc = sw._gateway.java_process
            if proc is not None:
                proc.wait(timeout=10)
        sw.close = lambda: None  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------------------ PDDL


def _literal_text(lit: Any) -> str:
    """``stack b1 b2``: operator (or predicate) name and argument names, which AgentBoard's parser reads back."""
    return " ".join([lit.predicate.name, *(v.name for v in lit.variables)])


class ABPddlEnv(TextEnv):
    """A PDDL problem of AgentBoard's data on pddlgym (operators as actions, dynamic action space, as
    AgentBoard registers gripper/blockworld/barman/tyreworld in its ``pddlgym/__init__.py``), stepped as
    ``agentboard/environment/pddl_env/pddl_env.py`` does and scored by its goal-literal running max."""

    def __init__(self, episode: Episode, **options: Any):
        if options:
            raise TypeError(f"AgentBoard pddl: unknown options {sorted(options)}")
        with quiet():
            from pddlgym.core import PDDLEnv

            self._env = PDDLEnv(episode.info["domain_file"], episode.info["problem_dir"],
                                operators_as_actions=True, dynamic_action_space=True)
        self._env.fix_problem_index(episode.info["problem_index"])
        self.episode = episode
        self.game = episode.info["game"]
        self.name = f"agentboard/pddl/{self.game}/{Path(episode.info['problem_file']).stem}"
        self._state: Any = None
        self._progress: GoalLiteralProgress | None = None
        self._done = self.won = False
        self._plan: list[str] | None = None

    def _valid(self) -> list[Any]:
        return sorted(self._env.action_space.all_ground_literals(self._state), key=str)

    def _facts(self, literals: Any) -> str:
        return " ".join(sorted(f"{_literal_text(lit)}." for lit in literals))

    def _goal_text(self) -> str:
        goal = sorted(_literal_text(lit) for lit in self._state.goal.literals)
        return "The goal is to satisfy the following conditions: " + ", ".join(goal) + "."

    def reset(self) -> str:
        with quiet():
            self._state, _ = self._env.reset()
        self._progress = GoalLiteralProgress(self._state.goal.literals)
        self._done = self.won = False
        self._plan = None
        return f"{self._goal_text()} Current state: {self._facts(self._state.literals)}"

    def script(self) -> Script:
        objects = sorted(o.name for o in self._state.objects)
        actions = []
        for name, op in sorted(self._env.domain.operators.items()):
            slots = [re.sub(r"\W", "", str(p.name if hasattr(p, "name") else p).lstrip("?")) or f"x{i}"
                     for i, p in enumerate(op.params)]
            template = " ".join([name, *(f"{{{s}}}" for s in slots)])
            actions.append(action_spec(template, f"the domain's {name} operator", {s: objects for s in slots}))
        actions.append(action_spec(CHECK_VALID, "list the actions that are applicable now"))
        actions.append(action_spec("look around", "list the facts that hold now"))
        return make_script(
            environment={"domain": self.game, "objects": objects,
                         "facts": "Facts read 'predicate argument ...', e.g. 'on b1 b2' = b1 is on b2."},
            goal=self._goal_text(),
            completion_conditions=[_literal_text(lit) for lit in sorted(self._state.goal.literals, key=str)],
            actions=actions)

    def valid_actions(self) -> list[str]:
        return [] if self._done else [_literal_text(lit) for lit in self._valid()]

    def _text_to_literal(self, text: str) -> Any:
        """``pddl_env.py text_to_action``: the first word naming a *currently applicable* operator, then the
        object names in the order written (extra ones dropped, too few -> None)."""
        from pddlgym.structs import Literal

        tokens = re.findall(r"[a-z0-9_\-]+", text.lower())
        preds = {lit.predicate.name.lower(): lit.predicate for lit in self._valid()}
        name = next((t for t in tokens if t in preds), None)
        if name is None:
            return None
        pred = preds[name]
        if pred.arity == 0:
            return Literal(pred, [])
        objects = {o.name.lower(): o for o in self._state.objects}
        args = [objects[t] for t in tokens if t in objects][: pred.arity]
        if len(args) < pred.arity:
            return None
        return Literal(pred, args)

    def step(self, action: str) -> StepResult:
        assert self._progress is not None, "reset() first"
        reward = self._progress.reward
        if self._done:
            return StepResult("The goal is already satisfied.", done=True, progress=reward, error="logic_error",
                              info={"episode_over": True})
        low = action.lower()
        if "check" in low:
            return StepResult("Valid actions are: " + ", ".join([*self.valid_actions(), CHECK_VALID]),
                              progress=reward)
        if "look around" in low:
            return StepResult(self._facts(self._state.literals), progress=reward)
        lit = self._text_to_literal(action)
        if lit is None:
            return StepResult("The action is not valid and therefore takes no effect. Please check valid actions.",
                              progress=reward, error="parameter_error")
        with quiet():
            new_state, _, done, _, _ = self._env.step(lit)
        if new_state == self._state:  # pddl_env.py: a silently ignored action keeps the old reward
            return StepResult("The action is not valid and therefore takes no effect. Please remember to satisfy "
                              "the restriction of actions. You can also check valid actions.",
                              progress=reward, error="logic_error")
        self._state = new_state
        reward = self._progress.observe_state(new_state.literals)
        self.won = all(g in new_state.literals for g in new_state.goal.literals)
        self._done = bool(done)
        text = self._facts(new_state.literals) + (" The goal is satisfied." if self.won else "")
        if self._plan and self._plan[0] == _literal_text(lit):
            self._plan.pop(0)
        else:
            self._plan = None
        return StepResult(text, done=self._done and self.won, progress=reward,
                          info={"episode_over": True} if self._done else {})

    def oracle_action(self) -> str | None:
        """pyperplan (gbf + hFF) from the problem file; None once the agent leaves the plan."""
        if self._done:
            return None
        if self._plan is None:
            if self._state.literals != self._initial_literals():
                return None
            self._plan = self._pyperplan()
        return self._plan[0] if self._plan else None

    def _initial_literals(self) -> Any:
        with quiet():
            from pddlgym.core import PDDLEnv

            env = PDDLEnv(self.episode.info["domain_file"], self.episode.info["problem_dir"],
                          operators_as_actions=True, dynamic_action_space=True)
            env.fix_problem_index(self.episode.info["problem_index"])
            state, _ = env.reset()
        return state.literals

    def _pyperplan(self) -> list[str]:
        try:
            from pyperplan.planner import HEURISTICS, SEARCHES, search_plan

            with quiet():
                ops = search_plan(self.episode.info["domain_file"], self.episode.info["problem_file"],
                                  SEARCHES["gbf"], HEURISTICS["hff"]) or []
        except Exception:  # noqa: BLE001 - a domain pyperplan cannot read: no oracle, the run goes on
            return []
        return [op.name.strip("()") for op in ops]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._env.close()


# ------------------------------------------------------------------------------------------------ Jericho


def _clean_jericho(text: str) -> str:
    """``jericho_env.py clean_up_text``: newlines to spaces, runs of spaces to one, no "[Your score ...]"."""
    text = re.sub(r"\n", " ", text)
    text = re.sub(r" {2,}", " ", text)
    return re.sub(r"\[Your score .*?\]", "", text)


class ABJerichoEnv(TextEnv):
    """A Jericho story file of AgentBoard's data on jericho's Frotz engine, stepped as
    ``agentboard/environment/jericho_env.py`` does and scored by its observation patterns (running max,
    done and won when all matched)."""

    def __init__(self, episode: Episode, **options: Any):
        import warnings

        from jericho import FrotzEnv

        if options:
            raise TypeError(f"AgentBoard jericho: unknown options {sorted(options)}")
        self.episode = episode
        self.game = episode.info["game"]
        self.name = f"agentboard/jericho/{self.game}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # files jericho does not know (fixtures) are "unsupported games"
            self._env = FrotzEnv(episode.info["game_file"])
        self._progress = PatternRewardProgress(episode.subgoals, style="jericho")
        self._done = self.won = False
        self._walkthrough: list[str] | None = None
        self._taken: list[str] = []

    def reset(self) -> str:
        with quiet_fds():
            obs, _ = self._env.reset()
        self._progress = PatternRewardProgress(self.episode.subgoals, style="jericho")
        self._done = self.won = False
        self._taken = []
        # AgentBoard shows a hand-written first observation per game; we show the game's own intro, cleaned as
        # jericho_env.py get_init_obs does (no copyright block between dashes, one line)
        text = re.sub(r"-----([\s\S]*?)-----", "", str(obs))
        return re.sub(r" {2,}", " ", re.sub(r"\n", " ", text)).strip()

    def _valid(self) -> list[str]:
        import warnings

        try:
            with quiet_fds(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "unsupported game": no list, an empty one is the answer
                return list(self._env.get_valid_actions())
        except Exception:  # noqa: BLE001 - unsupported games cannot list actions
            return []

    def script(self) -> Script:
        actions = [action_spec("{command}", "any text command the game understands (e.g. 'open door', "
                                            "'go north', 'take lamp')", {"command": ["(any command)"]}),
                   action_spec(CHECK_VALID, "list the commands the game accepts now"),
                   action_spec("inventory", "list what you carry")]
        return make_script(environment={"game": self.game, "description": "An interactive-fiction game (Jericho)."},
                           goal=self.episode.goal or "Play the game to its goal.",
                           completion_conditions=["Every milestone of the game's goal is reached."],
                           actions=actions)

    def valid_actions(self) -> list[str]:
        return [] if self._done else self._valid()

    @staticmethod
    def _parse(action: str) -> str:
        """``agentboard/tasks/jericho.py parse_action``: up to the first comma or dot, at most 20 words."""
        action = action.split(",")[0].split(".")[0]
        return " ".join(action.split(" ")[:20])

    def step(self, action: str) -> StepResult:
        if self._done:
            return StepResult("The episode is over.", done=self.won, progress=self._progress.reward,
                              error="logic_error", info={"episode_over": True})
        action = self._parse(action)
        low = action.strip().lower()
        if "check" in low and "action" in low:  # jericho_env.py validate_check_valid_actions
            return StepResult("You can take the following actions: " + ", ".join([*self._valid(), CHECK_VALID]),
                              progress=self._progress.reward)
        with quiet_fds():
            observation, _, done, _ = self._env.step(action)
        observation = _clean_jericho(str(observation))
        self._taken.append(action)
        reward = self._progress.observe(observation)
        self.won = reward == 1
        self._done = self.won or bool(done)
        error: ErrorKind | None = "parameter_error" if "[!" in observation else None
        info: dict[str, Any] = {"episode_over": True} if self._done else {}
        return StepResult(observation.strip(), done=self.won, progress=reward, error=error, info=info)

    def oracle_action(self) -> str | None:
        """The game's walkthrough (jericho ships them for its supported games) while the agent follows it."""
        if self._done:
            return None
        if self._walkthrough is None:
            import warnings

            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._walkthrough = list(self._env.get_walkthrough())
            except Exception:  # noqa: BLE001 - unsupported games have none
                self._walkthrough = []
        n = len(self._taken)
        if self._taken != self._walkthrough[:n] or n >= len(self._walkthrough):
            return None
        return self._walkthrough[n]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._env.close()


def make_env(task: str, episode: int, data_dir: str | os.PathLike[str], **options: Any) -> TextEnv:
    """Episode ``episode`` of AgentBoard's ``task`` as a :class:`TextEnv` (its AgentBoard scoring included)."""
    episodes = load_episodes(data_dir, task)
    if not 0 <= episode < len(episodes):
        raise ValueError(f"{task}: AgentBoard data has {len(episodes)} episodes, no episode {episode}")
    return build(episodes[episode], **options)


__all__ = [
    "CHECK_VALID", "ABAlfWorldEnv", "ABJerichoEnv", "ABPddlEnv", "ABSciWorldEnv", "build", "make_env"]
