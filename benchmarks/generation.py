"""Why a short reply of a small model costs what it does: ``generate`` against a bare KV-cache loop (the limit).

    python benchmarks/generation.py [--model DIR] [--prompt-tokens 1800] [--new-tokens 48] [--threads 1,2] [--busy]

For each torch thread count: tokens/s of ``model.generate`` (greedy, what the CPU server runs), of the in-process
model's engine (``agentrefine_lg.serving.local_model``: its own decoding loop with a cache grown in place, one request, no
cached prefix) and of a bare loop (one forward pass over the prompt, then one forward per new token with the KV
cache, argmax), and their ratios to the bare loop. ``--busy`` runs the same measurements beside a process that keeps one core busy (as the harness
and the engines do during an evaluation), to show what thread oversubscription costs. Prints the machine's load.
The model is the tiny local one unless ``--model`` names a folder.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _burn(stop) -> None:  # a busy neighbour: pure Python, one core
    x = 0
    while not stop.is_set():
        for i in range(100_000):
            x += i * i


def bare_loop(model, ids, new_tokens: int) -> float:
    """Seconds for prefill + ``new_tokens`` single-token steps with the KV cache (no sampling machinery)."""
    import torch
    from transformers import DynamicCache

    started = time.perf_counter()
    with torch.inference_mode():
        cache = DynamicCache()
        out = model(input_ids=ids, cache=cache, use_cache=True)  # the cache object is filled in place
        token = out.logits[:, -1:].argmax(-1)
        for _ in range(new_tokens - 1):
            out = model(input_ids=token, cache=cache, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
    return time.perf_counter() - started


def with_generate(model, ids, new_tokens: int) -> float:
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
    assert out.shape[1] - ids.shape[1] == new_tokens
    return time.perf_counter() - started


def with_engine(batcher, ids, new_tokens: int) -> float:
    batcher.reset()  # no cached prefix: the whole prompt is computed, as for generate and the bare loop
    started = time.perf_counter()
    out = batcher.submit(ids[0].tolist(), new_tokens)
    assert len(out) == new_tokens
    return time.perf_counter() - started


def measure(model_dir: str, prompt_tokens: int, new_tokens: int, threads: int,
            repeats: int) -> tuple[float, float, float]:
    import torch

    from agentrefine_lg.serving import local_model

    torch.set_num_threads(threads)
    # a generation thread of its own, started after set_num_threads (a running thread keeps the count it began with)
    batcher = local_model._Batcher(*local_model._load(model_dir, "cpu"), "cpu")
    batcher.stops = set()  # every reply runs its full length, as min_new_tokens makes generate do
    model = batcher.model
    ids = torch.randint(10, model.config.vocab_size - 10, (1, prompt_tokens))
    with_generate(model, ids, 4)
    with_engine(batcher, ids, 4)
    bare_loop(model, ids, 4)  # warm-up
    gen = min(with_generate(model, ids, new_tokens) for _ in range(repeats))
    engine = min(with_engine(batcher, ids, new_tokens) for _ in range(repeats))
    bare = min(bare_loop(model, ids, new_tokens) for _ in range(repeats))
    return new_tokens / gen, new_tokens / engine, new_tokens / bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the tiny local model)")
    parser.add_argument("--prompt-tokens", type=int, default=1800)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--threads", default="1,2", help="torch thread counts to try")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--busy", action="store_true", help="also measure beside a process keeping one core busy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from training.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        for busy in ([False, True] if args.busy else [False]):
            stop = multiprocessing.Event()
            neighbour = multiprocessing.Process(target=_burn, args=(stop,), daemon=True) if busy else None
            if neighbour:
                neighbour.start()
            try:
                for threads in (int(t) for t in args.threads.split(",")):
                    gen, engine, bare = measure(model, args.prompt_tokens, args.new_tokens, threads, args.repeats)
                    print(f"{'busy neighbour' if busy else 'idle':14s} threads {threads}: generate {gen:7.1f} tokens/s "
                          f"(ratio {gen / bare:.2f}), in-process engine {engine:7.1f} ({engine / bare:.2f}), "
                          f"bare KV-cache loop {bare:7.1f} ({args.prompt_tokens}-token prompt, "
                          f"{args.new_tokens} new tokens)", flush=True)
            finally:
                if neighbour:
                    stop.set()
                    neighbour.join()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
