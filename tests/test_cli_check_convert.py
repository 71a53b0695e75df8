"""`agentrefine check` and `agentrefine convert` as a user runs them (subprocesses, real exit codes)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time

import pytest

FIX = "tests/fixtures"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_check_accepts_the_paper_sample():
    out = run("check", "--script", f"{FIX}/script_unix_admin.json", f"{FIX}/trajectory_unix_admin.json")
    assert out.returncode == 0, out.stderr
    assert "OK" in out.stdout and "2 error->refine pairs" in out.stdout
    assert run("check", f"{FIX}/script_unix_admin.json").returncode == 0


def test_check_names_every_planted_fault(paper_script, paper_trajectory, tmp_path):
    planted = {}
    s = copy.deepcopy(paper_script)
    s["Available Actions"]["cd {path}"]["verification code"] = "^(a+)+$"
    planted["regex_unsafe"] = {"script": s, "trajectory": paper_trajectory}
    t = copy.deepcopy(paper_trajectory)
    t[5]["Action"] = "chdir project"
    planted["unflagged_invalid_action"] = {"script": paper_script, "trajectory": t}
    t = copy.deepcopy(paper_trajectory)
    t[2]["parameter_error"] = True
    planted["false_parameter_error"] = {"script": paper_script, "trajectory": t}
    planted["not_completed"] = {"script": paper_script, "trajectory": paper_trajectory[:10]}
    t = copy.deepcopy(paper_trajectory)
    del t[3]["Thought"]
    planted["turn_keys"] = {"script": paper_script, "trajectory": t}
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in planted.values()))
    out = run("check", str(path))
    assert out.returncode == 1
    lines = [line for line in out.stdout.splitlines() if line.startswith("FAIL")]
    assert len(lines) == len(planted)
    for kind in planted:
        assert f"/{kind}]" in out.stdout, kind
    assert "checked 5 record(s): 0 ok, 5 with problems" in out.stdout
    js = run("check", "--json", str(path))
    reports = [json.loads(line) for line in js.stdout.splitlines()]
    assert [r["problems"][0]["kind"] for r in reports] == list(planted)


@pytest.mark.parametrize("content, message", [
    ("{broken", "invalid JSON"),
    ('[{"role": "Player", "Action": "ls"}]', "pass its script with --script"),
])
def test_bad_input_exits_2_without_traceback(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    out = run("check", str(path))
    assert out.returncode == 2
    assert message in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_file_and_bad_record(tmp_path):
    out = run("check", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "1", "messages": [{"role": "user", "content": "hi"}]}\n{"id": "2", "messages": "oops"}\n')
    out = run("convert", str(path), str(tmp_path / "out.jsonl"))
    assert out.returncode == 2 and f"{path}:2" in out.stderr and "messages" in out.stderr


def test_huge_file_streams(paper_script, paper_trajectory, tmp_path):
    path = tmp_path / "huge.jsonl"
    row = json.dumps({"script": paper_script, "trajectory": paper_trajectory})
    path.write_text((row + "\n") * 3000)
    start = time.perf_counter()
    out = run("check", "-q", str(path))
    assert out.returncode == 0, out.stderr[-500:]
    assert "checked 3000 record(s): 3000 ok" in out.stderr
    assert time.perf_counter() - start < 60


def test_convert_paper_files_to_ours_and_sharegpt(tmp_path):
    ours = tmp_path / "ours.jsonl"
    out = run("convert", "--script", f"{FIX}/script_unix_admin.json", f"{FIX}/trajectory_unix_admin.json", str(ours))
    assert out.returncode == 0, out.stderr
    row = json.loads(ours.read_text())
    assert [m.get("train") for m in row["messages"] if m["role"] == "assistant"] == [True, False, True, False, True]
    share = tmp_path / "share.jsonl"
    assert run("convert", str(ours), str(share), "--to", "sharegpt").returncode == 0
    back = tmp_path / "back.jsonl"
    assert run("convert", str(share), str(back)).returncode == 0
    again = json.loads(back.read_text())
    assert [m["content"] for m in again["messages"]] == [m["content"] for m in row["messages"]]
    assert [m.get("train") for m in again["messages"]] == [m.get("train") for m in row["messages"]]
    # and the converted file still verifies, script and trajectory included
    assert run("check", str(ours)).returncode == 0


def test_unknown_command():
    out = run("frobnicate")
    assert out.returncode == 2 and "unknown command" in out.stderr
