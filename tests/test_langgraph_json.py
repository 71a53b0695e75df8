"""langgraph.json registers the deployable graphs and passes the LangGraph CLI's validation."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_langgraph_json_is_valid_for_the_cli():
    from langgraph_cli.config import validate_config_file

    config = validate_config_file(REPO / "langgraph.json")
    assert config["dependencies"] == ["."]
    graphs = config["graphs"]
    assert graphs["synthesis"] == "./graphs/synthesis.py:graph"
    assert graphs["synthesis_script"] == "./graphs/synthesis.py:script_graph"
    assert graphs["synthesis_trajectory"] == "./graphs/synthesis.py:trajectory_graph"
    assert graphs["refine_agent"] == "./graphs/refine_agent.py:graph"
    assert isinstance(config["env"], dict) and "AGENTREFINE_TEACHER" in config["env"]


def _load_graphs(monkeypatch, **env):
    for key in ("AGENTREFINE_TEACHER", "AGENTREFINE_TEACHER_BASE_URL", "AGENTREFINE_TEACHER_MODEL", "AGENTREFINE_MODE",
                "AGENTREFINE_SETTINGS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.syspath_prepend(str(REPO))
    sys.modules.pop("graphs.synthesis", None)
    return importlib.import_module("graphs.synthesis")


def test_synthesis_graphs_build_from_an_openai_compatible_server(monkeypatch):
    # Constructing the client does not contact the server.
    module = _load_graphs(monkeypatch, AGENTREFINE_TEACHER_BASE_URL="http://127.0.0.1:9/v1", AGENTREFINE_TEACHER_MODEL="m",
                          AGENTREFINE_SETTINGS=json.dumps({"min_pairs": 3}))
    assert module.teacher.mode == "one_shot" and module.settings.min_pairs == 3
    assert {"write_script", "check_script", "write_trajectory", "verify", "finalize"} <= set(module.graph.nodes)
    assert {"write_script", "check_script"} <= set(module.script_graph.nodes)
    assert "verify" in module.trajectory_graph.nodes and "write_script" not in module.trajectory_graph.nodes
    assert module.graph.config["recursion_limit"] > 25


def test_interactive_mode_from_env(monkeypatch):
    module = _load_graphs(monkeypatch, AGENTREFINE_TEACHER_BASE_URL="http://127.0.0.1:9/v1", AGENTREFINE_TEACHER_MODEL="m",
                          AGENTREFINE_MODE="interactive")
    assert {"player", "dm", "next_turn", "verify"} <= set(module.graph.nodes)


def test_default_is_the_grounded_teacher(monkeypatch, tmp_path):
    pytest.importorskip("agentrefine_lg.synthesis.grounded")
    module = _load_graphs(monkeypatch, AGENTREFINE_TEACHER="grounded", AGENTREFINE_CACHE_DIR=str(tmp_path))
    assert module.teacher.grounded and module.teacher.mode == "interactive"
    assert module.settings.max_turns == 160


def test_langgraph_validate_is_clean() -> None:
    import shutil
    import subprocess
    import sys

    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    assert exe, "langgraph-cli is part of the [dev] extra"
    proc = subprocess.run([exe, "validate"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout and "warning" not in (proc.stdout + proc.stderr).lower()
