"""``agentrefine convert IN OUT``: between our JSONL, released AgentRefine rows, ShareGPT conversations and
paper-format script + trajectory files."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from agentrefine_lg.convert import load_json_file, read_samples, sample_from_trajectory, to_sharegpt
from agentrefine_lg.errors import InputError
from agentrefine_lg.outputs import atomic_output, refuse_same_file
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
    refuse_same_file(args.input, args.output)
    if args.script:
        refuse_same_file(args.script, args.output)
        script_doc, trajectory_doc = load_json_file(args.script), load_json_file(args.input)
        try:
            script = Script.model_validate(script_doc)
        except ValidationError as exc:
            raise _validation_error(exc, args.script) from None
        try:
            trajectory = Trajectory.model_validate(trajectory_doc)
        except ValidationError as exc:
            raise _validation_error(exc, args.input) from None
        samples = iter([sample_from_trajectory(script, trajectory, mask=mask)])
    else:
        samples = read_samples(args.input, fmt=args.fmt, mask=mask)
    # Written whole or not at all: a bad record halfway leaves an existing output as it was.
    n = 0
    with atomic_output(args.output) as handle:
        for sample in samples:
            row = to_sharegpt(sample) if args.to == "sharegpt" else sample.to_dict()
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    print(f"wrote {n} sample(s) to {args.output}")
    return 0


def _validation_error(exc: ValidationError, where: str) -> InputError:
    err = exc.errors()[0]
    return InputError(err["msg"], where=where, field=".".join(str(x) for x in err["loc"]) or None)
