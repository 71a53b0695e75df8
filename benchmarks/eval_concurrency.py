"""Whole evaluation episodes at once: steps/s with 4 concurrent episodes as a ratio of one at a time, for an
in-process model (``agentrefine eval --model-dir``: episodes in threads, their replies decoded together by one
generation thread that keeps each episode's KV cache between turns) — issue 15's goal is >= 2.5 on 2 cores.

    python benchmarks/eval_concurrency.py [--model DIR] [--task babyai] [--episodes 8] [--max-steps 6]

The model is the tiny local one unless ``--model`` names a folder; its replies are not valid actions, so every
episode runs its full ``--max-steps`` and the two runs do the same work. Prints steps/s, the ratio, how many
rows each decoding step took on average, the share of prompt tokens that came from the cache, and the machine's load.

Measured (2 cores, load 1.2-1.7, 16 episodes x 8 steps), before -> after continuous batching and prefix caching
in ``local_model``: the tiny model on BabyAI 25.2 -> 29.8 steps/s alone and 32.0 -> 50.2 with 4 (ratio 1.27 -> 1.68);
the study's 2.26 M student on grounded worlds (``--model runs/study/train/refine-s0/merged --task textworld
--max-tokens 128``, ``AGENTREFINE_EVAL_WORLDS`` set) 7.3 -> 12.7 alone and 5.6 -> 12.6 with 4 (0.77 -> 0.99).

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
    from agentrefine_lg import local_model
    from agentrefine_lg.eval.harness import ModelSpec, run_eval

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the tiny local model)")
    parser.add_argument("--task", default="babyai")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from training.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        measure(model, args.task, 2, 2, 1, args.max_tokens)  # warm-up: load the model and the engine
        one = measure(model, args.task, args.episodes, args.max_steps, 1, args.max_tokens)
        four = measure(model, args.task, args.episodes, args.max_steps, 4, args.max_tokens)
    print(f"steps/s ratio, 4 concurrent episodes / 1: {four / one:.2f} (goal >= 2.5); "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
