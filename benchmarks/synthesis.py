"""Synthesis throughput against an OpenAI-compatible endpoint with a fixed latency, as a ratio of the ideal.

    python benchmarks/synthesis.py [--latency 0.5] [--jitter 0] [--concurrency 1 8 64] [--workers 1 2] [--rounds 4]

A local server (a separate process, stdlib asyncio) answers every chat completion after exactly ``L``
seconds (``--jitter J``: uniformly from L(1-J) to L(1+J)): the paper's script for script prompts, the paper's
trajectory for trajectory prompts, so every persona is accepted with 2 LLM calls (one-shot mode). The real client
stack runs: ``langchain-openai`` -> LLM roles -> the compiled synthesis graph -> the resumable runner (fsync'd
JSONL), in this process or (``--workers N``) in N worker processes with this one keeping the ledger, as
``agentrefine synthesize --workers N`` runs. ``--rounds`` personas per slot of concurrency (4: 256 personas at C=64).

- throughput ratio at concurrency C = (accepted / wall) / (C / (L x calls per accepted)); targets >= 0.9 at C=64
  (256 personas) and >= 0.8 at C=256.
- graph overhead per LLM call: the same graph with instant in-process roles, CPU time / calls (everything
  that is not the LLM: nodes, checks, conversion, LangGraph itself); target < 5 ms. Wall time is printed
  too; on a shared machine it adds the time spent waiting for a CPU. Also the end-to-end overhead per
  call at C=1 over HTTP, (wall - calls x L) / calls, which adds the HTTP client and the runner's I/O.
- client CPU per call: this process's CPU plus its workers' (read from /proc), over the LLM calls.

Measured 2026-12-04 from clean clones (2 Intel Xeon cores with AVX-512, load 0.5-1.3, 0.5 s latency;
docs/benchmarks.md has every run). With replies handled in turns (synthesis/turns.py, commit 3b4027b): C=1 0.98, C=8
0.96; C=64 with 256 personas 0.80-0.83 in one process, 0.89-0.90 with 2 workers, 0.89-0.90 with 3; with 768 personas
(``--rounds 12``) 0.92, 0.93-0.94 and 0.95; C=256 at 5 s latency 0.92 in one process and 0.955 with 2 workers.
Before turns (commit e5c93d5 and the working tree that day): C=64, 256 personas 0.67-0.78, 0.80-0.83 (2 workers),
0.85-0.86 (3); 768 personas 0.81-0.82, 0.89-0.91, 0.91-0.93; C=256 0.875 and 0.92. Client CPU 5.0-7.2 ms per call
from C=8, the graph's own share 1.7-1.9 ms.

Where the time went before turns, at C=64 with 256 personas (timed per persona, 2 workers): a persona took 1.13-1.15
s against the ideal 1.0 s (2 calls x 0.5 s), about 70 ms per call spent waiting for its worker's CPU, while the
run's start and end (before the first persona, after the last) took under 20 ms. The endpoint answers every request
after exactly L, so the replies of a wave arrived together; each event loop interleaved their handling at every
await, so they all finished near the end of the burst (32 replies x about 5 ms) and the next wave left together
again, and a run of 4 rounds never lost that synchrony. Turns hand the replies out in arrival order: the requests of
the next wave leave one by one, and later waves no longer queue. What is left at 256 personas is the first wave (its
requests leave together, its 32 replies per worker wait up to 32 x 6 ms) and the last one, and the 2 cores shared by
the workers, the parent and the endpoint; 768 personas spread those over 12 rounds. Per call, CPU is
langchain-openai 1.9-2.1 ms (httpx 0.55, the openai SDK 1.2 of it), the graph 1.7-1.9 ms, the runner and asyncio the
rest (py-spy, earlier: asyncio's loop 19 % of the client's samples); a worker's final state is 5 KB, 0.03 ms to
pickle and read back. With latencies spread +-20 % (``--jitter 0.2``) the last personas' latencies set the end:
0.78-0.80 (one process) and 0.87 (2 workers) with turns, 0.79 and 0.87 before. uvloop in the workers was tried
before turns (0.83-0.84 with 2 workers against 0.80-0.82 without, alternating runs) and not adopted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agentrefine_lg import prompts

SCRIPT = prompts.SYNTH_SCRIPT_EXAMPLE
TRAJECTORY = prompts.SYNTH_TRAJECTORY_EXAMPLE


# ---------------------------------------------------------------------------------------------- server


async def _serve(port: int, latency: float, jitter: float = 0.0) -> None:
    import random

    draw = random.Random(0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length) or b"{}")
                # exactly L, or (--jitter J) uniform in [L(1-J), L(1+J)]: a real endpoint's latency varies
                await asyncio.sleep(latency * (1 + jitter * (2 * draw.random() - 1)))
                system = body["messages"][0]["content"]
                content = SCRIPT if "design scripts" in system else TRAJECTORY
                payload = json.dumps({
                    "id": "bench", "object": "chat.completion", "created": 0, "model": body.get("model", "bench"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
                }).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency: float, jitter: float = 0.0) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--latency", str(latency),
                             "--jitter", str(jitter)])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


# ---------------------------------------------------------------------------------------------- runs


def _personas(n: int):
    from agentrefine_lg.schema import Persona

    return [Persona(text=f"Benchmark persona {i}: a sysadmin who automates backups.") for i in range(n)]


def _graph(base_url: str) -> tuple[Any, list[Any]]:
    """The benchmark's synthesis graph, built as ``agentrefine synthesize --base-url URL --mode one_shot`` builds it
    (the one-shot LLM teacher, its HTTP client handling replies in turns), in this process or a worker's. Each
    concurrency level is its own ``asyncio.run``, and each gets a new teacher (its client belongs to one loop)."""
    from agentrefine_lg.synthesis.graphs import create_synthesis_graph
    from agentrefine_lg.synthesis.teachers import build_teacher

    teacher = build_teacher(base_url=base_url, model="bench", api_key="bench", mode="one_shot", timeout=60)
    graph = create_synthesis_graph(teacher.script_writer, teacher.trajectory_roles, mode=teacher.mode)
    return graph.compile(), list(teacher.roles)


async def throughput(base_url: str, latency: float, concurrency: int, n: int, workers: int = 1) -> dict:
    """One run of ``n`` personas, ``concurrency`` in flight: in this process, or in ``workers`` worker processes
    (``agentrefine synthesize --workers``) with this one keeping the ledger."""
    import functools

    from agentrefine_lg.synthesis.runner import run_synthesis
    from agentrefine_lg.synthesis.workers import SynthesisWorkers

    personas = _personas(n)
    with tempfile.TemporaryDirectory() as out:
        if workers == 1:
            graph, _ = _graph(base_url)
            t0, c0 = time.perf_counter(), time.process_time()
            result = await run_synthesis(graph, personas, out, n=n, concurrency=concurrency, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        else:
            async with SynthesisWorkers(functools.partial(_graph, base_url), workers) as pool:
                # the workers' CPU: from /proc, as their children's times are only known once they exit
                before = _cpu_of(pool)
                t0, c0 = time.perf_counter(), time.process_time()
                result = await run_synthesis(pool, personas, out, n=n, concurrency=concurrency, progress=False)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0 + _cpu_of(pool) - before
    s = result.summary
    calls = s["llm_calls_per_accepted"]
    ideal = concurrency / (latency * calls)
    return {"concurrency": concurrency, "workers": workers, "accepted": s["accepted"], "wall_s": round(wall, 3),
            "cpu_s": cpu, "calls_per_accepted": calls, "throughput_per_s": round(s["accepted"] / wall, 3),
            "ideal_per_s": round(ideal, 3), "ratio": round(s["accepted"] / wall / ideal, 3),
            # Client CPU per call bounds throughput on one event loop: at most 1000 / cpu_ms calls per second.
            "client_cpu_ms_per_call": round(cpu * 1000 / (s["accepted"] * calls), 2),
            # At C=1 calls run one after another: whatever exceeds calls x L is overhead.
            "overhead_ms_per_call": round((wall - s["accepted"] * calls * latency) * 1000 / (s["accepted"] * calls), 2)
            if concurrency == 1 else None}


def _cpu_of(pool: Any) -> float:
    """CPU seconds (user + system) the pool's worker processes have used so far."""
    total = 0.0
    for pid in pool.pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


class _Instant:
    name = "instant"

    async def awrite_script(self, persona, problems):
        from agentrefine_lg.schema import TokenUsage

        return json.loads(SCRIPT), TokenUsage(calls=1)

    async def awrite_trajectory(self, script, prefix, problems):
        from agentrefine_lg.schema import TokenUsage

        return json.loads(TRAJECTORY), TokenUsage(calls=1)


async def graph_overhead(n: int) -> dict:
    from agentrefine_lg.synthesis.graphs import create_synthesis_graph

    teacher = _Instant()
    graph = create_synthesis_graph(teacher, teacher).compile()
    for persona in _personas(5):  # warm-up (imports, regex cache)
        await graph.ainvoke({"synth_persona": persona.text + " warm"})
    t0, c0 = time.perf_counter(), time.process_time()
    calls = 0
    for persona in _personas(n):
        out = await graph.ainvoke({"synth_persona": persona.text})
        assert out["synth_status"] == "accepted"
        calls += out["synth_sample"]["usage"]["calls"]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU time is the overhead itself; wall time adds waiting for a CPU on a shared machine.
    return {"personas": n, "llm_calls": calls, "cpu_ms_per_llm_call": round(cpu * 1000 / calls, 3),
            "wall_ms_per_llm_call": round(wall * 1000 / calls, 3), "cpu_ms_per_persona": round(cpu * 1000 / n, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.5, help="server latency per call in seconds (default 0.5)")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="latency drawn uniformly from L(1-J) to L(1+J), mean L (default 0: exactly L)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--rounds", type=int, default=4, help="personas per concurrency slot (default 4)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="run each level in this many worker processes too (agentrefine synthesize --workers; "
                             "default 1: the client in this process only)")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if not 0 <= args.jitter < 1:
        parser.error("--jitter must be in [0, 1)")
    if args.serve:
        asyncio.run(_serve(args.serve, args.latency, args.jitter))
        return 0

    overhead = asyncio.run(graph_overhead(100))
    print(f"graph overhead: {overhead['cpu_ms_per_llm_call']} ms CPU ({overhead['wall_ms_per_llm_call']} ms wall) per LLM call, "
          f"{overhead['cpu_ms_per_persona']} ms CPU per accepted persona (instant in-process teacher; target < 5 ms)")
    proc, base_url = start_server(args.latency, args.jitter)
    rows = []
    try:
        for c in args.concurrency:
            for workers in args.workers:
                n = max(8, c * args.rounds)
                row = asyncio.run(throughput(base_url, args.latency, c, n, workers))
                rows.append(row)
                extra = (f", end-to-end overhead {row['overhead_ms_per_call']} ms/call"
                         if row["overhead_ms_per_call"] is not None else "")
                print(f"C={c:>3}, {workers} worker(s): {row['accepted']} accepted in {row['wall_s']} s = "
                      f"{row['throughput_per_s']}/s; ideal {row['ideal_per_s']}/s (L={args.latency}s"
                      f"{f' +-{args.jitter:.0%}' if args.jitter else ''} x "
                      f"{row['calls_per_accepted']} calls); ratio {row['ratio']}; client CPU "
                      f"{row['client_cpu_ms_per_call']} ms/call{extra}", flush=True)
    finally:
        proc.terminate()
        proc.wait()
    for c, goal in ((64, 0.9), (256, 0.8)):
        for row in (r for r in rows if r["concurrency"] == c):
            print(f"target ratio >= {goal} at C={c} ({row['workers']} worker(s)): "
                  f"{'met' if row['ratio'] >= goal else 'NOT met'} ({row['ratio']})")
    print(f"graph overhead < 5 ms: {'met' if overhead['cpu_ms_per_llm_call'] < 5 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"latency_s": args.latency, "graph_overhead": overhead, "runs": rows,
                                               "cpus": os.cpu_count(), "load_avg": os.getloadavg()}, indent=2))
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (other processes share the CPUs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
