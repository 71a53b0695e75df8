"""Specification of the training stack: the tiny model, label masks seen by the trainer, the CLI run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from training.tiny import build_tiny_model, build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


# --------------------------------------------------------------------------------------- tiny model


def test_tiny_model_loads_generates_and_is_small(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 2
    assert 1000 <= len(tok) <= 2048
    assert sum(p.stat().st_size for p in tiny_dir.iterdir()) < 8 * 2**20
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "You are in /home/user."}]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert "{% generation %}" not in tok.chat_template
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_tiny_model_is_deterministic_and_reused(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "a")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes()
    stamp = (again / "model.safetensors").stat().st_mtime_ns
    assert build_tiny_model(again) == again
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_tiny_tokenizer_saves_and_tokenizes_agent_text(tmp_path):
    tok = build_tiny_tokenizer(tmp_path)
    assert (tmp_path / "tokenizer.json").exists()
    text = "Thought: The file lives in the project folder.\nAction: cd project"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert len(ids) < len(text) / 2  # BPE merges learnt on agent text, not byte soup


# --------------------------------------------------------------------------------------- the trainer

from agentrefine_lg.errors import AgentRefineError, InputError
from training.data import IGNORE_INDEX, tokenize_messages
from training.sft import build_trainer, main, parse_args

EOT = "<|eot_id|>"


def _row(messages, rid):
    return {"id": rid, "messages": messages, "source": "test"}


ERR_LAST = [  # the erroneous (masked) turn is the LAST one, so nothing later conditions on it
    {"role": "system", "content": "You act in a text world. Answer with Thought and Action."},
    {"role": "user", "content": "You are in a kitchen. A key is on the table."},
    {"role": "assistant", "content": "Thought: I need the key.\nAction: take key", "train": True},
    {"role": "user", "content": "You take the key. The door is north."},
    {"role": "assistant", "content": "Thought: Go through the door.\nAction: go through door", "train": False},
]


@pytest.fixture
def data_file(tmp_path, paper_script, paper_trajectory):
    from agentrefine_lg.convert import sample_from_trajectory
    from agentrefine_lg.schema import Script, Trajectory

    paper = sample_from_trajectory(Script.model_validate(paper_script), Trajectory.model_validate(paper_trajectory))
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(paper.to_dict()) + "\n" + json.dumps(_row(ERR_LAST, "err-last")) + "\n")
    return path, paper


def _trainer(tiny_dir, tmp_path, *extra):
    args = parse_args(["--model", str(tiny_dir), "--output_dir", str(tmp_path / "out"), "--report_to", "none",
                       "--max_steps", "1", *extra])
    return build_trainer(*args)


def _runs(tokenizer, row):
    runs, cur = [], []
    for tok, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            assert lab == tok
            cur.append(tok)
        elif cur:
            runs.append(tokenizer.decode(cur))
            cur = []
    if cur:
        runs.append(tokenizer.decode(cur))
    return runs


def test_trainer_dataset_carries_our_masks(tiny_dir, tmp_path, data_file):
    path, paper = data_file
    trainer = _trainer(tiny_dir, tmp_path, "--data", str(path))
    tok = trainer.processing_class
    rows = list(trainer.train_dataset)
    assert len(rows) == 2 and set(rows[0]) >= {"input_ids", "labels"}
    got = sorted(tuple(_runs(tok, r)) for r in rows)
    want = sorted([
        tuple(m.content + EOT for m in paper.messages if m.role == "assistant" and m.train),
        ("Thought: I need the key.\nAction: take key" + EOT,),
    ])
    assert got == want  # system, user and train:false turns carry -100
    # The collator pads labels with -100, never with a token id.
    batch = trainer.data_collator(rows)
    short = min(range(2), key=lambda i: len(rows[i]["input_ids"]))
    assert (batch["labels"][short, len(rows[short]["input_ids"]):] == IGNORE_INDEX).all()
    assert trainer.agentrefine_info["refinement"]["rows_kept"] == 2


def test_no_mask_trains_erroneous_turns(tiny_dir, tmp_path, data_file):
    path, _ = data_file
    trainer = _trainer(tiny_dir, tmp_path, "--data", str(path), "--no_mask")
    runs = [r for row in trainer.train_dataset for r in _runs(trainer.processing_class, row)]
    assert "Thought: Go through the door.\nAction: go through door" + EOT in runs
    assert "Thought: Let me set the mode now.\nAction: set mode=on in config.cfg" + EOT in runs


def _loss(trainer, messages) -> float:
    import torch

    row = tokenize_messages(messages, trainer.processing_class)
    batch = trainer.data_collator([{"input_ids": row["input_ids"], "labels": row["labels"]}])
    trainer.model.eval()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, batch))


def test_masked_turn_text_does_not_change_the_loss_but_a_trained_turn_does(tiny_dir, tmp_path, data_file):
    path, _ = data_file
    trainer = _trainer(tiny_dir, tmp_path, "--data", str(path))
    base = _loss(trainer, ERR_LAST)
    masked_changed = [*ERR_LAST[:-1], {**ERR_LAST[-1], "content": "Thought: Something else entirely.\nAction: dance"}]
    trained_changed = [*ERR_LAST[:2], {**ERR_LAST[2], "content": "Thought: Take it.\nAction: take key now"},
                       *ERR_LAST[3:]]
    assert _loss(trainer, masked_changed) == pytest.approx(base, rel=1e-6, abs=1e-6)
    assert abs(_loss(trainer, trained_changed) - base) > 1e-4


def test_the_plain_loss_equals_trls_fused_loss(tiny_dir, tmp_path, data_file):
    """Without --token_metrics the loss is the model's own cross-entropy: the same number TRL's fused head gives."""
    path, _ = data_file
    trainer = _trainer(tiny_dir, tmp_path, "--data", str(path))
    assert trainer.token_metrics is False
    plain = _loss(trainer, ERR_LAST)
    trainer.token_metrics = True
    assert _loss(trainer, ERR_LAST) == pytest.approx(plain, rel=1e-5)
    assert _trainer(tiny_dir, tmp_path, "--data", str(path), "--token_metrics", "true").token_metrics is True


def test_bad_settings_are_refused_with_clear_errors(tiny_dir, tmp_path, data_file):
    path, _ = data_file
    with pytest.raises(InputError, match="no such model directory"):
        _trainer(tmp_path / "nope", tmp_path)
    with pytest.raises(InputError, match="mix_ratio must be in"):
        _trainer(tiny_dir, tmp_path, "--mix", str(path), "--mix_ratio", "1.5")
    with pytest.raises(InputError, match="eval_split must be in"):
        _trainer(tiny_dir, tmp_path, "--eval_split", "-0.1")
    with pytest.raises(InputError, match="all 2 rows were dropped"):
        _trainer(tiny_dir, tmp_path, "--data", str(path), "--max_length", "16")
    with pytest.raises(InputError, match="no such file"):
        _trainer(tiny_dir, tmp_path, "--data", str(tmp_path / "missing.jsonl"))
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(AgentRefineError, match="needs a CUDA GPU"):
            _trainer(tiny_dir, tmp_path, "--load_in_4bit")
    # A tokenizer without a chat template (a base model) is refused, naming the fix.
    import shutil

    bare = tmp_path / "bare"
    shutil.copytree(tiny_dir, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(AgentRefineError, match="no chat template"):
        _trainer(bare, tmp_path)
    template = tmp_path / "t.jinja"
    template.write_text((tiny_dir / "chat_template.jinja").read_text())
    assert len(_trainer(bare, tmp_path, "--chat_template_path", str(template)).train_dataset) > 0


def test_mix_and_eval_split(tiny_dir, tmp_path, data_file):
    path, _ = data_file
    general = tmp_path / "general.jsonl"
    general.write_text("".join(json.dumps({"conversations": [
        {"from": "human", "value": f"Say the number {i}."}, {"from": "gpt", "value": f"{i}"}]}) + "\n"
        for i in range(10)))
    trainer = _trainer(tiny_dir, tmp_path, "--data", str(path), str(path), "--mix", str(general),
                       "--mix_ratio", "0.5", "--eval_split", "0.25")
    info = trainer.agentrefine_info
    assert info["refinement"]["rows_kept"] == 4 and info["mix"]["wanted"] == 4 and info["mix"]["rows_kept"] == 4
    assert info["train_rows"] + info["eval_rows"] == 8 and info["eval_rows"] == 2
    assert len(trainer.eval_dataset) == 2


def test_cli_run_writes_every_output(tiny_dir, tmp_path, data_file):
    path, _ = data_file
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "training.sft", "--model", str(tiny_dir), "--data", str(path), "--output_dir", str(out),
         "--max_steps", "2", "--per_device_train_batch_size", "2", "--max_length", "1024"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("adapter_config.json", "adapter_model.safetensors", "chat_template.jinja", "train_log.json",
                 "loss.png", "merged/config.json", "merged/model.safetensors", "merged/chat_template.jinja"):
        assert (out / name).exists(), name
    log = json.loads((out / "train_log.json").read_text())
    assert [s["step"] for s in log["steps"]] == [1, 2]
    assert log["tokens_per_second"] > 0 and log["dropped_rows"] == 0
    # "final" is the last step's loss; the trainer's average over all steps is stored as the mean
    assert log["final_loss"] == log["steps"][-1]["loss"]
    assert log["mean_loss"] == pytest.approx(sum(s["loss"] for s in log["steps"]) / 2, rel=1e-3)
    assert f"-> {log['final_loss']:.4f} at step 2 (mean over training {log['mean_loss']:.4f})" in proc.stdout
    # quiet: no per-step log dicts, no pin_memory warning; the progress summary line instead of a bar
    output = proc.stdout + proc.stderr
    assert "{'loss'" not in output and "pin_memory" not in output
    assert "progress: train 2/2 steps in " in proc.stderr
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    tok = AutoTokenizer.from_pretrained(out / "merged")
    enc = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert merged.generate(**enc, max_new_tokens=3, do_sample=False).shape[1] > enc["input_ids"].shape[1]


def test_main_reports_errors_without_traceback(tmp_path, capsys):
    assert main(["--model", str(tmp_path / "missing-model"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "no such model directory" in capsys.readouterr().err


def test_merge_cli_produces_a_plain_model_equal_to_base_plus_adapter(tiny_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))  # non-zero B: the merge must matter
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[0, 2, 292, 3, 204, 204, 343, 398]])
    with torch.no_grad():
        want = peft_model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_dir)(ids).logits
    assert not torch.allclose(want, plain, atol=1e-4)

    out = tmp_path / "merged"
    proc = subprocess.run(check=False, args=[sys.executable, "-m", "training.merge", "--base", str(tiny_dir), "--adapter", str(adapter),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (out / "adapter_config.json").exists()
    assert (out / "chat_template.jinja").read_text() == (tiny_dir / "chat_template.jinja").read_text()
    merged = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, want, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(out)
    enc = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert merged.generate(**enc, max_new_tokens=2, do_sample=False).shape[1] > enc["input_ids"].shape[1]


def test_merge_refuses_a_directory_without_adapter(tiny_dir, tmp_path, capsys):
    from training.merge import main as merge_main

    assert merge_main(["--base", str(tiny_dir), "--adapter", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a PEFT adapter directory" in capsys.readouterr().err
