"""Merge a LoRA adapter into its base model: ``python -m training.merge --base B --adapter A --out O``.

The output directory is a plain model (safetensors weights, config, generation config, tokenizer and
``chat_template.jinja``) that ``transformers`` loads and ``vllm serve O`` serves; no PEFT needed.
The base is loaded in full precision (its own dtype, never 4-bit), so QLoRA adapters merge exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError


def _check_adapter(adapter: Path) -> dict[str, Any]:
    config = adapter / "adapter_config.json"
    if not config.is_file():
        raise InputError("not a PEFT adapter directory (no adapter_config.json)", where=str(adapter), field="adapter")
    return json.loads(config.read_text(encoding="utf-8"))


def merge_adapter(
    base: str | os.PathLike,
    adapter: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tokenizer=None,
    dtype: str = "auto",
) -> Path:
    """Load ``base``, apply the adapter, merge the LoRA weights in, save model + tokenizer to ``out``.

    ``tokenizer`` defaults to the one saved with the adapter (it carries the chat template used in
    training), else the base model's.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    _check_adapter(adapter)
    base = str(base)
    if not Path(base).exists() and base.startswith((".", "/", "~")):
        raise InputError("no such base model directory", where=base, field="base")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the base model: {str(exc).splitlines()[0]}", where=base, field="base") from None
    try:
        model = PeftModel.from_pretrained(model, str(adapter))
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"adapter does not fit this base model: {str(exc).splitlines()[0]}",
                         where=str(adapter), field="adapter") from None
    with torch.no_grad():
        merged = model.merge_and_unload()
    if tokenizer is None:
        source = str(adapter) if (adapter / "tokenizer_config.json").exists() else base
        tokenizer = AutoTokenizer.from_pretrained(source)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    if tokenizer.chat_template:
        # vLLM and transformers both read chat_template.jinja; write it even if a version did not.
        (out / "chat_template.jinja").write_text(tokenizer.chat_template, encoding="utf-8")
    return out


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="base model (hub id or local directory)")
    parser.add_argument("--adapter", required=True, help="LoRA adapter directory (training output_dir)")
    parser.add_argument("--out", required=True, help="output directory for the merged model")
    parser.add_argument("--dtype", default="auto", help="dtype to load the base in (default: its own)")


def cli_run(args: argparse.Namespace) -> int:
    out = merge_adapter(args.base, args.adapter, args.out, dtype=args.dtype)
    print(f"merged {args.adapter} into {args.base} -> {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.merge", description=__doc__.splitlines()[0])
    cli_add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cli_run(args)
    except AgentRefineError as exc:
        print(f"training.merge: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
