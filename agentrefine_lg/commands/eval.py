"""``agentrefine eval``: a chat model (or a reference agent) on held-out interactive tasks.

Argument parsing and printing only: the run is :func:`agentrefine_lg.eval.harness.run_eval`, whose defaults
(:class:`agentrefine_lg.eval.harness.EvalSettings`) the flags show.
"""

from __future__ import annotations

import argparse
import os

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.base import load_task, parse_task_list, task_names, task_unavailable
from agentrefine_lg.eval.harness import (
    PERTURBED_DIR,
    ROBUSTNESS_JSON,
    ROBUSTNESS_MD,
    SCHEMES,
    EvalSettings,
    ModelSpec,
    run_eval,
)
from agentrefine_lg.eval.injection import injection_markdown
from agentrefine_lg.eval.paper_table import comparison_markdown
from agentrefine_lg.eval.report import diversity_markdown, markdown_table, robustness_markdown

DEFAULTS = EvalSettings()
SERVED_EPISODES = 4
"""Episodes run at once against a served model, whose server batches their requests: our CPU server keeps a KV cache
for 4 (4 concurrent requests: 2.0-2.2x the requests/s of one on 2 cores, benchmarks/serving_concurrency.py,
2026-12-04). A vLLM server batches far more: raise ``--workers``."""
EPISODES_PER_CORE = 4
IN_PROCESS_MAX = 32  # the in-process engine's batch (local_model.MAX_BATCH); more episodes would only wait


def default_workers(*, served: bool, in_process: bool, cores: int | None = None) -> int:
    """Episodes run at once when ``--workers`` is not given. An in-process model (the CPU engine, which batches
    continuously): 4 per core, at most its batch of 32. On 2 cores the study's student architecture decodes 8 rows
    at 2.7-3.1x the rows/s of one and 16 or 32 rows no faster; 8 episodes of the tiny model run 2.5-2.8x the steps/s
    of one against 2.0-2.1x for 4, and a trained student's episodes 1.47-1.51x against 1.33-1.39x for 4
    (benchmarks/eval_concurrency.py, 2026-12-04). A served model: :data:`SERVED_EPISODES`.
    Anything else (built-in agents, provider models): the harness's default."""
    if in_process:
        return max(1, min(IN_PROCESS_MAX, EPISODES_PER_CORE * (cores or os.cpu_count() or 1)))
    return SERVED_EPISODES if served else DEFAULTS.workers


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="PROVIDER:NAME for init_chat_model (e.g. openai:gpt-4o), or with "
                                        "--base-url the served model's name")
    parser.add_argument("--base-url", help="OpenAI-compatible endpoint of a served model, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", help="API key (default: env AGENTREFINE_API_KEY / the provider's variable)")
    parser.add_argument("--agent", choices=["oracle", "random"], help="a built-in reference agent instead of a model")
    parser.add_argument("--inject", metavar="KIND@STEP",
                        help="error injection: at that model reply the agent's action is replaced by a mistake of "
                             "KIND (parameter_error, place_error, logic_error); the summary gives recovery and "
                             "repeat rates")
    parser.add_argument("--model-dir", help="a local model folder (e.g. training.sft's merged/) or alias, run "
                                            "in-process: no server needed")
    parser.add_argument("--tasks", default=DEFAULTS.tasks,
                        help=f"comma-separated tasks or 'all' (known: {', '.join(task_names())})")
    parser.add_argument("--episodes", type=int, default=None,
                        help=f"episodes per task (default {DEFAULTS.episodes}; with --agentboard-data all of AgentBoard's)")
    parser.add_argument("--max-steps", type=int, default=DEFAULTS.max_steps,
                        help=f"model replies per episode (default {DEFAULTS.max_steps}, docs/method.md §6)")
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed)
    parser.add_argument("--out", default="eval_out", help="output directory (resumable)")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"episodes run at once (default: {EPISODES_PER_CORE} per core, at most {IN_PROCESS_MAX}, for "
                             f"an in-process model, {SERVED_EPISODES} for a served one, whose replies are then batched; "
                             f"{DEFAULTS.workers} for built-in agents and provider models)")
    parser.add_argument("--max-tokens", type=int, default=DEFAULTS.max_tokens, help="reply token cap for real models")
    parser.add_argument("--timeout", type=float, default=DEFAULTS.timeout_s, help="seconds per model call")
    parser.add_argument("--no-preflight", action="store_true", help="skip the one-call endpoint check")
    parser.add_argument("--perturb", metavar="SCHEME[,SCHEME...]",
                        help=f"also run the same episodes with reworded action forms ({', '.join(SCHEMES)}, or all) "
                             "into OUT/perturbed/<scheme>/ and write robustness.md/.json (drop vs unperturbed)")
    parser.add_argument("--no-embeddings", action="store_true",
                        help="thought diversity without the embedding distance (skips loading all-MiniLM-L6-v2)")
    parser.add_argument("--label", help="what the model is, for titles and tables (e.g. tuned, base; default: "
                                        "the agent's name or MODEL@URL)")
    parser.add_argument("--model-path", help="the weights behind --base-url, named in the plots' captions")
    parser.add_argument("--list-tasks", action="store_true", help="list tasks and whether they run here, then exit")
    parser.add_argument("--agentboard-data", metavar="DIR",
                        help="AgentBoard's data/ folder (unpacked data.tar.gz): run its own episodes with its "
                             "scoring and put the paper's table beside the run")


def _model_from_args(args: argparse.Namespace) -> ModelSpec:
    if args.agent:
        if args.model or args.base_url or args.model_dir:
            raise InputError("--agent excludes --model/--base-url/--model-dir", field="agent")
        return ModelSpec(agent=args.agent)
    if args.model_dir:
        if args.model or args.base_url:
            raise InputError("--model-dir excludes --model/--base-url", field="model-dir")
        return ModelSpec(local=args.model_dir, max_tokens=args.max_tokens)
    if args.base_url:
        return ModelSpec(base_url=args.base_url, model=args.model, api_key=args.api_key,
                         timeout_s=args.timeout, max_tokens=args.max_tokens)
    if args.model:
        if ":" not in args.model:
            raise InputError(f"--model {args.model!r}: without --base-url give PROVIDER:NAME (e.g. openai:gpt-4o)",
                             field="model")
        return ModelSpec(spec=args.model, api_key=args.api_key, timeout_s=args.timeout, max_tokens=args.max_tokens)
    raise InputError("no model: give --agent oracle|random, --model PROVIDER:NAME, --base-url URL --model NAME, "
                     "or --model-dir DIR", field="model")


def cli_run(args: argparse.Namespace) -> int:
    if args.list_tasks:
        for name in task_names():
            reason = task_unavailable(name)
            info = load_task(name).TASK if reason is None or not reason.startswith("cannot import") else None
            desc = info.description if info else ""
            print(f"{name:10s} {'ok' if reason is None else 'unavailable: ' + reason}  {desc}")
        return 0
    episodes = args.episodes
    if episodes is None:
        episodes = DEFAULTS.episodes
        if args.agentboard_data:  # all of AgentBoard's episodes, as the paper's table counts them
            from agentrefine_lg.eval.agentboard import check_data

            episodes = max(check_data(args.agentboard_data, parse_task_list(args.tasks)).values())
    workers = args.workers
    if workers is None:  # a server or an in-process model answers concurrent episodes in batches
        workers = default_workers(served=bool(args.base_url), in_process=bool(args.model_dir))
    summary = run_eval(tasks=args.tasks, episodes=episodes, model=_model_from_args(args), out=args.out,
                       max_steps=args.max_steps, seed=args.seed, workers=workers,
                       perturb=args.perturb, embeddings=False if args.no_embeddings else "auto",
                       preflight=not args.no_preflight, label=args.label, model_path=args.model_path,
                       agentboard_data=args.agentboard_data, inject=args.inject)
    print(markdown_table(summary))
    print("\n" + diversity_markdown(summary.get("diversity") or {}))
    written = "episodes.jsonl, summary.json, summary.md, <task>.png"
    if summary.get("robustness"):
        print("\n" + robustness_markdown(summary["robustness"], short=True))
        written += f", {ROBUSTNESS_MD}, {ROBUSTNESS_JSON}, {PERTURBED_DIR}/<scheme>/"
    if summary.get("injection"):
        print("\n" + injection_markdown(summary["injection"]))
    if summary.get("paper_comparison"):
        print("\n" + comparison_markdown(summary))
    print(f"\nwritten to {args.out}/ ({written})")
    return 0
