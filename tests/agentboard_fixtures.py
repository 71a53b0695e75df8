"""Small fixtures in AgentBoard's ``data/`` layout, built by the tests (AgentBoard's data cannot be downloaded here).

Every file is written from the formats AgentBoard's loaders read: ``<task>/test.jsonl`` lines with ``goal``,
``subgoals``, ``difficulty`` and ``additional_info``; ALFWorld's ``json_2.1.1/valid_unseen/<task>/<trial>/``
with ``traj_data.json`` and ``game.tw-pddl``; Jericho story files under
``jericho/z-machine-games-master/jericho-game-suite/``; PDDL domains with problem folders. The engine files
are ours: a tiny blocks domain, an ALFRED problem from :mod:`agentrefine_lg.eval.alfworld`'s generator, a
two-room TextWorld game compiled to Z-machine code (standing in for ``905.z5``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

#: a 4-operator blocks domain in the style of AgentBoard's blockworld (our own text)
BLOCKS_DOMAIN = """(define (domain tinyblocks)
  (:requirements :strips)
  (:predicates (clear ?x) (on-table ?x) (arm-empty) (holding ?x) (on ?x ?y))
  (:action pickup :parameters (?ob)
    :precondition (and (clear ?ob) (on-table ?ob) (arm-empty))
    :effect (and (holding ?ob) (not (clear ?ob)) (not (on-table ?ob)) (not (arm-empty))))
  (:action putdown :parameters (?ob)
    :precondition (holding ?ob)
    :effect (and (clear ?ob) (arm-empty) (on-table ?ob) (not (holding ?ob))))
  (:action stack :parameters (?ob ?underob)
    :precondition (and (clear ?underob) (holding ?ob))
    :effect (and (arm-empty) (clear ?ob) (on ?ob ?underob) (not (clear ?underob)) (not (holding ?ob))))
  (:action unstack :parameters (?ob ?underob)
    :precondition (and (on ?ob ?underob) (clear ?ob) (arm-empty))
    :effect (and (holding ?ob) (clear ?underob) (not (on ?ob ?underob)) (not (clear ?ob)) (not (arm-empty)))))
"""

#: b1 on the table, b2 on b1, b3 on the table; goal: b1 on b3 and b2 on b1 (b2 on b1 holds at the start)
BLOCKS_PROBLEM = """(define (problem tiny1) (:domain tinyblocks)
  (:objects b1 b2 b3)
  (:init (arm-empty) (on-table b1) (on b2 b1) (clear b2) (on-table b3) (clear b3))
  (:goal (and (on b1 b3) (on b2 b1))))
"""

#: two blocks on the table; goal: b1 on b2
BLOCKS_PROBLEM_2 = """(define (problem tiny2) (:domain tinyblocks)
  (:objects b1 b2)
  (:init (arm-empty) (on-table b1) (clear b1) (on-table b2) (clear b2))
  (:goal (and (on b1 b2))))
"""

JERICHO_SUBGOALS = ["-= Garden =-", "You pick up the apple"]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_pddl(root: Path) -> None:
    """``pddl/test.jsonl`` (difficulty per line) and the four games' domains, one or two problems each."""
    pddl = root / "pddl"
    for game in ("gripper", "blockworld", "barman", "tyreworld"):
        (pddl / game).mkdir(parents=True, exist_ok=True)
        (pddl / f"{game}.pddl").write_text(BLOCKS_DOMAIN)
        (pddl / game / "p01.pddl").write_text(BLOCKS_PROBLEM)
        if game == "blockworld":
            (pddl / game / "p02.pddl").write_text(BLOCKS_PROBLEM_2)
    _jsonl(pddl / "test.jsonl", [{"task": "pddl", "id": i, "goal": "stack the blocks", "subgoals": [],
                                  "difficulty": "easy" if i % 2 else "hard", "additional_info": {}}
                                 for i in range(5)])


def write_babyai(root: Path, subgoals: list[Any] | None = None, n: int = 2) -> None:
    """``babyai/test.jsonl``: line i = level 1 (GoToRedBallGrey), seed 1234 + i."""
    rows = [{"task": "babyai", "id": i, "goal": "go to the red ball",
             "subgoals": subgoals if subgoals is not None else
             ["grey box 1 1 steps in front of you", "red ball 1 right in front of you 1 steps away"],
             "difficulty": "easy", "additional_info": {}} for i in range(n)]
    _jsonl(root / "babyai" / "test.jsonl", rows)


def write_jericho(root: Path, z_machine_file: Path) -> None:
    """``jericho/test.jsonl`` (line 0 = game "905") and the story file at AgentBoard's path."""
    games = root / "jericho" / "z-machine-games-master" / "jericho-game-suite"
    games.mkdir(parents=True, exist_ok=True)
    shutil.copy(z_machine_file, games / "905.z5")
    _jsonl(root / "jericho" / "test.jsonl", [{"task": "jericho", "id": 0, "goal": "Take the apple in the garden.",
                                              "subgoals": JERICHO_SUBGOALS, "difficulty": "easy",
                                              "additional_info": {}}])


def compile_z_machine_game(folder: Path) -> Path:
    """A two-room TextWorld game (kitchen -> garden, take the apple), compiled to Z-machine code."""
    import textworld
    from textworld import GameMaker

    maker = GameMaker()
    kitchen, garden = maker.new_room("Kitchen"), maker.new_room("Garden")
    maker.connect(kitchen.east, garden.west)
    maker.set_player(kitchen)
    apple = maker.new(type="o", name="apple")
    garden.add(apple)
    maker.set_quest_from_commands(["go east", "take apple"])
    options = textworld.GameOptions()
    options.path = str(folder / "game.z8")
    return Path(textworld.generator.compile_game(maker.build(), options))


def write_alfworld(root: Path, subgoals: list[str]) -> str:
    """One ALFWorld game in ``json_2.1.1/valid_unseen`` and its label; returns the game's description key."""
    import alfworld

    from agentrefine_lg.eval.alfworld import _alfworld_data, generate_problem

    problem = generate_problem("pick_and_place_simple", seed=3, episode=0, size="small")
    data = _alfworld_data()
    folder = root / "alfworld" / "json_2.1.1" / "valid_unseen" / "pick_and_place_simple-Fixture-None-Recep-1" / "trial_T0001"
    folder.mkdir(parents=True, exist_ok=True)
    grammar = (data / "alfred.twl2").read_text().replace("UNKNOWN GOAL", problem.goal_text)
    game = {"pddl_domain": (data / "alfred.pddl").read_text(), "grammar": grammar,
            "pddl_problem": problem.pddl_problem, "solvable": True}
    (folder / "game.tw-pddl").write_text(json.dumps(game))
    (folder / "traj_data.json").write_text(json.dumps({"task_type": "pick_and_place_simple"}))
    for name in ("alfred.pddl", "alfred.twl2"):
        shutil.copy(Path(alfworld.__file__).parent / "data" / name, root / "alfworld" / name)
    desc = "/".join(folder.parts[-2:])
    _jsonl(root / "alfworld" / "test.jsonl", [{"task": "alfworld", "id": 0, "goal": problem.goal_text,
                                               "subgoals": subgoals, "difficulty": "easy",
                                               "additional_info": {"description": desc}}])
    return desc


def write_sciworld(root: Path, subgoals: list[str], env_name: str = "find-living-thing", var: int = 0) -> None:
    """``scienceworld/test.jsonl``: one (task, variation) with its goal and subgoal regexes."""
    _jsonl(root / "scienceworld" / "test.jsonl",
           [{"task": "scienceworld", "id": 0, "goal": "Find a living thing and focus on it.", "subgoals": subgoals,
             "difficulty": "easy", "additional_info": {"env_name": env_name, "var": var}}])
