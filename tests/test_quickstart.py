"""`agentrefine quickstart`: the plan of commands it runs, and (slow) the whole loop end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from agentrefine_lg.commands.quickstart import (
    Stages,
    build_plan,
    check_figure,
    cli_add_arguments,
    eval_figure,
    show,
    synth_figure,
    train_figure,
    write_report,
)
from agentrefine_lg.errors import AgentRefineError


def plan_for(*argv: str):
    parser = argparse.ArgumentParser()
    cli_add_arguments(parser)
    return build_plan(parser.parse_args(list(argv)))


def test_default_plan_is_offline_and_embedded(tmp_path):
    plan = plan_for("--out", str(tmp_path))
    assert show(plan.synthesize).startswith("agentrefine synthesize --n 16")
    assert "--teacher" not in plan.synthesize  # the embedded grounded teacher
    assert show(plan.train).startswith("python -m training.sft --data")
    assert "--model" not in plan.train and "full" in plan.train  # the tiny local model
    assert plan.serve_tuned[plan.serve_tuned.index("--backend") + 1] == "transformers"
    assert plan.serve_tuned[plan.serve_tuned.index("--model") + 1] == str(tmp_path / "train" / "merged")
    assert plan.serve_base[plan.serve_base.index("--model") + 1] == str(tmp_path / "train" / "base-model")
    for cmd, port in ((plan.eval_tuned, plan.ports[0]), (plan.eval_base, plan.ports[1])):
        assert f"http://127.0.0.1:{port}/v1" in cmd
        assert cmd[cmd.index("--api-key") + 1] == plan.api_key
    assert plan.api_key not in show(plan.eval_tuned, secret=plan.api_key)


def test_real_parts_produce_the_expected_command_lines(tmp_path):
    plan = plan_for("--out", str(tmp_path), "--teacher", "openai:gpt-4o", "--base-model",
                    "meta-llama/Meta-Llama-3-8B-Instruct", "--serve", "vllm", "--vllm-bin", "/opt/vllm/bin/vllm")
    assert plan.synthesize[plan.synthesize.index("--teacher") + 1] == "openai:gpt-4o"
    assert plan.train[plan.train.index("--model") + 1] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert "full" not in plan.train  # LoRA, TRL-style defaults
    tuned = show(plan.serve_tuned)
    assert tuned.startswith("agentrefine serve --backend vllm --model meta-llama/Meta-Llama-3-8B-Instruct")
    assert f"--adapter {tmp_path / 'train'}" in tuned and "--vllm-bin /opt/vllm/bin/vllm" in tuned
    assert "--adapter" not in plan.serve_base  # the untuned comparison serves the base alone
    plan = plan_for("--out", str(tmp_path), "--teacher-base-url", "http://gpu:8000/v1", "--teacher-model", "Qwen")
    assert show(plan.synthesize).endswith("--base-url http://gpu:8000/v1 --model Qwen")


def test_dry_run_prints_every_stage(tmp_path):
    out = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "quickstart", "--dry-run", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    names = [line.split(":")[0] for line in out.stdout.splitlines()]
    assert names == ["synthesize", "check", "train", "serve_tuned", "eval_tuned", "serve_base", "eval_base",
                     "eval_oracle"]
    assert not (tmp_path / "data").exists()


def test_bad_arguments_are_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "quickstart", "--n", "0", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "--n" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_the_whole_loop_writes_its_report(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "agentrefine_lg.cli", "quickstart", "--out", str(tmp_path), "--n", "4", "--epochs", "2",
         "--tasks", "babyai,pddl", "--episodes", "1", "--max-steps", "3"],
        capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = (tmp_path / "report.md").read_text()
    for stage in ("synthesize", "train", "serve tuned", "eval tuned", "serve base", "eval base", "eval oracle"):
        assert f"| {stage} |" in report
    assert "| babyai | tuned |" in report and "| pddl | base |" in report and "| pddl | oracle |" in report
    for png in ("data_stats.png", "eval_comparison.png", "train/loss.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert (tmp_path / "data" / "samples.jsonl").read_text().count("\n") >= 4


# ---------------------------------------------------------------------------------------------- output

FIXTURES = Path(__file__).parent / "fixtures"


def test_the_plan_names_each_model_and_adds_the_oracle(tmp_path):
    plan = plan_for("--out", str(tmp_path))
    for cmd, label, weights in ((plan.eval_tuned, "tuned", tmp_path / "train" / "merged"),
                                (plan.eval_base, "base", tmp_path / "train" / "base-model")):
        assert cmd[cmd.index("--label") + 1] == label and cmd[cmd.index("--model-path") + 1] == str(weights)
    oracle = show(plan.eval_oracle)
    assert oracle.startswith("agentrefine eval --agent oracle") and "--label oracle" in oracle
    assert "-q" not in plan.check  # the check stage's log keeps its per-record lines and count


def test_a_stage_prints_one_line_and_logs_everything(tmp_path, capsys):
    stages = Stages(tmp_path, total=3, secret="sekret")
    noisy = [sys.executable, "-c",
             "import sys\nfor i in range(5): print({'loss': 3.0 - i})\n"
             "print('progress: train 5/5 steps in 0.1s', file=sys.stderr)\nprint('warning: pin_memory', file=sys.stderr)",
             "--api-key", "sekret"]
    stages.run("train", noisy, lambda log: "5 steps")
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("[1/3] train") and "5 steps" in out[0] and out[0].endswith("s)")
    log = (tmp_path / "logs" / "01-train.log").read_text()
    assert log.startswith(f"$ {sys.executable} -c") and "$KEY" in log and "sekret" not in log  # the key stays hidden
    assert "{'loss': 3.0}" in log and "pin_memory" in log and "exit code 0 after" in log
    assert stages.timings["train"] > 0
    with pytest.raises(AgentRefineError, match="exit code 3") as err:
        stages.run("check", [sys.executable, "-c", "print('record 7 is bad'); raise SystemExit(3)"], str)
    assert "record 7 is bad" in str(err.value)  # the failure shows the log's tail


def _fake_run(out: Path) -> None:
    """The files a quickstart run leaves, with known numbers (the stages themselves are the slow test's)."""
    from agentrefine_lg.convert import sample_from_trajectory, write_jsonl
    from agentrefine_lg.schema import Script, Trajectory

    script = Script.model_validate(json.loads((FIXTURES / "script_unix_admin.json").read_text()))
    trajectory = Trajectory.model_validate(json.loads((FIXTURES / "trajectory_unix_admin.json").read_text()))
    (out / "data").mkdir(parents=True)
    write_jsonl([sample_from_trajectory(script, trajectory, teacher="grounded")] * 2, out / "data" / "samples.jsonl")
    (out / "data" / "manifest.json").write_text(json.dumps({"teacher": "grounded", "summary": {
        "accepted": 2, "acceptance_rate": 1.0, "mean_pairs": 2.0}}))
    (out / "train").mkdir()
    (out / "train" / "train_log.json").write_text(json.dumps({
        "base_model": "tiny", "train_rows": 2, "dropped_rows": 0, "tokens_per_second": 100.0, "train_runtime_s": 3.0,
        "steps": [{"step": 1, "loss": 7.5}, {"step": 2, "loss": 2.09}], "final_loss": 2.09, "mean_loss": 4.795}))
    from agentrefine_lg.eval.metrics import summarize

    def row(task, success, progress, invalid=0, fmt=0):
        return {"task": task, "episode": 0, "success": success, "progress": progress, "steps": 4,
                "invalid_actions": invalid, "format_errors": fmt, "repeated_mistakes": 0}

    for name, rows in (("tuned", [row("babyai", False, 0.0, invalid=4), row("pddl", False, 0.0, invalid=4)]),
                       ("base", [row("babyai", False, 0.0, fmt=4), row("pddl", False, 0.0, fmt=4)]),
                       ("oracle", [row("babyai", True, 1.0), row("pddl", True, 1.0)])):
        summary = summarize(rows)
        summary.update(model="agent:oracle" if name == "oracle" else "agentrefine@http://127.0.0.1:1/v1",
                       label=name, model_path=None if name == "oracle" else f"/w/{name}", max_steps=8, seed=0)
        (out / "eval" / name).mkdir(parents=True)
        (out / "eval" / name / "summary.json").write_text(json.dumps(summary))


def test_key_figures_and_the_report_read_the_run_outputs(tmp_path):
    _fake_run(tmp_path)
    assert synth_figure(tmp_path / "data") == "2 samples accepted (100% of personas), 2.00 error->refine pairs per trajectory"
    assert train_figure(tmp_path / "train") == "2 steps on 2 rows, loss 7.500 -> 2.090 (last step; mean 4.795)"
    assert eval_figure(tmp_path / "eval" / "tuned").startswith("success 0.0%, progress 0.0%, invalid actions 100.0%")
    log = tmp_path / "check.log"
    log.write_text("ok r1\nchecked 16 record(s): 15 ok, 1 with problems\n")
    assert check_figure(log) == "15/16 records pass the rule checks, 1 with problems"
    plan = plan_for("--out", str(tmp_path), "--tasks", "babyai,pddl", "--episodes", "1")
    args = argparse.Namespace(tasks="babyai,pddl", episodes=1, max_steps=8, max_tokens=48)
    report = write_report(plan, {"synthesize": 1.0, "train": 2.0}, 123.4, args).read_text()
    assert "| 123.4 |" in report  # the same total as the console's
    assert "last step 2.0900; mean over training 4.7950" in report
    assert "| babyai | base | 0.0 [0.0, 79.3] |" in report  # Wilson for 0/1, not [0.0, 0.0]
    assert "| pddl | oracle | 100.0 [20.7, 100.0] |" in report and "| pddl | tuned |" in report
    assert "- tuned: agentrefine@http://127.0.0.1:1/v1 serving /w/tuned" in report
    for png in ("data_stats.png", "eval_comparison.png"):
        assert (tmp_path / png).stat().st_size > 10_000


class _Terminal:
    """A stderr that says it is a terminal and keeps what tqdm draws on it."""

    def __init__(self) -> None:
        self.text = ""

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_on_a_terminal_the_stage_shows_a_bar_fed_by_its_log(tmp_path, monkeypatch, capsys):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    child = ("import sys, time\n"
             "for i in range(1, 4):\n"
             "    print(f'progress: eval {i}/3 episodes, 0s', file=sys.stderr, flush=True); time.sleep(0.4)\n")
    Stages(tmp_path, total=1, secret="").run("eval tuned", [sys.executable, "-c", child], lambda log: "3 episodes")
    assert "[1/1] eval tuned (eval)" in terminal.text and "3/3" in terminal.text
    assert capsys.readouterr().out.count("\n") == 1  # the bar is cleared; the stage's one line stays
