"""Rule-based verification (docs/method.md §2-§4): one planted fault per problem kind, each blamed correctly."""

from __future__ import annotations

import time

import pytest

from agentrefine_lg.checks import (
    RegexRefused,
    check_script,
    check_trajectory,
    compile_verification,
    match_action,
)
from agentrefine_lg.schema import Script

SET = "set {file} {key} {value}"


def kinds(report):
    return {p.kind for p in report.problems}


# ------------------------------------------------------------------------------------------- the sample


def test_the_paper_sample_passes(paper_script, paper_trajectory):
    assert check_script(paper_script).ok
    report = check_trajectory(paper_script, paper_trajectory)
    assert report.ok, report.summary()
    assert report.pairs == 2
    assert report.verified_prefix == len(paper_trajectory) == report.turns
    # Turns 4 and 8 (0-based 3 and 7) are the Player's mistakes: the DM flags the turns after them.
    assert [i for i, bad in enumerate(report.erroneous) if bad] == [3, 7]


def test_pair_threshold_is_a_setting(paper_script, paper_trajectory):
    report = check_trajectory(paper_script, paper_trajectory, min_pairs=3)
    assert kinds(report) == {"too_few_pairs"} and report.blame == "trajectory"


# ------------------------------------------------------------------------------------------- actions


@pytest.mark.parametrize("action, ok, kind", [
    ("cd project", True, None),
    ("  cd   project ", True, None),
    ("set config.cfg mode on", True, None),
    ("set mode=on in config.cfg", False, "no_template"),
    ("set config.cfg mode maybe", False, "bad_value"),
    ("rm -rf /", False, "no_template"),
    ("", False, "no_template"),
])
def test_match_action(paper_script, action, ok, kind):
    result = match_action(Script.model_validate(paper_script), action)
    assert result.ok is ok and result.kind == kind
    if ok:
        assert result.template is not None
    else:
        assert result.message


def test_match_action_reports_the_slot_values(paper_script):
    result = match_action(Script.model_validate(paper_script), "set config.cfg retries 2")
    assert result.template == SET and result.values == {"file": "config.cfg", "key": "retries", "value": "2"}


# ------------------------------------------------------------------------------------------- script faults


def _script_variants():
    def no_goal(s): s["Goal"] = "  "
    def no_conditions(s): s["Completion Conditions"] = []
    def no_actions(s): s["Available Actions"] = {}
    def missing_key(s): del s["Goal"]
    def bad_field(s): s["Available Actions"][SET]["parameters"] = "file, key, value"
    def regex_compile(s): s["Available Actions"][SET]["verification code"] = "^set (\\S+ (\\w+) (\\w+)$"
    def regex_unsafe(s): s["Available Actions"]["cd {path}"]["verification code"] = "^(a+)+$"
    def regex_too_long(s): s["Available Actions"]["cd {path}"]["verification code"] = "^cd (" + "a|" * 600 + "b)$"
    def groups_vs_slots(s): s["Available Actions"][SET]["verification code"] = "^\\s*set\\s+(\\S+)\\s+(\\w+)\\s*$"
    def params_vs_slots(s): s["Available Actions"]["cd {path}"]["parameters"] = {"dir": ["project"]}
    def empty_params(s): s["Available Actions"]["cat {file}"]["parameters"]["file"] = []
    return {
        "no_goal": no_goal, "no_completion_conditions": no_conditions, "no_actions": no_actions,
        "missing_key": missing_key, "bad_field": bad_field, "regex_compile": regex_compile,
        "regex_unsafe": regex_unsafe, "regex_too_long": regex_too_long, "slot_mismatch": groups_vs_slots,
        "slot_mismatch ": params_vs_slots, "empty_parameters": empty_params,
    }


@pytest.mark.parametrize("kind", list(_script_variants()))
def test_each_script_fault_is_named_and_blamed_on_the_script(paper_script, paper_trajectory, mutate, kind):
    script = mutate(paper_script)
    _script_variants()[kind](script)
    report = check_script(script)
    assert kind.strip() in kinds(report), report.summary()
    assert report.blame == "script"
    # The same fault inside a trajectory check still says: regenerate the script.
    assert check_trajectory(script, paper_trajectory).blame == "script"


def test_script_that_is_not_json_is_a_script_fault():
    report = check_script("{'Goal': 'single quotes are not JSON'")
    assert kinds(report) == {"bad_json"} and report.blame == "script"


def test_pathological_regex_is_refused_fast_and_never_hangs(paper_script):
    script = Script.model_validate(paper_script)
    script.available_actions["cd {path}"].verification_code = "^(a+)+$"
    start = time.perf_counter()
    report = check_script(script)
    result = match_action(script, "a" * 30 + "b")
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert "regex_unsafe" in kinds(report)
    assert not result.ok and result.kind in {"regex_error", "no_template"}
    with pytest.raises(RegexRefused) as info:
        compile_verification(r"^(\w+\s?)*$")
    assert info.value.kind == "regex_unsafe"


def test_inconsistent_example_is_a_warning_not_a_fault(paper_script, mutate):
    script = mutate(paper_script)
    script["Available Actions"]["cd {path}"]["parameters"]["path"] = ["my project", "project"]
    report = check_script(script)
    assert report.ok and any("does not match" in w for w in report.warnings)


# ------------------------------------------------------------------------------------------- trajectory faults


def test_missing_turn_key_ends_the_verified_prefix(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    del traj[5]["Action"]
    report = check_trajectory(paper_script, traj)
    assert kinds(report) == {"turn_keys"} and report.blame == "trajectory"
    assert report.verified_prefix == 5 and report.problems[0].turn == 5


def test_missing_dm_flag_is_a_key_fault(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    del traj[2]["logic_error"]
    report = check_trajectory(paper_script, traj)
    assert "turn_keys" in kinds(report) and report.verified_prefix == 2


def test_unknown_role_and_non_object_turns(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    traj[6]["role"] = "Narrator"
    report = check_trajectory(paper_script, traj)
    assert kinds(report) == {"turn_keys"} and report.verified_prefix == 6
    assert "Narrator" in report.problems[0].message
    report = check_trajectory(paper_script, paper_trajectory[:3] + ["cd project"])
    assert report.verified_prefix == 3


def test_roles_must_alternate(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    traj.insert(3, dict(traj[1]))
    report = check_trajectory(paper_script, traj)
    assert "roles_alternate" in kinds(report) and report.verified_prefix == 4  # DM, P, DM, P | P


def test_invalid_action_the_dm_did_not_flag(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    traj[5]["Action"] = "chdir project"  # matches no template, yet the DM answers as if it worked
    report = check_trajectory(paper_script, traj)
    assert "unflagged_invalid_action" in kinds(report)
    assert report.verified_prefix == 5 and report.blame == "trajectory"


def test_parameter_error_on_a_valid_action(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    traj[2]["parameter_error"] = True  # 'cat notes.txt' is valid by the rules
    report = check_trajectory(paper_script, traj)
    assert "false_parameter_error" in kinds(report) and report.verified_prefix == 2


def test_only_one_error_refine_pair(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory[:7]) + [
        {"turn": 8, "role": "Player", "Thought": "Set it.", "Action": "set config.cfg mode on"},
        {"turn": 9, "role": "DM", "Thought": "Done.", "Observation": "config.cfg updated: mode=on.",
         "parameter_error": False, "place_error": False, "logic_error": False},
    ]
    report = check_trajectory(paper_script, traj)
    assert kinds(report) == {"too_few_pairs"} and report.pairs == 1
    # Continue before the closing exchange, so the continuation must add a refinement first.
    assert report.verified_prefix == len(traj) - 2


def test_ending_without_completion(paper_script, paper_trajectory):
    report = check_trajectory(paper_script, paper_trajectory[:10])  # ends on a Player turn
    assert "not_completed" in kinds(report) and report.verified_prefix == 10
    report = check_trajectory(paper_script, paper_trajectory[:9])  # ends on a flagged DM turn
    assert "not_completed" in kinds(report)


def test_task_completed_flag_when_used(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory)
    traj[-1]["task_completed"] = True
    assert check_trajectory(paper_script, traj).ok
    traj[2]["task_completed"] = True
    assert "completed_early" in kinds(check_trajectory(paper_script, traj))
    traj = mutate(paper_trajectory)
    traj[-1]["task_completed"] = False
    assert "not_completed" in kinds(check_trajectory(paper_script, traj))


def test_empty_and_malformed_trajectories(paper_script):
    assert "empty" in kinds(check_trajectory(paper_script, []))
    assert "bad_json" in kinds(check_trajectory(paper_script, "[{"))
    assert "bad_json" in kinds(check_trajectory(paper_script, {"nope": 1}))


def test_a_repeated_mistake_is_not_a_refinement(paper_script, paper_trajectory, mutate):
    traj = mutate(paper_trajectory[:5])  # ... Player errs at 3, DM flags at 4
    traj += [mutate(traj[3]), mutate(traj[4])]  # the same mistake again
    traj += mutate(paper_trajectory[5:])
    report = check_trajectory(paper_script, traj)
    assert report.pairs == 2  # err, err, ok counts once; the later err->ok counts once
    assert report.erroneous[3] and report.erroneous[5]


def test_turn_objects_are_accepted_directly(paper_script, paper_trajectory):
    from agentrefine_lg.schema import Turn

    turns = [Turn.model_validate(t) for t in paper_trajectory]
    assert check_trajectory(paper_script, turns).ok
