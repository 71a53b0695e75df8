"""AgentBoard's own held-out episodes, read from its ``data/`` folder (``agentrefine eval --agentboard-data DIR``).

AgentBoard's data archive (``data.tar.gz`` from huggingface.co/datasets/hkust-nlp/agentboard, unpacked as
AgentBoard's ``data/``) holds one ``test.jsonl`` per task — each line a JSON object with ``goal``,
``subgoals`` (or ``subgoals_1``, ``subgoals_2``, ...), ``difficulty`` and ``additional_info`` — plus the engine
files of ALFWorld (``alfworld/json_2.1.1/valid_unseen/<task>/<trial>/game.tw-pddl`` + ``traj_data.json``)
and Jericho (``jericho/z-machine-games-master/jericho-game-suite/<game>.z5``). The PDDL domain and problem
files live in AgentBoard's code repository (``agentboard/environment/pddl_env/pddlgym/pddl/``); they are
read from ``DIR/pddl/`` or, when ``DIR`` is the ``data/`` folder of an AgentBoard checkout, from that checkout.

This module knows the layout and the episode order of each task's loader (cited per task below), checks that
``DIR`` holds every file a run needs (one :class:`~agentrefine_lg.errors.InputError` naming the first missing
file), and is read by the environments of :mod:`agentrefine_lg.eval.agentboard_envs` (``make_env``). The episode order follows
``eval_configs/main_results_all_tasks.yaml`` of AgentBoard (the configuration its paper results use).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.base import TaskInfo, missing_modules

#: our task name -> AgentBoard's data folder name
DATA_FOLDERS: dict[str, str] = {
    "alfworld": "alfworld",
    "babyai": "babyai",
    "jericho": "jericho",
    "pddl": "pddl",
    "sciworld": "scienceworld",
}

#: ``eval_configs/main_results_all_tasks.yaml`` ``env.babyai.game_level`` (ids of ``babyai_env.py all_levels``),
#: ``seed: 1234`` and ``env_num_per_task: 4``: episode i = level ``BABYAI_LEVELS[i // 4]``, seed ``1234 + i % 4``
#: (``agentboard/tasks/babyai.py get_all_environment_configs``).
BABYAI_LEVELS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 24, 25,
                                  27, 28, 29, 31, 32)
BABYAI_SEED = 1234
BABYAI_PER_LEVEL = 4
#: ``agentboard/environment/babyai_env.py all_levels``: level id -> minigrid environment id (those used above)
BABYAI_LEVEL_IDS: dict[int, str] = {
    1: "BabyAI-GoToRedBallGrey-v0", 2: "BabyAI-GoToRedBall-v0", 3: "BabyAI-GoToRedBallNoDists-v0",
    4: "BabyAI-GoToObjS6-v0", 5: "BabyAI-GoToLocalS8N7-v0", 6: "BabyAI-GoToObjMazeS7-v0",
    7: "BabyAI-GoToImpUnlock-v0", 8: "BabyAI-GoToSeqS5R2-v0", 9: "BabyAI-GoToRedBlueBall-v0",
    10: "BabyAI-GoToDoor-v0", 11: "BabyAI-GoToObjDoor-v0", 12: "BabyAI-Open-v0", 13: "BabyAI-OpenRedDoor-v0",
    14: "BabyAI-OpenDoorLoc-v0", 15: "BabyAI-OpenRedBlueDoorsDebug-v0", 16: "BabyAI-OpenDoorsOrderN4Debug-v0",
    17: "BabyAI-Pickup-v0", 18: "BabyAI-UnblockPickup-v0", 19: "BabyAI-PickupLoc-v0",
    20: "BabyAI-PickupDistDebug-v0", 21: "BabyAI-PickupAbove-v0", 24: "BabyAI-Unlock-v0",
    25: "BabyAI-UnlockLocalDist-v0", 27: "BabyAI-UnlockPickupDist-v0", 28: "BabyAI-BlockedUnlockPickup-v0",
    29: "BabyAI-UnlockToUnlock-v0", 31: "BabyAI-FindObjS7-v0", 32: "BabyAI-KeyCorridorS6R3-v0",
}

#: ``main_results_all_tasks.yaml`` ``env.pddl.game_name`` and ``env_num_per_task: 20``, capped per game by
#: ``agentboard/tasks/pddl.py Num_Problems``; episode = problem index i of the game's sorted problem folder.
PDDL_GAMES: tuple[str, ...] = ("gripper", "blockworld", "barman", "tyreworld")
PDDL_NUM_PROBLEMS: dict[str, int] = {"barman": 20, "blockworld": 10, "gripper": 20, "tyreworld": 10}
PDDL_PER_TASK = 20

#: ``main_results_all_tasks.yaml`` ``env.jericho.game_name``: line i of ``jericho/test.jsonl`` belongs to game i
#: (``agentboard/tasks/jericho.py get_all_environment_configs``).
JERICHO_GAMES: tuple[str, ...] = ("905", "acorncourt", "afflicted", "balances", "dragon", "jewel", "library",
                                  "omniquest", "reverb", "snacktime", "zenon", "zork1", "zork2", "zork3",
                                  "detective", "night", "pentari", "weapon", "huntdark", "loose")
#: ``agentboard/tasks/jericho.py``: these four are ``.z8`` files, the others ``.z5``
JERICHO_Z8: frozenset[str] = frozenset({"afflicted", "anchor", "snacktime", "partyfoul"})
JERICHO_GAME_DIR = ("jericho", "z-machine-games-master", "jericho-game-suite")

#: ``agentboard/tasks/alfworld.py num_exams=134``; ``split: eval_out_of_distribution`` = ALFWorld's
#: ``valid_unseen`` folder (``environment/alfworld/base_config.yaml eval_ood_data_path``).
ALFWORLD_NUM_EXAMS = 134
ALFWORLD_GAME_DIR = ("alfworld", "json_2.1.1", "valid_unseen")
ALFWORLD_TASK_TYPES = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
                       "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place")

TASK_INFOS: dict[str, TaskInfo] = {
    "alfworld": TaskInfo(
        name="alfworld", family="Alfworld",
        description="AgentBoard's ALFWorld episodes: the ALFRED game files of valid_unseen on alfworld's engine.",
        note="AgentBoard data: progress = sticky subgoal regexes / (n + 1), 1.0 when won "
             "(agentboard/environment/alfworld/alfworld_env.py)."),
    "babyai": TaskInfo(
        name="babyai", family="BabyAI",
        description="AgentBoard's BabyAI episodes (28 levels x 4 seeds) with AgentBoard-style text and actions.",
        note="AgentBoard data: progress = annotated observation patterns, running max "
             "(agentboard/environment/babyai_env.py)."),
    "sciworld": TaskInfo(
        name="sciworld", family="SciWorld",
        description="AgentBoard's ScienceWorld episodes (task, variation, goal) on ScienceWorld's simulator.",
        note="AgentBoard data: progress = sticky subgoal regexes / n, done when all matched "
             "(agentboard/environment/scienceworld_env.py)."),
    "pddl": TaskInfo(
        name="pddl", family="PDDL",
        description="AgentBoard's PDDL episodes (gripper, blockworld, barman, tyreworld) on pddlgym.",
        note="AgentBoard data: progress = satisfied goal literals, running max "
             "(agentboard/environment/pddl_env/pddl_env.py)."),
    "jericho": TaskInfo(
        name="jericho", family="Jericho",
        description="AgentBoard's Jericho episodes: the original story files on jericho's Frotz engine.",
        note="AgentBoard data: real Jericho games; progress = annotated observation patterns, running max "
             "(agentboard/environment/jericho_env.py). The first observation is the game's own intro text."),
}


@dataclass(frozen=True)
class Episode:
    """One AgentBoard episode: what its loader reads from ``test.jsonl`` plus the engine files it needs."""

    task: str
    index: int
    goal: str
    subgoals: Any  # list[str], or list[list[str]] (BabyAI's alternative paths)
    difficulty: str
    info: dict[str, Any] = field(default_factory=dict)  # task-specific: game file, level, seed, variation, ...


def _missing(path: Path, what: str) -> InputError:
    return InputError(f"AgentBoard data is incomplete: missing {what}: {path}", field="agentboard_data")


def read_test_jsonl(data_dir: str | os.PathLike[str], task: str) -> list[dict[str, Any]]:
    """The lines of ``DIR/<folder>/test.jsonl`` (blank lines skipped, as AgentBoard's loaders do)."""
    path = Path(data_dir) / DATA_FOLDERS[task] / "test.jsonl"
    if not path.is_file():
        raise _missing(path, f"the {task} episode list")
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"not JSON: {exc}", where=f"{path}:{number}") from None
            if not isinstance(row, dict):
                raise InputError("each line must be a JSON object", where=f"{path}:{number}")
            if "difficulty" not in row:  # every AgentBoard loader raises "No difficulty in annotation file"
                raise InputError("no 'difficulty' (AgentBoard's loaders require it)", where=f"{path}:{number}",
                                 field="difficulty")
            row["_where"] = f"{path}:{number}"
            rows.append(row)
    if not rows:
        raise InputError(f"{path} holds no episode", field="agentboard_data")
    return rows


def _subgoals(row: dict[str, Any], *, alternatives: bool) -> Any:
    """``subgoals``, or (BabyAI) the ``subgoals_*`` alternatives in key order (``tasks/babyai.py load_annotation``)."""
    if "subgoals" in row and "subgoals_1" not in row:
        value = row["subgoals"]
    elif alternatives and any("subgoals" in k for k in row):
        value = [row[k] for k in row if "subgoals" in k]
    else:
        raise InputError("no 'subgoals'", where=row.get("_where"), field="subgoals")
    if not isinstance(value, list):
        raise InputError("'subgoals' must be a list", where=row.get("_where"), field="subgoals")
    return value


def _info(row: dict[str, Any]) -> dict[str, Any]:
    info = row.get("additional_info") or {}
    return info if isinstance(info, dict) else {}


# ------------------------------------------------------------------------------------------- per task


def _alfworld_episodes(data_dir: Path) -> list[Episode]:
    """``agentboard/environment/alfworld/alfworld_env.py``: labels keyed by ``additional_info.description``
    (``<task folder>/<trial folder>``); games are alfworld's ``AlfredTWEnv.collect_game_files`` over
    ``valid_unseen`` (a ``traj_data.json`` folder, no movable/sliced, one of the six task types, a
    ``game.tw-pddl`` marked solvable), sorted (``env.game_files.sort()``), the first 134 (``tasks/alfworld.py``)."""
    labels = {}
    for row in read_test_jsonl(data_dir, "alfworld"):
        desc = _info(row).get("description")
        if not desc:
            raise InputError("no 'additional_info.description' (the game folder)", where=row["_where"],
                             field="additional_info")
        labels[str(desc)] = row
    root = data_dir.joinpath(*ALFWORLD_GAME_DIR)
    if not root.is_dir():
        raise _missing(root, "the ALFWorld game folder (json_2.1.1/valid_unseen from AgentBoard's data)")
    for name in ("alfred.pddl", "alfred.twl2"):  # AgentBoard's base_config.yaml names them; games embed their own
        if not (data_dir / "alfworld" / name).is_file():
            raise _missing(data_dir / "alfworld" / name, "an ALFWorld logic file")
    games: list[Path] = []
    for traj in sorted(root.rglob("traj_data.json")):
        folder = traj.parent
        if "movable" in str(folder) or "Sliced" in str(folder):
            continue
        try:
            task_type = json.loads(traj.read_text())["task_type"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"cannot read task_type: {exc}", where=str(traj)) from None
        if task_type not in ALFWORLD_TASK_TYPES:
            continue
        game = folder / "game.tw-pddl"
        if not game.is_file():
            continue  # alfworld skips such folders too ("Skipping missing game!")
        try:
            solvable = json.loads(game.read_text()).get("solvable")
        except json.JSONDecodeError as exc:
            raise InputError(f"not JSON: {exc}", where=str(game)) from None
        if solvable:
            games.append(game)
    if not games:
        raise _missing(root / "<task>" / "<trial>" / "game.tw-pddl", "ALFWorld game files")
    games.sort(key=str)
    episodes = []
    for i, game in enumerate(games[:ALFWORLD_NUM_EXAMS]):
        name = "/".join(game.parts[-3:-1])
        if name not in labels:
            raise InputError(f"no line of alfworld/test.jsonl has additional_info.description == {name!r} "
                             f"(the game {game})", field="agentboard_data")
        row = labels[name]
        episodes.append(Episode("alfworld", i, str(row.get("goal", "")), _subgoals(row, alternatives=False),
                                str(row["difficulty"]), {"game_file": str(game), "name": name}))
    return episodes


def _babyai_episodes(data_dir: Path) -> list[Episode]:
    rows = read_test_jsonl(data_dir, "babyai")
    limit = len(BABYAI_LEVELS) * BABYAI_PER_LEVEL
    if len(rows) > limit:  # tasks/babyai.py asserts len(levels) * env_num_per_task == len(annotations)
        raise InputError(f"babyai/test.jsonl has {len(rows)} episodes; AgentBoard's configuration has {limit}",
                         field="agentboard_data")
    episodes = []
    for i, row in enumerate(rows):
        level = BABYAI_LEVELS[i // BABYAI_PER_LEVEL]
        episodes.append(Episode("babyai", i, str(row.get("goal", "")), _subgoals(row, alternatives=True),
                                str(row["difficulty"]),
                                {"level": level, "env_id": BABYAI_LEVEL_IDS[level],
                                 "seed": BABYAI_SEED + i % BABYAI_PER_LEVEL}))
    return episodes


def pddl_files_root(data_dir: str | os.PathLike[str]) -> Path:
    """Where the PDDL domains live: ``DIR/pddl/`` when it holds them, else an AgentBoard checkout's copy."""
    data_dir = Path(data_dir)
    local = data_dir / "pddl"
    if any((local / f"{g}.pddl").is_file() for g in PDDL_GAMES):
        return local
    checkout = data_dir.parent / "agentboard" / "environment" / "pddl_env" / "pddlgym" / "pddl"
    if checkout.is_dir():
        return checkout
    return local


def _pddl_episodes(data_dir: Path) -> list[Episode]:
    rows = read_test_jsonl(data_dir, "pddl")
    root = pddl_files_root(data_dir)
    episodes: list[Episode] = []
    line = 0
    for game in PDDL_GAMES:
        domain = root / f"{game}.pddl"
        if not domain.is_file():
            raise _missing(domain, f"the PDDL domain of {game} (from AgentBoard's "
                                   "agentboard/environment/pddl_env/pddlgym/pddl/, copied to DIR/pddl/)")
        problems = sorted(str(p) for p in (root / game).glob("*.pddl"))  # pddlgym sorts its problem files
        if not problems:
            raise _missing(root / game / "*.pddl", f"the PDDL problems of {game}")
        for i in range(min(PDDL_PER_TASK, PDDL_NUM_PROBLEMS[game], len(problems))):
            if line >= len(rows):
                raise InputError(f"pddl/test.jsonl has {len(rows)} lines; the problems need more "
                                 f"({game} problem {i})", field="agentboard_data")
            row = rows[line]
            episodes.append(Episode("pddl", line, str(row.get("goal", "")), row.get("subgoals"),
                                    str(row["difficulty"]),
                                    {"game": game, "problem_index": i, "domain_file": str(domain),
                                     "problem_dir": str(root / game), "problem_file": problems[i]}))
            line += 1
    return episodes


def _jericho_episodes(data_dir: Path) -> list[Episode]:
    rows = read_test_jsonl(data_dir, "jericho")
    if len(rows) > len(JERICHO_GAMES):
        raise InputError(f"jericho/test.jsonl has {len(rows)} lines; AgentBoard's configuration names "
                         f"{len(JERICHO_GAMES)} games", field="agentboard_data")
    game_dir = data_dir.joinpath(*JERICHO_GAME_DIR)
    episodes = []
    for i, row in enumerate(rows):
        game = JERICHO_GAMES[i]
        path = game_dir / f"{game}{'.z8' if game in JERICHO_Z8 else '.z5'}"
        if not path.is_file():
            raise _missing(path, f"the Jericho story file of {game}")
        subgoals = _subgoals(row, alternatives=False)
        episodes.append(Episode("jericho", i, str(row.get("goal", "")), subgoals, str(row["difficulty"]),
                                {"game": game, "game_file": str(path)}))
    return episodes


def _sciworld_episodes(data_dir: Path) -> list[Episode]:
    """``agentboard/environment/scienceworld_env.py``: labels keyed ``<env_name>_<var>`` in file order (a
    repeated key keeps its first position and its last line's values), goal = the line's ``goal``."""
    labels: dict[str, dict[str, Any]] = {}
    for row in read_test_jsonl(data_dir, "sciworld"):
        info = _info(row)
        if "env_name" not in info or "var" not in info:
            raise InputError("needs additional_info.env_name and additional_info.var", where=row["_where"],
                             field="additional_info")
        subgoals = _subgoals(row, alternatives=False)
        if not subgoals:
            raise InputError("empty 'subgoals' (AgentBoard divides by their number)", where=row["_where"],
                             field="subgoals")
        labels[f"{info['env_name']}_{info['var']}"] = row
    episodes = []
    for i, row in enumerate(labels.values()):
        info = _info(row)
        episodes.append(Episode("sciworld", i, str(row.get("goal", "")), row["subgoals"], str(row["difficulty"]),
                                {"env_name": str(info["env_name"]), "var": int(info["var"])}))
    return episodes


_LOADERS = {"alfworld": _alfworld_episodes, "babyai": _babyai_episodes, "pddl": _pddl_episodes,
            "jericho": _jericho_episodes, "sciworld": _sciworld_episodes}


@lru_cache(maxsize=32)
def _cached(task: str, data_dir: str, stamp: float) -> tuple[Episode, ...]:
    return tuple(_LOADERS[task](Path(data_dir)))


def load_episodes(data_dir: str | os.PathLike[str], task: str) -> list[Episode]:
    """Every AgentBoard episode of ``task`` in AgentBoard's order; an :class:`InputError` names what is missing."""
    if task not in _LOADERS:
        raise InputError(f"AgentBoard data has no task {task!r}; known: {', '.join(_LOADERS)}", field="tasks")
    root = Path(data_dir)
    if not root.is_dir():
        raise _missing(root, "the AgentBoard data folder")
    jsonl = root / DATA_FOLDERS[task] / "test.jsonl"
    stamp = jsonl.stat().st_mtime if jsonl.exists() else 0.0
    return list(_cached(task, str(root.resolve()), stamp))


def check_data(data_dir: str | os.PathLike[str], tasks: Sequence[str]) -> dict[str, int]:
    """Validate ``DIR`` for ``tasks`` before a run: episodes per task, or one error naming the missing file."""
    return {task: len(load_episodes(data_dir, task)) for task in tasks}


def available(task: str) -> str | None:
    """Engine packages the AgentBoard version of ``task`` needs (None when they import)."""
    modules = {"alfworld": ("alfworld.agents.environment.alfred_tw_env", "textworld.gym"),
               "babyai": ("minigrid", "gymnasium"), "pddl": ("pddlgym",), "jericho": ("jericho",),
               "sciworld": ("scienceworld", "py4j")}[task]
    return missing_modules(*modules)


def task_info(task: str) -> TaskInfo:
    """The report's description of the AgentBoard version of ``task``."""
    return TASK_INFOS[task]


__all__ = [
    "BABYAI_LEVELS",
    "DATA_FOLDERS",
    "JERICHO_GAMES",
    "PDDL_GAMES",
    "Episode",
    "available",
    "check_data",
    "load_episodes",
    "pddl_files_root",
    "read_test_jsonl",
    "task_info",
]
