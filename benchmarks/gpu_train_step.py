"""One real refinement-tuning run on a GPU through the same code path as ``python -m training.sft``.

Builds a randomly initialised Llama of a chosen size (no hub needed) with the tiny tokenizer, then trains it with
``training.sft`` on the shipped default data in bf16 and prints tokens/s from ``train_log.json``. Used for the GPU
check of the training issue; on a CPU it runs too (slowly), which is how it is smoke-tested.

    python benchmarks/gpu_train_step.py --size 160m --steps 20 --method full
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # hidden, layers, heads, intermediate
    "tiny": (64, 2, 4, 128),
    "160m": (768, 12, 12, 3072),
    "410m": (1024, 24, 16, 4096),
}


def build(size: str, out: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    hidden, layers, heads, inter = SIZES[size]
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, intermediate_size=inter, max_position_embeddings=4096,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(SIZES), default="160m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--method", choices=["lora", "full"], default="full")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import torch

    from training import sft

    work = Path(args.out or tempfile.mkdtemp(prefix="gpu-step-"))
    model_dir = build(args.size, work / "model")
    params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model_dir).parameters())
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    argv = ["--model", str(model_dir), "--output_dir", str(work / "train"), "--method", args.method,
            "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch),
            "--max_length", str(args.max_length), "--num_train_epochs", "100", "--merge", "false", "--plot", "false"]
    if bf16:
        argv += ["--bf16", "true"]
    start = time.perf_counter()
    code = sft.main(argv)
    wall = time.perf_counter() - start
    log = json.loads((work / "train" / "train_log.json").read_text())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    print(json.dumps({
        "device": device, "bf16": bf16, "size": args.size, "parameters": params, "method": args.method,
        "steps": len(log["steps"]), "batch": args.batch, "max_length": args.max_length,
        "tokens_seen": log["tokens_seen"], "train_runtime_s": round(log["train_runtime_s"], 2),
        "tokens_per_second": round(log["tokens_per_second"] or 0, 1), "first_loss": log["steps"][0]["loss"],
        "last_loss": log["steps"][-1]["loss"], "wall_s": round(wall, 1),
        "peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None,
    }, indent=1))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
