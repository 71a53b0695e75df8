"""Evaluate and report arms trained elsewhere (e.g. on a GPU machine by ``gpu/arms.py``) with the study's own
evaluation and report stages.

The folder ``--out`` must hold the study's data (``data/``, as ``run.py`` writes it) and one model folder per arm
and seed in ``train/<arm>-s<seed>/merged``. Nothing is trained here; the report says where the models came from
(``train/<arm>-s<seed>/gpu_run.json`` when present)::

    python examples/small_model_study/eval_models.py --out runs/study-gpu --kinds coin_collector,custom \
        --n-train 640 --n-heldout 40 --n-unseen 40 --batch-size 16 --max-steps 8

(the settings of the earlier two-kind run in ``docs/method_study.md``; the data's settings must match the folder's).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run as study

from agentrefine_lg.errors import AgentRefineError


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, args = study.parse_args(argv)
        for stage in study.build_plan(cfg):
            model = study.train_dir(cfg, stage.arm, stage.seed) / "merged" if stage.kind == "eval" else None
            if model is not None and not (model / "config.json").is_file():
                raise AgentRefineError(f"no model in {model}")
        study.run_study(cfg, log=lambda m: print(m, flush=True), docs=args.docs, kinds=("eval", "report"))
    except AgentRefineError as exc:
        print(f"eval_models: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
