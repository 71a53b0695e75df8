"""Grounded TextWorld worlds as an evaluation task: the worlds the grounded teacher writes, played by a model.

The episodes are the rows of a worlds file (JSONL, one ``{"script": ..., "split": ..., "kind": ...}`` per world,
as the method study writes ``eval_worlds.jsonl``); episode ``i`` is row ``i`` (of the rows whose ``split`` is
``split``, when given). Each world is judged exactly as the grounded DM judges a teacher's Player
(:class:`agentrefine_lg.synthesis.grounded.TextWorldEnv`), so a model trained on grounded-teacher data meets the same
feedback, and the injected mistakes of :mod:`agentrefine_lg.eval.injection` are the teacher's own kinds.

Options (``run_episode(..., options={...})``): ``worlds`` (the file; default ``$AGENTREFINE_EVAL_WORLDS``),
``split`` and ``cache_dir`` (where the games are compiled; default next to the worlds file).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from agentrefine_lg.env import TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.base import TaskInfo, missing_modules
from agentrefine_lg.schema import Script

TASK = TaskInfo(
    name="textworld",
    family="grounded TextWorld worlds",
    description="Worlds written by the grounded teacher (a worlds file), judged as the grounded DM judges.",
    held_out=False,
    note="In-distribution unless the worlds file holds kinds the model never trained on (the study's 'unseen').",
)

_LOCK = threading.Lock()
_WORLDS: dict[tuple[str, str | None], list[dict[str, Any]]] = {}


def available() -> str | None:
    return missing_modules("textworld")


def load_worlds(path: str | os.PathLike, split: str | None = None) -> list[dict[str, Any]]:
    """The rows of a worlds file (those of ``split`` when given), read once per process."""
    key = (str(path), split)
    with _LOCK:
        if key not in _WORLDS:
            rows: list[dict[str, Any]] = []
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise InputError(f"cannot read the worlds file: {exc}", where=str(path), field="worlds") from None
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    row["script"]
                except (ValueError, KeyError, TypeError):
                    raise InputError("not a world row (expected JSON with a 'script')", where=f"{path}:{number}",
                                     field="script") from None
                if split is None or row.get("split") == split:
                    rows.append(row)
            if not rows:
                raise InputError(f"no worlds{f' of split {split!r}' if split else ''}", where=str(path), field="split")
            _WORLDS[key] = rows
        return _WORLDS[key]


def make_env(episode: int, seed: int = 0, *, worlds: str | os.PathLike | None = None, split: str | None = None,
             cache_dir: str | os.PathLike | None = None) -> TextEnv:
    """World ``episode`` of the file (wrapping around); ``seed`` does not change a world (they are fixed)."""
    from agentrefine_lg.synthesis.grounded import GroundedWorlds, TextWorldEnv

    path = worlds or os.environ.get("AGENTREFINE_EVAL_WORLDS")
    if not path:
        raise InputError("the textworld task needs a worlds file (option 'worlds' or $AGENTREFINE_EVAL_WORLDS)",
                         field="worlds")
    rows = load_worlds(path, split)
    row = rows[episode % len(rows)]
    script = Script.model_validate(row["script"])
    return TextWorldEnv(script, GroundedWorlds(cache_dir or Path(path).parent / "games"))


__all__ = ["TASK", "available", "load_worlds", "make_env"]
