"""Trajectory -> chat conversion (docs/method.md §5) and the sample readers/writers."""

from __future__ import annotations

import json

import pytest

from agentrefine_lg.convert import (
    read_samples,
    sample_from_trajectory,
    system_prompt,
    to_dataset,
    to_sharegpt,
    trajectory_to_messages,
    write_jsonl,
)
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Script, Trajectory


@pytest.fixture
def script(paper_script):
    return Script.model_validate(paper_script)


def test_system_prompt_holds_environment_goal_actions_and_format(script):
    text = system_prompt(script)
    for needle in ("backup service", script.goal, "set {file} {key} {value}", "retries", "Thought:", "Action:",
                   "The player is in /home/user/project."):
        assert needle in text


def test_dm_turns_become_user_turns_and_player_turns_assistant_turns(script, paper_trajectory):
    messages = trajectory_to_messages(script, paper_trajectory)
    roles = [m.role for m in messages]
    assert roles[0] == "system" and roles[1] == "user"
    assert roles[1:] == ["user", "assistant"] * 5  # the closing observation has nothing to train on
    assert messages[1].content == paper_trajectory[0]["Observation"]
    assert messages[2].content == "Thought: The notes may tell me which file the backup service reads.\nAction: cat notes.txt"


def test_erroneous_turns_stay_in_context_without_loss(script, paper_trajectory):
    messages = trajectory_to_messages(script, paper_trajectory)
    assistant = [m for m in messages if m.role == "assistant"]
    assert [m.train for m in assistant] == [True, False, True, False, True]
    assert "set mode=on in config.cfg" in assistant[3].content  # the mistake is still there, as context
    unmasked = trajectory_to_messages(script, paper_trajectory, mask=False)
    assert all(m.train for m in unmasked if m.role == "assistant")


def test_rule_rejected_actions_are_masked_even_if_the_dm_missed_them(script, paper_trajectory):
    paper_trajectory[5]["Action"] = "chdir project"
    assistant = [m for m in trajectory_to_messages(script, paper_trajectory) if m.role == "assistant"]
    assert assistant[2].train is False


def test_trajectory_starting_with_the_player_gets_a_task_turn(script, paper_trajectory):
    messages = trajectory_to_messages(script, paper_trajectory[1:])
    assert [m.role for m in messages[:3]] == ["system", "user", "assistant"]
    assert script.goal in messages[1].content


def test_jsonl_round_trip_keeps_provenance(script, paper_trajectory, tmp_path):
    sample = sample_from_trajectory(script, paper_trajectory, teacher="gpt-4o", attempts={"script": 1, "trajectory": 2},
                                    usage={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15, "calls": 3})
    path = tmp_path / "out.jsonl"
    assert write_jsonl([sample, sample], path) == 2
    back = list(read_samples(path))
    assert len(back) == 2 and back[0].id == sample.id
    assert back[0].persona.startswith("A recent graduate") and back[0].usage.calls == 3
    assert back[0].trajectory.to_paper() == paper_trajectory
    assert [m.train for m in back[0].messages] == [m.train for m in sample.messages]


def test_rows_with_script_and_trajectory_are_converted_on_read(paper_script, paper_trajectory, tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"script": paper_script, "trajectory": paper_trajectory}) + "\n")
    (sample,) = read_samples(path)
    assert sample.trainable_turns == 3


def test_sharegpt_rows_with_loss_flags(tmp_path):
    row = {"id": "os_1", "conversations": [
        {"from": "human", "value": "List files.", "loss": False},
        {"from": "gpt", "value": "Thought: t\nAction: ls", "loss": True},
        {"from": "human", "value": "a.txt", "loss": False},
        {"from": "gpt", "value": "Thought: bad\nAction: rm", "loss": False},
    ]}
    path = tmp_path / "sharegpt.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (sample,) = read_samples(path)
    assert sample.source == "sharegpt" and sample.id == "os_1"
    assert [(m.role, m.train) for m in sample.messages] == [("user", None), ("assistant", True), ("user", None), ("assistant", False)]
    assert to_sharegpt(sample)["conversations"] == row["conversations"]


def test_released_agentrefine_rows_reidentify_erroneous_turns(tmp_path):
    row = {"conversations": [
        {"from": "system", "value": "You are in a lab."},
        {"from": "human", "value": "You see a beaker."},
        {"from": "gpt", "value": "Thought: t\nAction: grab beakr"},
        {"from": "human", "value": "Error: there is no beakr here."},
        {"from": "gpt", "value": "Thought: typo\nAction: grab beaker"},
        {"from": "human", "value": "You take the beaker."},
        {"from": "gpt", "value": "Thought: done\nAction: finish"},
    ]}
    path = tmp_path / "released.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (sample,) = read_samples(path)
    assert sample.source == "agentrefine-released"
    assert [m.train for m in sample.messages if m.role == "assistant"] == [False, True, True]


def test_to_dataset(script, paper_trajectory):
    ds = to_dataset([sample_from_trajectory(script, paper_trajectory)])
    assert ds.num_rows == 1 and ds[0]["messages"][4]["train"] is False


@pytest.mark.parametrize("content, where, field", [
    ('{"messages": [{"role": "system", "content": "x"}]}\n{not json}\n', ":2", None),
    ('{"id": "a", "messages": [{"role": "robot", "content": "x"}]}\n', ":1", "messages.0.role"),
    ('{"id": "a", "messages": []}\n', ":1", "messages"),
    ('{"conversations": [{"from": "alien", "value": "x"}]}\n', ":1", "conversations[0].from"),
    ('{"something": 1}\n', ":1", None),
    ('[1, 2]\n', "[0]", None),
])
def test_bad_input_names_file_record_and_field(tmp_path, content, where, field):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as info:
        list(read_samples(path))
    assert f"{path}{where}" in str(info.value)
    if field:
        assert info.value.field == field


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(read_samples(tmp_path / "nope.jsonl"))
    with pytest.raises(InputError, match="directory"):
        list(read_samples(tmp_path))


def test_empty_trajectory_is_an_input_error(script):
    with pytest.raises(InputError, match="no turns"):
        trajectory_to_messages(script, Trajectory(turns=[]))
