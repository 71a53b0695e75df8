"""Serve a tuned model behind an OpenAI-compatible chat-completions API: vLLM, or a CPU transformers backend.

``agentrefine serve --model BASE --adapter DIR`` runs one of two backends:

* **vllm** (GPUs; tensor parallel): builds a ``vllm serve`` command (:func:`vllm_command`) with the LoRA
  adapter as a named LoRA module, the adapter's saved chat template, an API key, and runs it as a
  subprocess. vLLM pins its own torch/transformers, so it lives in its own environment: the executable
  comes from ``--vllm-bin``, env ``AGENTREFINE_VLLM`` or ``vllm`` on PATH.
* **transformers** (CPU, offline, tests and the quickstart): built in-process on ``transformers serve``'s
  parts (``ModelManager`` loads the local folder with its own chat template, ``GenerationState`` runs
  ``generate``, ``ChatCompletionHandler`` does the OpenAI request/response/SSE work). We do not use the
  ``transformers serve`` command itself because it (a) has no API-key check, (b) exposes ``/load_model``
  and ``/reset`` which let any caller load arbitrary hub models, (c) names the model by its path, and
  (d) returns the stop sequence inside the text (``generate``'s ``stop_strings`` stop *after* it), while
  OpenAI semantics exclude it. So our app mounts only ``/health``, ``/v1/models`` and
  ``/v1/chat/completions`` with a bearer-key gate in front, maps the public model name, and trims stop
  sequences (also in the SSE stream). An adapter is merged into its base (peft) into a temp folder first.

:func:`start_server` is the Python API for both (tests, quickstart, evaluation); it returns a
:class:`ServerHandle` context manager with ``base_url``, ``model_name`` and ``api_key``.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import json
import math
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.json_input import parse_json_text
from agentrefine_lg.models import resolve_model

DEFAULT_MODEL_NAME = "agentrefine"
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM accepts for ``--max-lora-rank`` (vllm/config/lora.py)."""
CHAT_TEMPLATE_FILE = "chat_template.jinja"


# ---------------------------------------------------------------------------------------------- vLLM


def lora_rank(adapter_dir: str | os.PathLike) -> int:
    """The LoRA rank of a saved peft adapter: ``r`` of ``adapter_config.json`` (max with ``rank_pattern``)."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise InputError("no adapter_config.json: not a peft LoRA adapter folder", where=str(adapter_dir))
    try:
        config = json.loads(path.read_text())
        ranks = [int(config["r"]), *(int(v) for v in (config.get("rank_pattern") or {}).values())]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InputError(f"cannot read the LoRA rank: {exc}", where=str(path), field="r") from None
    return max(ranks)


def vllm_max_lora_rank(rank: int) -> int:
    """Round a LoRA rank up to a value vLLM accepts for ``--max-lora-rank``."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise InputError(f"LoRA rank {rank} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}", field="r")


def find_chat_template(*folders: str | os.PathLike | None) -> Path | None:
    """The first ``chat_template.jinja`` in the given folders (adapter first: training saves it there)."""
    for folder in folders:
        if folder and (Path(folder) / CHAT_TEMPLATE_FILE).is_file():
            return Path(folder) / CHAT_TEMPLATE_FILE
    return None


def vllm_command(
    base_model: str,
    adapter: str | os.PathLike | None = None,
    *,
    api_key: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    tensor_parallel: int = 1,
    model_name: str = DEFAULT_MODEL_NAME,
    vllm_bin: str = "vllm",
    chat_template: str | os.PathLike | None = None,
    max_lora_rank: int | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``vllm serve`` command line for a base model plus (optionally) a LoRA adapter.

    With an adapter the LoRA module is served under ``model_name`` (``--lora-modules NAME=DIR``) with
    ``--max-lora-rank`` from the adapter's rank; without, the model itself is served under that name. The
    chat template defaults to the one saved with the adapter, else with a local base model.
    """
    if tensor_parallel < 1:
        raise InputError(f"tensor parallel size must be >= 1, got {tensor_parallel}", field="tensor_parallel")
    if not api_key:
        raise InputError("an API key is required", field="api_key")
    cmd = [vllm_bin, "serve", str(base_model), "--host", host, "--port", str(port),
           "--api-key", api_key, "--tensor-parallel-size", str(tensor_parallel)]
    if adapter is not None:
        rank = max_lora_rank or vllm_max_lora_rank(lora_rank(adapter))
        cmd += ["--enable-lora", "--lora-modules", f"{model_name}={Path(adapter)}", "--max-lora-rank", str(rank)]
    else:
        cmd += ["--served-model-name", model_name]
    template = chat_template or find_chat_template(adapter, base_model if Path(base_model).is_dir() else None)
    if template is not None:
        cmd += ["--chat-template", str(template)]
    return cmd + list(extra_args)


def resolve_vllm_bin(explicit: str | None = None) -> str:
    """The vLLM executable: ``explicit``, env ``AGENTREFINE_VLLM``, or ``vllm`` on PATH."""
    for candidate in (explicit, os.environ.get("AGENTREFINE_VLLM")):
        if candidate:
            found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
            if not found:
                raise InputError(f"vLLM executable {candidate!r} not found or not executable", field="vllm_bin")
            return found
    found = shutil.which("vllm")
    if not found:
        raise AgentRefineError(
            "vLLM not found. Install it in its own environment (it pins its own torch), e.g. "
            "`python -m venv ~/vllm && ~/vllm/bin/pip install vllm`, then pass --vllm-bin ~/vllm/bin/vllm "
            "or set AGENTREFINE_VLLM; or use --backend transformers (CPU).")
    return found


# ---------------------------------------------------------------------------------------------- handle


@dataclass
class ServerHandle:
    """A running server. Use as a context manager, or call :meth:`stop`."""

    base_url: str  # ends in /v1: give it to ChatOpenAI / openai.OpenAI as base_url
    model_name: str
    api_key: str
    backend: str
    _stop: Callable[[], None] = field(repr=False, default=lambda: None)
    _alive: Callable[[], bool] = field(repr=False, default=lambda: False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        """Root URL without ``/v1`` (``/health`` lives there)."""
        return self.base_url.removesuffix("/v1")

    def is_alive(self) -> bool:
        return not self._stopped and self._alive()

    def wait(self, poll_s: float = 0.5) -> None:
        """Block until the server ends (Ctrl-C raises KeyboardInterrupt in the caller)."""
        while self.is_alive():
            time.sleep(poll_s)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen | None, *, timeout_s: float = 20) -> None:
    """Stop a child server: terminate, wait up to ``timeout_s``, then kill (it never lingers)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, *, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``{url}/health`` until it answers 200; raise when the server dies or the time is up."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise AgentRefineError(f"the server exited before it became healthy ({url})")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AgentRefineError(f"the server at {url} was not healthy after {timeout_s:.0f}s")


def _start_vllm(base_model: str, adapter: str | None, *, host: str, port: int, api_key: str, model_name: str,
                tensor_parallel: int, vllm_bin: str | None, startup_timeout_s: float,
                extra_args: Sequence[str]) -> ServerHandle:
    port = port or _free_port(host)
    cmd = vllm_command(base_model, adapter, api_key=api_key, port=port, host=host, tensor_parallel=tensor_parallel,
                       model_name=model_name, vllm_bin=resolve_vllm_bin(vllm_bin), extra_args=extra_args)
    # Own session: Ctrl-C reaches us, and we stop vLLM ourselves (terminate, then kill) so it never lingers.
    proc = subprocess.Popen(cmd, start_new_session=True)

    def stop() -> None:
        stop_process(proc, timeout_s=30)

    url = f"http://{host}:{port}"
    try:
        wait_healthy(url, timeout_s=startup_timeout_s, alive=lambda: proc.poll() is None)
    except BaseException:
        stop()
        raise
    return ServerHandle(f"{url}/v1", model_name, api_key, "vllm", stop, lambda: proc.poll() is None)


# ---------------------------------------------------------------------------------------------- transformers


def merge_adapter(base_model: str | os.PathLike, adapter: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Load ``base + adapter`` with peft, merge the LoRA weights and save model + tokenizer to ``out_dir``.

    The tokenizer (and so the chat template) comes from the adapter folder when training saved one there,
    else from the base model.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(adapter)
    lora_rank(adapter)  # a clear error for a folder that is not an adapter
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype="auto")
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    has_tokenizer = any((adapter / name).exists() for name in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(str(adapter if has_tokenizer else base_model))
    template = find_chat_template(adapter)
    if template is not None:
        tokenizer.chat_template = template.read_text()
    out = Path(out_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


class _StopTrimmer:
    """Cuts streamed text at the first stop sequence, holding back a tail that may start one."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        buf = self.pending + text
        cuts = [buf.find(s) for s in self.stops if s in buf]
        if cuts:
            self.stopped, self.pending = True, ""
            return buf[: min(cuts)]
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(buf)), 0, -1):
                if buf.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


def trim_at_stop(text: str, stops: Sequence[str]) -> str:
    """OpenAI semantics: the text up to (excluding) the first stop sequence."""
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


@dataclass(frozen=True)
class ServeLimits:
    """What one request may cost the transformers backend. Each limit is a server setting
    (``agentrefine serve --max-request-bytes/--max-prompt-tokens/--max-tokens``)."""

    max_request_bytes: int = 4 * 1024 * 1024
    """Largest request body read (4 MiB): a larger one is answered 413 before it is read."""
    max_prompt_tokens: int = 16_384
    """Longest prompt (chat template applied) accepted; also never more than the model's context."""
    max_tokens: int = 1024
    """Cap on ``max_tokens`` / ``max_completion_tokens``, and their value when a request gives none."""

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_prompt_tokens", "max_tokens"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}", field=name)


class RequestError(Exception):
    """A malformed or over-limit request: answered with an OpenAI-style error naming the parameter."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


_ROLES = ("system", "user", "assistant", "tool")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_chat_request(body: Any, limits: ServeLimits) -> dict[str, Any]:
    """Check a chat-completions body field by field (raising :class:`RequestError` naming the param) and
    return it with the token budget applied: ``max_tokens`` set and capped at ``limits.max_tokens``."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list of {role, content} objects", "messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        if message.get("role") not in _ROLES:
            raise RequestError(f"messages[{i}].role must be one of {', '.join(_ROLES)}, got {message.get('role')!r}",
                               f"messages[{i}].role")
        content = message.get("content")
        parts_ok = isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content)
        if not (isinstance(content, str) or parts_ok):
            raise RequestError(f"messages[{i}].content must be a string or a list of text parts",
                               f"messages[{i}].content")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise RequestError("'model' must be a string", "model")
    n = body.get("n")
    if n is not None:
        if not _is_int(n) or n < 1:
            raise RequestError("'n' must be a positive integer", "n")
        if n > 1:
            raise RequestError(f"n={n}: this server returns one choice per request; send {n} requests instead", "n")
        body = {k: v for k, v in body.items() if k != "n"}
    budget = limits.max_tokens
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise RequestError(f"'{key}' must be a positive integer, got {value!r}", key)
        budget = min(budget, value)
    body = {**body, "max_tokens": budget}
    body.pop("max_completion_tokens", None)
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(x, str) and x for x in stops):
            raise RequestError("'stop' must be a non-empty string or a list of at most 4 of them", "stop")
    for key, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0), ("frequency_penalty", -2.0, 2.0)):
        value = body.get(key)
        if value is not None and not (_is_number(value) and low <= value <= high):
            raise RequestError(f"'{key}' must be a number from {low:g} to {high:g}, got {value!r}", key)
    if body.get("seed") is not None and not _is_int(body["seed"]):
        raise RequestError("'seed' must be an integer", "seed")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise RequestError("'stream' must be true or false", "stream")
    bias = body.get("logit_bias")
    if bias is not None and not (isinstance(bias, dict) and all(
            isinstance(k, str) and k.isdigit() and _is_number(v) for k, v in bias.items())):
        raise RequestError("'logit_bias' must map token ids to numbers", "logit_bias")
    return body


BATCH_SEQUENCES = 4
"""Requests the CPU backend's batching keeps a full-length KV cache for at once."""


def _cpu_batching_config(model_dir: str, limits: ServeLimits):
    """A KV cache sized for :data:`BATCH_SEQUENCES` requests of the longest allowed length. Without it,
    transformers sizes the paged cache to 90 % of free *device* memory, which on a CPU is the machine's RAM
    (a tiny model's server took 14 GB)."""
    from transformers import AutoConfig, ContinuousBatchingConfig

    context = getattr(AutoConfig.from_pretrained(model_dir), "max_position_embeddings", None) or limits.max_prompt_tokens
    per_request = min(int(context), limits.max_prompt_tokens + limits.max_tokens)
    page = 256
    return ContinuousBatchingConfig(page_size=page, num_blocks=math.ceil(BATCH_SEQUENCES * per_request / page) + 1,
                                    max_batch_tokens=min(4096, BATCH_SEQUENCES * per_request))


def _build_app(model_dir: str, *, model_name: str, api_key: str, device: str, dtype: str, batching: bool = True,
               limits: ServeLimits | None = None):
    """The ASGI app on transformers-serve parts (see the module docstring for what differs and why)."""
    import logging

    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.utils import GenerationState

    # transformers serve logs every request at WARNING ("[Request received]"); keep our console quiet.
    logging.getLogger("transformers.cli.serving").setLevel(logging.ERROR)
    logging.getLogger("transformers.generation.configuration_utils").setLevel(logging.ERROR)
    # Continuous batching (transformers' paged-attention scheduler) while requests overlap: they share forward
    # passes instead of queueing on one generate at a time (4 concurrent requests: 1.2-2.3x the requests/s of one
    # on the tiny model in runs on 2 cores; one at a time 0.9-1.3x; benchmarks/serving_concurrency.py). A request
    # that arrives alone runs plain ``generate`` instead: the scheduler's per-step batch preparation made a lone request
    # 0.77-0.93x as fast (same benchmark, paired). Both paths run the same weights at once (inference only); a
    # model in eager attention gets a copy for the lone path, as the scheduler switches the model it runs to
    # paged eager attention in place (sdpa, the CPU default, it leaves as it is).
    manager = ModelManager(device=device, dtype=dtype, force_model=model_dir, model_timeout=-1,
                           continuous_batching=batching)
    limits = limits or ServeLimits()
    lone = contextvars.ContextVar("agentrefine_lone_request", default=not batching)
    in_flight = [0]  # requests being answered; touched only on the event loop

    class State(GenerationState):
        def use_continuous_batching(self, model, modality) -> bool:
            return not lone.get() and super().use_continuous_batching(model, modality)

    state = State(continuous_batching=batching,
                  cb_config=_cpu_batching_config(model_dir, limits) if batching and device == "cpu" else None)
    lone_model: list[Any] = []  # the model the lone path runs (batching on): the served one, or its copy

    class Handler(ChatCompletionHandler):
        def _resolve_model(self, body: dict):  # public name -> the pinned local folder
            requested = body.get("model")
            if requested not in (None, "", model_name, model_dir):
                raise HTTPException(status_code=404, detail=f"model {requested!r} not served here; use {model_name!r}")
            body["model"] = model_dir
            _, model, processor = super()._resolve_model(body)
            if lone_model and lone.get():
                model = lone_model[0]
            return model_name, model, processor

    handler = Handler(model_manager=manager, generation_state=state)
    if batching:
        served = handler._resolve_model({"model": model_dir})[1]
        # an eager model is copied now, before the scheduler switches it to paged attention on its first batch
        lone_model.append(served if served.config._attn_implementation == "sdpa" else copy.deepcopy(served))

    log = logging.getLogger("agentrefine.serve")

    def prompt_tokens(body: dict) -> tuple[int, int | None]:
        """Tokens of the prompt as the model will see it, and the model's context length (if it says)."""
        _, model, processor = handler._resolve_model(dict(body))
        tokenizer = getattr(processor, "tokenizer", processor)
        chat = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                 else "".join(p["text"] for p in m["content"])} for m in body["messages"]]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids), getattr(model.config, "max_position_embeddings", None)

    async def chat_completions(request: Request) -> Response:
        try:
            try:
                body = parse_json_text(await request.body(), where="the request body")
            except InputError as exc:  # not UTF-8, not JSON, nested too deep, lone surrogates
                raise RequestError(str(exc)) from None
            body = validate_chat_request(body, limits)
            requested = body.get("model")
            if requested not in (None, "", model_name):
                raise RequestError(f"model {requested!r} not served here; use {model_name!r}", "model", 404,
                                   "model_not_found")
            n_prompt, context = await asyncio.to_thread(prompt_tokens, body)
            most = min(limits.max_prompt_tokens, context - 1 if context else limits.max_prompt_tokens)
            if n_prompt > most:
                raise RequestError(f"the prompt is {n_prompt} tokens; this server accepts at most {most}", "messages",
                                   code="context_length_exceeded")
            if context:
                body["max_tokens"] = min(body["max_tokens"], context - n_prompt)
        except RequestError as exc:
            return _error(exc.status, exc.message, param=exc.param, code=exc.code)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        request_id = request.headers.get("x-request-id") or secrets.token_hex(8)
        in_flight[0] += 1
        done = True  # False once a stream owns the count (it is given back when the stream ends)
        token = None
        try:
            token = lone.set(not batching or in_flight[0] == 1)
            response = await handler.handle_request(body, request_id)
            if isinstance(response, StreamingResponse):
                response.body_iterator = _counted(response.body_iterator, in_flight)
                done = False
        except HTTPException as exc:
            return _error(400 if exc.status_code == 422 else exc.status_code, str(exc.detail))
        except Exception as exc:  # noqa: BLE001 - answered as JSON, logged in one line, never a bare 500
            log.error("request %s failed: %s: %s", request_id, type(exc).__name__, exc)
            return _error(500, f"the server failed on this request ({type(exc).__name__})", kind="server_error")
        finally:
            if token is not None:
                lone.reset(token)
            if done:
                in_flight[0] -= 1
        if not stops:
            return response
        if isinstance(response, StreamingResponse):
            response.body_iterator = _trim_sse(response.body_iterator, stops)
            return response
        data = json.loads(response.body)
        for choice in data.get("choices", []):
            message = choice.get("message") or {}
            if isinstance(message.get("content"), str):
                message["content"] = trim_at_stop(message["content"], stops)
        return JSONResponse(data)

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": model_name, "object": "model", "created": 0, "owned_by": "agentrefine"}]})  # no local paths

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # Plain Starlette routes: no dependency injection to resolve (this module uses postponed annotations).
    app = Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ])

    def shutdown() -> None:
        state.shutdown()
        manager.shutdown()

    return _ApiKeyGate(_BodyLimit(app, limits.max_request_bytes), api_key), shutdown


async def _counted(chunks: Any, in_flight: list[int]):
    """A response stream that gives its request's place in ``in_flight`` back when it ends or is closed (a client
    that goes away mid-stream); a stream never started keeps its place, so later requests are only batched."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        in_flight[0] -= 1


def _error(status: int, message: str, *, param: str | None = None, code: str | int | None = None,
           kind: str = "invalid_request_error"):
    """An OpenAI-style error body: ``{"error": {"message", "type", "param", "code"}}``."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": code if code is not None else status}}, status_code=status)


def _json_error_events(status: int, message: str, code: str) -> list[dict[str, Any]]:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    return [{"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]},
            {"type": "http.response.body", "body": body}]


class _BodyLimit:
    """ASGI wrapper: a request body over ``max_bytes`` is answered 413 and never held in memory (a
    ``Content-Length`` over the limit is refused before reading; a chunked body is counted as it comes)."""

    def __init__(self, app: Any, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: Any, status: int, message: str, code: str) -> None:
        for event in _json_error_events(status, message, code):
            await send(event)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_large = f"the request body is larger than this server's limit of {self.max_bytes} bytes"
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await self._refuse(send, 400, "the Content-Length header is not a number", "bad_request")
                return
            if int(length) > self.max_bytes:
                await self._refuse(send, 413, too_large, "request_too_large")
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(send, 413, too_large, "request_too_large")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _trim_sse(events, stops: Sequence[str]):
    """Apply :class:`_StopTrimmer` to the ``delta.content`` of an OpenAI SSE stream; ends with ``[DONE]``."""
    trimmer = _StopTrimmer(stops)
    async for raw in events:
        text = raw.decode() if isinstance(raw, bytes) else raw
        out: list[str] = []
        for event in text.split("\n\n"):
            if not event.strip():
                continue
            if not event.startswith("data: ") or event.strip() == "data: [DONE]":
                out.append(event + "\n\n")
                continue
            try:
                chunk = json.loads(event[6:])
            except json.JSONDecodeError:
                out.append(event + "\n\n")
                continue
            keep = True
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                if choice.get("finish_reason"):  # last chunk: release what was held back
                    tail = trimmer.flush()
                    if tail:
                        out.append("data: " + json.dumps({**chunk, "choices": [
                            {"index": choice.get("index", 0), "delta": {"content": tail}, "finish_reason": None}],
                            "usage": None}) + "\n\n")
                if isinstance(delta.get("content"), str):
                    delta["content"] = trimmer.feed(delta["content"])
                    if not delta["content"] and not choice.get("finish_reason") and not delta.get("role") \
                            and not delta.get("tool_calls"):
                        keep = False
            if keep:
                out.append("data: " + json.dumps(chunk) + "\n\n")
        if out:
            yield "".join(out)
    yield "data: [DONE]\n\n"


class _ApiKeyGate:
    """ASGI wrapper: every route but ``/health`` needs ``Authorization: Bearer <key>`` (OpenAI's scheme)."""

    def __init__(self, app: Any, api_key: str):
        self.app, self.api_key = app, api_key.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") != "/health":
            headers = dict(scope.get("headers") or [])
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"")
            if not secrets.compare_digest(token, self.api_key):
                body = json.dumps({"error": {"message": "Invalid or missing API key", "type": "invalid_request_error",
                                             "code": "invalid_api_key"}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def _start_transformers(model_dir: str, adapter: str | None, *, host: str, port: int, api_key: str,
                        model_name: str, device: str, dtype: str, startup_timeout_s: float,
                        limits: ServeLimits | None = None, batching: bool = True) -> ServerHandle:
    import uvicorn

    if not Path(model_dir).is_dir():
        raise InputError("the transformers backend serves a local model folder; this is not a directory",
                         where=str(model_dir))
    workdir: str | None = None
    served = model_dir
    if adapter is not None:
        workdir = tempfile.mkdtemp(prefix="agentrefine-merged-")
        served = str(merge_adapter(model_dir, adapter, workdir))
    try:
        app, shutdown = _build_app(served, model_name=model_name, api_key=api_key, device=device, dtype=dtype,
                                   batching=batching,
                                   limits=limits)
    except BaseException:
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="agentrefine-serve", daemon=True)
    thread.start()

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)
        shutdown()
        sock.close()
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise AgentRefineError(f"the transformers server thread exited during startup ({url})")
            if time.monotonic() > deadline:
                raise AgentRefineError(f"the transformers server did not start within {startup_timeout_s:.0f}s")
            time.sleep(0.05)
    except BaseException:
        stop()
        raise
    return ServerHandle(f"{url}/v1", model_name, api_key, "transformers", stop, thread.is_alive)


def start_server(
    model_dir: str | os.PathLike,
    *,
    backend: str = "transformers",
    adapter: str | os.PathLike | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    api_key: str | None = None,
    model_name: str = DEFAULT_MODEL_NAME,
    device: str = "cpu",
    dtype: str = "auto",
    tensor_parallel: int = 1,
    vllm_bin: str | None = None,
    startup_timeout_s: float = 600.0,
    extra_args: Sequence[str] = (),
    limits: ServeLimits | None = None,
    batching: bool = True,
) -> ServerHandle:
    """Start a server for ``model_dir`` (+ ``adapter``) and return once it answers; ``port=0`` picks a free one.

    ``api_key`` defaults to a fresh random key (``handle.api_key``). ``backend`` is ``"transformers"`` (in
    this process, CPU by default) or ``"vllm"`` (a subprocess; ``tensor_parallel``, ``vllm_bin``, ``extra_args``).
    ``limits`` (:class:`ServeLimits`) bounds each request of the transformers backend; vLLM applies its own.
    ``batching``: the transformers backend batches concurrent requests (continuous batching); vLLM always does.
    """
    api_key = api_key or secrets.token_urlsafe(24)
    if backend == "transformers":  # aliases (gemma-3-270m) become their cached local folder
        model_dir = resolve_model(str(model_dir))
    adapter_s = str(adapter) if adapter is not None else None
    if adapter_s is not None and not Path(adapter_s).is_dir():
        raise InputError("adapter folder not found", where=adapter_s)
    if backend == "transformers":
        return _start_transformers(str(model_dir), adapter_s, host=host, port=port, api_key=api_key,
                                   model_name=model_name, device=device, dtype=dtype,
                                   startup_timeout_s=startup_timeout_s, limits=limits, batching=batching)
    if backend == "vllm":
        return _start_vllm(str(model_dir), adapter_s, host=host, port=port, api_key=api_key, model_name=model_name,
                           tensor_parallel=tensor_parallel, vllm_bin=vllm_bin, startup_timeout_s=startup_timeout_s,
                           extra_args=extra_args)
    raise InputError(f"unknown backend {backend!r}; choose 'vllm' or 'transformers'", field="backend")


__all__ = [
    "DEFAULT_MODEL_NAME",
    "VLLM_LORA_RANKS",
    "RequestError",
    "ServeLimits",
    "ServerHandle",
    "find_chat_template",
    "lora_rank",
    "merge_adapter",
    "resolve_vllm_bin",
    "start_server",
    "stop_process",
    "trim_at_stop",
    "validate_chat_request",
    "vllm_command",
    "vllm_max_lora_rank",
]
