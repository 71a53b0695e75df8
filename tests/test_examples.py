"""The shipped example scripts parse, and the recipe's commands exist with the options it passes."""

from __future__ import annotations

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
