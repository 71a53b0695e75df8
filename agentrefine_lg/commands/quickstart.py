"""``agentrefine quickstart``: the whole loop offline, one line per stage (see :mod:`agentrefine_lg.quickstart`).

Argument parsing and printing only: the stages, their figures and the report are the library's.
"""

from __future__ import annotations

import argparse
import time

from agentrefine_lg.errors import InputError
from agentrefine_lg.quickstart import (
    DEFAULT_TASKS,
    STAGE_NAMES,
    Stages,
    build_plan,
    check_figure,
    eval_figure,
    scrub_logs,
    show,
    synth_figure,
    train_figure,
    write_report,
)
from agentrefine_lg.serve import stop_process


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    parser.add_argument("--n", type=int, default=16, help="samples to synthesize (default 16)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--personas", help="persona file (default: the built-in list)")
    parser.add_argument("--teacher", help="LLM teacher spec, e.g. openai:gpt-4o (default: the embedded grounded teacher)")
    parser.add_argument("--teacher-base-url", help="OpenAI-compatible teacher endpoint (vLLM), with --teacher-model")
    parser.add_argument("--teacher-model", help="model name at --teacher-base-url")
    parser.add_argument("--base-model", help="student model: hub id or local folder (default: the tiny local model)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="training epochs (default: 10 for the tiny model, 3 for --base-model)")
    parser.add_argument("--serve", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--vllm-bin", help="vLLM executable (its own environment)")
    parser.add_argument("--port", type=int, default=0, help="port of the tuned model's server (default: a free one)")
    parser.add_argument("--api-key", help="API key for the served models (default: a random one)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"held-out tasks (default {DEFAULT_TASKS})")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task and model (default 2)")
    parser.add_argument("--max-steps", type=int, default=8, help="actions per episode (default 8; the paper: 30)")
    parser.add_argument("--max-tokens", type=int, default=48, help="reply token cap (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the stage commands and exit")


def cli_run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.episodes < 1 or args.max_steps < 1:
        raise InputError("--n, --episodes and --max-steps must be at least 1")
    if args.teacher_base_url and not args.teacher_model:
        raise InputError("--teacher-base-url needs --teacher-model", field="teacher-model")
    plan = build_plan(args)
    if args.dry_run:
        for name in ("synthesize", "check", "train", "serve_tuned", "eval_tuned", "serve_base", "eval_base",
                     "eval_oracle"):
            print(f"{name}: {show(getattr(plan, name), secret=plan.api_key)}")
        return 0
    started = time.perf_counter()
    stages = Stages(plan.out, total=len(STAGE_NAMES) + 1, secret=plan.api_key)
    print(f"agentrefine quickstart: {stages.total} stages into {plan.out}/ (each stage's command and output: "
          f"{stages.logs}/; the commands alone: --dry-run)", flush=True)
    data, train_dir, eval_dir = plan.out / "data", plan.out / "train", plan.out / "eval"
    try:
        stages.run("synthesize", plan.synthesize, lambda log: synth_figure(data))
        stages.run("check", plan.check, check_figure)
        stages.run("train", plan.train, lambda log: train_figure(train_dir))
        for label, serve_cmd, eval_cmd, port in (("tuned", plan.serve_tuned, plan.eval_tuned, plan.ports[0]),
                                                 ("base", plan.serve_base, plan.eval_base, plan.ports[1])):
            server = None
            try:
                server = stages.serve(f"serve {label}", serve_cmd, port)
                stages.run(f"eval {label}", eval_cmd, lambda log, label=label: eval_figure(eval_dir / label))
            finally:
                stop_process(server)
        stages.run("eval oracle", plan.eval_oracle, lambda log: eval_figure(eval_dir / "oracle"))
    finally:
        scrub_logs(stages.logs, plan.api_key)
    total = time.perf_counter() - started
    t0 = time.perf_counter()
    report = write_report(plan, stages.timings, total, args)
    stages.n += 1
    stages.line("report", f"{report} (total {total:.0f}s, as in the report)", time.perf_counter() - t0)
    return 0
