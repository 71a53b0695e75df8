"""ScienceWorld task: gold-path oracle, lean stepping, error kinds, a capped and closed JVM."""

from __future__ import annotations

import pytest

from agentrefine_lg.eval import sciworld
from agentrefine_lg.eval.base import TaskInfo


def test_task_contract_and_missing_java(monkeypatch):
    assert isinstance(sciworld.TASK, TaskInfo) and sciworld.TASK.held_out
    monkeypatch.setattr(sciworld.shutil, "which", lambda _name: None)
    if sciworld.missing_modules("scienceworld", "py4j") is None:
        assert "java" in sciworld.available()
    with pytest.raises(TypeError):
        sciworld.make_env(0, bogus=True)
    with pytest.raises(ValueError):
        sciworld.make_env(0, split="holdout")


def test_form_regex_names_slots():
    import re

    rx = re.compile(sciworld._form_regex("move {object} to {container}"))
    m = rx.match("move egg turtle egg in inventory to orange box")
    assert m and m.group("object") == "egg turtle egg in inventory" and m.group("container") == "orange box"


@pytest.mark.java
@pytest.mark.skipif(sciworld.available() is not None, reason=str(sciworld.available()))
def test_short_task_oracle_errors_and_close():
    env = sciworld.make_env(0, tasks=["lifespan-longest-lived"])
    pid = env.jvm_pid()
    try:
        first = env.reset()
        assert first.startswith("Your task is to") and "This room is called" in first
        script = env.script()
        assert "go to {location}" in script.available_actions and "reset task" not in script.available_actions
        assert "kitchen" in script.available_actions["go to {location}"].parameters["location"]
        assert env.step("fly to the moon").error == "parameter_error"
        assert env.step("go to moon").error == "parameter_error"  # no such thing in this world
        assert env.step("go to foundry").error == "place_error"  # exists, not reachable from here
        listing = env.step("check valid actions")
        assert listing.error is None and listing.observation.startswith("Valid actions:")
        result = None
        while (action := env.oracle_action()) is not None:
            result = env.step(action)
        assert result is not None and result.done and result.progress == 1.0
        assert env.step("look around").info.get("episode_over")
    finally:
        env.close()
    import os

    with pytest.raises(ProcessLookupError):  # the JVM is gone
        os.kill(pid, 0)


@pytest.mark.java
@pytest.mark.slow
@pytest.mark.skipif(sciworld.available() is not None, reason=str(sciworld.available()))
def test_gold_paths_complete_and_wrong_focus_fails():
    for episode in range(8):
        with sciworld.make_env(episode) as env:
            env.reset()
            result = None
            for _ in range(len(env.gold_path) + 5):
                action = env.oracle_action()
                if action is None:
                    break
                result = env.step(action)
            assert result is not None and result.done, env.name
    with sciworld.make_env(9) as env:  # boil: focusing on a wrong object ends the episode as failed
        env.reset()
        failed = env.step("focus on door")
        assert not failed.done and failed.info.get("episode_over")
