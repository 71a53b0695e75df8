"""Error injection (issue 16's evaluation): the mistake, what followed it, and the harness's summary."""

from __future__ import annotations

import random

import pytest
from fake_models import scripted
from test_refine_agent import DoorEnv

from agentrefine_lg.checks import match_action
from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.harness import ModelSpec, read_rows, run_eval
from agentrefine_lg.eval.injection import (
    InjectingModel,
    Injection,
    injection_outcome,
    script_parameter_mistake,
    summarize_injections,
)
from agentrefine_lg.refine_agent import run_env_episode


def test_injections_parse_and_refuse_unknown_kinds() -> None:
    assert Injection.parse("place_error@3") == Injection("place_error", 3)
    assert str(Injection.parse("logic_error")) == "logic_error@2"
    with pytest.raises(InputError, match="unknown mistake kind"):
        Injection.parse("typo_error@2")
    with pytest.raises(InputError, match="KIND@STEP"):
        Injection.parse("parameter_error@soon")


def test_a_script_parameter_mistake_is_an_action_the_rules_reject_for_its_value() -> None:
    script = DoorEnv().script()
    action = script_parameter_mistake(script, random.Random(0))
    assert action is not None and match_action(script, action).kind == "bad_value"


def _episode(replies: list[str]):
    env = DoorEnv()
    injection = Injection("parameter_error", step=1)
    model = InjectingModel(inner=scripted(*replies), env=env, injection=injection)
    result = run_env_episode(model, env, max_steps=5)
    return injection_outcome(result.turns, injection, model.injected, result.success), model


def test_an_agent_that_corrects_itself_recovers() -> None:
    outcome, model = _episode(["Thought: open the red door\nAction: open red",  # replaced by the mistake
                               "Thought: the red one\nAction: open red", "Thought: go\nAction: go through"])
    assert outcome["applied"] and outcome["flags"] == ["parameter_error"]
    assert outcome["recovered"] and not outcome["repeated"] and outcome["success_after"]
    assert model.calls == 3


def test_an_agent_that_repeats_the_mistake_is_counted_as_repeating() -> None:
    injected = script_parameter_mistake(DoorEnv().script(), random.Random("0|1"))
    outcome, _ = _episode(["Thought: a\nAction: open red", f"Thought: again\nAction: {injected}",
                           "Thought: b\nAction: open red", "Thought: c\nAction: go through"])
    assert outcome["injected"] == injected
    assert outcome["repeated"] and not outcome["recovered"]
    table = summarize_injections([outcome, {**outcome, "applied": False}])
    assert table["parameter_error"]["episodes"] == 2 and table["parameter_error"]["applied"] == 1
    assert table["parameter_error"]["repeat_rate"] == 1.0 and table["parameter_error"]["recovery_rate"] == 0.0


def test_the_harness_injects_into_every_episode_and_summarizes(tmp_path) -> None:
    summary = run_eval(tasks="pddl", episodes=2, model=ModelSpec(agent="oracle"), out=tmp_path, max_steps=8,
                       inject="parameter_error@2", embeddings=False, log=lambda _m: None)
    rows = read_rows(tmp_path / "episodes.jsonl")
    assert all(r["injection"]["applied"] and r["injection"]["flags"] == ["parameter_error"] for r in rows)
    block = summary["injection"]["kinds"]["parameter_error"]
    assert block["applied"] == 2 and block["recovery_rate"] == 1.0 and block["repeat_rate"] == 0.0
    assert "## Error injection (parameter_error@2)" in (tmp_path / "summary.md").read_text()
    with pytest.raises(InputError, match="other settings"):  # a resume may not change the injection
        run_eval(tasks="pddl", episodes=2, model=ModelSpec(agent="oracle"), out=tmp_path, max_steps=8,
                 inject="parameter_error@3", embeddings=False, log=lambda _m: None)
