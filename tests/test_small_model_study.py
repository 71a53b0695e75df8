"""The method study (examples/small_model_study/run.py) and the library parts it is built from: world-split data,
the from-scratch student, paired statistics over worlds and the grounded-worlds evaluation task (the in-process
model has its own specification, test_local_model.py). The whole study end to end at ``--quick`` size is a slow
test."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import threading
import time
from pathlib import Path

import pytest

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval import study as study_lib  # the study's stages; run.py is its command line

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


def test_plan_builds_the_student_then_trains_and_evaluates_every_arm_and_seed(study, tmp_path):
    cfg = config(study, tmp_path, "--seeds", "0,1,2")
    names = [s.name for s in study.build_plan(cfg)]
    assert names[:2] == ["data", "student"] and names[-1] == "report"
    for seed in (0, 1, 2):
        for arm in ("bc", "refine", "refine_nomask", "mix"):
            assert f"train {arm} s{seed}" in names and f"eval {arm} s{seed}" in names
    assert len(names) == 2 + 2 * 12 + 1


def test_arms_differ_only_in_data_and_masking_and_train_from_scratch_by_default(study, tmp_path):
    cfg = config(study, tmp_path)
    cmds = {arm: study.train_command(cfg, arm, 0) for arm in study.ARMS}
    assert option(cmds["bc"], "--data").endswith("clean.jsonl")
    assert option(cmds["refine"], "--data") == option(cmds["refine_nomask"], "--data")
    assert option(cmds["refine"], "--data").endswith("refine.jsonl")
    assert option(cmds["mix"], "--data").endswith("mix.jsonl")  # both rows of every world
    assert "--no_mask" in cmds["refine_nomask"] and "--no_mask" not in cmds["refine"] + cmds["bc"] + cmds["mix"]
    strip = lambda c: [x for x in c if x not in ("--no_mask",) and not x.endswith(".jsonl") and "/train/" not in x]
    assert strip(cmds["bc"]) == strip(cmds["refine"]) == strip(cmds["refine_nomask"]) == strip(cmds["mix"])
    # equal budget: the same optimizer steps, whatever the number of rows (the mix arm has twice as many)
    assert option(cmds["bc"], "--max_steps") == str(cfg.steps) and "--num_train_epochs" not in cmds["mix"]
    assert option(cmds["bc"], "--method") == "full" and option(cmds["bc"], "--model").endswith("student")
    assert cmds["bc"][1:3] == ["-m", "training.sft"]  # the users' training command, not a loop of our own


def test_every_arm_trains_with_the_studys_recipe_bf16_where_native_and_adam_beta2(study, tmp_path, monkeypatch):
    # bf16 autocast only where the hardware computes it (emulated bf16 on an AVX2 CPU is 11x slower than float32)
    monkeypatch.setattr(study_lib, "native_bf16", lambda device: False)
    cmd = study.train_command(config(study, tmp_path), "refine", 0)
    assert option(cmd, "--bf16") == "false" and option(cmd, "--adam_beta2") == "0.95"
    monkeypatch.setattr(study_lib, "native_bf16", lambda device: True)
    cmd = study.train_command(config(study, tmp_path), "refine", 0)
    assert option(cmd, "--bf16") == "true"
    cmd = study.train_command(config(study, tmp_path, "--no-bf16", "--adam-beta2", "0.999"), "refine", 0)
    assert option(cmd, "--bf16") == "false" and option(cmd, "--adam_beta2") == "0.999"
    cmd = study.train_command(config(study, tmp_path, "--bf16"), "refine", 0)
    assert option(cmd, "--bf16") == "true"


def test_native_bf16_is_a_gpu_or_a_cpu_flag(study):
    assert study.native_bf16("cuda") is True
    flags = open("/proc/cpuinfo").read().split() if Path("/proc/cpuinfo").exists() else []
    assert study.native_bf16("cpu") == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_a_pretrained_model_is_tuned_with_lora_and_needs_no_student(study, tmp_path):
    cfg = config(study, tmp_path, "--model", "gemma-3-270m")
    cmd = study.train_command(cfg, "refine", 0)
    assert option(cmd, "--method") == "lora" and option(cmd, "--model") == "gemma-3-270m"
    assert "student" not in [s.name for s in study.build_plan(cfg)]


def test_quick_is_a_small_run_of_every_stage(study, tmp_path):
    cfg = config(study, tmp_path, "--quick")
    assert cfg.n_train < 50 and cfg.seeds == (0,)
    assert [s.kind for s in study.build_plan(cfg)].count("eval") == 4


@pytest.mark.parametrize("argv, field", [
    (["--arms", "bc,nonsense"], "arms"),
    (["--kinds", "custom", "--unseen-kinds", "custom"], "unseen_kinds"),
    (["--unseen-kinds", "dragons"], "kinds"),
    (["--kinds", "dragons"], "kinds"),
    (["--n-train", "0"], "n_train"),
    (["--seeds", "a"], "seeds"),
    (["--inject-step", "9", "--max-steps", "8"], "inject_step"),
    (["--stages", "train,fly"], "stages"),
    (["--parallel", "0"], "parallel"),
])
def test_bad_options_are_refused_by_name(study, tmp_path, argv, field):
    with pytest.raises(InputError) as err:
        config(study, tmp_path, *argv)
    assert err.value.field == field


def test_dry_run_lists_every_stage_with_its_status(study, tmp_path, capsys):
    assert study.main(["--out", str(tmp_path / "s"), "--device", "cpu", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "[todo] data" in out and "[todo] train refine_nomask s2" in out and "--no_mask" in out
    assert "[todo] train mix s2" in out


def test_stages_runs_only_the_kinds_asked_and_parallel_trains_that_many_at_once(study, tmp_path, monkeypatch):
    running, most, ran = [0], [0], []
    lock = threading.Lock()

    def fake_training(cfg, stage, log):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        folder = study.train_dir(cfg, stage.arm, stage.seed)  # what a finished training leaves
        (folder / "merged").mkdir(parents=True)
        (folder / "merged" / "config.json").write_text("{}")
        (folder / "train_log.json").write_text("{}")
        (folder / "study_command.json").write_text(json.dumps(study_lib._portable(stage.command)))
        with lock:
            running[0] -= 1
            ran.append(stage.name)

    def refuse(cfg, stage, log):
        raise AssertionError(f"{stage.name} was not asked for")

    monkeypatch.setattr(study_lib, "RUNNERS", {"data": refuse, "student": refuse, "train": fake_training,
                                           "eval": refuse, "report": refuse})
    out = tmp_path / "s"
    assert study.main(["--out", str(out), "--device", "cpu", "--stages", "train", "--parallel", "3"]) == 0
    assert sorted(ran) == sorted(f"train {a} s{s}" for a in study.ARMS for s in (0, 1, 2)) and most[0] == 3
    assert len(json.loads((out / "timings.json").read_text())) == 12


# ---------------------------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def worlds_module():
    from agentrefine_lg.synthesis.grounded import worldsets

    return worldsets


def test_splits_never_share_a_seed_and_alternate_kinds(worlds_module):
    specs = {split: [worlds_module.world_spec(split, i, ("coin_collector", "custom")) for i in range(20)]
             for split in ("train", "heldout")}
    assert not {s.seed for s in specs["train"]} & {s.seed for s in specs["heldout"]}
    assert [s.kind for s in specs["train"][:4]] == ["coin_collector", "custom"] * 2


def test_world_generators_name_a_game_kind_and_its_settings(worlds_module):
    """A generator is a game kind drawn with its own settings: the long mazes are coin collectors of higher
    levels, the one- and two-room quests custom games of one and two rooms."""
    long = [worlds_module.world_spec("unseen", i, ("coin_collector_long",)) for i in range(6)]
    short = [worlds_module.world_spec("train", i, ("coin_collector",)) for i in range(6)]
    assert {s.kind for s in long + short} == {"coin_collector"}
    assert min(dict(s.settings)["level"] for s in long) > max(dict(s.settings)["level"] for s in short)
    rooms = {g: {dict(worlds_module.world_spec("train", i, (g,)).settings)["nb_rooms"] for i in range(6)}
             for g in ("custom_1room", "custom_2rooms")}
    assert rooms == {"custom_1room": {1}, "custom_2rooms": {2}}
    assert worlds_module.world_kind(4, ("a", "b", "c")) == "b"


def test_world_rows_are_a_clean_and_a_refinement_row_of_the_same_checked_world(worlds_module, tmp_path):
    pytest.importorskip("textworld")
    from agentrefine_lg.synthesis.grounded import GroundedWorlds

    spec = worlds_module.world_spec("train", 1, ("custom",))
    worlds = GroundedWorlds(tmp_path / "games")
    try:
        rows = worlds_module.world_rows(spec, worlds, errors=2)
    finally:
        worlds.close()
    clean, refine = rows["clean"], rows["refine"]
    assert clean.messages[0].content == refine.messages[0].content  # the same world, the same system prompt
    masked = [m for m in refine.messages if m.role == "assistant" and m.train is False]
    assert len(masked) == 2 and all(m.train is not False for m in clean.messages if m.role == "assistant")
    # the first step is never a mistake: every row trains the first action from the error-free start, and it
    # restates the objective as the clean row does
    first = [m for m in refine.messages if m.role == "assistant"][0]
    assert first.train is not False and first.content.startswith("Thought: The objective, step by step: ")
    # ... as the plan's steps, which are the clean row's actions in order (not the goal's prose)
    clean_actions = [m.content.split("Action:")[-1].strip() for m in clean.messages if m.role == "assistant"]
    assert first.content.startswith(f"Thought: The objective, step by step: {', then '.join(clean_actions)}. ")
    assert first.content == [m for m in clean.messages if m.role == "assistant"][0].content


def test_generated_worlds_are_cached_and_other_settings_refused(worlds_module, tmp_path):
    pytest.importorskip("textworld")
    plan = worlds_module.WorldPlan(2, 1, 1, ("custom",), ("coin_collector",), 1, n_trainprobe=1)
    manifest = worlds_module.generate_worlds(plan, tmp_path / "data", workers=1, log=lambda m: None)
    assert manifest["kinds"]["unseen"] == {"coin_collector": 1}
    rows = [json.loads(r) for r in (tmp_path / "data" / "eval_worlds.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["heldout", "unseen", "trainprobe"]
    assert rows[2]["game"] == manifest["worlds"]["train"][0] == manifest["trainprobe"][0]  # a train world
    assert len((tmp_path / "data" / "clean.jsonl").read_text().splitlines()) == 2
    mix = (tmp_path / "data" / "mix.jsonl").read_text().splitlines()
    assert len(mix) == 4 and mix[0] == (tmp_path / "data" / "clean.jsonl").read_text().splitlines()[0]
    before = (tmp_path / "data" / "manifest.json").stat().st_mtime_ns
    assert worlds_module.generate_worlds(plan, tmp_path / "data", workers=1)["seconds"] == manifest["seconds"]
    assert (tmp_path / "data" / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(InputError):
        worlds_module.generate_worlds(worlds_module.WorldPlan(3, 1, 1, ("custom",), ("coin_collector",), 1),
                                      tmp_path / "data", workers=1)


# ---------------------------------------------------------------------------------------------- the student


def _rows_file(path: Path) -> Path:
    rows = [{"messages": [{"role": "system", "content": "Goal: take the lantern from the shelf."},
                          {"role": "user", "content": "You see a shelf. On it: a lantern."},
                          {"role": "assistant", "content": "Thought: the lantern is here.\nAction: take lantern"}]}]
    path.write_text("\n".join(json.dumps(r) for r in rows * 3) + "\n", encoding="utf-8")
    return path


def test_student_tokenizer_is_trained_on_the_rows_and_the_build_is_reused(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.tiny import build_student

    data = _rows_file(tmp_path / "rows.jsonl")
    config = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
              "num_key_value_heads": 2, "max_position_embeddings": 256, "rope_theta": 10000.0,
              "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    folder = build_student(tmp_path / "student", [data], config=config, vocab_size=400)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert len(tokenizer.tokenize(" lantern")) == 1  # a word of the rows is one token
    assert AutoModelForCausalLM.from_pretrained(folder).config.num_hidden_layers == 1
    assert build_student(tmp_path / "student", [data], config=config, vocab_size=400) == folder
    with pytest.raises(InputError):
        build_student(tmp_path / "student", [data], config=config, vocab_size=500)


def test_training_sft_model_student_builds_the_study_student_on_the_training_rows(tmp_path):
    from types import SimpleNamespace

    from transformers import AutoConfig, AutoTokenizer

    from training.sft import ScriptArguments, resolve_model
    from training.tiny import STUDENT_CONFIG

    data = _rows_file(tmp_path / "rows.jsonl")
    path = resolve_model(ScriptArguments(model="student", data=[str(data)]), SimpleNamespace(output_dir=str(tmp_path / "out")))
    assert Path(path) == tmp_path / "out" / "base-model"
    config = AutoConfig.from_pretrained(path)
    assert (config.num_hidden_layers, config.hidden_size) == (STUDENT_CONFIG["num_hidden_layers"], STUDENT_CONFIG["hidden_size"])
    assert config.max_position_embeddings == 4096  # held-out tasks' prompts are longer than the study's rows
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer.tokenize(" lantern")) == 1  # trained on the rows given with --data
    assert len(tokenizer.tokenize(" the")) == 1  # and on the general corpus, for text unlike the rows


def test_student_refuses_a_file_that_holds_no_rows_naming_file_and_line(tmp_path):
    from training.tiny import student_corpus

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n{"text": "no messages"}\n')
    with pytest.raises(InputError) as err:
        student_corpus([bad])
    assert f"{bad}:2" in str(err.value)


# ---------------------------------------------------------------------------------------------- statistics


def test_per_world_means_average_replicates_and_skip_missing_values():
    from agentrefine_lg.eval.paired import per_world

    rows = [{"world": "a", "ok": True}, {"world": "a", "ok": False}, {"world": "b", "ok": True},
            {"world": "c", "ok": None}]
    assert per_world(rows, "ok") == {"a": 0.5, "b": 1.0}


def test_paired_difference_removes_the_between_world_spread():
    from agentrefine_lg.eval.paired import estimate, paired_difference

    base = {f"w{i}": i / 20 for i in range(20)}  # worlds differ a lot
    better = {w: v + 0.1 for w, v in base.items()}  # one arm is better by 0.1 on every world
    wide = estimate(better)
    assert wide.high - wide.low > 0.2 and wide.n == 20
    diff = paired_difference(better, base)
    assert diff.value == pytest.approx(0.1) and diff.high - diff.low < 1e-9


def test_paired_difference_uses_only_shared_worlds_and_nan_for_none():
    from agentrefine_lg.eval.paired import estimate, paired_difference

    diff = paired_difference({"a": 1.0, "b": 0.0}, {"a": 0.0, "c": 1.0})
    assert diff.n == 1 and diff.value == 1.0
    assert estimate({}).n == 0 and math.isnan(estimate({}).value)


def _turns(*valid: bool) -> list[dict]:
    """A trajectory whose Player actions are accepted (True) or flagged (False) in this order."""
    out = []
    for i, ok in enumerate(valid):
        out += [{"turn": 2 * i + 1, "role": "Player", "Thought": "t", "Action": f"go {i}"},
                {"turn": 2 * i + 2, "role": "DM", "Thought": "d", "Observation": "o", "parameter_error": False,
                 "place_error": False, "logic_error": not ok}]
    return out


def _fake_rows(arm: str, seed: int, good: float) -> list[dict]:
    rows = []
    for i in range(6):
        world = f"custom-{i}"
        # worlds 0-2 start with an accepted action and then fail once; worlds 3-5 fail first
        rows.append({"split": "heldout", "episode": i, "condition": "none", "world": world, "arm": arm,
                     "kind": "coin_collector" if i < 3 else "custom", "success": (i / 6) < good, "progress": good,
                     "steps": 4, "invalid_actions": 1, "repeated_mistakes": 0,
                     "trajectory": _turns(True, False, True, True) if i < 3 else _turns(False, True, True, True)})
        for kind in ("parameter_error", "place_error", "logic_error"):
            rows.append({"split": "heldout", "episode": i, "condition": kind, "world": world, "arm": arm,
                         "success": False, "progress": 0.5, "steps": 5, "invalid_actions": 2, "repeated_mistakes": 1,
                         "injection": {"applied": True, "recovered": (i / 6) < good, "repeated": (i / 6) >= good,
                                       "success_after": False}})
    return rows


def test_report_from_evaluation_files_has_tables_differences_and_a_chart(study, tmp_path):
    cfg = config(study, tmp_path, "--seeds", "0", "--n-unseen", "0", "--n-trainprobe", "0")
    study.data_dir(cfg).mkdir(parents=True)
    (study.data_dir(cfg) / "eval_worlds.jsonl").write_text("".join(
        json.dumps({"split": "heldout", "kind": "custom", "game": f"custom-{i}", "script": {}}) + "\n" for i in range(6)))
    for arm, good in (("bc", 0.2), ("refine", 0.8), ("refine_nomask", 0.5)):
        path = study.eval_file(cfg, arm, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(json.dumps(r) for r in _fake_rows(arm, 0, good)) + "\n")
    report = study.write_report(cfg, {"data": {"seconds": 1.0}}, log=lambda m: None)
    text = report.read_text()
    assert "| bc | 6 |" in text and "refine − bc" in text and "![study](study.png)" in text
    results = json.loads((cfg.out / "results.json").read_text())
    recovered = {(r["arm"], r["condition"]): r["recovered"]["value"] for r in results["table"] if r["condition"] != "none"}
    assert recovered[("refine", "logic_error")] == pytest.approx(5 / 6) and recovered[("bc", "logic_error")] == pytest.approx(2 / 6)
    diff = next(d for d in results["diffs"] if d["condition"] == "logic_error" and d["metric"] == "recovered"
                and (d["a"], d["b"]) == ("refine", "bc"))
    assert diff["value"] == pytest.approx(0.5) and diff["n"] == 6
    by_kind = {(r["arm"], r["kind"]): (r["success"]["value"], r["success"]["n"]) for r in results["by_kind"]}
    assert by_kind[("bc", "coin_collector")] == (pytest.approx(2 / 3), 3) and by_kind[("bc", "custom")] == (0.0, 3)
    assert "Uninjected success by game kind" in text and "| bc | custom | 3 | 0.0 [0.0, 0.0] |" in text
    none = {r["arm"]: r for r in results["table"] if r["condition"] == "none"}
    assert none["bc"]["first_valid"]["value"] == pytest.approx(0.5)  # how an episode starts
    assert none["bc"]["invalid_after_start"]["value"] == pytest.approx(1 / 3)  # and what follows a valid start
    assert "first action accepted %" in text
    assert (cfg.out / "study.png").stat().st_size > 10_000
    capped = config(study, tmp_path, "--seeds", "0", "--n-unseen", "0", "--n-trainprobe", "0", "--eval-worlds", "3")
    assert len(study.eval_jobs(capped)) == 3 * 4  # three worlds, each as is and with each mistake kind
    assert {r["episodes"] for r in study.collect(capped)["table"]} == {3}


# ---------------------------------------------------------------------------------------------- evaluation parts


def test_worlds_file_errors_name_the_file_and_line(tmp_path):
    from agentrefine_lg.eval.textworld import load_worlds

    bad = tmp_path / "worlds.jsonl"
    bad.write_text('{"split": "heldout", "script": {}}\nnot json\n')
    with pytest.raises(InputError) as err:
        load_worlds(bad)
    assert f"{bad}:2" in str(err.value)
    with pytest.raises(InputError):
        load_worlds(tmp_path / "worlds.jsonl", "unseen")


def test_textworld_task_is_registered_but_not_part_of_all():
    from agentrefine_lg.eval.base import parse_task_list

    assert "textworld" not in parse_task_list("all")
    assert parse_task_list("textworld") == ["textworld"]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_study_runs_every_stage_end_to_end_and_resumes(study, tmp_path, capsys):
    pytest.importorskip("textworld")
    out = tmp_path / "study"
    assert study.main(["--out", str(out), "--quick", "--device", "cpu", "--threads", "1"]) == 0
    for arm in ("bc", "refine", "refine_nomask", "mix"):
        assert (out / "train" / f"{arm}-s0" / "merged" / "config.json").is_file()
        rows = [json.loads(x) for x in study.eval_file(study.parse_args(["--out", str(out), "--quick"])[0], arm, 0)
                .read_text().splitlines()]
        assert {r["condition"] for r in rows} == {"none", "parameter_error", "place_error", "logic_error"}
        assert {r["split"] for r in rows} == {"heldout", "unseen", "trainprobe"}
    assert (out / "report.md").is_file() and (out / "study.png").is_file()
    capsys.readouterr()
    assert study.main(["--out", str(out), "--quick", "--device", "cpu"]) == 0
    assert "[train bc s0] done already; skipped" in capsys.readouterr().out


def test_a_world_textworld_cannot_make_is_skipped_but_a_bug_propagates(worlds_module, monkeypatch, tmp_path):
    from agentrefine_lg.synthesis.grounded.engine import NoUsableGameError

    def no_game(spec, worlds, **kw):
        raise NoUsableGameError("no usable game in 12 seeds")

    monkeypatch.setattr(worlds_module, "world_rows", no_game)
    result = worlds_module._make_world(("train", 0, ("coin_collector",), 2, 0, str(tmp_path)))
    assert result["skipped"] == "failed" and "NoUsableGameError" in result["why"]

    for bug in (RuntimeError("a bug"), ValueError("a bug"), InputError("the Player acts after a DM turn")):
        def broken(spec, worlds, _bug=bug, **kw):
            raise _bug

        monkeypatch.setattr(worlds_module, "world_rows", broken)
        with pytest.raises(type(bug)):
            worlds_module._make_world(("train", 0, ("coin_collector",), 2, 0, str(tmp_path)))
