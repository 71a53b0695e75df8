"""The method, shown: does refinement tuning teach a model to recover from its mistakes? (issue 16)

One command runs the whole controlled comparison on a small model trained **from scratch** on 2 CPU cores::

    python examples/small_model_study/run.py --out runs/study

Stages (each skipped when its outputs are complete, so re-running resumes):

1. ``data``: grounded-teacher worlds split by world (``agentrefine_lg.synthesis.grounded.worldsets``): train worlds of the trained kinds, held-out
   worlds of those kinds, held-out worlds of a kind never trained on. Every train world gives a clean row
   (behaviour cloning) and an error->refine row (refinement arms), both checked by our rules.
2. ``student``: a byte-level BPE trained on the rows and a randomly initialised small Llama
   (``training.tiny.build_student``); with ``--model gemma-3-270m`` (or any folder) that model is tuned with LoRA.
3. ``train <arm> s<seed>``: ``python -m training.sft``, the command users run, identical for every arm but
   ``--data`` and ``--no_mask``: ``bc`` (clean rows), ``refine`` (refinement rows, erroneous turns masked),
   ``refine_nomask`` (the same rows, erroneous turns trained: the paper's ablation), ``mix`` (both rows of every
   world: the refinement trajectories together with their clean steps); the same worlds and optimizer steps.
4. ``eval <arm> s<seed>``: the tuned model in-process (``agentrefine_lg.serving.local_model``, concurrent episodes batched
   into one ``generate``) through the refine-agent graph on every evaluation world, once as is and once per
   injected mistake kind (``agentrefine_lg.eval.injection``: the agent's action at reply ``--inject-step`` is
   replaced by a mistake of that kind, the engine answers, the agent goes on).
5. ``report``: per arm, bootstrap intervals over worlds and paired differences (``agentrefine_lg.eval.paired``);
   ``report.md``, ``results.json`` and ``study.png`` in ``--out``; ``--docs`` also writes them into ``docs/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file from anywhere: the package and training/
    sys.path.insert(0, str(ROOT))

from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.eval import study as _study
from agentrefine_lg.eval.study import *  # noqa: F403  (the study's names, for tests and notebooks)
from agentrefine_lg.eval.study import (
    ARMS,
    GENERATORS,
    QUICK,
    STAGE_KINDS,
    StudyConfig,
    describe_plan,
    run_study,
    validate,
)


def parse_args(argv: Sequence[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    d = StudyConfig(out=Path("."))
    p = argparse.ArgumentParser(prog="python examples/small_model_study/run.py", description=(
        "behaviour cloning vs refinement tuning (masked / unmasked) from scratch on grounded worlds, evaluated "
        "with injected mistakes on held-out worlds. Re-run to resume."))
    p.add_argument("--out", required=True, help="output folder (resumable), e.g. runs/study")
    p.add_argument("--model", default=d.model, help="'scratch' (default: a small Llama trained from scratch) or a "
                                                    "pretrained alias/folder tuned with LoRA, e.g. gemma-3-270m")
    p.add_argument("--quick", action="store_true", help="a tiny run of every stage (minutes): checks, not results")
    for name, kind, help_ in (
            ("n_train", int, "train worlds (each: a clean and a refinement row)"),
            ("n_heldout", int, "held-out worlds of the trained kinds"),
            ("n_unseen", int, "held-out worlds of the kinds never trained on"),
            ("n_trainprobe", int, "train worlds also played as evaluation worlds (underfitting or expecting errors)"),
            ("errors", int, "mistakes (error->refine pairs) per refinement row"),
            ("steps", int, "optimizer steps, the same for every arm"),
            ("batch_size", int, "rows per optimizer step"),
            ("learning_rate", float, "peak learning rate (cosine schedule)"),
            ("adam_beta2", float, "AdamW's second-moment decay"),
            ("max_length", int, "training sequence length"),
            ("max_steps", int, "model replies per evaluation episode"),
            ("max_tokens", int, "reply token cap at evaluation"),
            ("inject_step", int, "model reply whose action is replaced by the injected mistake"),
            ("workers", int, "evaluation episodes run at once (their replies are batched)"),
            ("eval_worlds", int, "evaluate on at most this many worlds of each split"),
            ("threads", int, "torch threads (default: torch's)"),
            ("parallel", int, "training runs at once (several share one GPU; on a CPU keep 1)")):
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=f"{help_} (default {getattr(d, name)})")
    p.add_argument("--kinds", default=",".join(d.kinds), help=f"trained world generators ({', '.join(GENERATORS)})")
    p.add_argument("--unseen-kinds", default=",".join(d.unseen_kinds), help="held-out generators never trained on")
    p.add_argument("--seeds", default=",".join(map(str, d.seeds)), help="training seeds (replicates)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"arms ({', '.join(ARMS)})")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="train in bf16 autocast (default: on a GPU or a CPU with native bf16, else float32)")
    p.add_argument("--docs", action="store_true", help="also write the report and chart into docs/ "
                                                        "(method_study_results.md, method_study.png)")
    p.add_argument("--stages", default=",".join(STAGE_KINDS),
                   help="run only these kinds of stage, e.g. 'train' on a GPU machine that holds the data and the "
                        "student, then 'eval,report' here")
    p.add_argument("--dry-run", action="store_true", help="print the stages, their commands and status, and exit")
    args = p.parse_args(argv)

    def names(text: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))

    try:
        seeds = tuple(dict.fromkeys(int(x) for x in names(args.seeds)))
    except ValueError:
        raise InputError(f"--seeds must be comma-separated integers, got {args.seeds!r}", field="seeds") from None
    cfg = StudyConfig(out=Path(args.out), model=args.model, kinds=names(args.kinds), unseen_kinds=names(args.unseen_kinds),
                      seeds=seeds, arms=names(args.arms), device=args.device or _study._default_device())
    if args.quick:
        for key, value in QUICK.items():
            setattr(cfg, key, value)
    for key in ("n_train", "n_heldout", "n_unseen", "n_trainprobe", "errors", "steps", "batch_size", "learning_rate", "adam_beta2",
                "max_length", "max_steps", "max_tokens", "inject_step", "workers", "eval_worlds", "threads", "parallel"):
        if getattr(args, key) is not None:
            setattr(cfg, key, getattr(args, key))
    cfg.bf16 = _study.native_bf16(cfg.device) if args.bf16 is None else args.bf16
    args.stages = names(args.stages)
    if not args.stages or set(args.stages) - set(STAGE_KINDS):
        raise InputError(f"--stages takes {', '.join(STAGE_KINDS)}; got {args.stages!r}", field="stages")
    validate(cfg)
    return cfg, args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
        if args.dry_run:
            print(describe_plan(cfg))
            return 0
        started = time.monotonic()
        run_study(cfg, log=lambda m: print(m, flush=True), docs=args.docs, kinds=args.stages)
        print(f"total {time.monotonic() - started:.0f}s; see {cfg.out / 'report.md'}")
    except AgentRefineError as exc:
        print(f"study: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
