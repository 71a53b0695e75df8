"""Specification of the batch runner: bounded concurrency, append-only outputs, resume without
duplicates or losses (also after kill -9), shards that merge, the summary and costs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fake_synthesis_models import FakeOpenAIServer, FixtureTeacher, wait_for_samples

from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Persona
from agentrefine_lg.synthesis.graphs import create_synthesis_graph
from agentrefine_lg.synthesis.runner import (
    cost_of,
    in_shard,
    merge_shards,
    parse_shard,
    price_of,
    run_synthesis,
)

REPO = Path(__file__).resolve().parents[1]


def personas(n: int, reject_every: int = 0) -> list[Persona]:
    out = []
    for i in range(n):
        tag = " who will reject" if reject_every and i % reject_every == reject_every - 1 else ""
        out.append(Persona(text=f"Persona number {i}, a keen tester{tag}."))
    return out


def graph_of(teacher: FixtureTeacher):
    return create_synthesis_graph(teacher, teacher, max_script_attempts=1, max_trajectory_attempts=1).compile()


def run(teacher, people, out, **kwargs):
    return asyncio.run(run_synthesis(graph_of(teacher), people, out, progress=False, **kwargs))


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_run_writes_samples_ledger_and_manifest(tmp_path):
    teacher = FixtureTeacher()
    result = run(teacher, personas(10, reject_every=3), tmp_path, n=5, concurrency=3)
    samples, ledger = lines(tmp_path / "samples.jsonl"), lines(tmp_path / "ledger.jsonl")
    assert len(samples) == 5 and len({s["persona_id"] for s in samples}) == 5
    assert {r["status"] for r in ledger} == {"accepted", "rejected"}
    assert sum(r["status"] == "accepted" for r in ledger) == 5
    rejected = [r for r in ledger if r["status"] == "rejected"]
    assert all(r["usage"]["fixture-teacher"]["calls"] == 2 for r in rejected)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    summary = manifest["summary"]
    assert summary == result.summary
    assert summary["accepted"] == 5 and summary["rejected"] == len(rejected)
    assert summary["acceptance_rate"] == round(5 / (5 + len(rejected)), 4)
    assert summary["mean_pairs"] == 2
    assert summary["llm_calls_per_accepted"] == round(2 * (5 + len(rejected)) / 5, 3)
    assert summary["distinct_action_templates"] == 4
    assert summary["distinct_environments"] == 1
    assert summary["cost_usd"] == {"fixture-teacher": "n/a"}


def test_never_more_than_n_and_never_more_than_concurrency_in_flight(tmp_path):
    in_flight, peak = 0, 0

    class Slow(FixtureTeacher):
        async def awrite_script(self, persona, problems):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return await super().awrite_script(persona, problems)

    teacher = Slow()
    run(teacher, personas(40), tmp_path, n=7, concurrency=4)
    assert peak == 4
    assert len(teacher.personas) == 7  # accepted + in flight never exceeds n
    assert len(lines(tmp_path / "samples.jsonl")) == 7


def test_resume_skips_done_personas_and_repairs_a_torn_line(tmp_path):
    people = personas(12, reject_every=4)
    run(FixtureTeacher(), people, tmp_path, n=4, concurrency=2)
    first = lines(tmp_path / "samples.jsonl")
    ledger_before = lines(tmp_path / "ledger.jsonl")
    with open(tmp_path / "samples.jsonl", "a") as f:
        f.write('{"id": "torn", "messages": [{"role": "sys')  # a write cut by kill -9
    teacher = FixtureTeacher()
    result = run(teacher, people, tmp_path, n=7, concurrency=2)
    samples = lines(tmp_path / "samples.jsonl")  # parses: the torn line is gone
    assert len(samples) == 7 and len({s["persona_id"] for s in samples}) == 7
    assert samples[:4] == first
    done = {s["persona_id"] for s in first} | {r["persona_id"] for r in ledger_before}
    assert not done & {Persona(text=p).id for p in teacher.personas}  # nothing recomputed
    assert result.new_accepted == 3
    # Rejected personas stay rejected unless asked to retry them.
    rejected = {r["persona_id"] for r in lines(tmp_path / "ledger.jsonl") if r["status"] == "rejected"}
    teacher = FixtureTeacher()
    run(teacher, people, tmp_path, n=8, concurrency=2, retry_rejected=True)
    assert rejected & {Persona(text=p).id for p in teacher.personas}


def test_shards_are_disjoint_and_merge_without_duplicates(tmp_path):
    people = personas(30)
    for i in range(3):
        run(FixtureTeacher(), people, tmp_path / f"s{i}", n=100, concurrency=4, shard=(i, 3))
    ids = [{s["persona_id"] for s in lines(tmp_path / f"s{i}" / "samples.jsonl")} for i in range(3)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == {p.id for p in people}
    assert all(in_shard(pid, (i, 3)) for i in range(3) for pid in ids[i])
    summary = merge_shards([tmp_path / "s0", tmp_path / "s1", tmp_path / "s2", tmp_path / "s0"], tmp_path / "all")
    merged = lines(tmp_path / "all" / "samples.jsonl")
    assert len(merged) == 30 and len({s["persona_id"] for s in merged}) == 30
    assert summary["accepted"] == 30
    with pytest.raises(InputError, match="not empty"):
        merge_shards([tmp_path / "s0"], tmp_path / "all")


def test_shard_spec_and_prices():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0"):
        with pytest.raises(InputError, match="shard"):
            parse_shard(bad)
    assert price_of("openai:gpt-4o") == (2.50, 10.00)
    assert price_of("gpt-4o-mini-2024-07-18") == (0.15, 0.60)  # longest prefix wins over gpt-4o
    assert cost_of("openai:gpt-4o", {"input_tokens": 1_000_000, "output_tokens": 100_000, "calls": 3}) == 3.5
    assert cost_of("my-local-model", {"input_tokens": 10, "calls": 1}) == "n/a"
    assert cost_of("grounded", {"calls": 0}) == 0.0


def _cli(out: Path, server: FakeOpenAIServer, persona_file: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "agentrefine_lg.cli", "synthesize", "--base-url", server.base_url, "--model", "fake",
            "--api-key", "k", "--personas", str(persona_file), "--n", str(n), "--out", str(out), "--concurrency", "2",
            "--no-progress", "--retry-interval", "0.01"]


def test_kill_9_and_resume_gives_exactly_n_unique_samples(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(40)) + "\n")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with FakeOpenAIServer(latency=0.1, failures=[429]) as server:
        proc = subprocess.Popen(_cli(out, server, persona_file, 12), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for_samples(proc, out / "samples.jsonl", 3, timeout_s=60)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at = len((out / "samples.jsonl").read_text().splitlines())
        assert 3 <= killed_at < 12
        done = subprocess.run(_cli(out, server, persona_file, 12), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    samples = lines(out / "samples.jsonl")
    assert len(samples) == 12 and len({s["persona_id"] for s in samples}) == 12
    assert len({s["id"] for s in samples}) == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["runs"]) == 2
    assert manifest["summary"]["accepted"] == 12
    assert manifest["teacher"] == "fake" and "api_key" not in manifest["args"]
    assert "acceptance rate" in done.stdout and "nothing to do" not in done.stdout
    again = subprocess.run(_cli(out, server, persona_file, 12), env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    assert again.returncode == 0 and "nothing to do" in again.stdout and "12 accepted sample(s)" in again.stdout
    assert len(lines(out / "samples.jsonl")) == 12


def test_summary_gives_engine_roles_one_line_not_a_zero_line_each():
    from agentrefine_lg.synthesis.runner import format_summary, summarize

    ledger = [{"persona_id": "p1", "status": "accepted", "attempts": {}, "usage": {
        "grounded-writer": {"calls": 0}, "grounded-player": {"calls": 0},
        "gpt-4o": {"calls": 2, "input_tokens": 100, "output_tokens": 50, "total_tokens": 150}}}]
    text = format_summary(summarize([], ledger))
    assert "no LLM calls, no cost: grounded-writer, grounded-player" in text
    assert "gpt-4o: 2 calls, 100 in + 50 out tokens" in text and "0 calls" not in text


def test_cli_reports_bad_arguments_without_a_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "synthesize", "--out", str(tmp_path), "--shard", "3/2",
                          "--base-url", "http://127.0.0.1:9/v1", "--model", "m"], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "shard" in res.stderr and "Traceback" not in res.stderr
