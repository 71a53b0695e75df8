"""The shipped training configs parse with the tools that read them (accelerate, DeepSpeed JSON, our parser)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("accelerate")
pytest.importorskip("trl")

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
ACCELERATE = ["accelerate_ddp.yaml", "accelerate_fsdp.yaml", "deepspeed_zero3.yaml"]


def _launch_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


@pytest.mark.parametrize("name", ACCELERATE)
def test_accelerate_config_has_only_keys_accelerate_accepts(name):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(CONFIGS / name))  # raises on unknown top-level keys
    raw = yaml.safe_load((CONFIGS / name).read_text())
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert config.num_processes >= 1 and config.num_machines == 1
    options = _launch_options()
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = set(raw.get(section) or {}) - options
        assert not unknown, f"{name}: {section} keys accelerate launch does not know: {unknown}"


def test_distributed_types():
    types = {n: yaml.safe_load((CONFIGS / n).read_text())["distributed_type"] for n in ACCELERATE}
    assert types == {"accelerate_ddp.yaml": "MULTI_GPU", "accelerate_fsdp.yaml": "FSDP",
                     "deepspeed_zero3.yaml": "DEEPSPEED"}
    fsdp = yaml.safe_load((CONFIGS / "accelerate_fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # saved weights are servable as is


def test_deepspeed_zero3_json():
    raw = yaml.safe_load((CONFIGS / "deepspeed_zero3.yaml").read_text())
    path = Path(raw["deepspeed_config"]["deepspeed_config_file"])
    assert path.parts[:2] == ("training", "configs")  # relative to the repository root, where runs start
    ds = json.loads((CONFIGS / path.name).read_text())
    zero = ds["zero_optimization"]
    assert zero["stage"] == 3
    assert zero["stage3_gather_16bit_weights_on_model_save"] is True  # save_model writes full weights
    # Batch sizes come from the trainer's arguments ("auto"), so the recipe alone decides them.
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"


def test_paper_recipe_parses_through_our_parser():
    from training.sft import METHODS, parse_args, validate

    script, training, model = parse_args(["--config", str(CONFIGS / "paper_llama3_8b.yaml")])
    assert script.model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert script.data == ["data/agentrefine-gpt4o-32000.jsonl"]
    assert script.method in METHODS and script.method == "full" and script.no_mask is False
    assert training.learning_rate == 2e-5 and training.num_train_epochs == 3 and training.max_length == 4096
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 8
    assert training.warmup_steps == 0.03 and training.seed == 42
    import torch

    assert training.bf16 == bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert model.dtype == "bfloat16"
    # Command-line values win over the file.
    script, training, _ = parse_args(["--config", str(CONFIGS / "paper_llama3_8b.yaml"), "--learning_rate", "1e-5",
                                      "--method", "lora"])
    assert training.learning_rate == 1e-5 and script.method == "lora"
    validate(script, training, _)  # a consistent recipe: no error (LoRA on the 8B model)
    assert _.use_peft is True


def test_agentrefine_train_reads_the_same_recipe():
    from training.sft import cli_add_arguments, parse_namespace

    parser = argparse.ArgumentParser(prog="agentrefine train")
    cli_add_arguments(parser)
    ns = parser.parse_args(["--config", str(CONFIGS / "paper_llama3_8b.yaml"), "--num_train_epochs", "1"])
    script, training, _ = parse_namespace(ns)
    assert script.model == "meta-llama/Meta-Llama-3-8B-Instruct" and training.learning_rate == 2e-5
    assert training.num_train_epochs == 1  # given on the command line: wins over the file


def test_unknown_recipe_key_is_refused(tmp_path):
    from agentrefine_lg.errors import InputError
    from training.sft import parse_args

    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rte: 1e-5\n")
    with pytest.raises(InputError, match="learning_rte"):
        parse_args(["--config", str(bad)])


def test_model_student_needs_full_fine_tuning(tmp_path):
    from agentrefine_lg.errors import InputError
    from training.sft import parse_args, validate

    base = ["--model", "student", "--output_dir", str(tmp_path), "--use_cpu", "true"]
    script, training, model = parse_args(base)  # LoRA, the default method
    with pytest.raises(InputError) as err:
        validate(script, training, model)
    assert "--method full" in str(err.value) and err.value.field == "method"
    script, training, model = parse_args([*base, "--method", "full"])
    validate(script, training, model)  # no error
