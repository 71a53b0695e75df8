"""``--agentboard-data``: AgentBoard's rules on hand-checked transcripts, its data layout, clear errors, and a
run of every task on fixtures written in AgentBoard's file formats (:mod:`agentboard_fixtures`).

Each expected progress value below is worked out by hand from the rule it tests (the rule's AgentBoard file is
named in :mod:`agentrefine_lg.eval.agentboard_progress`), not read back from the code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from agentboard_fixtures import (
    JERICHO_SUBGOALS,
    compile_z_machine_game,
    write_alfworld,
    write_babyai,
    write_jericho,
    write_pddl,
    write_sciworld,
)

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval import agentboard as ab
from agentrefine_lg.eval.agentboard_envs import make_env
from agentrefine_lg.eval.agentboard_progress import (
    GoalLiteralProgress,
    PatternRewardProgress,
    SubgoalRegexProgress,
    babyai_match,
    jericho_match,
)

# ------------------------------------------------------------------------------- the rules, on transcripts


def test_alfworld_subgoals_are_sticky_and_divided_by_n_plus_one():
    rule = SubgoalRegexProgress([r"arrive at (fridge|countertop) 1", r"You pick up the apple \d"], extra_slot=True)
    transcript = [
        ("You arrive at cabinet 1. The cabinet 1 is closed.", 0 / 3),
        ("You arrive at fridge 1. The fridge 1 is closed.", 1 / 3),
        ("Nothing happens.", 1 / 3),  # sticky: the slot stays set
        ("You pick up the apple 1 from the fridge 1.", 2 / 3),  # 2 of 3 slots: never 1.0 without winning
    ]
    for observation, expected in transcript:
        assert rule.observe(observation) == pytest.approx(expected)
    assert rule.rate(done=True) == 1.0


def test_sciworld_subgoals_divide_by_n_and_all_matched_is_done():
    rule = SubgoalRegexProgress(["greenhouse", r"focus on (the )?butterfly"], extra_slot=False)
    assert rule.observe("You move to the greenhouse.") == pytest.approx(0.5) and not rule.all_matched()
    assert rule.observe("You move to the kitchen.") == pytest.approx(0.5)
    assert rule.observe("You focus on the butterfly egg.") == 1.0 and rule.all_matched()
    with pytest.raises(ValueError, match="at least one"):
        SubgoalRegexProgress([], extra_slot=False)


def test_babyai_pattern_pieces_must_share_one_sentence():
    obs = "There is a red ball 1 right in front of you 1 steps away. You are carrying a grey key."
    assert babyai_match(obs, "red ball 1**1 steps away")
    assert babyai_match(obs, "You are carrying*grey key")
    assert not babyai_match(obs, "red ball*grey key")  # in two different sentences
    assert babyai_match(obs, " carrying a grey key. ")  # the pattern is stripped, pieces lose their dots


def test_babyai_awards_one_pattern_per_observation_as_a_running_max():
    rule = PatternRewardProgress(["red ball", "carrying", "a key", "blue door"], style="babyai")
    seen = "You see a red ball. You are carrying a key."
    # three patterns match: only the first in list order counts this step, the others on later steps
    assert rule.observe(seen) == pytest.approx(1 / 4)
    assert rule.observe(seen) == pytest.approx(2 / 4)
    assert rule.observe("You see a red ball.") == pytest.approx(2 / 4)  # already awarded, removed
    assert rule.observe(seen) == pytest.approx(3 / 4)
    assert rule.observe("A blue door.") == 1.0


def test_babyai_alternative_paths_award_positions_in_order():
    rule = PatternRewardProgress([["pick up key", "open door"], ["take key", "unlock door"]], style="babyai")
    assert rule.total == 2
    assert rule.observe("You unlock door.") == pytest.approx(0.5)  # position 0 missed; position 1 matches
    assert rule.observe("You take key.") == 1.0  # the remaining position (the keys) via the second path


def test_jericho_patterns_ignore_punctuation():
    assert jericho_match("You pick up the apple! [Your score has gone up]", "pick up the apple.")
    assert not jericho_match("You pick the apple", "pick up the apple")
    rule = PatternRewardProgress(JERICHO_SUBGOALS, style="jericho")
    assert rule.observe("-= Garden =- You have walked into a garden.") == pytest.approx(0.5)
    assert rule.observe("You pick up the apple from the ground.") == 1.0


def test_pddl_goal_fraction_is_a_running_max():
    rule = GoalLiteralProgress(["on a b", "on b c", "on c d", "clear a"])
    assert rule.reward == 0.0  # AgentBoard starts at 0 even if goal facts hold
    assert rule.observe_state({"on a b", "clear a"}) == pytest.approx(0.5)
    assert rule.observe_state({"on b c"}) == pytest.approx(0.5)  # 1/4 now; the maximum stays
    assert rule.observe_state({"on a b", "on b c", "on c d", "clear a"}) == 1.0


# ------------------------------------------------------------------------------- the data layout and errors


def test_missing_files_are_named(tmp_path: Path):
    with pytest.raises(InputError, match=r"missing the AgentBoard data folder: .*nowhere"):
        ab.load_episodes(tmp_path / "nowhere", "babyai")
    with pytest.raises(InputError, match=r"missing the babyai episode list: .*babyai/test\.jsonl"):
        ab.check_data(tmp_path, ["babyai"])
    write_babyai(tmp_path)
    assert ab.check_data(tmp_path, ["babyai"]) == {"babyai": 2}

    write_pddl(tmp_path)
    (tmp_path / "pddl" / "barman.pddl").unlink()
    with pytest.raises(InputError, match=r"missing the PDDL domain of barman .*pddl/barman\.pddl"):
        ab.check_data(tmp_path, ["pddl"])

    jericho = tmp_path / "jericho" / "test.jsonl"
    jericho.parent.mkdir()
    jericho.write_text(json.dumps({"goal": "g", "subgoals": ["x"], "difficulty": "easy"}) + "\n")
    with pytest.raises(InputError, match=r"Jericho story file of 905: .*jericho-game-suite/905\.z5"):
        ab.check_data(tmp_path, ["jericho"])

    (tmp_path / "alfworld").mkdir()
    (tmp_path / "alfworld" / "test.jsonl").write_text(
        json.dumps({"subgoals": [], "difficulty": "easy", "additional_info": {"description": "a/b"}}) + "\n")
    with pytest.raises(InputError, match=r"ALFWorld game folder .*json_2\.1\.1/valid_unseen"):
        ab.check_data(tmp_path, ["alfworld"])

    (tmp_path / "scienceworld").mkdir()
    (tmp_path / "scienceworld" / "test.jsonl").write_text(json.dumps({"subgoals": ["x"], "goal": "g"}) + "\n")
    with pytest.raises(InputError, match=r"scienceworld/test\.jsonl:1: field 'difficulty'"):
        ab.check_data(tmp_path, ["sciworld"])


def test_episode_order_follows_agentboards_configuration(tmp_path: Path):
    write_babyai(tmp_path, n=6)
    eps = ab.load_episodes(tmp_path, "babyai")
    # four seeds per level from 1234, levels in main_results_all_tasks.yaml order (1, 2, ...)
    assert [(e.info["level"], e.info["seed"]) for e in eps] == [(1, 1234), (1, 1235), (1, 1236), (1, 1237),
                                                                 (2, 1234), (2, 1235)]
    assert eps[4].info["env_id"] == "BabyAI-GoToRedBall-v0"
    write_pddl(tmp_path)
    eps = ab.load_episodes(tmp_path, "pddl")
    # gripper, blockworld, barman, tyreworld; each game's problems sorted; difficulty from the line index
    assert [(e.info["game"], Path(e.info["problem_file"]).name) for e in eps] == [
        ("gripper", "p01.pddl"), ("blockworld", "p01.pddl"), ("blockworld", "p02.pddl"), ("barman", "p01.pddl"),
        ("tyreworld", "p01.pddl")]
    assert [e.difficulty for e in eps] == ["hard", "easy", "hard", "easy", "hard"]


def test_pddl_files_may_come_from_an_agentboard_checkout(tmp_path: Path):
    data = tmp_path / "AgentBoard" / "data"
    write_pddl(data)
    checkout = tmp_path / "AgentBoard" / "agentboard" / "environment" / "pddl_env" / "pddlgym" / "pddl"
    checkout.parent.mkdir(parents=True)
    shutil.move(str(data / "pddl"), str(checkout))
    (data / "pddl").mkdir()
    shutil.move(str(checkout / "test.jsonl"), str(data / "pddl" / "test.jsonl"))
    assert ab.pddl_files_root(data) == checkout
    assert len(ab.load_episodes(data, "pddl")) == 5


# ------------------------------------------------------------------------------- environments, on transcripts


def test_pddl_transcript_scores_as_agentboard(tmp_path: Path):
    write_pddl(tmp_path)
    env = make_env("pddl", 0, tmp_path)  # b2 on b1 on the table, b3 on the table; goal: b1 on b3, b2 on b1
    obs = env.reset()
    assert "on b1 b3" in obs and "on b2 b1." in obs
    transcript = [
        ("check valid actions", 0.0, None),  # lists actions, no score change
        ("pickup b1", 0.0, "logic_error"),  # b1 is not clear: pddlgym ignores it, the reward stays
        ("fly b1", 0.0, "parameter_error"),  # no such operator
        ("Unstack b2 from b1.", 0.0, None),  # goal: 0/2 now (b2 left b1); AgentBoard's start is 0 anyway
        ("putdown b2", 0.0, None),
        ("pickup b1", 0.0, None),
        ("stack b1 b3", 0.5, None),  # on b1 b3 holds: 1/2
        ("pickup b2", 0.5, None),
        ("stack b2 b1", 1.0, None),
    ]
    for action, progress, error in transcript:
        r = env.step(action)
        assert (r.progress, r.error) == (pytest.approx(progress), error), action
    assert r.done and "The goal is satisfied." in r.observation
    env.close()


def test_babyai_transcript_scores_as_agentboard(tmp_path: Path):
    write_babyai(tmp_path)
    env = make_env("babyai", 0, tmp_path)  # GoToRedBallGrey, seed 1234
    env.reset()
    assert env.goal == "go to the red ball"
    steps = [
        ("turn left", 0.0, "grey box 1 2 steps in front of you"),
        ("move forward", 0.5, "grey box 1 1 steps in front of you"),  # first pattern
        ("pickup purple key 1", 0.5, "not recognized"),  # invalid: no reward update
        ("move forward", 0.5, "grey box 1 0 steps in front of you"),
        ("move forward", 1.0, "red ball 1 right in front of you 1 steps away"),  # second pattern; mission done
    ]
    for action, progress, text in steps:
        r = env.step(action)
        assert r.progress == pytest.approx(progress) and text in r.observation, (action, r.observation)
    assert r.done and r.observation.endswith("The task is completed.")
    env.close()


def test_babyai_minigrid_success_with_low_reward_is_not_done(tmp_path: Path):
    # babyai_env.py: a finished mission with reward <= 0.5 does not count as done
    write_babyai(tmp_path, subgoals=["grey box 1 1 steps in front of you", "never seen", "never either"])
    env = make_env("babyai", 0, tmp_path)
    env.reset()
    for action in ("turn left", "move forward", "move forward"):
        env.step(action)
    r = env.step("move forward")  # minigrid reports the mission done here
    assert "The task is completed." in r.observation
    assert r.progress == pytest.approx(1 / 3) and not r.done
    env.close()


def test_babyai_high_level_actions_follow_a_path(tmp_path: Path):
    write_babyai(tmp_path, n=4)
    env = make_env("babyai", 3, tmp_path)  # seed 1237: the red ball 2 steps straight ahead
    obs = env.reset()
    assert "There is a red ball 1 right in front of you 2 steps away." in obs
    assert "go to red ball 1" in env.valid_actions() and "pickup red ball 1" in env.valid_actions()
    r = env.step("pickup red ball 1")  # forward, then pick up
    assert "You are carrying a red ball." in r.observation
    env.close()


@pytest.fixture(scope="module")
def z_machine_game(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_z_machine_game(tmp_path_factory.mktemp("zgame"))


def test_jericho_transcript_on_a_story_file(tmp_path: Path, z_machine_game: Path):
    write_jericho(tmp_path, z_machine_game)
    env = make_env("jericho", 0, tmp_path)
    assert env.name == "agentboard/jericho/905"
    assert "Kitchen" in env.reset()
    r = env.step("check valid actions")
    assert r.observation.startswith("You can take the following actions:") and r.progress == 0.0
    r = env.step("go east, then take the apple")  # AgentBoard keeps the text before the first comma
    assert r.progress == pytest.approx(0.5) and not r.done
    r = env.step("take apple")
    assert r.progress == 1.0 and r.done
    env.close()


def test_alfworld_transcript_on_a_game_file(tmp_path: Path):
    write_alfworld(tmp_path, subgoals=[r"arrive at countertop \d", r"You pick up the spraybottle"])
    env = make_env("alfworld", 0, tmp_path)
    assert env.reset().startswith("You are in the middle of a room.")
    assert env.goal == "put a spraybottle in cabinet."
    transcript = [
        ("go to countertop 1", 1 / 3),
        ("look", 1 / 3),  # shows the arrival text again (it matched already)
        ("take spraybottle 1 from countertop 1", 2 / 3),
        ("go to cabinet 1", 2 / 3),
        ("open cabinet 1", 2 / 3),
        ("put spraybottle 1 in cabinet 1", 1.0),  # AgentBoard's "in" -> "in/on"; won: 1.0
    ]
    for action, progress in transcript:
        r = env.step(action)
        assert r.progress == pytest.approx(progress), (action, r.observation)
    assert r.done
    env.close()


@pytest.mark.java
def test_sciworld_transcript_and_done_by_subgoals(tmp_path: Path):
    write_sciworld(tmp_path, subgoals=["greenhouse", "You focus on"])
    env = make_env("sciworld", 0, tmp_path)
    try:
        first = env.reset()
        assert "hallway" in first and "In your inventory" in first
        r = env.step("check valid actions")
        assert r.observation.startswith("Choose an action from these valid actions:") and r.progress == 0.0
        r = env.step("go to greenhouse")
        assert r.progress == pytest.approx(0.5) and not r.done
        r = env.step("teleport to the moon")
        assert r.error == "parameter_error" and r.progress == pytest.approx(0.5)
    finally:
        env.close()


# ------------------------------------------------------------------------------- the harness and the CLI


@pytest.mark.java
def test_cli_runs_every_task_and_puts_the_paper_table_beside_it(tmp_path: Path, z_machine_game: Path, capsys):
    from agentrefine_lg.cli import main

    data = tmp_path / "data"
    write_pddl(data)
    write_babyai(data)
    write_jericho(data, z_machine_game)
    write_alfworld(data, subgoals=[r"arrive at countertop \d", r"You pick up the spraybottle"])
    write_sciworld(data, subgoals=["greenhouse", "You focus on"])
    out = tmp_path / "out"
    code = main(["eval", "--agent", "oracle", "--tasks", "all", "--agentboard-data", str(data), "--out", str(out),
                 "--no-embeddings"])
    assert code == 0
    rows = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"alfworld", "babyai", "sciworld", "pddl", "jericho"}
    assert all(r["env"].startswith("agentboard/") for r in rows)
    assert len([r for r in rows if r["task"] == "pddl"]) == 5  # all of the data's episodes by default
    by_task = {r["task"]: r for r in rows if r["episode"] == 0}
    assert by_task["alfworld"]["success"] and by_task["pddl"]["success"] and by_task["sciworld"]["success"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task_info"]["jericho"]["family"] == "Jericho"  # the real engine, not the stand-in
    assert "stand-in" not in json.dumps(summary["task_info"])
    run_row = summary["paper_comparison"][-1]
    assert run_row["source"] == "run" and run_row["cells"]["pddl"]["episodes"] == 5
    text = (out / "summary.md").read_text()
    assert "## Beside the paper" in text and "| AgentRefine | 44.8 | 63.8 | 37.5 | 50.4 |" in text
    assert "Beside the paper" in capsys.readouterr().out


def test_incomplete_data_stops_the_run_before_any_episode(tmp_path: Path):
    from agentrefine_lg.eval.harness import ModelSpec, run_eval

    write_babyai(tmp_path / "data")
    with pytest.raises(InputError, match=r"pddl/test\.jsonl"):
        run_eval(tasks="babyai,pddl", episodes=2, model=ModelSpec(agent="oracle"), out=tmp_path / "out",
                 agentboard_data=tmp_path / "data", embeddings=False)
    assert not (tmp_path / "out" / "episodes.jsonl").exists()
