"""`agentrefine quickstart`: the plan of commands it runs, and (slow) the whole loop end to end."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from agentrefine_lg.quickstart import build_plan, cli_add_arguments, show


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
    assert names == ["synthesize", "check", "train", "serve_tuned", "eval_tuned", "serve_base", "eval_base"]
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
    for stage in ("synthesize", "train", "serve tuned", "eval tuned", "serve base", "eval base"):
        assert f"| {stage} |" in report
    assert "| babyai | refinement-tuned |" in report and "| pddl | untuned base |" in report
    for png in ("data_stats.png", "eval_comparison.png", "train/loss.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert (tmp_path / "data" / "samples.jsonl").read_text().count("\n") >= 4
