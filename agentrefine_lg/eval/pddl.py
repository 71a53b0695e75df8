"""PDDL planning domains (pddlgym) as text tasks: blocks, gripper, hanoi, logistics, depot.

pddlgym gives ground literals; the text is ours: facts are rendered per predicate ("b is on a", "the left gripper
carries ball1"), actions are text templates ("stack b on a") mapped to pddlgym action literals. An action is
*valid* when pddlgym's successor state differs from the current one (ENVIRONMENTS.md): blocks, for instance,
lists all type-correct literals, so the precondition check is ours to do. The oracle is pyperplan (gbf + hFF),
re-planned from the current state whenever the agent leaves the plan; plan operators are mapped back to
pddlgym literals by simulation. Progress = satisfied goal literals / all, running maximum (AgentBoard).

Episodes are a fixed list of shipped pddlgym problems whose pyperplan plan fits well inside the 30-step budget
(AgentBoard, too, uses small instances); barman and the IPC tyreworld are not shipped by pddlgym.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
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
    template_regex,
)
from agentrefine_lg.schema import Script

TASK = TaskInfo(
    name="pddl",
    family="PDDL",
    description="Classical planning (pddlgym): blocks, gripper, hanoi, logistics, depot, as text facts and actions.",
    held_out=True,
    note="AgentBoard's barman/tyreworld files are not shipped by pddlgym; blocks, gripper, hanoi, logistics and "
         "depot problems with short plans are used instead. Oracle = pyperplan (gbf + hFF).",
)


@dataclass(frozen=True)
class DomainSpec:
    """How one pddlgym domain reads as text."""

    name: str
    env_id: str  # pddlgym id stem: PDDLEnv<env_id>-v0 / PDDLEnv<env_id>Test-v0
    problems: tuple[tuple[str, str], ...]  # (split '' | 'Test', problem file name)
    world: str
    facts: dict[str, str]  # predicate -> format over its arguments {0}, {1}, ...; "" hides the predicate
    actions: dict[str, tuple[str, str]]  # action predicate -> (template, one slot per argument in order; description)


DOMAINS: dict[str, DomainSpec] = {
    spec.name: spec
    for spec in (
        DomainSpec(
            name="blocks",
            env_id="Blocks",
            problems=(("", "problem1.pddl"), ("", "problem3.pddl"), ("", "problem5.pddl"), ("", "problem7.pddl"),
                      ("Test", "problem10.pddl"), ("Test", "problem2.pddl"), ("Test", "problem4.pddl"),
                      ("Test", "problem6.pddl"), ("Test", "problem8.pddl")),
            world="Blocks world: blocks stand on the table or on one another; a robot hand holds at most one "
                  "block; only a clear block (nothing on top) can be picked up or stacked onto.",
            facts={"on": "{0} is on {1}", "ontable": "{0} is on the table", "clear": "{0} is clear",
                   "handempty": "the hand is empty", "holding": "the hand holds {0}", "handfull": ""},
            actions={
                "pickup": ("pick up {block}", "pick up a clear block from the table (hand must be empty)"),
                "putdown": ("put down {block}", "put the held block on the table"),
                "stack": ("stack {block} on {target}", "put the held block on a clear block"),
                "unstack": ("unstack {block}", "take a clear block off the block it is on (hand must be empty)"),
            },
        ),
        DomainSpec(
            name="gripper",
            env_id="Gripper",
            problems=(("", "prob01.pddl"), ("Test", "prob02.pddl")),
            world="Gripper: a robot with two grippers (left, right) moves between rooms and carries balls; each "
                  "gripper holds one ball.",
            facts={"at-robby": "the robot is in {0}", "at": "{0} is in {1}", "free": "the {0} gripper is free",
                   "carry": "the {1} gripper carries {0}", "room": "", "ball": "", "gripper": ""},
            actions={
                "move": ("move from {from} to {to}", "move the robot between rooms"),
                "pick": ("pick up {ball} in {room} with {gripper}", "grab a ball in the robot's room with a free gripper"),
                "drop": ("drop {ball} in {room} with {gripper}", "release a carried ball in the robot's room"),
            },
        ),
        DomainSpec(
            name="hanoi",
            env_id="Hanoi",
            problems=(("", "problem0.pddl"), ("", "problem1.pddl"), ("", "problem2.pddl")),
            world="Towers of Hanoi: discs sit on pegs or on larger discs; move one clear disc at a time onto a "
                  "clear peg or a clear larger disc.",
            facts={"on": "{0} is on {1}", "clear": "{0} is clear", "smaller": "{1} is smaller than {0}"},
            actions={"move": ("move {disc} onto {target}", "move a clear disc onto a clear peg or larger disc")},
        ),
        DomainSpec(
            name="logistics",
            env_id="Manylogistics",
            problems=tuple(("", f"problem{i}.pddl") for i in (0, 1, 10, 11, 14, 15, 16, 18, 19, 20)),
            world="Logistics: packages travel between locations by truck within a city and by airplane between "
                  "airports of different cities.",
            facts={"at": "{0} is at {1}", "in": "{0} is in {1}", "in-city": "{0} is in city {1}",
                   "obj": "", "truck": "", "location": "", "airplane": "", "city": "", "airport": "{0} is an airport"},
            actions={
                "load-truck": ("load {package} into truck {truck} at {location}", "put a package into a truck"),
                "load-airplane": ("load {package} into airplane {airplane} at {location}", "put a package into an airplane"),
                "unload-truck": ("unload {package} from truck {truck} at {location}", "take a package out of a truck"),
                "unload-airplane": ("unload {package} from airplane {airplane} at {location}",
                                    "take a package out of an airplane"),
                "drive-truck": ("drive truck {truck} from {from} to {to} in {city}", "drive within a city"),
                "fly-airplane": ("fly airplane {airplane} from {from} to {to}", "fly between airports"),
            },
        ),
        DomainSpec(
            name="depot",
            env_id="Depot",
            problems=(("", "pfile1.pddl"), ("", "pfile2.pddl")),
            world="Depots: hoists lift crates off pallets or other crates, load them into trucks, which drive "
                  "between depots and distributors, where hoists unload and drop them.",
            facts={"at": "{0} is at {1}", "on": "{0} is on {1}", "in": "{0} is in {1}",
                   "lifting": "{0} is lifting {1}", "available": "{0} is available", "clear": "{0} is clear"},
            actions={
                "drive": ("drive {truck} from {from} to {to}", "drive a truck between places"),
                "lift": ("use {hoist} to lift {crate} from {surface} at {place}", "lift a clear crate"),
                "drop": ("use {hoist} to drop {crate} on {surface} at {place}", "put the lifted crate on a clear surface"),
                "load": ("use {hoist} to load {crate} into {truck} at {place}", "load the lifted crate into a truck"),
                "unload": ("use {hoist} to unload {crate} from {truck} at {place}", "unload a crate with a free hoist"),
            },
        ),
    )
}

#: Episode order: domains interleaved round-robin so a small N covers every domain.
EPISODES: tuple[tuple[str, str, str], ...] = tuple(
    (dom, *spec.problems[i])
    for i in range(max(len(s.problems) for s in DOMAINS.values()))
    for dom, spec in DOMAINS.items()
    if i < len(spec.problems)
)
#: distinct episodes (the problems are fixed; the harness runs no more than this many)
NUM_EPISODES = len(EPISODES)


def available() -> str | None:
    return missing_modules("pddlgym", "pyperplan")


def make_env(episode: int, seed: int = 0, *, domains: list[str] | tuple[str, ...] | None = None,
             **options: Any) -> PDDLEnv:
    """Episode ``i`` of the fixed list (``seed`` rotates the list; ``domains`` restricts it)."""
    if options:
        raise TypeError(f"pddl.make_env: unknown options {sorted(options)}")
    episodes = EPISODES
    if domains:
        unknown = sorted(set(domains) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown PDDL domains {unknown}; known: {', '.join(DOMAINS)}")
        episodes = tuple(e for e in EPISODES if e[0] in domains)
    dom, split, problem = episodes[(episode + seed) % len(episodes)]
    return PDDLEnv(dom, split, problem, episode=episode)


def _fact_key(lit: Any) -> str:
    """pddlgym literal -> pyperplan fact string ``(on b a)``."""
    return "(" + " ".join([lit.predicate.name.lower(), *(v.name.lower() for v in lit.variables)]) + ")"


class PDDLEnv(TextEnv):
    """One pddlgym problem with text facts and text actions."""

    def __init__(self, domain: str, split: str, problem: str, *, episode: int = 0):
        with quiet():
            import pddlgym

            self._env = pddlgym.make(f"PDDLEnv{DOMAINS[domain].env_id}{split}-v0")
        self.spec = DOMAINS[domain]
        names = [os.path.basename(p.problem_fname) for p in self._env.problems]
        if problem not in names:
            raise ValueError(f"pddl: problem {problem!r} not in pddlgym {domain}{split} ({names})")
        self._env.fix_problem_index(names.index(problem))
        self._problem_file = self._env.problems[names.index(problem)].problem_fname
        self.name = f"pddl/{domain}/{problem.removesuffix('.pddl')}"
        self.episode = episode
        self._state: Any = None
        self._progress = RunningMax()
        self._done = False
        self._static = self._static_predicates()
        self._action_args = self._action_argument_vars()
        self._plan: list[Any] = []  # remaining oracle literals
        self._planner: Any = None  # (pyperplan task, op by name) once built

    # --- domain analysis ---
    def _static_predicates(self) -> set[str]:
        dom = self._env.domain
        changed: set[str] = set()
        for op in dom.operators.values():
            effects = op.effects.literals if hasattr(op.effects, "literals") else [op.effects]
            for lit in effects:
                changed.add(lit.predicate.name.removeprefix("Anti"))
        return {name for name in dom.predicates if name not in changed and name not in self.spec.actions}

    def _action_argument_vars(self) -> dict[str, list[tuple[str, set[str]]]]:
        """Per action predicate: for each argument, its type and the unary static preconditions on it."""
        dom = self._env.domain
        out: dict[str, list[tuple[str, set[str]]]] = {}
        for op in dom.operators.values():
            conds = op.preconds.literals if hasattr(op.preconds, "literals") else [op.preconds]
            if dom.operators_as_actions:
                pred = self._action_predicate(op.name)
                action_lit_vars = list(op.params)
            else:
                hit = next((c for c in conds if c.predicate.name in self.spec.actions), None)
                if hit is None:
                    continue
                pred, action_lit_vars = hit.predicate, list(hit.variables)
            args = []
            for var in action_lit_vars:
                unary = {c.predicate.name for c in conds
                         if len(c.variables) == 1 and c.variables[0] == var and c.predicate.name in self._static}
                args.append((var.var_type, unary))
            out[pred.name] = args
        return out

    def _action_predicate(self, name: str) -> Any:
        dom = self._env.domain
        if name in dom.predicates:
            return dom.predicates[name]
        return next(p for p in dom.actions if not isinstance(p, str) and p.name == name)

    def _objects_for(self, action: str, index: int) -> list[str]:
        var_type, unary = self._action_args[action][index]
        parents = self._env.domain.type_to_parent_types
        facts = {(lit.predicate.name, lit.variables[0].name) for lit in self._state.literals if len(lit.variables) == 1}
        return sorted(
            o.name for o in self._state.objects
            if (o.var_type == var_type or var_type in parents.get(o.var_type, ()))
            and all((u, o.name) in facts for u in unary)
        )

    # --- rendering ---
    def _render(self, lit: Any) -> str | None:
        fmt = self.spec.facts.get(lit.predicate.name)
        args = [v.name for v in lit.variables]
        if fmt == "":
            return None
        if fmt is None:
            return " ".join([lit.predicate.name, *args])
        return fmt.format(*args)

    def _facts_text(self, static: bool) -> list[str]:
        lits = [lit for lit in self._state.literals
                if (lit.predicate.name in self._static) == static and lit.predicate.name not in self.spec.actions]
        return sorted(t for t in (self._render(lit) for lit in lits) if t)

    def _goal_literals(self) -> list[Any]:
        goal = self._state.goal
        return list(goal.literals) if hasattr(goal, "literals") else [goal]

    def _observation(self) -> str:
        return "Current state: " + "; ".join(self._facts_text(static=False)) + "."

    def _goal_text(self) -> str:
        return "; ".join(t for t in (self._render(lit) for lit in self._goal_literals()) if t)

    def _goal_progress(self) -> float:
        goal = self._goal_literals()
        return sum(1 for lit in goal if lit in self._state.literals) / max(1, len(goal))

    # --- actions ---
    def _literal_text(self, lit: Any) -> str:
        template = self.spec.actions[lit.predicate.name][0]
        slots = [name for name in re.findall(r"{(\w+)}", template)]
        return template.format(**dict(zip(slots, (v.name for v in lit.variables), strict=True)))

    def _successor(self, lit: Any) -> Any:
        from pddlgym.core import get_successor_state

        try:
            nxt = get_successor_state(self._state, lit, self._env.domain, raise_error_on_invalid_action=False)
        except Exception:  # noqa: BLE001 - pddlgym asserts on odd bindings; treat as not applicable
            return None
        return None if nxt.literals == self._state.literals else nxt

    def _valid_literals(self) -> list[Any]:
        cands = self._env.action_space.all_ground_literals(self._state)
        return sorted((lit for lit in cands if self._successor(lit) is not None), key=str)

    def _parse(self, action: str) -> tuple[Any | None, str | None]:
        """Text -> pddlgym literal, or (None, why) for a parameter error."""
        text = normalize_action(action)
        objects = {o.name.lower(): o for o in self._state.objects}
        near_miss = None
        for pred_name, (template, _) in self.spec.actions.items():
            m = re.match(template_regex(template), text, flags=re.IGNORECASE)
            if not m:
                continue
            values = [v.strip().lower() for v in m.groups()]
            unknown = [v for v in values if v not in objects]
            if unknown:
                near_miss = f"unknown object(s) {', '.join(unknown)} in {action!r}"
                continue
            ok = all(values[i] in [n.lower() for n in self._objects_for(pred_name, i)] for i in range(len(values)))
            if not ok:
                near_miss = f"wrong kind of object in {action!r} for '{template}'"
                continue
            pred = self._action_predicate(pred_name)
            return pred(*(objects[v] for v in values)), None
        return None, near_miss or f"{action!r} is not an action of this domain"

    # --- oracle (pyperplan) ---
    def _replan(self) -> list[Any]:
        from pyperplan.planner import HEURISTICS, SEARCHES, _ground, _parse, _search

        with quiet():
            if self._planner is None:
                task = _ground(_parse(self._env.domain.domain_fname, self._problem_file))
                # Grounding iterates over sets of strings, whose order changes with Python's hash seed, and
                # the search breaks ties in operator order: sorted, the same seed gives the same plan.
                task.operators = sorted(task.operators, key=lambda op: op.name)
                self._planner = (task, task.initial_state)
            task, initial = self._planner
            current = frozenset(_fact_key(lit) for lit in self._state.literals) & task.facts
            # From the problem's own initial state keep pyperplan's fact order: its tie-breaking (and speed)
            # depends on it.
            task.initial_state = initial if current == initial else current
            # hFF with preferred operators: 10-40x faster than plain gbf on logistics; plain gbf is the fallback.
            ops = (_search(task, SEARCHES["gbf"], HEURISTICS["hff"](task), use_preferred_ops=True)
                   or _search(task, SEARCHES["gbf"], HEURISTICS["hff"](task)) or [])
        # Map each operator to the pddlgym literal with the same effect, by simulating only the candidates
        # whose arguments are among the operator's (cheap filter: simulation costs ~1 ms per literal).
        plan: list[Any] = []
        saved = self._state
        try:
            for op in ops:
                want = op.apply(frozenset(_fact_key(lit) for lit in self._state.literals) & task.facts)
                op_args = set(op.name.strip("()").split()[1:])
                match = None
                for lit in self._env.action_space.all_ground_literals(self._state):
                    if not all(v.name.lower() in op_args for v in lit.variables):
                        continue
                    nxt = self._successor(lit)
                    if nxt is not None and frozenset(_fact_key(x) for x in nxt.literals) & task.facts == want:
                        match = (lit, nxt)
                        break
                if match is None:
                    break
                plan.append(match[0])
                self._state = match[1]
        finally:
            self._state = saved
        return plan

    # --- TextEnv ---
    def current_progress(self) -> float:
        return self._progress.value

    def reset(self) -> str:
        with quiet():
            self._state, _ = self._env.reset()
        self._progress = RunningMax()
        self._progress.update(self._goal_progress())
        self._done = False
        self._plan = []
        return f"Goal: {self._goal_text()}. {self._observation()}"

    def script(self) -> Script:
        actions = []
        for pred_name, (template, description) in self.spec.actions.items():
            if pred_name not in self._action_args:
                continue
            slots = re.findall(r"{(\w+)}", template)
            params = {slot: self._objects_for(pred_name, i) for i, slot in enumerate(slots)}
            actions.append(action_spec(template, description, params))
        objects = sorted(o.name for o in self._state.objects)
        environment = {"world": self.spec.world, "objects": objects}
        static = self._facts_text(static=True)
        if static:
            environment["fixed facts"] = static
        return make_script(
            environment=environment,
            goal=f"Reach a state where: {self._goal_text()}.",
            completion_conditions=[t for t in (self._render(lit) for lit in self._goal_literals()) if t],
            actions=actions,
        )

    def valid_actions(self) -> list[str]:
        if self._done:
            return []
        return [self._literal_text(lit) for lit in self._valid_literals()]

    def step(self, action: str) -> StepResult:
        if self._done:
            return StepResult("The goal is already reached.", done=True, progress=1.0, error="logic_error",
                              info={"episode_over": True})
        lit, why = self._parse(action)
        if lit is None:
            return StepResult(f"Invalid action: {why}. {self._observation()}", progress=self._progress.value,
                              error="parameter_error")
        nxt = self._successor(lit)
        if nxt is None:
            return StepResult(f"The action '{self._literal_text(lit)}' is not applicable in the current state and "
                              f"takes no effect. {self._observation()}", progress=self._progress.value,
                              error="logic_error")
        # The successor is already computed; pddlgym's own env.step would redo it and then spend ~0.3 s per
        # step on derived-literal handling in logistics (none of these domains has derived predicates).
        self._state = nxt
        self._done = all(g in nxt.literals for g in self._goal_literals())
        if self._plan and self._plan[0] == lit:
            self._plan.pop(0)
        else:
            self._plan = []  # off the plan: re-plan on demand
        progress = self._progress.update(1.0 if self._done else self._goal_progress())
        text = f"You {self._literal_text(lit)}. {self._observation()}"
        if self._done:
            text += " The goal is reached."
        return StepResult(text, done=self._done, progress=progress,
                          info={"action": self._literal_text(lit), "episode_over": self._done})

    def oracle_action(self) -> str | None:
        if self._done:
            return None
        if not self._plan:
            self._plan = self._replan()
        return self._literal_text(self._plan[0]) if self._plan else None

    def close(self) -> None:
        self._env.close()
