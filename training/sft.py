"""Refinement tuning: ``python -m training.sft`` (also ``agentrefine train``).

TRL's ``SFTTrainer`` on pre-tokenized rows: ``training.data`` renders each conversation with the model's
own chat template and builds ``labels`` (-100 on system/user tokens and on erroneous assistant turns);
``dataset_kwargs={"skip_prepare_dataset": True}`` makes TRL train on those labels exactly as given (no
re-tokenization, no re-truncation) and its collator pads labels with -100.

With no arguments it trains a LoRA adapter on the tiny local model (built into ``<output_dir>/base-model``)
with the shipped sample set ``training/data/default.jsonl``, in well under two minutes on a laptop CPU.
Arguments: ``--help``; any of them may come from ``--config recipe.yaml`` (TRL's parser), command-line
values winning. Outputs in ``--output_dir``: the LoRA adapter, ``merged/`` (base + adapter, servable),
``chat_template.jinja``, ``train_log.json`` and ``loss.png``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError

DEFAULT_DATA = Path(__file__).parent / "data" / "default.jsonl"
METHODS = ("lora", "qlora", "full")
STUDENT = "student"
"""``--model student``: a small Llama built from scratch on the training rows (``training.tiny.build_student``)."""


@dataclass
class ScriptArguments:
    """Arguments of the refinement-tuning script (TRL's ``SFTConfig`` and ``ModelConfig`` add the rest)."""

    model: str | None = field(
        default=None,
        metadata={"help": "Base model: a hub id, a local directory, or 'student' (a 2 M-parameter Llama built "
                          "from scratch, its tokenizer trained on --data: train it with --method full). Default: "
                          "the tiny local model. Both are built into <output_dir>/base-model (offline)."})
    data: list[str] = field(
        default_factory=list,
        metadata={"help": "Training files (our JSONL, released AgentRefine rows, ShareGPT conversations; "
                          "format detected per row). Default: training/data/default.jsonl."})
    mix: str | None = field(
        default=None, metadata={"help": "General chat data (ShareGPT or messages JSONL) mixed into training."})
    mix_ratio: float = field(
        default=0.0, metadata={"help": "Fraction of the final training rows drawn from --mix, in [0, 1)."})
    method: str = field(
        default="lora", metadata={"help": "lora (default) | qlora (4-bit base, CUDA only) | full (all weights)."})
    eval_split: float = field(
        default=0.0, metadata={"help": "Fraction of rows held out for evaluation loss, in [0, 1)."})
    no_mask: bool = field(
        default=False,
        metadata={"help": "Ablation: train on erroneous assistant turns too (no erroneous-loss masking)."})
    merge: bool = field(default=True, metadata={"help": "Write <output_dir>/merged (base + adapter)."})
    plot: bool = field(default=True, metadata={"help": "Write <output_dir>/loss.png."})
    token_metrics: bool = field(
        default=False,
        metadata={"help": "Also log TRL's per-token entropy and top-1 accuracy. They come from TRL's chunked LM "
                          "head, which took about half of each step on the tiny model on CPU "
                          "(benchmarks/train_overhead.py); off, the loss is the model's own cross-entropy, the "
                          "same value."})


# Our defaults where TRL's do not fit (all overridable). bf16 / gradient checkpointing only on a GPU: on a
# CPU they make the tiny model slower and less reproducible.
def _parser_defaults() -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return dict(
        output_dir="runs/agentrefine-sft",
        learning_rate=2e-4,  # a LoRA learning rate; the full fine-tuning recipes set their own
        num_train_epochs=3.0,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=1,
        max_length=2048,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=bool(cuda and torch.cuda.is_bf16_supported()),
        activation_checkpointing=cuda,
        dataloader_pin_memory=cuda,  # pinning needs an accelerator; on a CPU torch only warns about it
        gradient_checkpointing=None,  # deprecated alias in transformers 5; set only activation_checkpointing
        lr_scheduler_type="cosine",
        warmup_steps=0.03,  # a float < 1 is a ratio of the total steps (transformers 5)
    )


def make_parser(prog: str | None = None):
    """TRL's parser over (ScriptArguments, SFTConfig, ModelConfig), with our defaults."""
    from trl import ModelConfig, SFTConfig, TrlParser

    parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig), prog=prog or "python -m training.sft",
                       description="Refinement tuning (AgentRefine) with per-turn loss masks.")
    defaults = _parser_defaults()
    known = {a.dest for a in parser._actions}
    if "activation_checkpointing" not in known:  # transformers < 5.2x: only the older name exists
        defaults["gradient_checkpointing"] = defaults.pop("activation_checkpointing")
    assert set(defaults) <= known, f"stale defaults: {set(defaults) - known}"
    parser.set_defaults(**defaults)
    return parser


def parse_args(argv: list[str] | None = None):
    """``argv`` -> ``(ScriptArguments, SFTConfig, ModelConfig)`` (``--config FILE.yaml`` supported)."""
    parser = make_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv) or not Path(argv[i + 1]).is_file():
            raise InputError("no such config file", where=argv[i + 1] if i + 1 < len(argv) else "--config")
    try:
        return parser.parse_args_and_config(args=argv)
    except ValueError as exc:  # TRL reports unknown config keys as ValueError
        raise InputError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- validation


def validate(script_args: ScriptArguments, training_args, model_args) -> None:
    """Refuse settings that cannot work, naming the argument."""
    import torch

    if model_args.model_name_or_path and not script_args.model:
        script_args.model = model_args.model_name_or_path
    if script_args.method not in METHODS:
        raise InputError(f"unknown method {script_args.method!r}; choose one of {', '.join(METHODS)}",
                         field="method")
    if script_args.model == STUDENT and script_args.method != "full":
        # an adapter on randomly initialised weights learns nothing useful: the student trains all its weights
        raise InputError(f"--model student is built from scratch and needs --method full, not {script_args.method}",
                         field="method")
    if model_args.load_in_4bit or model_args.load_in_8bit:
        if script_args.method == "full":
            raise InputError("a quantized base (--load_in_4bit/8bit) cannot be fully fine-tuned; use --method qlora",
                             field="method")
        script_args.method = "qlora"
    if script_args.method == "qlora":
        if not torch.cuda.is_available():
            raise AgentRefineError(
                "QLoRA (--method qlora / --load_in_4bit) needs a CUDA GPU and bitsandbytes; this machine has no "
                "CUDA device. Use --method lora (the default) on CPU.")
        if not model_args.load_in_8bit:
            model_args.load_in_4bit = True
    model_args.use_peft = script_args.method in ("lora", "qlora")
    for name in ("mix_ratio", "eval_split"):
        value = getattr(script_args, name)
        if not (0.0 <= value < 1.0) or math.isnan(value):
            raise InputError(f"--{name} must be in [0, 1), got {value}", field=name)
    if script_args.mix and script_args.mix_ratio == 0:
        raise InputError("--mix given without --mix_ratio (the fraction of rows to draw from it)", field="mix_ratio")
    if script_args.mix_ratio and not script_args.mix:
        raise InputError("--mix_ratio given without --mix FILE", field="mix")
    if training_args.max_length is not None and training_args.max_length < 8:
        raise InputError(f"--max_length {training_args.max_length} is too small", field="max_length")
    if training_args.packing:
        raise InputError("--packing is not supported: rows are pre-tokenized with their own masks", field="packing")


# ---------------------------------------------------------------------------------------------- loading


def resolve_model(script_args: ScriptArguments, training_args) -> str:
    """The base model path; builds the tiny model when none was given."""
    if not script_args.model:
        from training.tiny import build_tiny_model

        return str(build_tiny_model(Path(training_args.output_dir) / "base-model", seed=0))
    if script_args.model == STUDENT:
        from training.tiny import STUDENT_CONFIG, build_student

        # The method study's student, trained from scratch: its tokenizer learns the words of the rows it trains
        # on. 4k positions (RoPE: no extra weights) for prompts of unseen tasks, which it reads in smaller pieces.
        return str(build_student(Path(training_args.output_dir) / "base-model", script_args.data or [str(DEFAULT_DATA)],
                                 seed=0, config={**STUDENT_CONFIG, "max_position_embeddings": 4096},
                                 general_corpus=True))
    from agentrefine_lg.models import resolve_model as resolve_named_model

    # A local folder, an alias such as gemma-3-270m (converted once into a cached folder), or a hub id.
    return str(resolve_named_model(script_args.model))


def load_tokenizer(model_path: str, training_args, model_args):
    """The model's tokenizer, with ``--chat_template_path`` applied; refuses one without a chat template."""
    from transformers import AutoTokenizer

    from training.data import check_chat_template

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision,
                                                  trust_remote_code=training_args.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load its tokenizer: {str(exc).splitlines()[0]}", where=model_path,
                         field="model") from None
    template_path = training_args.chat_template_path
    if template_path:
        path = Path(template_path)
        if path.is_file():
            tokenizer.chat_template = path.read_text(encoding="utf-8")
        elif path.is_dir():
            tokenizer.chat_template = AutoTokenizer.from_pretrained(str(path)).chat_template
        else:
            raise InputError("no such chat template file or tokenizer directory", where=template_path,
                             field="chat_template_path")
        training_args.chat_template_path = None  # applied here; TRL must not apply it again
    check_chat_template(tokenizer)
    if tokenizer.pad_token is None:  # Llama 3 has none; pads are never attended to nor trained on
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(model_path: str, script_args: ScriptArguments, training_args, model_args):
    import torch
    from transformers import AutoModelForCausalLM
    from trl import get_quantization_config

    kwargs: dict[str, Any] = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype or "auto",
    )
    quantization = get_quantization_config(model_args)
    if quantization is not None:
        from accelerate import PartialState

        # Each process loads its quantized copy onto its own GPU (DDP); bitsandbytes weights cannot move later.
        kwargs.update(quantization_config=quantization, device_map={"": PartialState().local_process_index})
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the model: {str(exc).splitlines()[0]}", where=model_path, field="model") from None
    if script_args.method == "full" and model.dtype == torch.float16:
        # fp16 master weights do not train stably; keep what the user asked for otherwise.
        model = model.float()
    return model


def load_samples(paths: list[str], *, mask: bool, what: str = "data") -> list[Any]:
    from training.data import read_samples

    samples: list[Any] = []
    for path in paths:
        samples.extend(read_samples(path, mask=mask))
    if not samples:
        raise InputError(f"no rows in {', '.join(map(str, paths))}", field=what)
    return samples


def build_datasets(script_args: ScriptArguments, training_args, tokenizer):
    """Tokenize refinement rows (+ general chat mix) and split off the eval set; returns (train, eval, stats)."""
    from datasets import concatenate_datasets

    from training.data import build_dataset

    mask = not script_args.no_mask
    paths = script_args.data or [str(DEFAULT_DATA)]
    samples = load_samples(paths, mask=mask)
    train, stats = build_dataset(samples, tokenizer, max_length=training_args.max_length, mask=mask)
    info: dict[str, Any] = {"data": [str(p) for p in paths], "refinement": stats.to_dict(), "mix": None}
    if len(train) == 0:
        raise InputError(
            f"all {stats.rows_in} rows were dropped: {stats.dropped_no_trainable} have no trainable assistant turn, "
            f"{stats.dropped_truncated} lose every trainable token at --max_length {training_args.max_length}",
            field="data")
    if script_args.mix:
        general = load_samples([script_args.mix], mask=True, what="mix")
        random.Random(training_args.seed).shuffle(general)
        r = script_args.mix_ratio
        wanted = round(len(train) * r / (1 - r))
        mixed, mix_stats = build_dataset(general[:wanted], tokenizer, max_length=training_args.max_length)
        info["mix"] = {"file": script_args.mix, "ratio": r, "wanted": wanted, "available": len(general),
                       **mix_stats.to_dict()}
        if len(mixed):
            train = concatenate_datasets([train, mixed])
    train = train.shuffle(seed=training_args.seed)
    evaluation = None
    if script_args.eval_split > 0:
        n_eval = max(1, round(len(train) * script_args.eval_split))
        if n_eval >= len(train):
            raise InputError(f"--eval_split {script_args.eval_split} leaves no training rows out of {len(train)}",
                             field="eval_split")
        split = train.train_test_split(test_size=n_eval, seed=training_args.seed, shuffle=False)
        train, evaluation = split["train"], split["test"]
    info["train_rows"], info["eval_rows"] = len(train), len(evaluation) if evaluation is not None else 0
    return train, evaluation, info


def build_trainer(script_args: ScriptArguments, training_args, model_args):
    """Everything up to ``trainer.train()``: validated args, model, tokenizer, datasets, ``SFTTrainer``.

    Returns the trainer; ``trainer.agentrefine_info`` holds the data report and the base model path.
    """
    from transformers import set_seed
    from trl import get_peft_config

    validate(script_args, training_args, model_args)
    set_seed(training_args.seed)
    model_path = resolve_model(script_args, training_args)
    tokenizer = load_tokenizer(model_path, training_args, model_args)
    train, evaluation, info = build_datasets(script_args, training_args, tokenizer)
    # Our rows are final: TRL must not re-tokenize, re-truncate or filter them.
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    training_args.assistant_only_loss = False
    training_args.completion_only_loss = False
    if evaluation is not None and training_args.eval_strategy == "no":
        training_args.eval_strategy = "epoch"
    model = load_model(model_path, script_args, training_args, model_args)
    trainer = _trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args) if model_args.use_peft else None,
    )
    trainer.token_metrics = script_args.token_metrics
    info.update(base_model=model_path, method=script_args.method, mask=not script_args.no_mask)
    trainer.agentrefine_info = info
    _quiet_progress(trainer)
    return trainer


_TRAINER: type | None = None


def _trainer_class() -> type:
    """TRL's ``SFTTrainer`` whose loss, unless ``token_metrics`` is on, is the model's own cross-entropy.

    TRL 1.16 computes every loss through a chunked LM head that also yields per-token entropy and top-1 for its
    logged metrics; on small models on CPU that head is about half of the step. Without it the loss is the same
    number (mean negative log-likelihood over the trainable tokens), and ``num_tokens`` is still logged.
    """
    global _TRAINER
    if _TRAINER is None:
        from transformers import Trainer
        from trl import SFTTrainer

        class RefinementSFTTrainer(SFTTrainer):
            token_metrics: bool = True

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                if self.token_metrics:
                    return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                                num_items_in_batch=num_items_in_batch)
                inputs["use_cache"] = False
                out = Trainer.compute_loss(self, model, inputs, return_outputs=return_outputs,
                                           num_items_in_batch=num_items_in_batch)
                mode = "train" if self.model.training else "eval"
                if mode == "train":  # TRL's own token count (what train_log.json's tokens/s is computed from)
                    seen = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                    self._total_train_tokens += seen // self._tp_size
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
                return out

        _TRAINER = RefinementSFTTrainer
    return _TRAINER


def _quiet_progress(trainer) -> None:
    """One bar (or a few log lines) with the latest loss, instead of a printed dict per logging step.

    transformers' ProgressCallback writes every log dict under its bar and PrinterCallback prints it when
    tqdm is off; train_log.json keeps every step, so the console only needs the progress.
    """
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    from agentrefine_lg.progress import progress_bar

    class LossProgress(TrainerCallback):
        def __init__(self) -> None:
            self.bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.bar = progress_bar(state.max_steps, "train", "steps", initial=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and "loss" in logs:
                self.bar.set_postfix(loss=float(logs["loss"]), refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(LossProgress())


# ---------------------------------------------------------------------------------------------- outputs


def _resume_arg(value: str | None):
    if value is None or value == "":
        return None
    if str(value).lower() in {"true", "last", "latest"}:
        return True
    if not Path(value).is_dir():
        raise InputError("no such checkpoint directory", where=value, field="resume_from_checkpoint")
    return value


def write_loss_plot(log_history: list[dict], path: Path, *, model: str | None = None) -> None:
    """``loss.png``: train (and eval) loss per step on a y-axis from 0, first and last values labelled.

    A y-axis from 0 keeps a flat curve flat: autoscaling a loss that moves in the third decimal draws noise
    as a trend.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    if steps:
        ax.plot(*zip(*steps), marker="." if len(steps) < 40 else None, label="train loss (trainable tokens)")
        for (x, y), align in ((steps[0], "left"), (steps[-1], "right")):
            ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha=align, fontsize=8)
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss")
    values = [v for _, v in steps + evals]
    ax.set_ylim(0, max(values) * 1.15 if values else 1.0)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (cross-entropy, nats/token)")
    ax.set_title("Refinement tuning: loss per step")
    if steps or evals:
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
    if model:
        fig.text(0.01, 0.01, f"base model: {model}", fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.04 if model else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def train(script_args: ScriptArguments, training_args, model_args) -> dict[str, Any]:
    """Train and write every output; returns the ``train_log.json`` content."""
    started = time.time()
    trainer = build_trainer(script_args, training_args, model_args)
    info = trainer.agentrefine_info
    out = Path(training_args.output_dir)
    result = trainer.train(resume_from_checkpoint=_resume_arg(training_args.resume_from_checkpoint))
    main = trainer.accelerator.is_main_process
    tokenizer = trainer.processing_class
    if model_args.use_peft:
        trainer.save_model(str(out))  # the adapter (adapter_config.json + adapter_model.safetensors)
    else:
        trainer.save_model(str(out / "merged"))  # full fine-tuning: the model itself is the servable one
    history = list(trainer.state.log_history)
    runtime = float(result.metrics.get("train_runtime") or (time.time() - started))
    seen = next((h["num_tokens"] for h in reversed(history) if "num_tokens" in h), None)
    if seen is None:
        seen = sum(len(x) for x in trainer.train_dataset["input_ids"]) * training_args.num_train_epochs
    log = {
        **info,
        "output_dir": str(out),
        "steps": [{"step": h["step"], "loss": h["loss"], "learning_rate": h.get("learning_rate"),
                   "epoch": h.get("epoch")} for h in history if "loss" in h],
        "eval": [{"step": h["step"], "eval_loss": h["eval_loss"]} for h in history if "eval_loss" in h],
        "train_runtime_s": runtime,
        "tokens_seen": int(seen),
        "tokens_per_second": float(seen) / runtime if runtime > 0 else None,
        # The last logged step's loss; TrainOutput.training_loss is the mean over all steps.
        "final_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
        "mean_loss": result.training_loss,
        "dropped_rows": info["refinement"]["dropped"] + ((info["mix"] or {}).get("dropped") or 0),
        "args": {"script": {f.name: getattr(script_args, f.name) for f in fields(script_args)},
                 "learning_rate": training_args.learning_rate, "num_train_epochs": training_args.num_train_epochs,
                 "per_device_train_batch_size": training_args.per_device_train_batch_size,
                 "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
                 "max_length": training_args.max_length, "seed": training_args.seed,
                 "lora_r": model_args.lora_r if model_args.use_peft else None},
    }
    if hasattr(trainer, "end"):
        trainer.end()
    del trainer
    gc.collect()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
        if model_args.use_peft and script_args.merge:
            from training.merge import merge_adapter

            # Merge into a fresh full-precision copy of the base (never into 4-bit QLoRA weights).
            merge_adapter(info["base_model"], out, out / "merged", tokenizer=tokenizer)
        log["merged"] = str(out / "merged") if (out / "merged" / "config.json").exists() else None
        log["wall_s"] = time.time() - started
        (out / "train_log.json").write_text(json.dumps(log, indent=2, default=str), encoding="utf-8")
        if script_args.plot:
            write_loss_plot(history, out / "loss.png", model=info["base_model"])
    return log


# ---------------------------------------------------------------------------------------------- entry points


def main(argv: list[str] | None = None) -> int:
    try:
        script_args, training_args, model_args = parse_args(argv)
        log = train(script_args, training_args, model_args)
    except AgentRefineError as exc:
        print(f"training.sft: error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun/accelerate only the main process reports
        return 0
    print(summary_line(log))
    return 0


def summary_line(log: dict[str, Any]) -> str:
    """One line on a finished run: rows, time, throughput, the last step's loss and the mean loss."""
    first = log["steps"][0]["loss"] if log.get("steps") else None
    loss = ("no loss logged" if log.get("final_loss") is None else
            f"loss {first:.4f} at step {log['steps'][0]['step']} -> {log['final_loss']:.4f} at step {log['steps'][-1]['step']} "
            f"(mean over training {log['mean_loss']:.4f})")
    return (f"trained {log['train_rows']} rows ({log['refinement']['dropped']} dropped) in "
            f"{log['train_runtime_s']:.1f}s, {log['tokens_per_second'] or 0:.0f} tokens/s, {loss}; "
            f"outputs in {log['output_dir']}")


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    """``agentrefine train``: the same arguments as ``python -m training.sft``."""
    source = make_parser(prog=parser.prog)
    for action in source._actions:
        if "-h" in action.option_strings:
            continue
        # Only arguments given on the command line reach cli_run; defaults come from the TRL parser
        # there, after any --config file, so precedence matches python -m training.sft.
        action.default = argparse.SUPPRESS
        action.required = False
        parser._add_action(action)
    parser.add_argument("--config", default=argparse.SUPPRESS, help="YAML file of arguments (TRL recipe format)")


def cli_run(args: argparse.Namespace) -> int:
    script_args, training_args, model_args = parse_namespace(args)
    log = train(script_args, training_args, model_args)
    print(summary_line(log))
    return 0


def parse_namespace(args: argparse.Namespace):
    """The dataclasses for ``agentrefine train``'s namespace: defaults < --config file < given arguments."""
    given = dict(vars(args))
    config = given.pop("config", None)
    parser = make_parser()
    if config:
        import yaml

        if not Path(config).is_file():
            raise InputError("no such config file", where=config)
        loaded = yaml.safe_load(Path(config).read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise InputError("a config file must hold a YAML mapping", where=config)
        for key, value in (loaded.pop("env", None) or {}).items():
            os.environ[key] = str(value)
        unknown = parser.set_defaults_with_config(**loaded)
        if unknown:
            raise InputError(f"unknown keys {unknown[::2]}", where=config)
    parser.set_defaults_with_config(**given)
    return parser.parse_args_into_dataclasses(args=[])


if __name__ == "__main__":
    raise SystemExit(main())
