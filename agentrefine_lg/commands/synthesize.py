"""``agentrefine synthesize``: turn personas into verified refinement-tuning samples (resumable, sharded).

Argument parsing and printing only: the run is :func:`agentrefine_lg.synthesis.runner.run_synthesis`, the teacher
:func:`agentrefine_lg.synthesis.teachers.build_teacher`, the limits :class:`agentrefine_lg.synthesis.graphs.SynthesisSettings`
(whose defaults the flags show).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import InputError
from agentrefine_lg.synthesis.graphs import SynthesisSettings, create_synthesis_graph, recursion_limit
from agentrefine_lg.synthesis.personas import load_personas
from agentrefine_lg.synthesis.runner import (
    MANIFEST,
    format_summary,
    merge_shards,
    parse_shard,
    read_manifest,
    run_synthesis,
    write_json_atomic,
)
from agentrefine_lg.synthesis.teachers import GROUNDED_MAX_TURNS, Teacher, build_teacher
from agentrefine_lg.synthesis.workers import SynthesisWorkers, role_stats as sum_role_stats

DEFAULTS = SynthesisSettings()


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--personas", help="Persona Hub JSONL ({\"persona\": ...} per line) or text, one per line "
                                      "(default: the built-in list)")
    g.add_argument("--n", type=int, default=100, help="accepted samples to reach in --out (per shard; default 100)")
    g.add_argument("--out", help="output directory (samples.jsonl, ledger.jsonl, manifest.json); rerun to resume")
    g.add_argument("--shard", help="i/n: only personas whose id hashes to i mod n (0-based)")
    g.add_argument("--retry-rejected", action="store_true", help="also rerun personas rejected in an earlier run")
    g.add_argument("--merge", nargs="+", metavar="DIR", help="merge these shard directories into --out and exit")
    t = parser.add_argument_group("teacher (default: the embedded grounded teacher, interactive)")
    t.add_argument("--teacher", help="a LangChain model spec, e.g. openai:gpt-4o ('grounded' = the default)")
    t.add_argument("--base-url", help="an OpenAI-compatible server, e.g. vLLM at http://localhost:8000/v1")
    t.add_argument("--model", help="the model name at --base-url")
    t.add_argument("--api-key", help="API key for --base-url (default: $OPENAI_API_KEY or 'EMPTY')")
    t.add_argument("--mode", choices=["one_shot", "interactive"],
                   help="one_shot (the paper; LLM default) or interactive (Player and DM turn by turn)")
    t.add_argument("--structured", default="auto", choices=["auto", "json_schema", "function_calling", "json_mode", "text"],
                   help="how LLM output is constrained (default auto: json_schema on OpenAI-compatible servers)")
    t.add_argument("--temperature", type=float, default=None)
    t.add_argument("--format-retries", type=int, default=1, help="malformed answers fed back per call (default 1)")
    t.add_argument("--cache-dir", help="grounded teacher: where generated worlds are cached")
    r = parser.add_argument_group("limits (docs/method.md §3)")
    r.add_argument("--concurrency", type=int, default=8, help="personas in flight, over all workers (default 8)")
    r.add_argument("--workers", type=int, default=1,
                   help="processes that run the personas (default 1: this one). One event loop is CPU-bound past "
                        "about 64 personas in flight, and the grounded teacher compiles worlds on the CPU; the "
                        "workers share one --out, ledger and resume")
    r.add_argument("--max-script-attempts", type=int, default=DEFAULTS.max_script_attempts)
    r.add_argument("--max-trajectory-attempts", type=int, default=DEFAULTS.max_trajectory_attempts)
    r.add_argument("--restart-after", type=int, default=DEFAULTS.restart_after)
    r.add_argument("--min-pairs", type=int, default=DEFAULTS.min_pairs)
    r.add_argument("--max-turns", type=int, default=None,
                   help=f"interactive episode cap (default {DEFAULTS.max_turns}; {GROUNDED_MAX_TURNS} with the grounded teacher)")
    r.add_argument("--llm-max-attempts", type=int, default=DEFAULTS.llm_max_attempts, help="tries per LLM call on 429/5xx/timeouts")
    r.add_argument("--retry-interval", type=float, default=DEFAULTS.retry_initial_interval,
                   help="first backoff interval in seconds")
    r.add_argument("--llm-timeout", type=float, default=300.0,
                   help="seconds per LLM call attempt (default 300: a silent endpoint must not hang the run)")
    o = parser.add_argument_group("output")
    o.add_argument("--price", action="append", default=[], metavar="MODEL=IN,OUT",
                   help="USD per 1M input/output tokens for a model missing from the built-in table")
    o.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parse_prices(items: list[str]) -> dict[str, tuple[float, float]]:
    out = {}
    for item in items:
        try:
            name, values = item.split("=", 1)
            inp, outp = (float(x) for x in values.split(","))
        except ValueError:
            raise InputError(f"--price {item!r}: expected MODEL=IN,OUT (USD per 1M tokens)", field="price") from None
        out[name.split(":", 1)[-1].lower()] = (inp, outp)
    return out


def _build(options: dict[str, Any]) -> tuple[Teacher, SynthesisSettings, Any]:
    """The teacher, limits and compiled synthesis graph the command's options describe (in this process, and again
    in each ``--workers`` process)."""
    teacher = build_teacher(teacher=options["teacher"], base_url=options["base_url"], model=options["model"],
                            api_key=options["api_key"], mode=options["mode"], structured=options["structured"],
                            temperature=options["temperature"], min_pairs=options["min_pairs"],
                            format_retries=options["format_retries"], cache_dir=options["cache_dir"])
    settings = SynthesisSettings(
        max_script_attempts=options["max_script_attempts"], max_trajectory_attempts=options["max_trajectory_attempts"],
        restart_after=options["restart_after"], min_pairs=options["min_pairs"],
        max_turns=options["max_turns"] or teacher.default_max_turns, llm_max_attempts=options["llm_max_attempts"],
        retry_initial_interval=options["retry_interval"], llm_timeout=options["llm_timeout"],
    )
    graph = create_synthesis_graph(teacher.script_writer, teacher.trajectory_roles, mode=teacher.mode,  # type: ignore[arg-type]
                                   settings=settings).compile()
    return teacher, settings, graph


def _worker_graph(options: dict[str, Any]) -> tuple[Any, list[Any]]:
    """A ``--workers`` process's graph and the roles whose counters it reports."""
    teacher, _, graph = _build(options)
    return graph, list(teacher.roles)


def cli_run(args: argparse.Namespace) -> int:
    prices = _parse_prices(args.price)
    if not args.out:
        raise InputError("--out DIR is required", field="out")
    if args.merge:
        summary = merge_shards(args.merge, args.out, prices=prices)
        print(format_summary(summary))
        return 0
    shard = parse_shard(args.shard)
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}", field="workers")
    options = {k: v for k, v in vars(args).items() if k != "func"}
    teacher, settings, graph = _build(options)
    personas = load_personas(args.personas)
    run_args = {k: v for k, v in vars(args).items() if k not in ("api_key", "func")}
    manifest = {
        "command": "agentrefine synthesize", "args": run_args, "teacher": teacher.name, "mode": teacher.mode,
        "shard": f"{shard[0]}/{shard[1]}", "personas_source": args.personas or "built-in",
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "run": {"teacher": teacher.name, "mode": teacher.mode, "n": args.n, "concurrency": args.concurrency},
    }
    previous = read_manifest(Path(args.out))
    if previous.get("teacher") and (previous.get("teacher"), previous.get("mode")) != (teacher.name, teacher.mode):
        print(f"agentrefine synthesize: note: {args.out} was started with teacher {previous.get('teacher')!r} "
              f"({previous.get('mode')}); this run adds samples from {teacher.name!r} ({teacher.mode})", file=sys.stderr)
    role_stats: dict[str, dict[str, Any]] = {}

    async def run() -> Any:
        kwargs = dict(n=args.n, concurrency=args.concurrency, shard=shard, retry_rejected=args.retry_rejected,
                      recursion_limit=recursion_limit(settings, teacher.mode),  # type: ignore[arg-type]
                      progress=False if args.no_progress else None, manifest=manifest, prices=prices)
        if args.workers == 1:
            return await run_synthesis(graph, personas, args.out, **kwargs)
        pool = SynthesisWorkers(functools.partial(_worker_graph, options), args.workers)
        try:
            async with pool:
                return await run_synthesis(pool, personas, args.out, **kwargs)
        finally:
            role_stats.update(pool.role_stats)

    try:
        result = asyncio.run(run())
    except asyncio.CancelledError:  # SIGTERM: the run cancelled itself and wrote its manifest
        print(f"agentrefine synthesize: terminated; {args.out} holds everything finished so far (manifest status "
              "'interrupted'); rerun the same command to resume", file=sys.stderr)
        return 143
    if args.workers == 1:
        role_stats.update(sum_role_stats((type(r).__name__, r.stats) for r in teacher.roles if getattr(r, "stats", None)))
    if role_stats:
        manifest_now = read_manifest(Path(args.out))
        manifest_now["role_stats"] = role_stats
        write_json_atomic(Path(args.out) / MANIFEST, manifest_now)
    if result.new_accepted == 0 and result.new_rejected == 0 and result.crashed == 0 and not result.exhausted:
        print(f"agentrefine synthesize: nothing to do: {args.out} already holds {result.summary['accepted']} accepted "
              f"sample(s) for --n {args.n} (raise --n to add more); its summary:")
    print(format_summary(result.summary))
    if result.exhausted and result.summary["accepted"] < args.n:
        print(f"agentrefine synthesize: the personas ran out before {args.n} accepted samples "
              f"({result.summary['accepted']} in {args.out})", file=sys.stderr)
    return 0
