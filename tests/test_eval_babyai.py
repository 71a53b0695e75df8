"""BabyAI task: text rendering, valid actions, invalid-action handling, the bot as oracle."""

from __future__ import annotations

import re

import pytest

from agentrefine_lg.checks import check_script, match_action
from agentrefine_lg.eval import babyai

pytestmark = pytest.mark.skipif(babyai.available() is not None, reason=str(babyai.available()))


def test_reset_renders_mission_view_front_and_inventory():
    env = babyai.make_env(0)
    obs = env.reset()
    assert obs.startswith("Mission: ")
    assert "You see:" in obs and "Directly in front of you:" in obs and "You carry nothing." in obs
    # objects are placed relative to the agent, in steps
    assert re.search(r"\d+ steps? (forward|to the (left|right))", obs)
    env.close()


def test_same_episode_and_seed_give_the_same_world_and_other_seeds_differ():
    a, b, c = babyai.make_env(2), babyai.make_env(2), babyai.make_env(2, seed=1)
    assert a.reset() == b.reset()
    assert a.name == b.name == "babyai/GoToLocal/2"
    assert c.reset() != a.reset() or c.seed != a.seed


def test_script_lists_the_six_actions_and_passes_the_rule_check():
    env = babyai.make_env(3)
    env.reset()
    script = env.script()
    assert set(script.available_actions) == set(babyai.ACTIONS)
    assert "Accomplish the mission" in script.goal
    assert check_script(script).ok
    for action in env.valid_actions():
        assert match_action(script, action).ok


def test_invalid_text_is_a_parameter_error_and_a_blocked_action_a_logic_error():
    env = babyai.make_env(0)
    env.reset()
    r = env.step("fly to the moon")
    assert r.error == "parameter_error" and not r.done and "Valid actions" in r.observation
    r = env.step("drop")  # carrying nothing
    assert r.error == "logic_error" and "not carrying" in r.observation
    assert env.step("").error == "parameter_error"
    r = env.step("Turn Left.")  # case and trailing period are tolerated
    assert r.error is None and r.observation.startswith("You turn left.")


def test_moving_into_a_wall_is_refused_without_using_an_engine_step():
    env = babyai.make_env(0)
    env.reset()
    for _ in range(12):  # walk until something blocks the way
        if "move forward" not in env.valid_actions():
            break
        env.step("move forward")
    steps = env._u.step_count
    r = env.step("move forward")
    assert r.error == "logic_error" and "can't move forward" in r.observation
    assert env._u.step_count == steps


@pytest.mark.parametrize("episode", range(7))
def test_bot_oracle_solves_each_level_with_valid_actions_and_progress_rises_to_one(episode):
    env = babyai.make_env(episode)
    env.reset()
    progress = [0.0]
    for _ in range(40):
        action = env.oracle_action()
        assert action in env.valid_actions()
        r = env.step(action)
        assert r.error is None and r.progress >= progress[-1]
        progress.append(r.progress)
        if r.done:
            break
    assert r.done and r.progress == 1.0
    assert env.oracle_action() is None and env.valid_actions() == []
    assert 0 < progress[1] < 1  # partial credit along the way (oracle distance)


def test_no_sampling_rejected_noise_on_stdout(capfd):
    for ep in range(8):
        env = babyai.make_env(ep, seed=5)
        env.reset()
        env.step(env.oracle_action())
    out, err = capfd.readouterr()
    assert "Sampling rejected" not in out + err
