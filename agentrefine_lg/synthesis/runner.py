"""``agentrefine synthesize``: concurrent, resumable batch synthesis over personas.

One compiled synthesis graph (:func:`agentrefine_lg.synthesis.graphs.create_synthesis_graph`) is invoked per
persona, at most ``--concurrency`` at a time (asyncio). The output directory holds:

- ``samples.jsonl``: accepted samples, appended as they finish, each line flushed and fsync'd;
- ``ledger.jsonl``: one line per finished persona (accepted / rejected, attempts, tokens per model);
- ``manifest.json``: the run's arguments, teacher, counts and summary (rewritten atomically).

Resume = run the same command again: a torn last line (``kill -9`` mid-write) is cut off, personas already
accepted (by ``samples.jsonl``, the source of truth) or rejected (by the ledger) are skipped, so nothing is
duplicated and no accepted sample is lost. ``--shard i/n`` takes the personas whose stable id hashes to
``i`` mod ``n``; shards never overlap and :func:`merge_shards` joins their directories.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.failures import is_refused, is_transient_error
from agentrefine_lg.jsonl import JsonlFile
from agentrefine_lg.outputs import atomic_output, lock_output_dir
from agentrefine_lg.progress import progress_bar
from agentrefine_lg.schema import Persona, TokenUsage, persona_id
from agentrefine_lg.synthesis.graphs import attempts_of
from agentrefine_lg.synthesis.turns import persona_turn

SAMPLES, LEDGER, MANIFEST = "samples.jsonl", "ledger.jsonl", "manifest.json"

# USD per 1M tokens (input, output): list prices of common teachers as of 2025. Override with --price.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "deepseek-chat": (0.27, 1.10),
    "deepseek-reasoner": (0.55, 2.19),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
}


def price_of(model: str, prices: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a teacher name such as ``openai:gpt-4o-2024-08-06``; None if unknown."""
    table = {**PRICES, **(prices or {})}
    name = model.split(":", 1)[-1].split("/")[-1].lower()
    if name in table:
        return table[name]
    matches = [k for k in table if name.startswith(k + "-")]  # dated snapshots: gpt-4o-2024-08-06
    return table[max(matches, key=len)] if matches else None


def cost_of(model: str, usage: TokenUsage | dict, prices: dict[str, tuple[float, float]] | None = None) -> float | str:
    """USD cost of ``usage`` on ``model``, or ``'n/a'`` for models missing from the price table."""
    usage = usage if isinstance(usage, TokenUsage) else TokenUsage.model_validate(usage)
    if usage.calls == 0 and usage.total_tokens == 0:
        return 0.0
    price = price_of(model, prices)
    if price is None:
        return "n/a"
    return round((usage.input_tokens * price[0] + usage.output_tokens * price[1]) / 1e6, 6)


# ---------------------------------------------------------------------------------------------- shards


def parse_shard(text: str | None) -> tuple[int, int]:
    """``'2/8'`` -> (2, 8); indices are 0-based."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}", field="shard") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text!r}: need 0 <= i < n", field="shard")
    return i, n


def in_shard(pid: str, shard: tuple[int, int]) -> bool:
    """Stable: depends only on the persona id, so shards never overlap whatever the file order."""
    i, n = shard
    return n == 1 or int(pid, 16) % n == i


# ---------------------------------------------------------------------------------------------- files


def _read_jsonl(path: Path, *, repair: bool) -> list[dict[str, Any]]:
    """Rows of one of this run's files (the JSONL store's rule for a torn last line: cut and reported)."""
    def check(row: dict[str, Any], where: str) -> None:
        if path.name == LEDGER and not isinstance(row.get("persona_id"), str):
            raise InputError("not a row of this run's output; remove or fix the line", where=where)

    return JsonlFile(path).read(repair=repair, check=check)


def _ledger_row_of_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """The ledger line of an accepted sample whose own line was lost (killed between the two fsyncs)."""
    return {"persona_id": _sample_pid(sample), "status": "accepted", "reason": None,
            "attempts": sample.get("attempts") or {}, "usage": {sample.get("teacher") or "unknown": sample.get("usage") or {}},
            "pairs": None, "seconds": None, "recovered": True}


def _sample_pid(row: dict[str, Any]) -> str:
    if row.get("persona_id"):
        return str(row["persona_id"])
    if row.get("persona"):
        return persona_id(str(row["persona"]))
    return str(row.get("id"))


class _Appender:
    """Group commit onto a :class:`~agentrefine_lg.jsonl.JsonlFile`: records queue up and :func:`_commit`
    writes them as one append (one fsync) in a worker thread, so the event loop keeps other personas moving."""

    def __init__(self, path: Path):
        self.store = JsonlFile(path)
        self.pending: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.pending.append(row)

    def take(self) -> list[dict[str, Any]]:
        rows, self.pending = self.pending, []
        return rows

    def close(self) -> None:
        self.store.close()


async def _commit(samples: _Appender, ledger: _Appender) -> None:
    """Samples first (the source of truth on resume), then the ledger; each durable before the next."""
    sample_rows, ledger_rows = samples.take(), ledger.take()

    def write() -> None:
        samples.store.append(sample_rows)
        ledger.store.append(ledger_rows)

    if sample_rows or ledger_rows:
        await asyncio.to_thread(write)


def write_json_atomic(path: Path, obj: Any) -> None:
    with atomic_output(path) as handle:
        handle.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# ---------------------------------------------------------------------------------------------- summary


def summarize(samples: list[dict[str, Any]], ledger: list[dict[str, Any]],
              prices: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Acceptance rate, mean error->refine pairs, LLM calls / tokens per accepted trajectory, distinct
    action templates and environments, counted attempts and retries, usage and cost per model."""
    accepted_ids = {_sample_pid(r) for r in samples}
    last: dict[str, dict[str, Any]] = {}
    for row in ledger:
        last[row["persona_id"]] = row
    rejected = {pid for pid, row in last.items() if row.get("status") == "rejected" and pid not in accepted_ids}
    usage: dict[str, TokenUsage] = {}
    counts: dict[str, int] = {}
    counted: set[str] = set()

    def add(row_usage: dict[str, Any], attempts: dict[str, Any]) -> None:
        for model, u in (row_usage or {}).items():
            usage[model] = usage.get(model, TokenUsage()).add(u)
        for key, value in (attempts or {}).items():
            counts[key] = counts.get(key, 0) + int(value or 0)

    for row in ledger:  # every finished persona's cost, rejected and repeated ones included
        add(row.get("usage"), row.get("attempts"))
        counted.add(row["persona_id"])
    for row in samples:  # accepted samples whose ledger line was lost (crash between the two writes)
        pid = _sample_pid(row)
        if pid not in counted:
            add({row.get("teacher") or "unknown": row.get("usage") or {}}, row.get("attempts"))

    pairs, templates, environments = [], set(), set()
    for row in samples:
        if row.get("pairs") is not None:
            pairs.append(int(row["pairs"]))
        script = row.get("script") or {}
        for template in (script.get("Available Actions") or {}):
            templates.add(" ".join(str(template).lower().split()))
        env = json.dumps(script.get("Environment"), sort_keys=True, ensure_ascii=False)
        environments.add(hashlib.sha256(env.encode()).hexdigest())
    n_acc, n_rej = len(accepted_ids), len(rejected)
    total = TokenUsage()
    for u in usage.values():
        total = total.add(u)
    costs = {m: cost_of(m, u, prices) for m, u in usage.items()}
    known = [c for c in costs.values() if isinstance(c, float)]
    return {
        "accepted": n_acc,
        "rejected": n_rej,
        "acceptance_rate": round(n_acc / (n_acc + n_rej), 4) if n_acc + n_rej else None,
        "mean_pairs": round(sum(pairs) / len(pairs), 3) if pairs else None,
        "llm_calls_per_accepted": round(total.calls / n_acc, 3) if n_acc else None,
        "tokens_per_accepted": round(total.total_tokens / n_acc, 1) if n_acc else None,
        "distinct_action_templates": len(templates),
        "distinct_environments": len(environments),
        "attempts": counts,
        "usage": {m: u.model_dump() for m, u in usage.items()},
        "cost_usd": costs,
        "total_cost_usd": round(sum(known), 6) if len(known) == len(costs) else "n/a",
    }


def format_summary(summary: dict[str, Any]) -> str:
    s = summary
    lines = [
        f"accepted {s['accepted']}, rejected {s['rejected']}, acceptance rate {s['acceptance_rate']}",
        f"mean error->refine pairs {s['mean_pairs']}; per accepted trajectory: {s['llm_calls_per_accepted']} LLM calls, "
        f"{s['tokens_per_accepted']} tokens",
        f"distinct action templates {s['distinct_action_templates']}, distinct environments {s['distinct_environments']}",
        "counted (all personas): " + (", ".join(f"{k} {v}" for k, v in s["attempts"].items()) or "none"),
    ]
    # Engine roles (the embedded teacher) make no LLM call: one line for all of them, not a zero line each.
    idle = [m for m, u in s["usage"].items() if not u["calls"] and not u["input_tokens"] and not u["output_tokens"]]
    for model, usage in s["usage"].items():
        if model not in idle:
            lines.append(f"{model}: {usage['calls']} calls, {usage['input_tokens']} in + {usage['output_tokens']} out "
                         f"tokens, cost {s['cost_usd'][model]}")
    if idle:
        lines.append(f"no LLM calls, no cost: {', '.join(idle)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run


@dataclass
class RunResult:
    summary: dict[str, Any]
    new_accepted: int
    new_rejected: int
    crashed: int  # personas ended by an infrastructure failure: not ledgered, retried on resume
    exhausted: bool  # ran out of personas before reaching n


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure(exc: BaseException) -> str:
    # an error from a worker process (synthesis/workers.py) is named for the original exception's class
    name = next(iter(getattr(exc, "class_names", ())), type(exc).__name__)
    return _one_line(f"{name}: {exc}")


async def run_synthesis(
    graph: Any,
    personas: Iterable[Persona],
    out_dir: str | Path,
    *,
    n: int,
    concurrency: int = 8,
    shard: tuple[int, int] = (0, 1),
    retry_rejected: bool = False,
    recursion_limit: int = 200,
    progress: bool | None = None,
    manifest: dict[str, Any] | None = None,
    prices: dict[str, tuple[float, float]] | None = None,
    max_infra_failures: int = 3,
) -> RunResult:
    """Run ``graph`` (a compiled synthesis graph) over ``personas`` until ``n`` samples are accepted in
    ``out_dir`` (counting earlier runs'), with at most ``concurrency`` personas in flight.

    Only the graph's own verdict is ledgered. A persona whose LLM calls failed for transport reasons is
    left unledgered (retried on resume), and ``max_infra_failures`` of them in a row stop the run; an
    exception escaping the graph (a bug, a refused key, an engine error) stops it at once. Either way an
    :class:`AgentRefineError` says why, and nothing is marked done that was not. ``out_dir`` is locked for
    the run (a second run on it stops at once); SIGTERM finalises like SIGINT (the task is cancelled).
    """
    if n < 1 or concurrency < 1:
        raise InputError("--n and --concurrency must be >= 1")
    out = Path(out_dir)
    with lock_output_dir(out, command="agentrefine synthesize"):
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        handled = False
        if task is not None:
            try:  # only in the main thread of a Unix process; elsewhere SIGTERM keeps its default
                loop.add_signal_handler(signal.SIGTERM, task.cancel)
                handled = True
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            return await _run_locked(graph, personas, out, n=n, concurrency=concurrency, shard=shard,
                                     retry_rejected=retry_rejected, recursion_limit=recursion_limit, progress=progress,
                                     manifest=manifest, prices=prices, max_infra_failures=max_infra_failures)
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGTERM)


def _lost_ledger_rows(samples: list[dict[str, Any]], ledger: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Samples are written before their ledger lines: a kill between the two fsyncs leaves accepted samples
    without a ledger line. Their lines, to write before anything new so that the two files agree again."""
    in_ledger = {r["persona_id"] for r in ledger if r.get("status") == "accepted"}
    return list({pid: _ledger_row_of_sample(r) for r in samples if (pid := _sample_pid(r)) not in in_ledger}.values())


def _finished(task: asyncio.Task, persona: Persona) -> tuple[dict[str, Any], float, str | None]:
    """A finished persona: ``(final state, seconds, None)`` for the graph's verdict; ``({}, 0, why)`` when its
    LLM calls failed for transport reasons (not ledgered, retried on resume). Anything else stops the run
    (:class:`AgentRefineError`): a refused key, a bug or an engine error is never booked as a rejection."""
    exc = task.exception()
    if exc is not None:
        if is_refused(exc):
            raise AgentRefineError(f"the teacher refused the request, stopping: {_failure(exc)}") from exc
        if not is_transient_error(exc):
            raise AgentRefineError(
                f"persona {persona.id} failed with {_failure(exc)}. That is an error of the teacher, its engine or "
                "the code, not a rejection: nothing was ledgered for it. Stopping; rerun the same command to "
                "resume once the cause is fixed") from exc
        return {}, 0.0, _failure(exc)
    _, final, seconds = task.result()
    status = final.get("synth_status")
    if status not in ("accepted", "rejected"):
        raise AgentRefineError(f"persona {persona.id}: the synthesis graph ended without a verdict "
                               f"(synth_status={status!r}); stopping, nothing was ledgered for it")
    return final, seconds, None


def _ledger_row(persona: Persona, final: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The ledger line of a persona the graph gave its verdict on."""
    accepted = final["synth_status"] == "accepted" and bool(final.get("synth_sample"))
    return {"persona_id": persona.id, "status": "accepted" if accepted else "rejected",
            "reason": final.get("synth_reason"), "attempts": attempts_of(final), "usage": final.get("synth_usage") or {},
            "pairs": (final.get("synth_report") or {}).get("pairs") if accepted else None, "seconds": round(seconds, 3)}


async def _run_locked(graph: Any, personas: Iterable[Persona], out: Path, *, n: int, concurrency: int,
                      shard: tuple[int, int], retry_rejected: bool, recursion_limit: int, progress: bool | None,
                      manifest: dict[str, Any] | None, prices: dict[str, tuple[float, float]] | None,
                      max_infra_failures: int) -> RunResult:
    samples = _read_jsonl(out / SAMPLES, repair=True)
    ledger = _read_jsonl(out / LEDGER, repair=True)
    accepted_ids = {_sample_pid(r) for r in samples}
    rejected_ids = {r["persona_id"] for r in ledger if r.get("status") == "rejected"} - accepted_ids
    skip = accepted_ids | (set() if retry_rejected else rejected_ids)
    done_in_shard = sum(1 for pid in accepted_ids if in_shard(pid, shard))

    todo: Iterator[Persona] = (p for p in personas if in_shard(p.id, shard) and p.id not in skip)
    manifest = dict(manifest or {})
    runs = list(read_manifest(out).get("runs", []))
    runs.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "resumed_with": len(samples), **manifest.get("run", {})})
    manifest["runs"] = runs
    write_json_atomic(out / MANIFEST, {**manifest, "status": "running"})

    sample_file, ledger_file = _Appender(out / SAMPLES), _Appender(out / LEDGER)
    recovered = _lost_ledger_rows(samples, ledger)
    if recovered:
        ledger_file.store.append(recovered)
        ledger.extend(recovered)
    counters = {"accepted": done_in_shard, "rejected": 0, "retries": 0, "tokens": 0, "crashed": 0}
    # A bar on a terminal, summary lines in a log (progress=None); progress=False: silent.
    bar = progress_bar(n, "synthesize", "samples", initial=min(done_in_shard, n), enabled=progress is not False)

    def postfix() -> None:
        bar.set_postfix(rejected=counters["rejected"], retries=counters["retries"], tokens=counters["tokens"], refresh=False)

    turns = asyncio.Lock()  # replies handled in arrival order (synthesis/turns.py)

    async def one(persona: Persona) -> tuple[Persona, dict[str, Any], float]:
        t0 = time.perf_counter()
        final: dict[str, Any] = {}
        config = {"recursion_limit": recursion_limit, "run_name": f"synthesize:{persona.id}"}
        async with persona_turn(turns):
            async for mode, chunk in graph.astream({"synth_persona": persona.text}, config,
                                                   stream_mode=["custom", "values"]):
                if mode == "values":
                    final = chunk
                elif isinstance(chunk, dict) and chunk.get("type") in ("rejected", "retry"):
                    counters["retries"] += int(chunk.get("retries", 1))
                    postfix()
        return persona, final, time.perf_counter() - t0

    new_acc = new_rej = 0
    exhausted = False
    stopped: str | None = None
    in_flight: dict[asyncio.Task, Persona] = {}
    commit: asyncio.Future | None = None
    infra_in_a_row = 0
    try:
        while counters["accepted"] < n:
            while len(in_flight) < concurrency and counters["accepted"] + len(in_flight) < n:
                persona = next(todo, None)
                if persona is None:
                    exhausted = True
                    break
                in_flight[asyncio.ensure_future(one(persona))] = persona
            if not in_flight:
                break
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            accepted_now = 0
            for task in done:
                persona = in_flight.pop(task)
                try:
                    final, seconds, why = _finished(task, persona)
                except AgentRefineError as exc:
                    stopped = str(exc)
                    raise
                if why is not None:
                    counters["crashed"] += 1
                    infra_in_a_row += 1
                    print(f"agentrefine synthesize: persona {persona.id} not finished: {why}; not ledgered, "
                          "it is retried on resume", file=sys.stderr)
                    if infra_in_a_row >= max_infra_failures:
                        stopped = (f"the teacher failed for {infra_in_a_row} personas in a row (last: {why}); "
                                   "stopping. Nothing was ledgered for them: rerun the same command to resume "
                                   "once the endpoint answers")
                        raise AgentRefineError(stopped)
                    continue
                infra_in_a_row = 0
                row = _ledger_row(persona, final, seconds)
                counters["tokens"] += sum(int(u.get("total_tokens", 0)) for u in row["usage"].values())
                if row["status"] == "accepted":
                    sample_file.add(final["synth_sample"])
                    samples.append(final["synth_sample"])
                    counters["accepted"] += 1
                    new_acc += 1
                    accepted_now += 1
                else:
                    counters["rejected"] += 1
                    new_rej += 1
                ledger_file.add(row)
                ledger.append(row)
            # Commit in the background and go straight back to launching personas: waiting here for
            # fsync would re-synchronise the personas into bursts that queue on the one event loop.
            if commit is None or commit.done():
                if commit is not None:
                    commit.result()  # surface a write error
                commit = asyncio.ensure_future(_commit(sample_file, ledger_file))
            bar.update(accepted_now)
            postfix()
    finally:
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        if commit is not None:
            await asyncio.gather(commit, return_exceptions=True)
        for appender in (sample_file, ledger_file):  # results taken from finished tasks, not yet written
            if appender.pending:
                appender.store.append(appender.take())
        bar.close()
        sample_file.close()
        ledger_file.close()
        summary = summarize(samples, ledger, prices)
        status = ("complete" if counters["accepted"] >= n else "stopped" if stopped
                  else "exhausted" if exhausted else "interrupted")
        write_json_atomic(out / MANIFEST, {**manifest, "status": status, **({"stopped": stopped} if stopped else {}),
                                            "counts": {
            "target": n, "accepted_in_shard": counters["accepted"], "new_accepted": new_acc, "new_rejected": new_rej,
            "crashed": counters["crashed"]}, "summary": summary})
    return RunResult(summary, new_acc, new_rej, counters["crashed"], exhausted)


def read_manifest(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def merge_shards(dirs: Iterable[str | Path], out: str | Path, *, prices: dict[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Join shard directories into ``out`` (samples, ledger, manifest), each persona once. Returns the summary.
    Source directories are only read; a torn last line in one of them is skipped."""
    out = Path(out)
    dirs = [Path(d) for d in dirs]
    for d in dirs:
        if not (d / SAMPLES).exists() and not (d / LEDGER).exists():
            raise InputError(f"{d} holds no {SAMPLES} or {LEDGER}: not a synthesis output directory")
        if d.resolve() == out.resolve():
            raise InputError(f"the merge output {out} is also an input")
    with lock_output_dir(out, command="agentrefine synthesize --merge"):
        return _merge_locked(dirs, out, prices)


def _merge_locked(dirs: list[Path], out: Path, prices: dict[str, tuple[float, float]] | None) -> dict[str, Any]:
    for name in (SAMPLES, LEDGER):
        if (out / name).exists() and (out / name).stat().st_size:
            raise InputError(f"{out / name} exists and is not empty; merge into a new directory")
    seen: set[str] = set()
    samples: list[dict[str, Any]] = []
    for d in dirs:
        for row in _read_jsonl(d / SAMPLES, repair=False):
            pid = _sample_pid(row)
            if pid not in seen:
                seen.add(pid)
                samples.append(row)
    ledger: list[dict[str, Any]] = []
    for d in dirs:
        ledger.extend(_read_jsonl(d / LEDGER, repair=False))
    with open(out / SAMPLES, "w", encoding="utf-8") as f:
        for row in samples:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / LEDGER, "w", encoding="utf-8") as f:
        for row in ledger:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = summarize(samples, ledger, prices)
    write_json_atomic(out / MANIFEST, {"merged_from": [str(d) for d in dirs],
                                        "shards": [read_manifest(d).get("shard") for d in dirs],
                                        "status": "merged", "summary": summary})
    return summary


__all__ = [
    "PRICES",
    "RunResult",
    "cost_of",
    "format_summary",
    "in_shard",
    "merge_shards",
    "parse_shard",
    "price_of",
    "run_synthesis",
    "summarize",
]
