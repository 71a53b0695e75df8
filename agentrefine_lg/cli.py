"""The ``agentrefine`` command. Thin: parses arguments and calls the library.

Each subcommand is a module of :mod:`agentrefine_lg.commands` (``train`` and ``merge``: ``training/``)
exposing ``cli_add_arguments(parser)`` and ``cli_run(args) -> int``: argument parsing and printing only, the
work is the library's. A command is imported only when used, so ``agentrefine check`` does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from agentrefine_lg.errors import AgentRefineError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("agentrefine_lg.commands.check", "verify scripts/trajectories/samples against the rules"),
    "convert": ("agentrefine_lg.commands.convert", "convert between our JSONL, released AgentRefine rows and ShareGPT"),
    "synthesize": ("agentrefine_lg.commands.synthesize", "synthesize verified refinement data (resumable)"),
    "train": ("training.sft", "refinement-tune a model (same as python -m training.sft)"),
    "merge": ("training.merge", "merge a LoRA adapter into its base model"),
    "serve": ("agentrefine_lg.commands.serve", "serve a tuned model (vLLM or the transformers backend)"),
    "eval": ("agentrefine_lg.commands.eval", "evaluate a chat model on held-out interactive tasks"),
    "quickstart": ("agentrefine_lg.commands.quickstart", "the whole loop offline: synthesize, train, serve, evaluate"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentrefine", description="AgentRefine for LangGraph.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in {"-h", "--help"}:
            parser.print_usage(sys.stderr)
            print(f"agentrefine: error: unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    module_name, help_text = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        print(f"agentrefine {name}: unavailable ({exc}); install the matching extra, e.g. pip install 'agentrefine-lg[all]'",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog=f"agentrefine {name}", description=help_text)
    module.cli_add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.cli_run(args) or 0)
    except AgentRefineError as exc:
        print(f"agentrefine {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"agentrefine {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
