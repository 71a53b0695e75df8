"""``agentrefine serve``: serve a tuned model (vLLM on a GPU, or the transformers backend on CPU).

Argument parsing and printing only: the servers are :func:`agentrefine_lg.serving.server.start_server`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys

from agentrefine_lg.errors import AgentRefineError
from agentrefine_lg.serving.server import (
    DEFAULT_MODEL_NAME,
    ServeLimits,
    resolve_vllm_bin,
    start_server,
    vllm_command,
)


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="base model: a local folder (or a hub id for vLLM)")
    parser.add_argument("--adapter", help="LoRA adapter folder written by training.sft (optional)")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                        help="vllm (GPU) or transformers (CPU); auto = vllm when it can be found, else transformers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--name", default=DEFAULT_MODEL_NAME, help="model name clients ask for (default agentrefine)")
    parser.add_argument("--api-key", help="bearer key clients must send (default: a random key, printed)")
    parser.add_argument("--tensor-parallel", type=int, default=1, help="vLLM --tensor-parallel-size")
    parser.add_argument("--vllm-bin", help="vLLM executable (default: $AGENTREFINE_VLLM or vllm on PATH)")
    parser.add_argument("--device", default="cpu", help="transformers backend device (cpu, cuda:0, auto)")
    parser.add_argument("--print-command", action="store_true", help="vllm: print the command line and exit")
    parser.add_argument("--no-batching", action="store_true",
                        help="transformers backend: answer one request at a time (default: continuous batching of "
                             "concurrent requests)")
    lim = ServeLimits()
    parser.add_argument("--max-request-bytes", type=int, default=lim.max_request_bytes,
                        help=f"transformers backend: largest request body (default {lim.max_request_bytes})")
    parser.add_argument("--max-prompt-tokens", type=int, default=lim.max_prompt_tokens,
                        help=f"transformers backend: longest prompt (default {lim.max_prompt_tokens})")
    parser.add_argument("--max-tokens", type=int, default=lim.max_tokens,
                        help=f"transformers backend: cap on a request's max_tokens (default {lim.max_tokens})")


def cli_run(args: argparse.Namespace) -> int:
    backend = args.backend
    if backend == "auto":
        try:
            resolve_vllm_bin(args.vllm_bin)
            backend = "vllm"
        except AgentRefineError:
            backend = "transformers"
    api_key = args.api_key or os.environ.get("AGENTREFINE_API_KEY") or secrets.token_urlsafe(24)
    if args.print_command:
        cmd = vllm_command(args.model, args.adapter, api_key=api_key, port=args.port, host=args.host,
                           tensor_parallel=args.tensor_parallel, model_name=args.name,
                           vllm_bin=args.vllm_bin or os.environ.get("AGENTREFINE_VLLM") or "vllm")
        print(" ".join(_quote(c) for c in cmd))
        return 0
    print(f"agentrefine serve: starting the {backend} backend for {args.model}"
          + (f" + {args.adapter}" if args.adapter else ""), file=sys.stderr, flush=True)
    handle = start_server(args.model, backend=backend, adapter=args.adapter, port=args.port, host=args.host,
                          api_key=api_key, model_name=args.name, device=args.device,
                          tensor_parallel=args.tensor_parallel, vllm_bin=args.vllm_bin,
                          limits=ServeLimits(args.max_request_bytes, args.max_prompt_tokens, args.max_tokens),
                          batching=not args.no_batching)
    print(f"serving {handle.model_name!r} at {handle.base_url} ({handle.backend}); Ctrl-C stops it")
    print(f"export AGENTREFINE_BASE_URL={handle.base_url} AGENTREFINE_MODEL={handle.model_name} "
          f"AGENTREFINE_API_KEY={handle.api_key}", flush=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        handle.wait()
        return 0 if handle._stopped else 1
    except KeyboardInterrupt:
        print("agentrefine serve: stopping", file=sys.stderr)
        return 0
    finally:
        handle.stop()
        signal.signal(signal.SIGTERM, previous)


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
