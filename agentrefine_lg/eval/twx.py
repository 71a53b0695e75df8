"""The Jericho stand-in: TextWorld-Express text games (cookingworld, coin, mapreader, twc, sorting).

AgentBoard's Jericho category needs the original Infocom-style story files, which are not distributed with
jericho and cannot be downloaded offline (ENVIRONMENTS.md). TextWorld-Express ships its games inside its jar,
has a gold path (``getGoldActionSequence``), lists valid commands and scores progress in [0, 1], so it stands
in for Jericho here. Reports say so: numbers on this task are **not** Jericho numbers.

Action templates are derived from the commands the engine itself lists as valid (at the start, along the gold
path and on a walk through every reachable room), grouped by verb; the allowed values are the directions and
the nouns seen there. A command outside the
valid list is not sent to the engine (it would only burn a move on "Unknown action"): a known verb is answered
as a ``logic_error`` (not possible now), anything else as a ``parameter_error``.
"""

from __future__ import annotations

import re
import shutil
from typing import Any

from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.eval.base import (
    RunningMax,
    TaskInfo,
    make_script,
    missing_modules,
    normalize_action,
    quiet_fds,
    template_regex,
)
from agentrefine_lg.schema import ActionSpec, Script

TASK = TaskInfo(
    name="jericho",
    family="Jericho stand-in",
    description="TextWorld-Express games (cookingworld, coin, mapreader, twc, sorting) standing in for Jericho.",
    held_out=True,
    note="Stand-in: the original Jericho ROMs cannot be obtained offline; these are TextWorld-Express games "
         "(score 0-1 = progress, gold path = oracle). Not comparable with the paper's Jericho column.",
)

#: game -> TextWorld-Express generation parameters, sized so the gold path stays well inside 30 steps.
GAMES: dict[str, str] = {
    "cookingworld": "numLocations=1,numIngredients=2,numDistractorItems=2,includeDoors=0,limitInventorySize=0",
    "coin": "numLocations=5,numDistractorItems=2,includeDoors=1,limitInventorySize=0",
    "mapreader": "numLocations=5,maxDistanceApart=2,maxDistractorItemsPerLocation=1,includeDoors=0,"
                 "limitInventorySize=0",
    "twc": "numLocations=2,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0",
    "sorting": "",
}

_DIRECTIONS = {"north": "south", "south": "north", "east": "west", "west": "east"}

# (template, description, custom regex or None). Order matters: more specific forms first.
_VERBS: tuple[tuple[str, str, str | None], ...] = (
    ("look around", "describe the current room", None),
    ("inventory", "list what you carry", None),
    ("task", "repeat the task description", None),
    ("prepare meal", "combine the prepared ingredients into a meal", None),
    ("move {direction}", "walk to the neighbouring room in that direction", None),
    ("open door to {direction}", "open the door in that direction", None),
    ("close door to {direction}", "close the door in that direction", None),
    ("put {object} in {container}", "put a carried object in/on a container or surface", None),
    ("cook {object} in {appliance}", "cook an ingredient with an appliance", None),
    ("take {object}", "pick up an object", None),
    ("open {container}", "open a container", r"^\s*open\s+(?!door\s+to\b)(.+?)\s*$"),
    ("close {container}", "close a container", r"^\s*close\s+(?!door\s+to\b)(.+?)\s*$"),
    ("read {object}", "read a book, map or note", None),
    ("examine {object}", "look closely at something", None),
    ("eat {object}", "eat something", None),
    ("slice {object}", "slice an ingredient (needs a knife)", None),
    ("chop {object}", "chop an ingredient (needs a knife)", None),
    ("dice {object}", "dice an ingredient (needs a knife)", None),
    ("drop {object}", "drop a carried object", None),
)


def available() -> str | None:
    missing = missing_modules("textworld_express")
    if missing:
        return missing
    if shutil.which("java") is None:
        return "TextWorld-Express needs Java (no 'java' on PATH)"
    return None


def make_env(episode: int, seed: int = 0, *, games: list[str] | tuple[str, ...] | None = None,
             **options: Any) -> TWXEnv:
    """Episode ``i`` = game ``games[i % n]``, generated with seed ``seed * 1000 + i // n`` (test fold)."""
    if options:
        raise TypeError(f"twx.make_env: unknown options {sorted(options)}")
    games = tuple(games or GAMES)
    unknown = sorted(set(games) - set(GAMES))
    if unknown:
        raise ValueError(f"unknown TextWorld-Express games {unknown}; known: {', '.join(GAMES)}")
    game = games[episode % len(games)]
    return TWXEnv(game, game_seed=seed * 1000 + episode // len(games), episode=episode)


def _regex(template: str, custom: str | None) -> str:
    return custom or template_regex(template)


def derive_actions(commands: list[str]) -> tuple[dict[str, ActionSpec], list[str]]:
    """Group engine commands by verb into templates with the values seen; returns (specs, unmatched commands).

    Commands that fit no known verb form become literal templates, so nothing the engine offers is hidden.
    """
    found: dict[str, dict[str, set[str]]] = {}
    leftovers: list[str] = []
    for command in sorted(set(commands)):
        for template, _, custom in _VERBS:
            m = re.match(_regex(template, custom), command)
            if m:
                slots = re.findall(r"{(\w+)}", template)
                values = found.setdefault(template, {slot: set() for slot in slots})
                for slot, value in zip(slots, m.groups(), strict=True):
                    values[slot].add(value)
                break
        else:
            leftovers.append(command)
    # The engine lists a command only when it is possible right now ("put egg in fridge" only while holding
    # the egg), so per-verb values are incomplete. Every noun of the world is an allowed value of every noun
    # slot: a command naming a real thing that is impossible is the engine's to refuse (a logic error), a
    # command naming nothing in this world is a parameter error.
    nouns = sorted({v for values in found.values() for slot, vals in values.items() if slot != "direction"
                    for v in vals})
    specs: dict[str, ActionSpec] = {}
    for template, description, custom in _VERBS:
        if template in found:
            specs[template] = ActionSpec(
                template=template, description=description, verification_code=_regex(template, custom),
                parameters={slot: sorted(vals) if slot == "direction" else nouns
                            for slot, vals in found[template].items()})
    for command in leftovers:
        specs[command] = ActionSpec(template=command, description="a command this game offers",
                                    verification_code=r"^\s*" + r"\s+".join(map(re.escape, command.split())) + r"\s*$")
    return specs, leftovers


class TWXEnv(TextEnv):
    """One TextWorld-Express game (its own JVM, closed by :meth:`close`)."""

    def __init__(self, game: str, *, game_seed: int, episode: int = 0):
        from textworld_express import TextWorldExpressEnv

        with quiet_fds():
            self._env = TextWorldExpressEnv(envStepLimit=100)
        self.game, self.game_seed, self.episode = game, game_seed, episode
        self.name = f"jericho/{game}/{game_seed}"
        self._progress = RunningMax()
        self._gold: list[str] = []
        self._gold_pos = 0
        self._on_gold = True
        self._valid: list[str] = []
        self._over = self._success = False
        self._specs: dict[str, ActionSpec] = {}
        self._task = ""
        self._first = ""

    def _reset_engine(self, gold: bool = False) -> tuple[str, dict[str, Any]]:
        # The same seed gives the same game with or without the gold path; only the first reset needs it.
        with quiet_fds():
            return self._env.reset(seed=self.game_seed, gameFold="test", gameName=self.game,
                                   gameParams=GAMES[self.game], generateGoldPath=gold)

    def _explore(self) -> list[str]:
        """Walk every reachable room once (depth first, opening doors and containers) and collect the valid
        commands, so the script's allowed values cover the world, not only what the gold path passes."""
        seen: list[str] = []
        visited: set[str] = set()
        budget = [80]  # the engine's step limit is 100; exploration stays well inside it

        def do(command: str) -> tuple[str, list[str]]:
            budget[0] -= 1
            obs, _, _, infos = self._env.step(command)
            seen.extend(infos["validActions"])
            return obs, list(infos["validActions"])

        def room(obs: str) -> str:
            m = re.match(r"\s*You are in the ([^.]+)\.", obs)
            return m.group(1) if m else obs[:40]

        def visit(obs: str, valid: list[str]) -> None:
            visited.add(room(obs))
            for command in valid:
                if budget[0] > 0 and re.match(r"open (?!door to )", command):
                    _, valid = do(command)
            for direction, back in _DIRECTIONS.items():
                if budget[0] <= 2 or f"move {direction}" not in valid:
                    continue
                if f"open door to {direction}" in valid:
                    do(f"open door to {direction}")
                obs2, valid2 = do(f"move {direction}")
                if room(obs2) in visited or obs2.lower().startswith("you can't"):
                    if not obs2.lower().startswith("you can't"):
                        _, valid = do(f"move {back}")
                    continue
                visit(obs2, valid2)
                _, valid = do(f"move {back}")

        obs, valid = do("look around")
        visit(obs, valid)
        return seen

    def reset(self) -> str:
        obs, infos = self._reset_engine(gold=True)
        self._gold = list(self._env.getGoldActionSequence())
        # Derive the templates from what the engine lists as valid at the start and along the gold path, then
        # start over so the agent plays from the initial state.
        seen = list(infos["validActions"])
        for command in self._gold:
            _, _, _, step_infos = self._env.step(command)
            seen.extend(step_infos["validActions"])
        self._reset_engine()
        seen.extend(self._explore())
        self._specs, _ = derive_actions(seen)
        obs, infos = self._reset_engine()
        self._valid = list(infos["validActions"])
        self._task = infos.get("taskDescription", "")
        self._progress = RunningMax()
        self._gold_pos, self._on_gold = 0, True
        self._over = self._success = False
        self._first = obs.strip()
        return f"{self._task}\n{self._first}"

    def script(self) -> Script:
        return make_script(
            environment={
                "world": "A text adventure (TextWorld-Express): rooms connected north/south/east/west, containers, "
                         "objects you can take, read, cook or put somewhere.",
                "game": self.game,
                "start": self._first,
            },
            goal=self._task or "Complete the game's task.",
            completion_conditions=["The game reports the task as completed (score 1.0)."],
            actions=list(self._specs.values()),
        )

    def valid_actions(self) -> list[str]:
        return [] if self._over else sorted(self._valid)

    def _matches_template(self, text: str) -> bool:
        return any(re.match(spec.verification_code, text) for spec in self._specs.values())

    def step(self, action: str) -> StepResult:
        text = normalize_action(action)
        progress = self._progress.value
        if self._over:
            return StepResult("The game is over.", done=self._success, progress=progress, error="logic_error",
                              info={"episode_over": True})
        valid = {normalize_action(v): v for v in self._valid}
        if text not in valid:
            if self._matches_template(text):
                return StepResult(f"You can't do that now: '{text}' is not possible here.", progress=progress,
                                  error="logic_error")
            return StepResult(f"Unknown action: I'm not sure what you mean by '{action}'.", progress=progress,
                              error="parameter_error")
        command = valid[text]
        with quiet_fds():
            obs, _, done, infos = self._env.step(command)
        self._valid = list(infos["validActions"])
        if self._on_gold and self._gold_pos < len(self._gold) and command == self._gold[self._gold_pos]:
            self._gold_pos += 1
        else:
            self._on_gold = False
        progress = self._progress.update(float(infos.get("score", 0.0)))
        self._success = bool(infos.get("tasksuccess")) or (bool(done) and progress >= 1.0)
        failed = bool(infos.get("taskfailure"))
        self._over = self._success or failed or bool(done)
        obs = obs.strip()
        error = "logic_error" if re.match(r"you can'?t|you cannot|that is not|unknown action", obs.lower()) else None
        info: dict[str, Any] = {"score": infos.get("score"), "episode_over": self._over}
        if failed:
            info["failed"] = True
            obs += " (The task has failed.)"
        return StepResult(obs, done=self._success, progress=1.0 if self._success else progress, error=error,
                          info=info)

    def oracle_action(self) -> str | None:
        """The next gold command while the agent has followed the gold path; None once it has left it."""
        if self._over or not self._on_gold or self._gold_pos >= len(self._gold):
            return None
        return self._gold[self._gold_pos]

    def close(self) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        proc = getattr(getattr(env, "_gateway", None), "java_process", None)
        try:
            with quiet_fds():
                env.close()
        except Exception:  # noqa: BLE001, S110 - closing a JVM that is already gone is fine
            pass
        # The engine's __del__ closes again and then hits a broken pipe; make that a no-op.
        env.close = lambda: None
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except Exception:  # noqa: BLE001 - a JVM that ignores the shutdown is killed (it is ours)
                proc.kill()
