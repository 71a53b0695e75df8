"""Specification of the training stack: the tiny model, label masks seen by the trainer, the CLI run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl")

from training.tiny import build_tiny_model, build_tiny_tokenizer  # noqa: E402

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
