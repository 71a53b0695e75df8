"""The grounded script writer, the teacher factory and a direct synthesis loop."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable

from agentrefine_lg.schema import Script, TokenUsage, Turn
from agentrefine_lg.synthesis.grounded.dm import GroundedDM, GroundedWorlds
from agentrefine_lg.synthesis.grounded.engine import GAME_KINDS, spec_for_persona
from agentrefine_lg.synthesis.grounded.player import GroundedPlayer


class GroundedScriptWriter:
    """Writes a script by generating a TextWorld game seeded from the persona (implements
    :class:`agentrefine_lg.synthesis.roles.ScriptWriter`; no tokens).

    A call with ``problems`` (the last script was rejected, or its trajectories kept failing) moves on to
    the persona's next variant, so a retry gets a different world.
    """

    name = "grounded-script-writer:textworld"

    def __init__(
        self,
        worlds: GroundedWorlds | None = None,
        *,
        kinds: Iterable[str] = GAME_KINDS,
        min_steps: int = 3,
        cache_dir: str | os.PathLike | None = None,
    ):
        self.worlds = worlds or GroundedWorlds(cache_dir)
        self.kinds = tuple(kinds)
        self.min_steps = min_steps
        self._variants: dict[str, int] = {}
        self._lock = threading.Lock()

    def write_script(self, persona: str, variant: int = 0) -> Script:
        """The script of the persona's ``variant``-th game (generated into the cache on first use)."""
        if not isinstance(persona, str) or not persona.strip():
            raise ValueError("persona text is empty")
        spec = spec_for_persona(persona, variant, kinds=self.kinds, min_steps=self.min_steps)
        return self.worlds.script_for(spec, persona=" ".join(persona.split()))

    async def awrite_script(self, persona: str, problems: list[str]) -> tuple[Script, TokenUsage]:
        with self._lock:
            if problems:
                self._variants[persona] = self._variants.get(persona, 0) + 1
            variant = self._variants.get(persona, 0)
        # Generation and compilation take ~1-3 s of CPU: keep the event loop free meanwhile.
        script = await asyncio.to_thread(self.write_script, persona, variant)
        return script, TokenUsage()


def grounded_teacher(
    cache_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    min_errors: int = 3,
    max_errors: int = 4,
    kinds: Iterable[str] = GAME_KINDS,
    min_steps: int = 3,
    max_open: int = 8,
) -> tuple[GroundedScriptWriter, GroundedPlayer, GroundedDM]:
    """The embedded default teacher: (script writer, Player, DM) sharing one game cache and engine pool."""
    worlds = GroundedWorlds(cache_dir, max_open=max_open)
    writer = GroundedScriptWriter(worlds, kinds=kinds, min_steps=min_steps)
    player = GroundedPlayer(worlds, seed=seed, min_errors=min_errors, max_errors=max_errors)
    return writer, player, GroundedDM(worlds)


def synthesize_grounded(
    persona: str,
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
    variant: int = 0,
    min_errors: int = 3,
    max_errors: int = 4,
    max_turns: int = 160,
    teacher: tuple[GroundedScriptWriter, GroundedPlayer, GroundedDM] | None = None,
) -> tuple[Script, list[Turn]]:
    """One script and trajectory: DM opening, then Player and DM alternate until the game is won or
    ``max_turns`` turns exist (then the trajectory is returned unfinished and fails the check)."""
    writer, player, dm = teacher or grounded_teacher(cache_dir, seed=seed, min_errors=min_errors,
                                                     max_errors=max_errors)
    script = writer.write_script(persona, variant)
    history: list[Turn] = [dm.respond(script, [])]
    while len(history) + 2 <= max_turns:
        history.append(player.act(script, history))
        answer = dm.respond(script, history)
        history.append(answer)
        if answer.task_completed:
            break
    return script, history


__all__ = ["GroundedScriptWriter", "grounded_teacher", "synthesize_grounded"]
