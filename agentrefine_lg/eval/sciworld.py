"""ScienceWorld (``scienceworld`` 1.2.3, a Scala simulator behind py4j) as a held-out text task.

Episode ``i`` is one (task, variation) pair from ScienceWorld's *test* variations, with the ``easy``
simplifications (doors and containers open, teleport, self-watering pots; no electrical actions except in the
electrical tasks). The oracle walks the simulator's own gold path; progress is ScienceWorld's score / 100 as a
running maximum; success is the simulator's ``completed`` flag.

Speed: the package's ``env.step`` lists every valid action after each move (28-98 ms of a 30-220 ms step), so we
step the lean ``env.server.step`` (3-6 ms) and enumerate valid actions only when asked (``valid_actions()`` or
the agent's ``check valid actions``). Memory: one JVM per environment, its heap capped with ``-Xmx`` through
``JAVA_TOOL_OPTIONS`` (about 440 MiB RSS instead of 1.2-1.4 GiB); ``close()`` shuts it down.

Errors: text that fits none of the action forms is a ``parameter_error``; a known form whose object the engine
can't find here ("No known action matches that input.") is a ``place_error`` when the name exists elsewhere in
the world, else a ``parameter_error``; an engine refusal ("The table is not openable.", "You can't ...")
is a ``logic_error``. Ambiguous references ("Ambiguous request: ... 0: ... 1: ...") are resolved to the first
reading, as an agent can't answer the engine's numbered question in our action format. Focusing on a wrong
object makes ScienceWorld's score negative: the episode is over and failed.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Sequence
from typing import Any

from agentrefine_lg.env import ErrorKind, StepResult, TextEnv
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
    name="sciworld",
    family="SciWorld",
    description="ScienceWorld elementary-science tasks (boil, melt, circuits, life cycles, ...) on the test "
                "variations, 'easy' simplifications; the simulator's gold path as oracle.",
    held_out=True,
    note="Progress = ScienceWorld's own score/100 (running max), not AgentBoard's annotated subgoal regexes, "
         "which are not available offline; ambiguous object references resolve to the first reading.",
)

#: Task names in episode order. Short gold paths first (4-20 steps under ``easy``), so small runs measure what a
#: 30-step budget allows; boil/melt/freeze (gold paths of 60-85 steps) come last and mostly measure progress.
TASKS: tuple[str, ...] = (
    "find-living-thing",
    "use-thermometer",
    "chemistry-mix",
    "power-component",
    "test-conductivity",
    "lifespan-longest-lived",
    "find-plant",
    "lifespan-shortest-lived",
    "identify-life-stages-1",
    "boil",
    "melt",
    "freeze",
)

#: ScienceWorld's rooms (the values of the ``{location}`` slot when the world has them).
LOCATIONS: tuple[str, ...] = (
    "art studio", "bathroom", "bedroom", "foundry", "greenhouse", "hallway", "kitchen", "living room",
    "outside", "workshop",
)

#: engine template (``get_possible_actions()``) -> (our template, description). Templates the engine lists but
#: that are missing here get a generic form; ``reset task`` is left out (it would restart the episode).
_TEMPLATES: dict[str, tuple[str, str]] = {
    "open OBJ": ("open {object}", "open a container or door"),
    "close OBJ": ("close {object}", "close a container or door"),
    "activate OBJ": ("activate {object}", "switch a device on (stove, sink, light, ...)"),
    "deactivate OBJ": ("deactivate {object}", "switch a device off"),
    "connect OBJ to OBJ": ("connect {object} to {target}", "connect two electrical terminals or components"),
    "disconnect OBJ": ("disconnect {object}", "disconnect an electrical component"),
    "use OBJ on OBJ": ("use {object} on {target}", "use a tool (e.g. a thermometer) on something"),
    "look around": ("look around", "describe the current room"),
    "look at OBJ": ("look at {object}", "describe an object in detail"),
    "look in OBJ": ("look in {object}", "describe a container's contents"),
    "read OBJ": ("read {object}", "read a book, recipe or note"),
    "move OBJ to OBJ": ("move {object} to {container}", "move an object into a container or onto a surface"),
    "pick up OBJ": ("pick up {object}", "put an object into your inventory"),
    "put down OBJ": ("put down {object}", "drop an object from your inventory here"),
    "pour OBJ in OBJ": ("pour {object} into {container}", "pour a liquid or a container's contents into another"),
    "dunk OBJ in OBJ": ("dunk {object} into {container}", "dunk a container into a liquid"),
    "mix OBJ": ("mix {object}", "chemically mix the contents of a container"),
    "go OBJ": ("go to {location}", "walk to a room next to this one (its door must be open)"),
    "teleport OBJ": ("teleport to {location}", "teleport directly to any room"),
    "eat OBJ": ("eat {object}", "eat a food item"),
    "flush OBJ": ("flush {object}", "flush a toilet"),
    "focus on OBJ": ("focus on {object}", "declare the object the task is about (a wrong focus fails the task)"),
    "wait": ("wait", "let 10 time steps pass"),
    "wait1": ("wait1", "let 1 time step pass"),
    "inventory": ("inventory", "list what you carry"),
    "task": ("task", "repeat the task description"),
}
_DROPPED = {"reset task"}
#: forms the engine accepts besides the templates (gold paths use ``examine``; older prompts say ``pour X in Y``).
_EXTRA_FORMS: tuple[str, ...] = ("examine {object}", "drop {object}", "pour {object} in {container}",
                                 "dunk {object} in {container}", "go {location}", "teleport {location}",
                                 "use {object}")
CHECK_VALID = "check valid actions"
_CHECK_ALIASES = {CHECK_VALID, "valid actions", "get valid actions", "show valid actions", "list valid actions"}

_NO_MATCH = ("no known action matches that input", "unknown action")
_REFUSALS = re.compile(
    # "already open" is not here: with the easy simplifications doors start open and the gold path itself
    # opens them again; a harmless no-op is not a mistake
    r"\b(is not \w+able|is not open|is not closed"
    r"|can't|cannot|can not|not sure how|not clear how|does not appear to produce anything new"
    r"|there is only one thing|not moveable|not movable|isn't|doesn't)\b",
    re.IGNORECASE,
)
_AMBIGUOUS = "ambiguous request"
_DERIVED = re.compile(r" in |\bterminal\b|\banode\b|\bcathode\b|^air$")

_ENV_LOCK = threading.Lock()  # JAVA_TOOL_OPTIONS is process-wide: set it only around our own JVM start
_VARIATIONS: dict[tuple[str, str, str], list[int]] = {}  # (task, simplifications, split) -> variation ids


def available() -> str | None:
    missing = missing_modules("scienceworld", "py4j")
    if missing:
        return missing
    if shutil.which("java") is None:
        return "no 'java' on PATH (ScienceWorld's simulator is a Java 8+ jar); install a JRE, e.g. openjdk-17-jre"
    return None


def make_env(episode: int, seed: int = 0, *, tasks: Sequence[str] | None = None, simplifications: str = "easy",
             split: str = "test", heap: str = "512m", max_listed_valid: int = 150, **options: Any) -> SciWorldEnv:
    """Episode ``i`` = task ``tasks[i % n]``, the ``(i // n + seed)``-th variation of its ``split`` (train/dev/test)."""
    if options:
        raise TypeError(f"sciworld.make_env: unknown options {sorted(options)}")
    if episode < 0:
        raise ValueError(f"episode must be >= 0, got {episode}")
    tasks = tuple(tasks or TASKS)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be train, dev or test, got {split!r}")
    task = tasks[episode % len(tasks)]
    return SciWorldEnv(task, variation_pick=episode // len(tasks) + seed, split=split,
                       simplifications=simplifications, heap=heap, max_listed_valid=max_listed_valid,
                       episode=episode)


def start_jvm(heap: str | None) -> Any:
    """Start ScienceWorld's JVM with a capped heap (the package's launcher takes no JVM options)."""
    from scienceworld import ScienceWorldEnv

    with _ENV_LOCK:
        previous = os.environ.get("JAVA_TOOL_OPTIONS")
        if heap:
            os.environ["JAVA_TOOL_OPTIONS"] = " ".join(x for x in (previous, f"-Xmx{heap}") if x)
        try:
            with quiet():
                return ScienceWorldEnv("", envStepLimit=10_000)  # step limits are the harness's business
        finally:
            if previous is None:
                os.environ.pop("JAVA_TOOL_OPTIONS", None)
            else:
                os.environ["JAVA_TOOL_OPTIONS"] = previous


class SciWorldEnv(TextEnv):
    """One ScienceWorld (task, variation) in its own JVM."""

    def __init__(self, task: str, *, variation: int | None = None, variation_pick: int = 0, split: str = "test",
                 simplifications: str = "easy", heap: str | None = "512m", max_listed_valid: int = 150,
                 episode: int = 0):
        self._sw = start_jvm(heap)
        try:
            names = list(self._sw.get_task_names())
            if task not in names:
                raise ValueError(f"unknown ScienceWorld task {task!r}; known: {', '.join(names)}")
            if variation is None:
                key = (task, simplifications, split)
                if key not in _VARIATIONS:  # a load without gold path is needed to ask; remember the answer
                    self._sw.load(task, 0, simplifications)
                    _VARIATIONS[key] = sorted(int(v) for v in {
                        "train": self._sw.get_variations_train, "dev": self._sw.get_variations_dev,
                        "test": self._sw.get_variations_test}[split]())
                pool = _VARIATIONS[key]
                variation = pool[variation_pick % len(pool)]
            self._sw.load(task, variation, simplifications, generateGoldPath=True)
            self._gold = [str(a) for a in self._sw.get_gold_action_sequence()]
            self._engine_templates = [str(t) for t in self._sw.get_possible_actions()]
        except Exception:
            self.close()
            raise
        self.task, self.variation, self.simplifications = task, variation, simplifications
        self.episode = episode
        self.name = f"sciworld/{task}/{variation}"
        self.max_listed_valid = max_listed_valid
        self._specs = self._action_specs_templates()
        self._regexes = [(t, re.compile(_form_regex(t), re.IGNORECASE)) for t in (*self._specs, *_EXTRA_FORMS)]
        self._progress = RunningMax()
        self._gold_pos = 0
        self._over = self._success = False
        self._task_desc = ""
        self._objects: list[str] = []
        self._world_names: set[str] | None = None
        self._closed = False

    # --- helpers ---
    def _action_specs_templates(self) -> dict[str, str]:
        """Our templates (with descriptions) for the engine templates this task offers."""
        specs: dict[str, str] = {}
        for engine in self._engine_templates:
            if engine in _DROPPED:
                continue
            if engine in _TEMPLATES:
                template, description = _TEMPLATES[engine]
            else:  # an engine template we have no wording for: keep it usable, slots in order
                names = iter(("object", "target", "container"))
                template = re.sub(r"\bOBJ\b", lambda _m, it=names: "{" + next(it, "other") + "}", engine)
                description = "an action of the simulator"
            specs[template] = description
        specs[CHECK_VALID] = "list every action that is valid right now (long)"
        return specs

    def _score(self) -> int:
        return round(100 * float(self._sw.server.getScore()))

    def _world_referents(self) -> set[str]:
        """Every name any object of the world answers to (cached; looked up only after a failed reference)."""
        if self._world_names is None:
            lut = self._sw.get_all_object_ids_types_referents_LUTJSON()
            self._world_names = {r.lower() for v in lut.values() for r in v.get("referents", [])
                                 if not r.startswith("ERROR")}
        return self._world_names

    def _known_form(self, text: str) -> tuple[str, dict[str, str]] | None:
        for template, rx in self._regexes:
            m = rx.match(text)
            if m:
                return template, {k: v.strip() for k, v in m.groupdict().items()}
        return None

    def _engine_step(self, text: str) -> tuple[str, dict[str, Any]]:
        """One simulator step; an ambiguous reference is answered with its first reading."""
        obs = str(self._sw.server.step(text))
        info: dict[str, Any] = {}
        if obs.lower().startswith(_AMBIGUOUS):
            options = re.findall(r"^\s*0:\s*(.+)$", obs, re.MULTILINE)
            obs = str(self._sw.server.step("0"))
            info["ambiguous"] = options[0].strip() if options else True
        return obs.strip(), info

    # --- TextEnv ---
    def reset(self) -> str:
        self._sw.server.reset()
        self._progress = RunningMax()
        self._gold_pos = 0
        self._over = self._success = False
        self._task_desc = str(self._sw.server.getTaskDescription()).strip()
        self._objects = sorted({str(o) for o in self._sw.get_possible_objects()} - {"agent"})
        look, _ = self._engine_step("look around")
        return f"{self._task_desc}\n\n{look}"

    def script(self) -> Script:
        rooms = [r for r in LOCATIONS if r in self._world_referents()] or list(LOCATIONS)
        # Every object slot repeats this list in the prompt, so keep it to the objects themselves: derived
        # referents ("anode in battery", "red wire terminal 1") stay discoverable through observations.
        objects = sorted(o for o in self._objects if o not in rooms and not _DERIVED.search(o))
        objects = objects or sorted(self._objects) or ["(names from the observations)"]
        actions = []
        for template, description in self._specs.items():
            params: dict[str, list[str]] = {}
            for slot in re.findall(r"\{(\w+)\}", template):
                params[slot] = rooms if slot == "location" else objects
            actions.append(action_spec(template, description, params))
        environment = {
            "description": "A simulated house with rooms (kitchen, workshop, greenhouse, foundry, outside, ...) "
                           "full of objects, substances, devices, plants and animals that follow elementary "
                           "science: heating melts and boils, circuits power devices, plants grow. Doors between "
                           "rooms are open.",
            "objects": "Objects are named as in the observations (e.g. 'metal pot', 'substance in metal pot', "
                       "'thermometer in inventory'). The allowed values list the objects seen at the start; "
                       "more appear as you explore.",
            "task": self.task,
        }
        goal = self._task_desc or str(self._sw.server.getTaskDescription()).strip()
        return make_script(
            environment=environment,
            goal=goal,
            completion_conditions=["The simulator reports the task as completed (score 100)."],
            actions=actions,
        )

    def valid_actions(self) -> list[str]:
        if self._over:
            return []
        # Shortest first: the simple actions come before the long tail of "connect X in Y to Z in W" combinations.
        valid = {str(a) for a in self._sw.get_valid_action_object_combinations()} - _DROPPED
        return sorted(valid, key=lambda a: (len(a), a))

    def step(self, action: str) -> StepResult:
        text = normalize_action(action)
        progress = self._progress.value
        if self._over:
            return StepResult("The episode is over.", done=self._success, progress=progress, error="logic_error",
                              info={"episode_over": True})
        if text in _CHECK_ALIASES:
            valid = self.valid_actions()
            shown = valid[: self.max_listed_valid]
            more = f" (and {len(valid) - len(shown)} more)" if len(valid) > len(shown) else ""
            return StepResult(f"Valid actions: {', '.join(shown)}{more}.", done=False, progress=progress,
                              info={"valid_actions": len(valid)})
        form = self._known_form(text)
        if not text or form is None:
            forms = ", ".join(self._specs)
            return StepResult(f"Unknown action {action!r}. Use one of these forms: {forms}.", done=False,
                              progress=progress, error="parameter_error")
        before = self._score()
        obs, info = self._engine_step(text)
        score = self._score()
        info.update({"score": score, "template": form[0]})
        if self._gold_pos < len(self._gold) and text == normalize_action(self._gold[self._gold_pos]):
            self._gold_pos += 1
        error: ErrorKind | None = None
        low = obs.lower()
        if any(low.startswith(p) for p in _NO_MATCH):
            unknown = [v for v in form[1].values() if v and v not in self._world_referents()]
            if unknown:
                error = "parameter_error"
                obs = f"{obs} There is no {unknown[0]!r} in this world."
            else:
                error = "place_error"
                obs = f"{obs} Nothing called that is reachable here; look around or go elsewhere."
        elif score <= before and len(obs) < 200 and _REFUSALS.search(obs.split("\n", 1)[0]):
            error = "logic_error"
        if score < 0:  # ScienceWorld fails an episode on a wrong focus
            self._over = True
            info["episode_over"] = True
            return StepResult(f"{obs}\nThe task failed (score {score}).", done=False, progress=progress,
                              error=error, info=info)
        progress = self._progress.update(score / 100.0)
        if bool(self._sw.server.getCompleted()):
            self._over = self._success = True
            info["episode_over"] = True
            progress = self._progress.update(1.0)
            return StepResult(f"{obs}\nThe task is completed.", done=True, progress=progress, error=None, info=info)
        return StepResult(obs, done=False, progress=progress, error=error, info=info)

    def oracle_action(self) -> str | None:
        """The next gold action; it follows the gold path as long as the agent did (None after a deviation ends it)."""
        if self._over or self._gold_pos >= len(self._gold):
            return None
        return self._gold[self._gold_pos]

    @property
    def gold_path(self) -> list[str]:
        return list(self._gold)

    def goal_progress(self) -> str:
        """ScienceWorld's subgoal table (for reports and debugging)."""
        return str(self._sw.get_goal_progress())

    def jvm_pid(self) -> int | None:
        proc = getattr(getattr(self._sw, "_gateway", None), "java_process", None)
        return getattr(proc, "pid", None)

    def close(self) -> None:
        if getattr(self, "_closed", False):
            return
        self._closed = True
        sw = getattr(self, "_sw", None)
        if sw is None:
            return
        with contextlib.suppress(Exception), quiet():  # a JVM that is already gone is closed enough
            sw.close()
            proc = sw._gateway.java_process
            if proc is not None:
                proc.wait(timeout=10)
        # The package's __del__ closes again; make that a no-op so interpreter exit stays quiet.
        sw.close = lambda: None  # type: ignore[method-assign]

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _form_regex(template: str) -> str:
    """Like :func:`~agentrefine_lg.eval.base.template_regex`, with named groups so slot values can be checked."""
    parts: list[str] = []
    pos = 0
    for m in re.finditer(r"\{(\w+)\}", template):
        parts.append(r"\s+".join(re.escape(w) for w in template[pos:m.start()].split(" ")))
        parts.append(rf"(?P<{m.group(1)}>.+?)")
        pos = m.end()
    parts.append(r"\s+".join(re.escape(w) for w in template[pos:].split(" ")))
    return rf"^\s*{''.join(parts)}\s*$"
