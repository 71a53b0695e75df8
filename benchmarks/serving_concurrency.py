"""Concurrent requests on the CPU backend, with and without continuous batching (``agentrefine serve
--no-batching``): a lone request's latency (paired) and requests/s at concurrency 4 as a ratio of concurrency 1.

    python benchmarks/serving_concurrency.py [--model DIR] [--max-tokens 48] [--rounds 20] [--pairs 30]

The model is the tiny local one unless ``--model`` names a folder. Each request: a ~300-token system prompt and a
short user turn, greedy, ``max_tokens`` new tokens. Both servers run at once and lone requests alternate between
them (``--pairs`` pairs, order flipped every pair), so load drifts hit both alike: the median latency ratio is the
lone-request goal (batching >= 0.95x the speed of one at a time). Then each server alone at concurrency 1 and 4
(``--rounds`` requests per slot). One ``httpx.Client`` is kept per benchmark, as the openai SDK and
langchain-openai keep theirs: ``httpx.post()`` builds a new SSL context per call, which took most of a lone
request's client time in a py-spy profile, in this same process as the server (2026-12-03).

Measured 2026-12-03, 2 AVX2 cores, nothing else running (the benchmark itself keeps both cores busy): see
docs/benchmarks.md. Earlier: 2026-11-26 (load 1.6, ``httpx.post`` per request, 3 requests at concurrency 1) gave a
lone request 2.5x slower with batching; with a kept client and 30 paired requests batching was 0.77-0.93x, and
since lone requests run plain ``generate`` 0.99-1.02x.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
MODES = ("batching", "one at a time")


def _body(model_name: str, max_tokens: int) -> dict:
    return {"model": model_name, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": "You are an agent in a text world. " * 40},
                         {"role": "user", "content": "You are in a room with a red door. What now?"}]}


def main() -> None:
    import httpx

    from agentrefine_lg.serving.server import start_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the tiny local model)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=20, help="requests per concurrency slot")
    parser.add_argument("--pairs", type=int, default=30, help="alternated lone requests per server")
    args = parser.parse_args()
    client = httpx.Client(timeout=300, headers={"Authorization": "Bearer bench"})

    def one(server, _: int = 0) -> float:
        started = time.perf_counter()
        r = client.post(f"{server.base_url}/chat/completions", json=_body(server.model_name, args.max_tokens))
        r.raise_for_status()
        return time.perf_counter() - started

    def serve(stack: ExitStack, model: str, mode: str):
        return stack.enter_context(start_server(model, backend="transformers", api_key="bench",
                                                batching=mode == "batching"))

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if not model:
            from training.tiny import build_tiny_model

            model = str(build_tiny_model(Path(tmp) / "tiny"))
        with ExitStack() as stack:
            servers = {mode: serve(stack, model, mode) for mode in MODES}
            for server in servers.values():  # warm-up: the first request builds the manager / generation thread
                one(server)
            lone: dict[str, list[float]] = {mode: [] for mode in MODES}
            for i in range(args.pairs):
                for mode in MODES if i % 2 == 0 else MODES[::-1]:
                    lone[mode].append(one(servers[mode]))
        med = {mode: statistics.median(v) for mode, v in lone.items()}
        print(f"lone request, paired ({args.pairs} each, alternated): batching {med['batching'] * 1000:.1f} ms, "
              f"one at a time {med['one at a time'] * 1000:.1f} ms (median); batching runs at "
              f"{med['one at a time'] / med['batching']:.2f}x the speed of one at a time")
        # Throughput with one server in the process: a second, idle one cut batching's gain at 4 from about 2.2x
        # to 1.15-1.36x in two runs here.
        for mode in MODES:
            with ExitStack() as stack:
                server = serve(stack, model, mode)
                one(server)
                rates = {}
                for concurrency in (1, 4):
                    started = time.perf_counter()
                    with cf.ThreadPoolExecutor(concurrency) as pool:
                        list(pool.map(lambda i: one(server, i), range(concurrency * args.rounds)))
                    rates[concurrency] = concurrency * args.rounds / (time.perf_counter() - started)
            label = "continuous batching" if mode == "batching" else mode
            print(f"{label:20s} concurrency 1: {rates[1]:.2f} req/s, concurrency 4: {rates[4]:.2f} req/s, "
                  f"ratio {rates[4] / rates[1]:.2f}")
    client.close()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
