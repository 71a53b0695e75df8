"""``agentrefine convert IN OUT``: between our JSONL, released AgentRefine rows, ShareGPT conversations and
paper-format script + trajectory files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agentrefine_lg.convert import read_samples, sample_from_trajectory, to_sharegpt, write_jsonl
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Script, Trajectory


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="input file (.jsonl or .json)")
    parser.add_argument("output", help="output .jsonl file")
    parser.add_argument("--from", dest="fmt", default="auto", choices=["auto", "ours", "agentrefine", "sharegpt"],
                        help="input format (default: detected per row)")
    parser.add_argument("--to", default="ours", choices=["ours", "sharegpt"], help="output format (default: ours)")
    parser.add_argument("--script", help="script JSON for an input that is a bare trajectory (paper format)")
    parser.add_argument("--no-mask", action="store_true", help="train on erroneous turns too (the paper's ablation)")


def cli_run(args: argparse.Namespace) -> int:
    mask = not args.no_mask
    if args.script:
        try:
            script = Script.model_validate_json(Path(args.script).read_text(encoding="utf-8"))
            trajectory = Trajectory.model_validate_json(Path(args.input).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError("no such file", where=exc.filename) from None
        except ValueError as exc:
            raise InputError(str(exc).splitlines()[0] + f": {str(exc).splitlines()[1:3]}", where=args.input) from None
        samples = iter([sample_from_trajectory(script, trajectory, mask=mask)])
    else:
        samples = read_samples(args.input, fmt=args.fmt, mask=mask)
    if args.to == "sharegpt":
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with out.open("w", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps(to_sharegpt(sample), ensure_ascii=False) + "\n")
                n += 1
    else:
        n = write_jsonl(samples, args.output)
    print(f"wrote {n} sample(s) to {args.output}")
    return 0
