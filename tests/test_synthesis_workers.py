"""Specification of ``agentrefine synthesize --workers N``: personas run in N processes, split evenly; the parent keeps
the one ledger, so resume works as with one process; a worker's error is classified as the original would be; a
worker that dies stops the run with nothing ledgered for its personas; a killed parent leaves no worker behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import pytest
from fake_synthesis_models import FakeOpenAIServer, wait_for_samples
from langgraph.graph import END, START, StateGraph

from agentrefine_lg.errors import AgentRefineError
from agentrefine_lg.failures import is_fatal_error, is_transient_error
from agentrefine_lg.synthesis.workers import SynthesisWorkers, WorkerError

REPO = Path(__file__).resolve().parents[1]


class S(TypedDict, total=False):
    synth_persona: str
    pid: int


class RateLimitError(Exception):
    """Named like openai's: failures.py classifies by class name and status."""

    status_code = 429


async def _node(state: S) -> dict[str, Any]:
    persona = state["synth_persona"]
    await asyncio.sleep(0.3)
    if "rate-limited" in persona:
        raise RateLimitError("slow down")
    if "buggy" in persona:
        raise TypeError("a bug in a node")
    if "dies" in persona:
        os._exit(3)
    return {"pid": os.getpid()}


def pid_graph() -> tuple[Any, list[Any]]:
    """A graph that answers after 0.3 s with the id of the process it ran in (or fails as its persona says)."""
    builder = StateGraph(S)
    builder.add_node("work", _node)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder.compile(), []


def broken_factory() -> tuple[Any, list[Any]]:
    raise ValueError("no teacher configured")


async def _final(pool: SynthesisWorkers, persona: str) -> dict[str, Any]:
    final: dict[str, Any] = {}
    async for mode, chunk in pool.astream({"synth_persona": persona}, {}, stream_mode=["custom", "values"]):
        if mode == "values":
            final = chunk
    return final


def test_personas_run_in_the_workers_split_evenly():
    async def main() -> list[int]:
        async with SynthesisWorkers(pid_graph, 2) as pool:
            finals = await asyncio.gather(*(_final(pool, f"persona {i}") for i in range(6)))
            assert sorted(pool.pids) == sorted({f["pid"] for f in finals})
        return [f["pid"] for f in finals]

    pids = asyncio.run(main())
    assert os.getpid() not in pids
    assert sorted(pids.count(p) for p in set(pids)) == [3, 3]


def test_a_workers_error_is_classified_as_the_original_would_be():
    async def main() -> tuple[BaseException, BaseException]:
        async with SynthesisWorkers(pid_graph, 1) as pool:
            outcomes = await asyncio.gather(_final(pool, "rate-limited"), _final(pool, "buggy"),
                                            return_exceptions=True)
        return outcomes[0], outcomes[1]

    limited, bug = asyncio.run(main())
    assert isinstance(limited, WorkerError) and limited.status_code == 429 and is_transient_error(limited)
    assert "RateLimitError" in limited.class_names and not is_fatal_error(limited)
    assert isinstance(bug, WorkerError) and is_fatal_error(bug) and not is_transient_error(bug)
    assert str(bug) == "a bug in a node"


def test_a_worker_that_cannot_build_its_graph_stops_the_start_with_the_reason():
    async def main() -> None:
        async with SynthesisWorkers(broken_factory, 2):
            pass

    with pytest.raises(AgentRefineError, match="could not build its graph: ValueError: no teacher configured"):
        asyncio.run(main())


def test_a_worker_that_dies_fails_its_personas_and_the_others_still_answer():
    async def main() -> tuple[BaseException | dict, ...]:
        async with SynthesisWorkers(pid_graph, 2) as pool:
            dying = asyncio.ensure_future(_final(pool, "dies"))
            await asyncio.sleep(0.05)
            other = asyncio.ensure_future(_final(pool, "fine"))  # the least busy worker: the other one
            outcomes = await asyncio.gather(dying, other, return_exceptions=True)
            after = await _final(pool, "after")  # only the survivor takes personas now
            return (*outcomes, after)

    died, fine, after = asyncio.run(main())
    assert isinstance(died, AgentRefineError) and "exited with code 3" in str(died)
    assert "not ledgered" in str(died)
    assert isinstance(fine, dict) and after["pid"] == fine["pid"]


# ---------------------------------------------------------------------------------------------- the command


def _cli(out: Path, server: FakeOpenAIServer, persona_file: Path, n: int, workers: int = 2) -> list[str]:
    return [sys.executable, "-m", "agentrefine_lg.cli", "synthesize", "--base-url", server.base_url, "--model", "fake",
            "--api-key", "k", "--personas", str(persona_file), "--n", str(n), "--out", str(out), "--concurrency", "4",
            "--no-progress", "--retry-interval", "0.01", "--workers", str(workers)]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_workers_share_one_ledger_and_a_killed_run_resumes_to_exactly_n(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(f"Persona number {i}, a keen tester." for i in range(40)) + "\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with FakeOpenAIServer(latency=0.1) as server:
        proc = subprocess.Popen(_cli(out, server, persona_file, 16), env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        wait_for_samples(proc, out / "samples.jsonl", 3, timeout_s=90)
        workers = _children(proc.pid)
        assert len(workers) >= 2  # the two workers (spawn may add its resource tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len(_lines(out / "samples.jsonl"))
        assert 3 <= killed_at < 16
        deadline = time.time() + 20  # orphaned workers see their pipe close and exit
        while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            time.sleep(0.1)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], "a worker outlived its parent"
        done = subprocess.run(_cli(out, server, persona_file, 16), check=False, env=env, capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    samples, ledger = _lines(out / "samples.jsonl"), _lines(out / "ledger.jsonl")
    assert len(samples) == 16 and len({s["persona_id"] for s in samples}) == 16
    assert sorted(r["persona_id"] for r in ledger if r["status"] == "accepted") == sorted(
        s["persona_id"] for s in samples)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["runs"]) == 2
    # the roles' counters come from both workers: 16 - killed_at scripts written in the second run, at least
    assert manifest["role_stats"]["LLMScriptWriter"]["calls"] >= 16 - killed_at
