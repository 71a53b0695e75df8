"""The scripted Player: follows the engine's plan and, at seeded points, makes a realistic mistake.

Mistakes come in the DM's three kinds (:mod:`~agentrefine_lg.synthesis.grounded.mistakes`), are built from the
current state and confirmed with the DM's own :func:`~agentrefine_lg.synthesis.grounded.dm.judge` (without
committing), so the DM flags each one with the intended flag.

After each mistake the next Player turn refines: its thought quotes the DM's observation and explains the
fix, and its action is the plan's next step, which the engine accepts. Mistakes never follow each other,
and a failed action is never tried again. Everything is derived from the history, so the Player is
stateless per call.
"""

from __future__ import annotations

import asyncio
import os
import random
import string
from dataclasses import dataclass

from agentrefine_lg.checks import match_action, normalize_action
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.schema import Script, TokenUsage, Turn
from agentrefine_lg.synthesis.grounded import narration
from agentrefine_lg.synthesis.grounded.dm import (
    GroundedWorlds,
    accepted_commands,
    canonical_command,
    judge,
)
from agentrefine_lg.synthesis.grounded.engine import TextWorldSession, WorldState
from agentrefine_lg.synthesis.grounded.mistakes import (
    ERROR_KINDS,
    Mistake,
    logic_mistakes,
    parameter_mistakes,
    place_mistakes,
)
from agentrefine_lg.synthesis.grounded.script import grounding_of, target_entities


@dataclass(frozen=True)
class MistakePlan:
    positions: frozenset[int]  # numbers of accepted actions after which a mistake is made
    kinds: tuple[str, ...]  # the preferred kind of the 1st, 2nd, ... mistake


def _fmt(template: str, **fields: str) -> str:
    """``str.format`` that leaves unknown fields empty (templates are data)."""
    names = {n for _, n, _, _ in string.Formatter().parse(template) if n}
    return template.format(**{n: fields.get(n, "") for n in names})


def cite(observation: str | None, limit: int = 160) -> str:
    """The first line of an observation, shortened, ending with punctuation: quoted in thoughts."""
    line = next((ln.strip() for ln in (observation or "").splitlines() if ln.strip()), "Nothing happens.")
    line = line.replace('"', "'")  # it is quoted in double quotes
    if len(line) > limit:
        line = line[:limit].rsplit(" ", 1)[0] + "..."
    return line if line[-1] in ".!?" else line + "."


# ---------------------------------------------------------------------------------------------- thoughts


def step_thought(script: Script, state: WorldState, command: str, rng: random.Random) -> str:
    """A templated thought for a correct step, filled from the state (rooms, locations, tools)."""
    m = match_action(script, command)
    template = m.template or ""
    vals = list(m.values.values())
    verb = template.split()[0] if template else ""
    fields: dict[str, str] = {"action": command, "verb": verb}
    if verb == "go" and vals:
        dest = state.exits.get(state.room or "", {}).get(vals[0])
        key, fields["direction"], fields["toward"] = "go", vals[0], f" to the {dest}" if dest else ""
    elif verb == "take" and len(vals) == 2:
        key, fields["item"], fields["where"] = "take_from", vals[0], state.where(vals[0])
    elif verb in ("take", "drop", "eat", "drink") and vals:
        key, fields["item"] = ("eat" if verb == "drink" else verb), vals[0]
    elif verb in ("put", "insert", "cook") and len(vals) == 2:
        key, fields["item"], fields["target"] = verb, vals[0], vals[1]
    elif verb in ("slice", "dice", "chop") and len(vals) == 2:
        key, fields["item"], fields["target"] = "cut", vals[0], vals[1]
    elif verb == "unlock" and len(vals) == 2:
        key, fields["target"], fields["key"] = "unlock", vals[0], vals[1]
    elif verb in ("open", "examine") and vals:
        key, fields["target"] = verb, vals[0]
    elif verb in ("prepare", "inventory", "look"):
        key = verb
    else:
        key = "other"
    return _fmt(rng.choice(narration.GROUNDED_STEP[key]), **fields)


def refine_thought(script: Script, state: WorldState, bad: str, answer: Turn, fix: str, rng: random.Random) -> str:
    """Why the last action failed (quoting the DM) and what the next one fixes."""
    obs = cite(answer.observation)
    nxt = step_thought(script, state, fix, rng)
    m = match_action(script, bad)
    if answer.parameter_error or not m.ok:
        fm = match_action(script, fix)
        if m.kind == "bad_value" and m.template:
            allowed = script.available_actions[m.template].parameters
            slot, value = next(((s, v) for s, v in m.values.items() if v not in allowed.get(s, [])),
                               next(iter(m.values.items()), ("value", bad)))
            right = fm.values.get(slot) or fix
            return _fmt(narration.GROUNDED_REFINE["bad_value"], obs=obs, value=value, slot=slot, right=right, fix=fix)
        return _fmt(narration.GROUNDED_REFINE["no_template"], obs=obs, bad=bad, form=fm.template or fix, fix=fix)
    if answer.place_error:
        far = [e for e in target_entities(m.values) if state.exists(e) and not state.reachable(e)]
        entity = far[0] if far else (target_entities(m.values) or ["object"])[0]
        return _fmt(narration.GROUNDED_REFINE["place"], obs=obs, entity=entity, where=state.where(entity),
                    room=state.room or "this room", next=nxt)
    exits = state.exits.get(state.room or "", {})
    if m.template == "go {direction}" and m.values.get("direction") not in exits:
        lead = ", ".join(f"{d} to the {r}" for d, r in sorted(exits.items())) or "nowhere"
        return _fmt(narration.GROUNDED_REFINE["no_exit"], obs=obs, direction=m.values["direction"],
                    room=state.room or "room", exits=lead, next=nxt)
    if canonical_command(script, bad) in state.policy[1:]:
        return _fmt(narration.GROUNDED_REFINE["order"], obs=obs, bad=bad, fix=fix, next=nxt)
    return _fmt(narration.GROUNDED_REFINE["logic"], obs=obs, bad=bad, next=nxt)


def plan_steps(plan: list[str] | tuple[str, ...], limit: int = 8) -> str:
    """The plan's steps as one phrase ("go south, then take coin"), the first ``limit`` of a longer one."""
    steps = ", then ".join(plan[:limit])
    return steps + ", ..." if len(plan) > limit else steps


# ---------------------------------------------------------------------------------------------- the role


class GroundedPlayer:
    """The Player role played from the engine's plan (implements :class:`agentrefine_lg.synthesis.roles.Player`).

    ``min_errors``..``max_errors`` mistakes per trajectory (each refined in the next turn), at positions and
    of kinds drawn from ``seed`` and the game; the same seed and history give the same turn.

    ``first_step_clean`` (default): no mistake before the first accepted action, so every trajectory trains
    the first step from the error-free history that every real episode starts from (with the mistake allowed
    first, 2 of 3 refinement rows of a 3-step world trained no first step at all: docs/method_study.md).
    """

    name = "grounded-player:textworld"

    def __init__(
        self,
        worlds: GroundedWorlds | None = None,
        *,
        seed: int = 0,
        min_errors: int = 3,
        max_errors: int = 4,
        cache_dir: str | os.PathLike | None = None,
        first_step_clean: bool = True,
    ):
        if min_errors < 0 or max_errors < min_errors:
            raise ValueError(f"need 0 <= min_errors <= max_errors, got {min_errors} and {max_errors}")
        self.worlds = worlds or GroundedWorlds(cache_dir)
        self.seed, self.min_errors, self.max_errors = seed, min_errors, max_errors
        self.first_step_clean = first_step_clean

    def plan(self, game: str, plan_length: int) -> MistakePlan:
        rng = random.Random(f"{self.seed}|{game}|plan")
        first = 1 if self.first_step_clean and plan_length > 1 else 0
        places = range(first, plan_length)
        n = min(rng.randint(self.min_errors, self.max_errors), len(places))
        kinds = list(ERROR_KINDS)
        rng.shuffle(kinds)
        return MistakePlan(frozenset(rng.sample(places, n)), tuple(kinds))

    def act(self, script: Script, history: list[Turn]) -> Turn:
        """The next Player turn after the DM's last turn."""
        if not history or not history[-1].is_dm:
            raise InputError("the Player acts after a DM turn; the history must end with one", field="role")
        if history[-1].task_completed:
            raise InputError("the task is already completed")
        game = grounding_of(script)["game"]
        session = self.worlds.session(script)
        with session.lock:
            done = accepted_commands(script, history)
            state = session.sync(done)
            if state.won:
                raise InputError("the game is already won")
            if not state.policy:
                raise AgentRefineError(f"game {game}: the engine has no plan from this state (lost or stuck)")
            number = len(history) + 1 if not isinstance(history[-1].turn, int) else history[-1].turn + 1
            rng = random.Random(f"{self.seed}|{game}|{len(history)}")
            fix = state.policy[0]
            players = [i for i, t in enumerate(history) if t.is_player]
            errors = [i for i in players if i + 1 < len(history) and history[i + 1].flagged]
            if players and players[-1] in errors:
                bad = history[players[-1]].action or ""
                if canonical_command(script, bad) == fix:
                    raise AgentRefineError(f"game {game}: the engine refused its own plan's step {fix!r}; "
                                           "this game cannot be played through")
                thought = refine_thought(script, state, bad, history[-1], fix, rng)
                return Turn(turn=number, role="Player", thought=thought, action=fix)
            mistake = None
            initial = session.initial.policy if session.initial is not None else state.policy
            plan = self.plan(game, max(1, len(initial)))
            need = self.min_errors - len(errors)
            # catching up on missing mistakes near the end never moves one before the first accepted action
            catch_up = 0 < need and len(state.policy) <= need and (bool(done) or not self.first_step_clean)
            due = (len(done) in plan.positions and len(errors) < self.max_errors) or catch_up
            if due:
                failed = {normalize_action(history[i].action or "") for i in errors}
                previous = history[errors[-1] + 1].flags[0] if errors else None
                mistake = self._pick(script, session, state, plan, len(errors), previous, failed, fix, rng)
            if mistake is not None:
                thought = _fmt(rng.choice(narration.GROUNDED_MISTAKE[mistake.sub]), entity=mistake.entity,
                               direction=mistake.direction)
            else:
                thought = step_thought(script, state, fix, rng)
            if not players:  # the first turn restates the objective's steps, whether it errs or not
                thought = narration.GROUNDED_FIRST.format(steps=plan_steps(initial)) + thought
            return Turn(turn=number, role="Player", thought=thought, action=mistake.action if mistake else fix)

    def _pick(self, script: Script, session: TextWorldSession, state: WorldState, plan: MistakePlan, index: int,
              previous: str | None, failed: set[str], fix: str, rng: random.Random) -> Mistake | None:
        """A confirmed mistake: the planned kind first, the previous mistake's kind last."""
        first = plan.kinds[index % len(plan.kinds)]
        order = [first] + [k for k in ERROR_KINDS if k != first]
        if previous in order[1:]:
            order.remove(previous)
            order.append(previous)
        for kind in order:
            if kind == "parameter_error":
                candidates = parameter_mistakes(script, fix, rng)
            elif kind == "place_error":
                candidates = place_mistakes(script, state)
            else:
                candidates = logic_mistakes(script, state)
            candidates = [c for c in candidates if normalize_action(c.action) not in failed and c.action != fix]
            rng.shuffle(candidates)
            candidates.sort(key=lambda c: c.priority)  # stable: shuffled within each priority
            for candidate in candidates[:6]:
                if kind == "parameter_error":
                    return candidate  # already rejected by the rule check
                verdict = judge(script, session, candidate.action, commit=False)
                if verdict.kind == kind and not verdict.detail.get("lost"):
                    return candidate
        return None

    async def aact(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        # Choosing a mistake probes the engine (blocking): off the event loop, as the DM does.
        return await asyncio.to_thread(self.act, script, history), TokenUsage()


__all__ = [
    "ERROR_KINDS",
    "GroundedPlayer",
    "Mistake",
    "MistakePlan",
    "cite",
    "logic_mistakes",
    "parameter_mistakes",
    "place_mistakes",
    "refine_thought",
    "step_thought",
]
