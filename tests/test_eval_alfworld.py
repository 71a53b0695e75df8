"""ALFWorld-style household task: generated problems in alfworld's ALFRED domain, played by its TextWorld engine."""

from __future__ import annotations

import json

import pytest

from agentrefine_lg.eval import alfworld
from agentrefine_lg.eval.base import TaskInfo

pytestmark = pytest.mark.skipif(alfworld.available() is not None, reason=str(alfworld.available()))


def _play_oracle(env, limit: int = 40):
    obs = env.reset()
    result = None
    for _ in range(limit):
        action = env.oracle_action()
        if action is None:
            break
        result = env.step(action)
        assert result.error is None, (action, result.observation)
        if result.done:
            break
    return obs, result


def test_task_contract():
    assert isinstance(alfworld.TASK, TaskInfo)
    assert alfworld.TASK.held_out and "generated" in alfworld.TASK.note
    with pytest.raises(TypeError):
        alfworld.make_env(0, bogus=1)
    with pytest.raises(ValueError):
        alfworld.make_env(0, task_types=["make_coffee"])


def test_generation_is_deterministic_and_covers_every_task_type():
    for i, task_type in enumerate(alfworld.TASK_TYPES):
        a = alfworld.generate_problem(task_type, seed=3, episode=i, size="small")
        b = alfworld.generate_problem(task_type, seed=3, episode=i, size="small")
        assert a.pddl_problem == b.pddl_problem and a.goal_text == b.goal_text
        assert "(:goal" in a.pddl_problem and "canContain" in a.pddl_problem
    other = alfworld.generate_problem(alfworld.TASK_TYPES[0], seed=4, episode=0)
    assert other.pddl_problem != alfworld.generate_problem(alfworld.TASK_TYPES[0], seed=5, episode=0).pddl_problem


def test_game_file_has_alfworld_format(tmp_path):
    problem = alfworld.generate_problem("pick_heat_then_place_in_recep", seed=0, episode=0, size="small")
    path = alfworld.write_game(problem, tmp_path)
    game = json.loads(path.read_text())
    assert set(game) == {"pddl_domain", "grammar", "pddl_problem", "solvable"}
    assert game["solvable"] is True and "UNKNOWN GOAL" not in game["grammar"]
    assert problem.goal_text in game["grammar"]


@pytest.mark.parametrize("episode", [0, 3])  # pick_and_place_simple, pick_heat_then_place_in_recep
def test_oracle_solves_small_generated_games(tmp_path, episode):
    with alfworld.make_env(episode, seed=1, size="small", cache_dir=tmp_path) as env:
        obs, result = _play_oracle(env)
        assert "Your task is to:" in obs
        assert result is not None and result.done and result.progress == 1.0
        assert env.oracle_action() is None
        assert env.step("look").info.get("episode_over")


@pytest.mark.slow
def test_oracle_solves_every_task_type(tmp_path):
    for episode in range(len(alfworld.TASK_TYPES)):
        with alfworld.make_env(episode, seed=0, cache_dir=tmp_path) as env:
            _, result = _play_oracle(env)
            assert result is not None and result.done, env.name


def test_errors_and_agentboard_put(tmp_path):
    with alfworld.make_env(3, seed=1, size="small", cache_dir=tmp_path) as env:
        env.reset()
        script = env.script()
        assert "move {obj} to {recep}" in script.available_actions
        assert script.goal.startswith("Your task is to:")
        assert env.step("fly to the moon").error == "parameter_error"
        assert env.step("go to spaceship 1").error == "parameter_error"
        plan = [env.oracle_action()]
        first = plan[0]  # "go to <receptacle>"
        receptacle = first.removeprefix("go to ")
        assert env.step(f"open {receptacle}").error in ("place_error", None)
        assert "Valid actions:" in env.step("check valid actions").observation
        progress = 0.0
        while (action := env.oracle_action()) is not None:
            if action.startswith("move "):  # use AgentBoard's spelling for the placement
                obj, recep = action.removeprefix("move ").split(" to ")
                action = f"put {obj} in/on {recep}"
            result = env.step(action)
            assert result.error is None, action
            assert result.progress >= progress
            progress = result.progress
        assert result.done
