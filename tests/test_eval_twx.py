"""The Jericho stand-in (TextWorld-Express): derived templates, valid actions, invalid actions, gold oracle."""

from __future__ import annotations

import pytest

from agentrefine_lg.checks import check_script, match_action
from agentrefine_lg.eval import twx

pytestmark = pytest.mark.skipif(twx.available() is not None, reason=str(twx.available()))


def test_task_says_it_stands_in_for_jericho():
    assert twx.TASK.name == "jericho"
    assert "stand" in twx.TASK.note.lower() and "jericho" in twx.TASK.note.lower()


def test_derive_actions_groups_engine_commands_by_verb():
    specs, leftovers = twx.derive_actions(
        ["move north", "move west", "open door to north", "open fridge", "take coin", "put coin in box",
         "look around", "dance wildly"])
    assert specs["move {direction}"].parameters == {"direction": ["north", "west"]}
    assert specs["open door to {direction}"].parameters == {"direction": ["north"]}
    nouns = ["box", "coin", "fridge"]  # every noun is allowed in every noun slot; the engine judges the rest
    assert specs["open {container}"].parameters == {"container": nouns}  # "door to north" is not a container
    assert specs["put {object} in {container}"].parameters == {"object": nouns, "container": nouns}
    assert leftovers == ["dance wildly"] and "dance wildly" in specs  # nothing the engine offers is hidden
    assert "cook {object} in {appliance}" not in specs  # only verbs the game uses


@pytest.fixture(scope="module")
def coin_env():
    env = twx.make_env(1)  # coin
    yield env
    env.close()


def test_reset_shows_task_and_room_and_script_checks(coin_env):
    obs = coin_env.reset()
    assert "find the coin" in obs and "You are in the" in obs
    script = coin_env.script()
    assert check_script(script).ok, check_script(script).summary()
    for action in coin_env.valid_actions():
        assert match_action(script, action).ok, action


def test_invalid_actions_are_not_sent_to_the_engine(coin_env):
    coin_env.reset()
    r = coin_env.step("sing a song")
    assert r.error == "parameter_error" and "not sure what you mean" in r.observation
    r = coin_env.step("take unicorn")  # a known verb, not possible here
    assert r.error == "logic_error"
    assert coin_env._gold_pos == 0 and coin_env.oracle_action() is not None


@pytest.mark.parametrize("episode", [
    0, 2,  # cookingworld, mapreader
    pytest.param(3, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow),
    pytest.param(6, marks=pytest.mark.slow),
])
def test_gold_oracle_wins_the_game_and_progress_is_the_score(episode):
    env = twx.make_env(episode)
    try:
        env.reset()
        for _ in range(30):
            action = env.oracle_action()
            assert action in env.valid_actions()
            r = env.step(action)
            if r.done:
                break
        assert r.done and r.progress == 1.0, env.name
        assert env.step("look around").info.get("episode_over")
    finally:
        env.close()


def test_close_stops_the_jvm():
    env = twx.make_env(4)
    env.reset()
    proc = env._env._gateway.java_process
    env.close()
    assert proc.poll() is not None
    env.close()  # idempotent
