"""The shipped example scripts parse, and the recipe's commands exist with the options it passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/**/*.sh")))
def test_shell_examples_parse(script):
    assert subprocess.run(["bash", "-n", script], cwd=ROOT).returncode == 0


@pytest.mark.parametrize("script", sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/**/*.py")))
def test_python_examples_compile(script):
    compile((ROOT / script).read_text(), script, "exec")


@pytest.mark.parametrize("command, options", [
    ("synthesize", ["--teacher", "--personas", "--shard", "--concurrency", "--merge"]),
    ("serve", ["--backend", "--vllm-bin", "--model", "--api-key"]),
    ("eval", ["--base-url", "--tasks", "--episodes", "--max-steps", "--workers"]),
])
def test_paper_recipe_options_exist(command, options):
    out = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", command, "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    recipe = (ROOT / "examples/paper_recipe/run.sh").read_text()
    for option in options:
        assert option in out.stdout and option in recipe


def test_refine_in_create_agent_runs_both_ways_against_a_fake_and_its_traces_check(tmp_path):
    traces = tmp_path / "traces.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "AGENTREFINE_BASE_URL"}  # the offline stand-in
    out = subprocess.run([sys.executable, "examples/refine_in_create_agent.py", "--traces", str(traces)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    answer = "Order 1042 shipped on 3 May (parcel DE-77)."
    assert f"create_refine_agent: {answer}" in out.stdout and f"create_agent + RefineMiddleware: {answer}" in out.stdout
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    assert [r["agent"] for r in rows] == ["desk", "desk"]
    # Each episode: the failed lookup (masked), the refined lookup and the answer (trained).
    assert [[m["train"] for m in r["messages"] if m["role"] == "assistant"] for r in rows] == [[False, True, True]] * 2
    check = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "check", str(traces)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
