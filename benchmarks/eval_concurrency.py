"""Whole evaluation episodes at once: steps/s with 4 (and 8) concurrent episodes as a ratio of one at a time, for an
in-process model (``agentrefine eval --model-dir``: episodes in threads, their replies decoded together by one
generation thread that keeps each episode's KV cache between turns) — issue 15's goal is >= 2.5 on 2 cores.

    python benchmarks/eval_concurrency.py [--model DIR] [--task babyai] [--episodes 8] [--max-steps 6]
    python benchmarks/eval_concurrency.py --student-decode [300 1100]   # the bound for the study's student

The model is the tiny local one unless ``--model`` names a folder; its replies are not valid actions, so every
episode runs its full ``--max-steps`` and the two runs do the same work. Prints steps/s, the ratio, how many
rows each decoding step took on average, the share of prompt tokens that came from the cache, and the machine's load.

Measured (2 cores, load 1.2-1.7, 16 episodes x 8 steps), before -> after continuous batching and prefix caching
in ``local_model``: the tiny model on BabyAI 25.2 -> 29.8 steps/s alone and 32.0 -> 50.2 with 4 (ratio 1.27 -> 1.68);
the study's 2.26 M student on grounded worlds (``--model runs/study/train/refine-s0/merged --task textworld
--max-tokens 128``, ``AGENTREFINE_EVAL_WORLDS`` set) 7.3 -> 12.7 alone and 5.6 -> 12.6 with 4 (0.77 -> 0.99).

2026-12-04, from a clean clone (2 Intel Xeon cores with AVX-512 and AMX, float32 as the engine runs on a CPU; load
0.7-1.0): the tiny model on BabyAI, 16 episodes x 8 steps, 20.2 steps/s alone and 40.5 with 4: ratio 2.01; in the
working tree later (load 0.8-1.9) 2.08 and 1.96 with 4, 2.83 and 2.46 with 8 (``agentrefine eval``'s default for an
in-process model on 2 cores), 3.2 with 16. ``--student-decode`` (the student's architecture, randomly initialised,
decoding in the engine's batch cache alone, best of 3 x 64 steps): with 1,100-token rows 2.03 ms a step for one row
and 3.83 ms for four, so 4 rows decode 2.12x the rows/s of one (2.37x with 2 torch threads); with 300-token rows
2.72x (2.64x). More rows (later runs, 1,100 tokens): 8 rows 2.65-2.78x (1 thread) and 2.97-3.13x (2 threads), 16
rows 2.23-2.33x and 2.95-3.29x, 32 rows 2.54x and 3.20x: past 8 rows the cache reads set the pace. torch's profiler
over those steps (1 thread): one row 2.65 ms, of which matrix products (the weights) 35 % and SDPA's CPU
flash-attention kernel 25 %; four rows 4.67 ms, products 33 % (1.66x one row's) and attention 40 % (2.8x): each
row's attention reads its own KV cache, 6.8 MB at 1,100 tokens, at about 14 GB/s, and no batching shares that.
A trained student (the method study's mix arm, 300 steps, from ``examples/small_model_study/run.py --n-train 96
--arms mix --steps 300``; ``--task textworld --max-tokens 128`` on its evaluation worlds, load 0.5-1.8): 10.3-11.3
steps/s alone; with 4 episodes 1.33-1.39x in nine runs, with 8 1.30-1.38x before answered rows left the batch lazily
and 1.47-1.51x after. py-spy over the 4-episode run, before: the generation thread busy all the time, 56 % decoding,
23 % rows joining and leaving the batch (``_pack`` copies every row's cache each time, and a trained student's short
replies join and leave every turn), 16 % prefill. Now an answered row's slot stays until the next repack, usually
its episode's next prompt, so a turn costs one repack instead of two. Not zeroing the packed buffer was tried too:
no change in four runs, not kept. A cache with a slot per row that is never repacked would remove most of what is
left of the 23 %; the decoding bound above would still cap 4 episodes below 2.5x.

Decoding is most of an episode's time (below: 6.5 s of the generation thread's 8.6 with 4 episodes) and a prompt's
prefill is computed per row, so 4 episodes of the student gain less than their decoding's 2.1-2.4x: 2.5x would need
one episode alone to leave the generation thread idle for a quarter of its time or more, and the episodes of a
trained student with a 1,100-token conversation did not (1.01-1.11x, 2026-11-26). Shorter conversations (2.7x at 300
tokens of decoding) or a model with fewer KV heads could; the architecture is the study's, fixed by its training
runs.

Where the time goes (py-spy and timers in the generation thread, which is busy all the time with 4 episodes):
- the student: decoding steps 6.5 s of 8.6, prompts' new tokens 1.3 s, joining/leaving the batch 0.8 s. A step
  costs 1.27 ms for one row and 4.1 ms for 3.4 rows: the same per row. Its attention reads each row's KV cache,
  6.6 MB in float32 for a 1,100-token conversation (4 layers x 2 x 192 x 4 B a token); one row stays in the L2/L3
  caches from one step to the next, four (26 MB) do not, and memory bandwidth sets the pace. bfloat16 is slower on
  this CPU (2.3 vs 1.35 ms a step), and the architecture is fixed by training, so batching cannot give more here;
  shorter conversations would.
- the tiny model (KV cache 20x smaller), timed again per part of the generation thread (2026-11-26, 16 x 8 steps):
  alone, 6,013 decoding steps of 0.49 ms (2.94 s), 128 prompts' new tokens at 3.4 ms each (0.44 s) and 0.84 s
  with the thread idle while the episode's graph, environment and chat template run (and the run's report). With
  4 episodes: 1,506 steps of 4 rows at 0.74 ms (1.11 s), prompts at 4.9 ms each (0.63 s), idle 0.65 s. The
  untrained model's replies all run to their 48-token cap, so the episodes stay in lockstep: each round is 48
  batched steps (35 ms), then four episodes' Python one at a time under the GIL (about 20 ms), then four prefills
  one after another (about 20 ms) -- about 75 ms for 4 steps against 32 ms for one step alone. Even with the
  episodes' Python hidden completely, decoding and prefill alone would give 4.3 s / 1.75 s = 2.45. A prefill of
  250 new tokens after 1,550 cached ones spends 64 % of its 3.4 ms in SDPA's CPU attention kernel (about 125
  GFLOP/s on these cores): compute that batching cannot share.
- transformers' own continuous batching (``init_continuous_batching``: paged attention, prefix block sharing,
  page 32), in-process on the student's episodes: 6.5 steps/s alone and 9.1-9.7 with 4, below ours.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def measure(model_dir: str, task: str, episodes: int, max_steps: int, workers: int, max_tokens: int) -> float:
    from agentrefine_lg.eval.harness import ModelSpec, run_eval
    from agentrefine_lg.serving import local_model

    spec = ModelSpec(local=model_dir, max_tokens=max_tokens)
    batcher = local_model._batcher(model_dir, "cpu")
    batcher.reset()  # this run's counts, and no conversation cached by an earlier run
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        run_eval(tasks=[task], episodes=episodes, model=spec, out=out, max_steps=max_steps, workers=workers,
                 embeddings=False, preflight=False)
        elapsed = time.perf_counter() - started
        rows = (Path(out) / "episodes.jsonl").read_text().splitlines()
    import json

    steps = sum(int(json.loads(r)["steps"]) for r in rows)
    print(f"workers {workers}: {steps} steps in {elapsed:.1f}s = {steps / elapsed:.2f} steps/s ("
          f"{batcher.prompts} prompts, {batcher.rows / max(batcher.steps, 1):.1f} rows per decoding step, "
          f"{batcher.reused / max(batcher.reused + batcher.prefilled, 1):.0%} of prompt tokens reused)", flush=True)
    return steps / elapsed


def decode_bound(model: object, context: int, steps: int = 64) -> dict[int, float]:
    """Milliseconds per decoding step of ``model`` in the engine's batch cache (``local_model._pack``: left-padded,
    grown in place) with 1, 4, 8 and 16 rows of about ``context`` tokens: decoding alone, the part of an episode's time
    that batching can share, so 4 x ms(1) / ms(4) bounds what 4 concurrent episodes can gain."""
    import torch
    from transformers import DynamicCache

    from agentrefine_lg.serving.local_model import _pack

    vocab = model.config.vocab_size

    def one(batch: int) -> float:
        rows = []
        with torch.inference_mode():
            for b in range(batch):
                n = context - 37 * (b % 8)  # rows of different lengths, as episodes' conversations are
                out = model(input_ids=torch.randint(0, vocab, (1, n)), cache=DynamicCache(), use_cache=True,
                            logits_to_keep=1)
                rows.append(([(layer.keys, layer.values) for layer in out.cache.layers], 0, n))
            cache, mask = _pack(rows, steps + 1)
            tokens = torch.zeros(batch, 1, dtype=torch.long)
            started = time.perf_counter()
            for s in range(steps):
                mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
                position = torch.tensor([[n + s] for _, _, n in rows])
                out = model(input_ids=tokens, position_ids=position, attention_mask=mask, cache=cache, use_cache=True)
                tokens = out.logits[:, -1].argmax(-1, keepdim=True)
            return (time.perf_counter() - started) / steps * 1000

    one(1), one(4)  # warm-up
    return {batch: min(one(batch) for _ in range(3)) for batch in (1, 4, 8, 16)}


def student_decode(context: int) -> None:
    """The decoding bound for the method study's student architecture (``training.tiny.STUDENT_CONFIG``, randomly
    initialised: the speed of a step does not depend on the weights), at each torch thread count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.tiny import STUDENT_CONFIG, STUDENT_VOCAB_SIZE

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=STUDENT_VOCAB_SIZE, **STUDENT_CONFIG)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config).eval()
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        ms = decode_bound(model, context)
        print(f"student architecture, decoding alone, {context}-token rows, {n} torch thread(s): "
              + ", ".join(f"{b} row(s) {t:.2f} ms/step" for b, t in ms.items())
              + "; rows/s / one row's: " + ", ".join(f"{b} rows {b * ms[1] / t:.2f}" for b, t in ms.items() if b > 1),
              flush=True)
    torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the tiny local model)")
    parser.add_argument("--task", default="babyai")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 8],
                        help="concurrent episodes to compare with one (default 4, the goal's, and 8, agentrefine "
                             "eval's default for an in-process model on 2 cores)")
    parser.add_argument("--student-decode", type=int, nargs="*", metavar="TOKENS",
                        help="only the decoding bound of the study's student architecture, at these context lengths "
                             "(default 300 1100): no trained student needed")
    args = parser.parse_args()
    if args.student_decode is not None:
        for context in args.student_decode or (300, 1100):
            student_decode(context)
        print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from training.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        measure(model, args.task, 2, 2, 1, args.max_tokens)  # warm-up: load the model and the engine
        one = measure(model, args.task, args.episodes, args.max_steps, 1, args.max_tokens)
        many = {w: measure(model, args.task, args.episodes, args.max_steps, w, args.max_tokens) for w in args.workers}
    for w, rate in many.items():
        print(f"steps/s ratio, {w} concurrent episodes / 1: {rate / one:.2f}" + (" (goal >= 2.5)" if w == 4 else ""))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
