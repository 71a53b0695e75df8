"""examples/small_model_study/run.py: the plan of the four-arm study, its resume logic, the clean-data generator
and the results table/plot (fast: stages are stubbed; only the data test runs a real TextWorld game)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from agentrefine_lg.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("small_model_study_run", ROOT / "examples/small_model_study/run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def config(study, tmp_path, *extra):
    cfg, _ = study.parse_args(["--out", str(tmp_path / "study"), "--device", "cpu", *extra])
    return cfg


def option(cmd, name):
    return cmd[cmd.index(name) + 1]


# ---------------------------------------------------------------------------------------------- the plan


def test_plan_has_the_four_arms_and_trains_all_but_base(study, tmp_path):
    cfg = config(study, tmp_path)
    assert cfg.arms == ("base", "bc", "refine", "refine_nomask")
    names = [s.name for s in study.build_plan(cfg)]
    assert names == ["data", "train bc s0", "train refine s0", "train refine_nomask s0",
                     "eval base s0", "eval bc s0", "eval refine s0", "eval refine_nomask s0", "report"]
    assert study.served_model(cfg, "base", 0) == "gemma-3-270m"
    assert study.served_model(cfg, "refine", 0) == str(cfg.out / "train" / "refine-s0" / "merged")


def test_trained_arms_get_the_same_budget_and_differ_only_in_data_and_masking(study, tmp_path):
    cfg = config(study, tmp_path, "--n-train", "10", "--epochs", "3", "--batch-size", "2", "--seeds", "7")
    cmds = {arm: study.train_command(cfg, arm, 7) for arm in ("bc", "refine", "refine_nomask")}
    assert option(cmds["bc"], "--data").endswith("clean.jsonl")
    assert option(cmds["refine"], "--data") == option(cmds["refine_nomask"], "--data")
    assert option(cmds["refine"], "--data").endswith("refine.jsonl")
    assert "--no_mask" in cmds["refine_nomask"] and "--no_mask" not in cmds["refine"] + cmds["bc"]
    for cmd in cmds.values():
        assert option(cmd, "--max_steps") == "15"  # 3 epochs x ceil(10 / 2): identical optimizer steps per arm
        assert option(cmd, "--seed") == "7"
        assert option(cmd, "--max_length") == "1024"
        assert option(cmd, "--model") == "gemma-3-270m"
        targets = cmd[cmd.index("--lora_target_modules") + 1:]
        assert {"q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= set(targets)
        assert option(cmd, "--use_cpu") == "true"

    def neutral(cmd):  # everything but what must differ between arms
        out, skip = [], False
        for i, word in enumerate(cmd):
            if skip:
                skip = False
                continue
            if word in ("--data", "--output_dir"):
                skip = True
                continue
            if word != "--no_mask":
                out.append(word)
        return out

    assert neutral(cmds["bc"]) == neutral(cmds["refine"]) == neutral(cmds["refine_nomask"])
    with pytest.raises(ValueError):
        study.train_command(cfg, "base", 7)


def test_cuda_device_leaves_device_choice_to_trl_and_cpu_hides_gpus(study, tmp_path):
    cpu = config(study, tmp_path)
    cuda, _ = study.parse_args(["--out", str(tmp_path / "c"), "--device", "cuda"])
    assert "--use_cpu" not in study.train_command(cuda, "refine", 0)
    assert study.child_env(cpu)["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in study.child_env(cuda) or study.child_env(cuda)["CUDA_VISIBLE_DEVICES"] != ""


def test_seeds_replicate_every_arm(study, tmp_path):
    cfg = config(study, tmp_path, "--seeds", "0,1", "--arms", "base,refine")
    names = [s.name for s in study.build_plan(cfg)]
    assert names == ["data", "train refine s0", "train refine s1", "eval base s0", "eval refine s0",
                     "eval base s1", "eval refine s1", "report"]


@pytest.mark.parametrize("argv, field", [
    (["--arms", "base,sft"], "arms"),
    (["--kinds", "cooking"], "kinds"),
    (["--n-train", "0"], "n_train"),
    (["--tasks", "chess"], "tasks"),
    (["--seeds", "a"], "seeds"),
])
def test_bad_options_are_refused_by_name(study, tmp_path, argv, field):
    with pytest.raises(InputError) as err:
        study.parse_args(["--out", str(tmp_path), *argv])
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------- resume


def fake_episode(task, episode, *, success, steps, fmt=0, invalid=0, repeated=0, progress=None):
    return {"task": task, "episode": episode, "success": success, "steps": steps, "format_errors": fmt,
            "invalid_actions": invalid, "repeated_mistakes": repeated,
            "progress": (1.0 if success else 0.25) if progress is None else progress}


class FakeStages:
    """Stub stages that write exactly the outputs the done checks look for, and record their calls."""

    def __init__(self, study):
        self.study, self.calls = study, []

    def data(self, cfg, log=print):
        self.calls.append("data")
        folder = self.study.data_dir(cfg)
        folder.mkdir(parents=True, exist_ok=True)
        for d in self.study.DATASETS:
            self.study.data_file(cfg, d).write_text("{}\n")
        (folder / "manifest.json").write_text(json.dumps({"config": cfg.data_fingerprint()}))

    def train(self, cfg, stage, log=print):
        self.calls.append(stage.name)
        stage.out.mkdir(parents=True, exist_ok=True)
        (stage.out / "study_command.json").write_text(json.dumps(self.study._portable(stage.command)))
        (stage.out / "train_log.json").write_text(json.dumps({"train_rows": cfg.n_train, "steps": []}))
        (stage.out / "merged").mkdir(exist_ok=True)
        (stage.out / "merged" / "config.json").write_text("{}")

    def eval(self, cfg, stage, log=print):
        self.calls.append(stage.name)
        stage.out.mkdir(parents=True, exist_ok=True)
        with (stage.out / "episodes.jsonl").open("w") as fh:
            for task in cfg.tasks:
                for e in range(self.study.expected_episodes(task, cfg.episodes)):
                    fh.write(json.dumps(fake_episode(task, e, success=e % 2 == 0, steps=4, fmt=1)) + "\n")
        (stage.out / "summary.json").write_text("{}")

    def runners(self):
        return self.study.Runners(data=self.data, train=self.train, eval=self.eval)


def test_a_rerun_skips_finished_stages_and_redoes_only_missing_ones(study, tmp_path):
    cfg = config(study, tmp_path, "--episodes", "2")
    stages = FakeStages(study)
    quiet = lambda m: None
    study.run_study(cfg, stages.runners(), log=quiet)
    assert stages.calls == ["data", "train bc s0", "train refine s0", "train refine_nomask s0",
                            "eval base s0", "eval bc s0", "eval refine s0", "eval refine_nomask s0"]
    assert (cfg.out / "report.md").is_file() and (cfg.out / "study.png").is_file()

    stages.calls.clear()
    study.run_study(cfg, stages.runners(), log=quiet)
    assert stages.calls == []  # everything done: only the report is rewritten

    # an interrupted evaluation (an episode missing) and a lost merged model are redone, nothing else
    path = study.eval_dir(cfg, "refine", 0) / "episodes.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    (study.train_dir(cfg, "bc", 0) / "merged" / "config.json").unlink()
    study.run_study(cfg, stages.runners(), log=quiet)
    assert stages.calls == ["train bc s0", "eval refine s0"]
    timings = json.loads((cfg.out / "timings.json").read_text())
    assert timings["eval refine s0"]["status"] == "ran" and timings["data"]["status"] == "ran"


def test_more_episodes_later_reopens_only_the_evaluations(study, tmp_path):
    cfg = config(study, tmp_path, "--episodes", "1")
    stages = FakeStages(study)
    study.run_study(cfg, stages.runners(), log=lambda m: None)
    stages.calls.clear()
    more = config(study, tmp_path, "--episodes", "3")
    study.run_study(more, stages.runners(), log=lambda m: None)
    assert stages.calls == ["eval base s0", "eval bc s0", "eval refine s0", "eval refine_nomask s0"]


def test_other_settings_in_the_same_out_folder_are_refused(study, tmp_path):
    cfg = config(study, tmp_path)
    stages = FakeStages(study)
    study.run_study(cfg, stages.runners(), log=lambda m: None)
    with pytest.raises(InputError, match="other settings"):
        study.run_study(config(study, tmp_path, "--n-train", "5"), stages.runners(), log=lambda m: None)
    with pytest.raises(InputError, match="another command"):
        study.run_study(config(study, tmp_path, "--learning-rate", "1e-4"), stages.runners(), log=lambda m: None)


def test_dry_run_prints_every_stage_with_its_status(study, tmp_path, capsys):
    assert study.main(["--out", str(tmp_path / "s"), "--device", "cpu", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert text.count("[todo]") == 9
    assert "python -m training.sft --model gemma-3-270m" in text and "--no_mask" in text


# ---------------------------------------------------------------------------------------------- data


def test_clean_and_refine_rows_come_from_the_same_verified_world(study, tmp_path):
    pytest.importorskip("textworld")
    from agentrefine_lg.checks import check_trajectory
    from agentrefine_lg.grounded import GroundedWorlds

    persona = "A beekeeper with forty hives who tracks honey yields by hand."
    spec = study.small_spec(persona, ["coin_collector"])
    assert spec.kind == "coin_collector" and dict(spec.settings)["level"] <= 3
    worlds = GroundedWorlds(tmp_path / "worlds")
    try:
        pair = study.world_samples(persona, spec, worlds, errors=2)
    finally:
        worlds.close()
    clean, refine = pair["clean"], pair["refine"]
    assert clean.script.model_extra["Grounding"]["game"] == refine.script.model_extra["Grounding"]["game"]

    assert not any(t.flagged for t in clean.trajectory.turns)
    report = check_trajectory(clean.script, clean.trajectory, min_pairs=0)
    assert report.ok and report.pairs == 0 and not any(report.erroneous)
    assert all(m.train for m in clean.messages if m.role == "assistant")

    refined = check_trajectory(refine.script, refine.trajectory, min_pairs=2)
    assert refined.ok and refined.pairs >= 2
    masked = [m for m in refine.messages if m.role == "assistant" and not m.train]
    assert len(masked) == sum(refined.erroneous) >= 2


# ---------------------------------------------------------------------------------------------- results


def test_metric_rows_pool_error_rates_per_step_with_episode_bootstrap(study):
    episodes = [fake_episode("babyai", 0, success=True, steps=4, fmt=1, invalid=1, repeated=0),
                fake_episode("babyai", 1, success=False, steps=6, fmt=3, invalid=2, repeated=1)]
    row = study.metric_row("refine", "babyai", episodes, [0])
    assert (row["episodes"], row["steps"]) == (2, 10)
    assert row["format_error_rate"] == pytest.approx(0.4)
    assert row["invalid_action_rate"] == pytest.approx(0.3)
    assert row["repeated_mistake_rate"] == pytest.approx(0.1)
    assert row["success_rate"] == 0.5 and row["progress_rate"] == pytest.approx(0.625)
    for metric, _ in study.METRICS:
        low, high = row[f"{metric}_ci"]
        assert low <= row[metric] <= high
    assert row["format_error_rate_ci"] == pytest.approx([0.25, 0.5])  # the two episodes' own rates bound it
    assert all(math.isnan(x) for x in study.ratio_ci([], []))  # no data, no interval


def test_table_and_plot_from_fabricated_rows(study, tmp_path):
    rows = []
    for arm, fmt in (("base", 6), ("bc", 2), ("refine", 1), ("refine_nomask", 1)):
        episodes = [fake_episode(task, e, success=(e + fmt) % 3 == 0, steps=6, fmt=fmt, invalid=1, repeated=e % 2)
                    for task in ("babyai", "pddl") for e in range(4)]
        rows += [study.metric_row(arm, t, [r for r in episodes if r["task"] == t], [0]) for t in ("babyai", "pddl")]
        rows.append(study.metric_row(arm, "all", episodes, [0]))
    table = study.markdown_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| task | arm | N episodes | steps | format error % | invalid action % | "
                               "repeated mistake % | success % | progress % |")
    assert len(lines) == 2 + len(rows)
    assert "| `babyai` | base | 4 | 24 | 100.0 [100.0, 100.0] |" in table
    assert lines[-1].startswith("| **all tasks** |")  # the pooled rows come last
    png = study.plot_rows(rows, tmp_path / "out" / "study.png", title="fabricated")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_reads_every_arm_from_the_evaluation_folders(study, tmp_path):
    cfg = config(study, tmp_path, "--episodes", "2", "--tasks", "babyai")
    stages = FakeStages(study)
    study.run_study(cfg, stages.runners(), log=lambda m: None)
    results = json.loads((cfg.out / "results.json").read_text())
    assert [r["arm"] for r in results["rows"]] == ["base", "bc", "refine", "refine_nomask"]
    assert all(r["episodes"] == 2 and r["task"] == "babyai" for r in results["rows"])
    assert not any(math.isnan(r["success_rate"]) for r in results["rows"])
    report = (cfg.out / "report.md").read_text()
    assert "95% percentile bootstrap" in report and "| eval refine s0 |" in report
