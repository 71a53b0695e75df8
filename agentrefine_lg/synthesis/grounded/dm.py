"""The game engine as the Dungeon Master: rule check, place check, engine verdict.

:func:`judge` decides one Player action the same way for the DM, for the Player's self-checks and for
:class:`TextWorldEnv`:

1. the rule check (:func:`agentrefine_lg.checks.match_action`) rejects it -> ``parameter_error``; the
   engine never sees it, so the checker and the DM agree by construction;
2. an object it acts on exists but is not where the player is (another room) -> ``place_error``;
3. the engine refuses it (not an admissible command and no change of the world), or it loses the game
   -> ``logic_error``; the engine is rewound;
4. otherwise it is accepted, and ``won`` says whether it completed the quest.

The DM is stateless per call: it replays the history's accepted actions into the game's engine (kept
open and stepped incrementally while the history only grows), so it answers correctly after a
checkpoint resume, a retry or a different process.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.checks import match_action
from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Script, TokenUsage, Turn
from agentrefine_lg.synthesis.grounded import narration
from agentrefine_lg.synthesis.grounded.engine import (
    GameInfo,
    GameSpec,
    SessionPool,
    TextWorldSession,
    WorldState,
    generate_game,
    load_game_info,
    resolve_cache_dir,
)
from agentrefine_lg.synthesis.grounded.mistakes import logic_mistakes, parameter_mistakes, place_mistakes
from agentrefine_lg.synthesis.grounded.script import (
    INSTRUMENT_SLOTS,
    grounding_of,
    script_from_game,
    target_entities,
)

INFORMATION_VERBS = frozenset({"look", "inventory", "examine"})
"""Commands that never change the world; every other accepted command must change it."""
"""Slots naming something the player must carry (a key, a knife): missing it is a logic error, not a place error."""


class GroundedWorlds:
    """Finds the game of a grounded script (regenerating it from its spec if the cache lost it) and keeps
    a few engines open. Shared by the script writer, the DM and the Player of one teacher."""

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, max_open: int = 8):
        self.cache_dir = resolve_cache_dir(cache_dir)
        self.pool = SessionPool(max_open)
        self._infos: dict[str, GameInfo] = {}
        self._lock = threading.Lock()

    def game_file(self, script: Script) -> Path:
        grounding = grounding_of(script)
        path = self.cache_dir / f"{grounding['game']}.z8"
        if path.is_file() and path.with_suffix(".json").is_file():
            return path
        spec = grounding.get("spec")
        if not spec:
            raise InputError(f"game {grounding['game']!r} is not in {self.cache_dir} and the script has no spec "
                             "to regenerate it", field="Grounding")
        regenerated = generate_game(GameSpec.from_dict(spec), self.cache_dir)
        if regenerated != path:
            raise InputError(f"the script's spec generates {regenerated.name}, not {path.name}", field="Grounding")
        return path

    def info(self, game_file: Path) -> GameInfo:
        key = str(game_file)
        with self._lock:
            if key not in self._infos:
                self._infos[key] = load_game_info(game_file)
            return self._infos[key]

    def session(self, script: Script) -> TextWorldSession:
        return self.pool.get(self.game_file(script))

    def script_for(self, spec: GameSpec, persona: str | None = None) -> Script:
        path = generate_game(spec, self.cache_dir)
        return script_from_game(self.info(path), persona=persona, spec=spec)

    def close(self) -> None:
        self.pool.close()


@dataclass
class Verdict:
    """The judgement of one action: error kind (None if accepted), the observation, the DM's thought."""

    kind: str | None
    observation: str
    thought: str
    command: str | None = None  # the canonical command, when the rule check matched
    won: bool = False
    state: WorldState | None = None  # after the action if accepted, else the unchanged state
    detail: dict[str, Any] = field(default_factory=dict)


def canonical_command(script: Script, action: str) -> str | None:
    """The action in the game's exact words (template filled with the matched values), or None."""
    m = match_action(script, action)
    if not m.ok or m.template is None:
        return None
    return m.template.format(**m.values)


def accepted_commands(script: Script, history: list[Turn]) -> list[str]:
    """Canonical commands of the Player turns the DM accepted (answered without an error flag)."""
    out: list[str] = []
    for i, turn in enumerate(history):
        if not turn.is_player or i + 1 >= len(history):
            continue
        answer = history[i + 1]
        if answer.is_dm and not answer.flagged:
            command = canonical_command(script, turn.action or "")
            if command is None:
                raise InputError(f"turn {i + 1}: the DM accepted {turn.action!r}, which fails the rule check; "
                                 "this history cannot be replayed", field="Action")
            out.append(command)
    return out


def judge(script: Script, session: TextWorldSession, action: str, *, commit: bool = True) -> Verdict:
    """Judge ``action`` in the session's current state; with ``commit`` an accepted action is kept."""
    state = session.state
    m = match_action(script, action)
    if not m.ok:
        if m.kind == "bad_value" and m.template:
            spec = script.available_actions[m.template]
            slot, value = next(((s, v) for s, v in m.values.items() if v not in spec.parameters.get(s, [])),
                               (next(iter(m.values), "value"), action))
            observation = narration.GROUNDED_OBS_BAD_VALUE.format(slot=slot, slot_words=slot.replace("_", " "),
                                                              value=value, template=m.template)
            detail = {"match": m.kind, "slot": slot, "value": value, "template": m.template}
        else:
            verb = action.strip().split()[0] if action.strip() else ""
            forms = [t for t in script.available_actions if t.split()[0] == verb]
            hint = f', e.g. "{forms[0]}"' if forms else ""
            observation = narration.GROUNDED_OBS_NO_TEMPLATE.format(action=action.strip(), hint=hint)
            detail = {"match": m.kind}
        return Verdict("parameter_error", observation,
                       narration.GROUNDED_DM_PARAMETER.format(action=action.strip(), reason=m.message),
                       state=state, detail=detail)
    command = m.template.format(**m.values)
    for entity in target_entities(m.values):
        if state.exists(entity) and not state.reachable(entity):
            # Let the engine word it ("You can't see any such thing."); its effect, if any, is undone.
            after = session.raw_step(command)
            session.undo()
            where = state.where(entity)
            return Verdict("place_error", after.feedback,
                           narration.GROUNDED_DM_PLACE.format(entity=entity, where=where, room=state.room, action=command),
                           command, state=state, detail={"entity": entity, "where": where})
    after = session.raw_step(command)
    if after.lost:
        session.undo()
        return Verdict("logic_error", f"{after.feedback}\n{narration.GROUNDED_OBS_LOST_SUFFIX}",
                       narration.GROUNDED_DM_LOST.format(action=command), command, state=state, detail={"lost": True})
    # Accepted: the world changed, or an information command (look, inventory, examine) the engine lists as
    # admissible. A listed command that changes nothing was not carried out (e.g. the parser asked back).
    informational = m.template.split()[0] in INFORMATION_VERBS
    if after.facts != state.facts or (informational and command in state.admissible):
        if commit:
            session.commit(command, after)
        else:
            session.undo()
        template = narration.GROUNDED_DM_WON if after.won else narration.GROUNDED_DM_OK
        return Verdict(None, after.feedback, template.format(action=command), command, won=after.won, state=after)
    session.undo()
    return Verdict("logic_error", after.feedback, narration.GROUNDED_DM_LOGIC.format(action=command), command,
                   state=state)


def _next_number(history: list[Turn]) -> int:
    last = history[-1].turn if history else None
    return (last + 1) if isinstance(last, int) else len(history) + 1


class GroundedDM:
    """The DM role played by the game engine (implements :class:`agentrefine_lg.synthesis.roles.DM`; no tokens)."""

    name = "grounded-dm:textworld"

    def __init__(self, worlds: GroundedWorlds | None = None, *, cache_dir: str | os.PathLike | None = None):
        self.worlds = worlds or GroundedWorlds(cache_dir)

    def respond(self, script: Script, history: list[Turn]) -> Turn:
        """The next DM turn: the opening with an empty history, else the answer to the last Player turn."""
        session = self.worlds.session(script)
        with session.lock:
            if not history:
                session.sync([])
                return Turn(turn=1, role="DM", thought=narration.GROUNDED_DM_OPEN, observation=session.opening,
                            parameter_error=False, place_error=False, logic_error=False)
            last = history[-1]
            if not last.is_player:
                raise InputError("the DM answers a Player turn, but the history ends with a DM turn", field="role")
            state = session.sync(accepted_commands(script, history[:-1]))
            if state.won:
                raise InputError("the game is already won; no further actions are answered")
            verdict = judge(script, session, last.action or "")
        turn = Turn(
            turn=_next_number(history), role="DM", thought=verdict.thought, observation=verdict.observation,
            parameter_error=verdict.kind == "parameter_error", place_error=verdict.kind == "place_error",
            logic_error=verdict.kind == "logic_error",
        )
        if verdict.won:
            turn.task_completed = True
        return turn

    async def arespond(self, script: Script, history: list[Turn]) -> tuple[Turn, TokenUsage]:
        # The engine loads game files and steps a game: blocking work, kept off the event loop (langgraph dev
        # refuses blocking calls in async nodes).
        return await asyncio.to_thread(self.respond, script, history), TokenUsage()


class TextWorldEnv(TextEnv):
    """A generated TextWorld game behind the project's :class:`~agentrefine_lg.env.TextEnv` contract,
    judged exactly like the grounded DM judges (so ``StepResult.error`` is the DM's flag)."""

    def __init__(self, script: Script, worlds: GroundedWorlds | None = None):
        self.worlds = worlds or GroundedWorlds()
        self._script = script
        self.session = self.worlds.session(script)
        self.name = f"textworld/{grounding_of(script)['game']}"
        self._applied: list[str] = []  # own list: the pooled engine may serve a DM in between
        self._initial = 1
        self._progress = 0.0

    def _state(self) -> WorldState:
        return self.session.sync(list(self._applied))

    def reset(self) -> str:
        with self.session.lock:
            self._applied = []
            state = self._state()
        self._initial = max(1, len(state.policy))
        self._progress = 0.0
        return self.session.opening

    def script(self) -> Script:
        return self._script

    def step(self, action: str) -> StepResult:
        with self.session.lock:
            self._state()
            verdict = judge(self._script, self.session, action)
            if verdict.kind is None and verdict.command is not None:
                self._applied.append(verdict.command)
            state = self.session.state
        remaining = 0 if state.won else len(state.policy)
        self._progress = max(self._progress, 1.0 - remaining / self._initial)
        return StepResult(verdict.observation, done=verdict.won, progress=self._progress,
                          error=verdict.kind, info={"command": verdict.command, **verdict.detail})  # type: ignore[arg-type]

    def valid_actions(self) -> list[str]:
        with self.session.lock:
            return sorted(self._state().admissible)

    def oracle_action(self) -> str | None:
        with self.session.lock:
            state = self._state()
        return state.policy[0] if state.policy and not state.won else None

    def mistake(self, kind: str) -> str | None:
        """The grounded Player's own mistakes of ``kind`` here, the first the DM judges as that kind."""
        with self.session.lock:
            state = self._state()
            if state.won or not state.policy:
                return None
            rng = random.Random(f"{self.name}|{len(self._applied)}|{kind}")
            make = {"parameter_error": lambda: parameter_mistakes(self._script, state.policy[0], rng),
                    "place_error": lambda: place_mistakes(self._script, state),
                    "logic_error": lambda: logic_mistakes(self._script, state)}.get(kind)
            if make is None:
                return None
            for candidate in sorted(make(), key=lambda m: m.priority):
                verdict = judge(self._script, self.session, candidate.action, commit=False)
                if verdict.kind == kind and not verdict.detail.get("lost"):
                    return candidate.action
        return None


__all__ = [
    "INSTRUMENT_SLOTS",
    "GroundedDM",
    "GroundedWorlds",
    "TextWorldEnv",
    "Verdict",
    "accepted_commands",
    "canonical_command",
    "judge",
]
