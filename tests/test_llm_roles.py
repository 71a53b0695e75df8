"""Specification of the LLM teacher roles: structured output with a text fallback, bounded format
feedback, token accounting, and the Player / DM turn formats."""

from __future__ import annotations

import asyncio
import json

import pytest
from fake_synthesis_models import (
    HTTPStatusError,
    TeacherModel,
    TextOnlyModel,
    script_fixture,
    trajectory_fixture,
)

from agentrefine_lg.schema import Script, Turn
from agentrefine_lg.synthesis.llm_roles import (
    LLMDM,
    LLMPlayer,
    LLMScriptWriter,
    LLMTrajectoryWriter,
    MalformedOutputError,
    extract_json,
    is_fatal_error,
    is_transient_error,
    llm_teacher,
    parse_player_reply,
)

PERSONA = "A beekeeper with forty hives who tracks honey yields by hand."


def arun(coro):
    return asyncio.run(coro)


def turns(rows):
    return [Turn.model_validate(r) for r in rows]


# ---------------------------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", [
    '{"a": 1}',
    'Here is the script you asked for:\n```json\n{"a": 1}\n```\nGood luck!',
    "```\n{\"a\": 1}\n```",
    'Sure. {"a": 1} Hope this helps.',
])
def test_extract_json_finds_the_object_in_fences_and_prose(text):
    assert extract_json(text) == {"a": 1}


def test_extract_json_never_returns_an_inner_piece_of_a_truncated_object():
    with pytest.raises(ValueError, match="no valid JSON"):
        extract_json('{"Environment": {"rooms": ["lab", "hall"], "Goal": ')


@pytest.mark.parametrize("text,expected", [
    ("Thought: the file is elsewhere.\nAction: cd project", ("the file is elsewhere.", "cd project")),
    ("Thought: a\nAction: cat notes.txt\n", ("a", "cat notes.txt")),
    ('{"Thought": "x", "Action": "ls ."}', ("x", "ls .")),
    ("I think so.\nAction: `ls .`", ("I think so.", "ls .")),
])
def test_parse_player_reply(text, expected):
    assert parse_player_reply(text) == expected


def test_parse_player_reply_without_action_is_an_error():
    with pytest.raises(ValueError, match="Action"):
        parse_player_reply("Thought: I am not sure what to do.")


def test_error_classes():
    assert is_transient_error(HTTPStatusError(429)) and is_transient_error(HTTPStatusError(503))
    assert is_transient_error(TimeoutError()) and is_transient_error(ConnectionResetError())
    assert not is_transient_error(HTTPStatusError(400)) and not is_transient_error(ValueError("bad"))
    assert not is_transient_error(MalformedOutputError("x"))
    assert is_fatal_error(HTTPStatusError(401)) and not is_fatal_error(HTTPStatusError(500))


# ---------------------------------------------------------------------------------------------- writers


def test_script_writer_uses_structured_output_and_counts_tokens():
    model = TeacherModel(responses=[json.dumps(script_fixture())])
    writer = LLMScriptWriter(model, name="teacher")
    script, usage = arun(writer.awrite_script(PERSONA, []))
    assert script["Goal"].startswith("Navigate")
    assert usage.model_dump() == {"input_tokens": 100, "output_tokens": 40, "total_tokens": 140, "calls": 1}
    assert model.structured_methods  # went through with_structured_output
    prompt = model.calls[0][-1].content
    assert PERSONA in prompt and '"verification code"' in prompt and "cd {path}" in prompt


def test_structured_parse_failure_falls_back_to_the_text():
    fenced = "Here you go:\n```json\n" + json.dumps(script_fixture()) + "\n```"
    model = TeacherModel(responses=[fenced])
    writer = LLMScriptWriter(model)
    script, usage = arun(writer.awrite_script(PERSONA, []))
    assert script["Available Actions"]
    assert usage.calls == 1 and writer.stats["structured_fallbacks"] == 1


def test_model_without_structured_output_is_parsed_from_text():
    model = TextOnlyModel(responses=["Sure!\n" + json.dumps(script_fixture())])
    script, _ = arun(LLMScriptWriter(model).awrite_script(PERSONA, []))
    assert script["Goal"]


def test_malformed_json_is_fed_back_once_then_returned_raw_for_the_graph():
    model = TextOnlyModel(responses=['{"Environment": {', '{"Goal": "x", "Environment": '])
    writer = LLMScriptWriter(model, format_retries=1)
    raw, usage = arun(writer.awrite_script(PERSONA, ["[script/regex_unsafe] cd {path}: nested quantifiers"]))
    assert isinstance(raw, str)  # check_script will report it and the next attempt carries the problem
    assert usage.calls == 2 and usage.total_tokens == 280
    feedback = model.calls[1][-1].content
    assert "could not be used" in feedback and "JSON" in feedback
    assert model.calls[1][-2].content == '{"Environment": {'  # the bad answer stays in the conversation
    assert "regex_unsafe" in model.calls[0][-1].content  # the graph's problems are in the first prompt
    assert writer.stats["format_retries"] == 1


def test_malformed_then_corrected():
    model = TextOnlyModel(responses=["I cannot do JSON today.", json.dumps(script_fixture())])
    script, usage = arun(LLMScriptWriter(model).awrite_script(PERSONA, []))
    assert script["Goal"] and usage.calls == 2


def test_trajectory_writer_continues_a_prefix_and_accepts_a_turns_object():
    prefix = turns(trajectory_fixture()[:5])
    model = TextOnlyModel(responses=[json.dumps({"turns": trajectory_fixture()})])
    writer = LLMTrajectoryWriter(model, min_pairs=3)
    out, usage = arun(writer.awrite_trajectory(Script.model_validate(script_fixture()), prefix, ["[trajectory/too_few_pairs] 1"]))
    assert out == trajectory_fixture()
    prompt = model.calls[0][-1].content
    assert "These first 5 turns are already verified" in prompt
    assert "at least 3 times" in prompt and "too_few_pairs" in prompt
    assert '"set config.cfg mode on"' in prompt  # the prefix is shown verbatim


# ---------------------------------------------------------------------------------------------- player / dm


def test_player_speaks_the_tuned_chat_format_and_is_told_to_make_mistakes():
    script = Script.model_validate(script_fixture())
    history = turns(trajectory_fixture()[:5])
    model = TextOnlyModel(responses=["Thought: the file is in project.\nAction: cd project"])
    turn, usage = arun(LLMPlayer(model).aact(script, history))
    assert turn.role == "Player" and turn.action == "cd project" and turn.thought == "the file is in project."
    messages = model.calls[0]
    assert [m.type for m in messages] == ["system", "human", "ai", "human", "ai", "human"]
    assert "Mistakes so far: 1" in messages[0].content and script.goal in messages[0].content
    assert messages[2].content == "Thought: The notes may tell me which file the backup service reads.\nAction: cat notes.txt"
    assert usage.calls == 1


def test_player_that_never_gives_an_action_raises_with_its_usage():
    model = TextOnlyModel(responses=["I would like to think more.", "Still thinking."])
    with pytest.raises(MalformedOutputError) as err:
        arun(LLMPlayer(model, format_retries=1).aact(Script.model_validate(script_fixture()), []))
    assert err.value.usage.calls == 2
    assert "Action" in model.calls[1][-1].content


def test_dm_gets_the_rule_check_and_returns_flags():
    script = Script.model_validate(script_fixture())
    history = turns(trajectory_fixture()[:7]) + [Turn(role="Player", thought="set it", action="set mode=on in config.cfg")]
    answer = {"Thought": "bad format", "Observation": "Error: invalid format.", "parameter_error": "true",
              "place_error": False, "logic_error": False, "task_completed": False}
    model = TeacherModel(responses=[json.dumps(answer)])
    turn, _ = arun(LLMDM(model).arespond(script, history))
    assert turn.role == "DM" and turn.parameter_error is True and turn.flagged and turn.task_completed is False
    assert "INVALID" in model.calls[0][-1].content and "parameter_error" in model.calls[0][-1].content


def test_dm_opening_and_missing_observation_feedback():
    script = Script.model_validate(script_fixture())
    model = TeacherModel(responses=['{"Thought": "start"}', json.dumps({"Thought": "start", "Observation": "You are in /home/user."})])
    turn, usage = arun(LLMDM(model).arespond(script, []))
    assert turn.observation == "You are in /home/user." and not turn.flagged and turn.task_completed is False
    assert "starts" in model.calls[0][-1].content  # the opening prompt
    assert "Observation" in model.calls[1][-1].content and usage.calls == 2


def test_llm_teacher_builds_the_roles_for_each_mode():
    model = TeacherModel(responses=[])
    writer, trajectory = llm_teacher(model, mode="one_shot", name="t")
    assert isinstance(writer, LLMScriptWriter) and isinstance(trajectory, LLMTrajectoryWriter) and writer.name == "t"
    _, (player, dm) = llm_teacher(model, mode="interactive")
    assert isinstance(player, LLMPlayer) and isinstance(dm, LLMDM) and player.structured == "text"
    with pytest.raises(ValueError, match="mode"):
        llm_teacher(model, mode="chaos")  # type: ignore[arg-type]
