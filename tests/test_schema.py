"""The data model reads and writes the paper's own JSON (docs/method.md §1)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentrefine_lg.schema import (
    Message,
    Persona,
    RefinementSample,
    Script,
    Trajectory,
    Turn,
    script_json_schema,
    trajectory_json_schema,
)


def test_paper_script_round_trips_unchanged(paper_script):
    script = Script.model_validate(paper_script)
    assert script.to_paper() == paper_script
    assert script.goal.startswith("Navigate")
    spec = script.available_actions["set {file} {key} {value}"]
    assert spec.template == "set {file} {key} {value}"
    assert spec.slots == ["file", "key", "value"]
    assert spec.verification_code.startswith("^")


def test_paper_trajectory_round_trips_unchanged(paper_trajectory):
    trajectory = Trajectory.model_validate(paper_trajectory)
    assert trajectory.to_paper() == paper_trajectory
    assert [t.role for t in trajectory][:3] == ["DM", "Player", "DM"]
    assert trajectory[4].flags == ["place_error"]


def test_snake_case_construction_dumps_paper_keys():
    turn = Turn(role="Player", thought="look first", action="ls .")
    assert turn.to_paper() == {"role": "Player", "Thought": "look first", "Action": "ls ."}


def test_role_is_case_insensitive_but_unknown_roles_are_named():
    assert Turn.model_validate({"role": "dm", "Observation": "x"}).role == "DM"
    with pytest.raises(ValidationError, match="unknown role 'Narrator'"):
        Turn.model_validate({"role": "Narrator"})


def test_mistyped_fields_name_the_field(paper_script):
    paper_script["Completion Conditions"] = 42
    with pytest.raises(ValidationError) as info:
        Script.model_validate(paper_script)
    assert "Completion Conditions" in str(info.value)


def test_numeric_parameter_values_become_strings(paper_script):
    paper_script["Available Actions"]["set {file} {key} {value}"]["parameters"]["value"] = [1, 2, "on"]
    script = Script.model_validate(paper_script)
    assert script.available_actions["set {file} {key} {value}"].parameters["value"] == ["1", "2", "on"]


def test_unknown_keys_are_kept(paper_script):
    paper_script["Difficulty"] = "easy"
    assert Script.model_validate(paper_script).to_paper()["Difficulty"] == "easy"


def test_persona_reads_persona_hub_rows_and_has_stable_id():
    a = Persona.model_validate({"persona": "A  chemist who  loves hiking."})
    b = Persona(text="a chemist who loves hiking.")
    assert a.text == "A chemist who loves hiking."
    assert a.id == b.id and len(a.id) == 16
    with pytest.raises(ValidationError):
        Persona(text="   ")


def test_sample_messages_default_train_flags():
    sample = RefinementSample(id="x", messages=[
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b", "train": False},
    ])
    assert [m.train for m in sample.messages] == [None, None, True, False]
    assert sample.trainable_turns == 1
    assert sample.to_dict()["messages"][1] == {"role": "user", "content": "u"}
    with pytest.raises(ValidationError):
        RefinementSample(id="x", messages=[])
    with pytest.raises(ValidationError):
        Message(role="tool", content="x")


def test_json_schemas_use_paper_keys():
    schema = script_json_schema()
    assert {"Environment", "Goal", "Completion Conditions", "Available Actions"} <= set(schema["properties"])
    assert set(schema["required"]) >= {"Goal", "Available Actions"}
    action = schema["$defs"]["ActionSpec"]
    assert "verification code" in action["properties"] and "template" not in action["properties"]
    turn = trajectory_json_schema()["$defs"]["Turn"]
    assert {"Thought", "Action", "Observation", "parameter_error", "place_error", "logic_error"} <= set(turn["properties"])
