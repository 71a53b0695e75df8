"""A local model folder as a LangChain chat model, in-process: evaluation and the refine agent without a server.

``local_chat_model("runs/sft/merged")`` loads the folder (or an alias such as ``gemma-3-270m``) with
transformers once per process, renders each conversation with the folder's chat template and answers greedily
(temperature 0, docs/method.md §6), stopped at ``\\nObservation:`` as the served model is: decoding ends at
the token that completes a stop sequence, and the text is cut before it. It speaks text: the refine
agent and evaluation read its ``Thought/Action`` replies themselves.

Calls made at the same time (episodes run in threads, or ``abatch``) are **batched continuously**: one generation
thread per model decodes every active request one token per step, a new request joins at the next step and a
finished one leaves, so concurrent episodes share each forward pass. Each conversation's **KV cache is kept** for
its next turn (and the prompt shared by a task's episodes for the others): a turn computes only what is new, not
the whole conversation again. Greedy replies are those of ``generate`` alone, up to floating-point ties.
transformers' own continuous batching (paged attention; ``agentrefine serve`` uses it) was measured here too and ran
slower in-process on CPU (benchmarks/eval_concurrency.py), hence this small engine. For tool calling in other
LangGraph apps, serve the folder (``agentrefine serve``) and use :func:`agentrefine_lg.serving.chat_model.chat_model`.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field
from transformers.cache_utils import DynamicLayer

from agentrefine_lg.agent_format import content_text
from agentrefine_lg.models import resolve_model
from agentrefine_lg.serving.chat_model import DEFAULT_STOP
from agentrefine_lg.serving.server import trim_at_stop

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}
MAX_BATCH = 32
"""Most rows decoded together (more wait for a row to finish)."""
PREFIX_CACHE_BYTES = 1 << 30
"""Memory kept for the KV caches of recent conversations (per model), reused by their next turn."""


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = str(resolve_model(path))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # CPU kernels are fastest (and exact) in float32, whatever dtype the folder was saved in
    dtype = "float32" if device == "cpu" else "auto"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    return tokenizer, model


@dataclass
class _Request:
    input_ids: list[int]
    max_new_tokens: int
    stops: tuple[str, ...] = ()  # stop sequences: the row leaves the batch as soon as its text holds one
    future: Future = field(default_factory=Future)


@dataclass
class _Row:
    """A request being decoded: its prompt and the tokens generated so far (the last one not yet in the cache)."""

    request: _Request
    tokens: list[int]
    generated: int = 1
    done: bool = False  # answered; its slot stays in the batch until the next repack (see _Batcher._loop)

    @property
    def cached(self) -> int:
        """How many of its tokens are in the KV cache (all but the last)."""
        return len(self.tokens) - 1


class _Prefixes:
    """The KV caches of recent sequences (prompt + reply), least recently used dropped first past ``max_bytes``.

    An episode's next prompt is its last prompt and reply plus one observation, and the episodes of one task share
    their system prompt: the longest cached common prefix is reused and only the rest is computed (vLLM's prefix
    caching, for one process)."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.entries: OrderedDict[int, tuple[Any, list[tuple[Any, Any]], int]] = OrderedDict()
        self._next = 0

    def longest(self, ids: Any) -> tuple[int, list[tuple[Any, Any]] | None]:
        """The length of the longest cached prefix of ``ids`` (a 1-D tensor) and that entry's cache."""
        best, best_key = 0, None
        for key, (seq, _, _) in self.entries.items():
            n = min(len(seq), len(ids))
            if n <= best:
                continue
            differ = (seq[:n] != ids[:n]).nonzero()
            common = int(differ[0]) if len(differ) else n
            if common > best:
                best, best_key = common, key
        if best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, self.entries[best_key][1]

    def add(self, ids: Any, layers: list[tuple[Any, Any]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        # an entry this one extends (the same episode's previous turn) will not be asked for again
        for key, (seq, _, old) in list(self.entries.items()):
            if len(seq) <= len(ids) and bool((seq == ids[: len(seq)]).all()):
                del self.entries[key]
                self.bytes -= old
        self.entries[self._next] = (ids, layers, size)
        self._next += 1
        self.bytes += size
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, (_, _, old) = self.entries.popitem(last=False)
            self.bytes -= old


class _Released(RuntimeError):
    """The batcher was released (:func:`release_local_model`) between its lookup and the request."""


class _Batcher:
    """One generation thread per loaded model, batching continuously: a request waiting joins the running batch
    at the next decoding step (vLLM's scheduling, in miniature), so concurrent episodes share every forward pass.

    A new prompt is computed alone, from the longest prefix already cached (:class:`_Prefixes`); the batch then
    decodes greedily one token per step, its caches left-padded to one length, each row at its own positions. A
    finished row is answered at once and its cache kept for the episode's next turn; its slot leaves the batch at the
    next repack (usually that next turn's admission), so a short reply does not copy every row's cache twice."""

    def __init__(self, tokenizer: Any, model: Any, device: str):
        self.tokenizer, self.model, self.device = tokenizer, model, device
        kinds = set(getattr(model.config.get_text_config(), "layer_types", None) or ["full_attention"])
        if not kinds <= {"full_attention", "sliding_attention"}:
            raise ValueError(f"in-process generation needs an attention-only model; {type(model).__name__} has "
                             f"{sorted(kinds)} layers: serve it (agentrefine serve --backend vllm)")
        eos = model.generation_config.eos_token_id
        pad = tokenizer.pad_token_id
        self.stops = {t for t in (eos if isinstance(eos, list) else [eos]) if t is not None}
        if pad is not None:
            self.stops.add(pad)
        self.pending: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()  # None: close once idle
        # Guards `closed` against a request queued behind the close marker: it would never be answered.
        self.closing_lock = threading.Lock()
        self.closed = False
        # how much sharing happened: prompts answered, decoding steps and rows decoded, prompt tokens computed
        # and reused from the prefix cache
        self.reset()
        self.thread = threading.Thread(target=self._loop, name="agentrefine-local-generate", daemon=True)
        self.thread.start()

    def reset(self) -> None:
        """Forget the cached conversations and zero the counts (between measurements; not while requests run)."""
        self.prefixes = _Prefixes(PREFIX_CACHE_BYTES)
        self.prompts = self.steps = self.rows = self.prefilled = self.reused = 0

    def submit(self, input_ids: list[int], max_new_tokens: int, stops: tuple[str, ...] = ()) -> list[int]:
        """The greedy reply's tokens: up to a stop token, ``max_new_tokens``, or the token that completes one of
        ``stops`` (included: the caller trims the text, as OpenAI's API does)."""
        if not input_ids or max_new_tokens < 1:
            raise ValueError(f"a prompt of {len(input_ids)} tokens with max_new_tokens={max_new_tokens}")
        request = _Request(input_ids, max_new_tokens, tuple(s for s in stops if s))
        with self.closing_lock:
            if self.closed:
                raise _Released()
            self.pending.put(request)
        return request.future.result()

    def close(self) -> None:
        """End the generation thread once the requests already submitted are answered; the model and its cached
        conversations are then free to be collected. Later :meth:`submit` calls raise :class:`_Released`."""
        with self.closing_lock:
            self.closed = True
            self.pending.put(None)

    def _loop(self) -> None:
        rows: list[_Row] = []
        cache, mask = None, None
        closing = False
        while True:
            if closing and not rows:
                self.prefixes = _Prefixes(0)
                return
            admitted: list[tuple[_Row, list[tuple[Any, Any]]]] = []
            while len(rows) + len(admitted) < MAX_BATCH:
                try:
                    request = self.pending.get(block=not rows and not admitted and not closing)
                except queue.Empty:
                    break
                if request is None:
                    closing = True
                    continue
                try:
                    row, kv = self._prefill(request)
                    if self._finished(row):
                        self._finish(row, kv)
                        continue
                except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises
                    if not request.future.done():
                        request.future.set_exception(exc)
                    continue
                admitted.append((row, kv))
            try:
                if admitted:  # one repack: the rows still decoding, the admitted ones, not the answered ones
                    current = _layers(cache) if rows else []
                    live = [(i, r) for i, r in enumerate(rows) if not r.done]
                    cache, mask = _pack([(current, i, r.cached) for i, r in live]
                                        + [(kv, 0, r.cached) for r, kv in admitted],
                                        _room([r for _, r in live], admitted))
                    rows = [r for _, r in live] + [r for r, _ in admitted]
                    admitted = []
                if not rows:
                    continue
                mask = self._step(rows, cache, mask)
                done = {i for i, row in enumerate(rows) if not row.done and self._finished(row)}
                if done:
                    current = _layers(cache)
                    for i in done:
                        n = rows[i].cached
                        self._finish(rows[i], [(k[i:i + 1, :, -n:].clone(), v[i:i + 1, :, -n:].clone())
                                               for k, v in current])
                        rows[i].done = True
                    # An answered row leaves at the next repack: an episode's next prompt usually comes a few steps
                    # later and its admission repacks anyway, so leaving now would copy every row's cache twice.
                    # Until then its slot decodes tokens nobody reads; past half the batch, repack now.
                    live = [i for i, r in enumerate(rows) if not r.done]
                    if not live:
                        rows, cache, mask = [], None, None
                    elif len(rows) - len(live) > len(live):
                        cache, mask = _pack([(current, i, rows[i].cached) for i in live],
                                            _room([rows[i] for i in live], []))
                        rows = [rows[i] for i in live]
            except BaseException as exc:  # noqa: BLE001 - every unanswered row fails with it; the thread goes on
                for row in [*rows, *(r for r, _ in admitted)]:
                    if not row.request.future.done():
                        row.request.future.set_exception(exc)
                rows, cache, mask = [], None, None

    def _prefill(self, request: _Request) -> tuple[_Row, list[tuple[Any, Any]]]:
        import torch
        from transformers import DynamicCache

        ids = torch.tensor(request.input_ids, device=self.device)
        reuse, cached = self.prefixes.longest(ids)
        reuse = min(reuse, len(ids) - 1)  # the last prompt token is computed: its logits give the first token
        cache = DynamicCache([(k[:, :, :reuse], v[:, :, :reuse]) for k, v in cached]) if reuse else DynamicCache()
        with torch.inference_mode():
            out = self.model(input_ids=ids[None, reuse:], cache=cache, use_cache=True,
                             position_ids=torch.arange(reuse, len(ids), device=self.device)[None],
                             logits_to_keep=1)
        self.prompts += 1
        self.prefilled += len(ids) - reuse
        self.reused += reuse
        first = int(out.logits[0, -1].argmax())
        kv = [(layer.keys, layer.values) for layer in out.cache.layers]
        return _Row(request, [*request.input_ids, first]), kv

    def _step(self, rows: list[_Row], cache: Any, mask: Any) -> Any:
        """One token for every row; the cache grows in place. Returns the attention mask, one column longer."""
        import torch

        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
        with torch.inference_mode():
            out = self.model(input_ids=torch.tensor([[r.tokens[-1]] for r in rows], device=self.device),
                             position_ids=torch.tensor([[len(r.tokens) - 1] for r in rows], device=self.device),
                             attention_mask=mask, cache=cache, use_cache=True)
        for row, token in zip(rows, out.logits[:, -1].argmax(-1).tolist()):
            if not row.done:
                row.tokens.append(token)
                row.generated += 1
        self.steps += 1
        self.rows += sum(not row.done for row in rows)
        return mask

    def _finished(self, row: _Row) -> bool:
        if row.tokens[-1] in self.stops or row.generated >= row.request.max_new_tokens:
            return True
        if not row.request.stops:
            return False
        # Only the newest tokens can complete a stop sequence that was not there a step ago: decode a window of
        # them (every token is at least one byte, so the longest stop's length in bytes suffices).
        window = max(len(s.encode()) for s in row.request.stops) + 1
        tail = self.tokenizer.decode(row.tokens[-min(window, row.generated):], skip_special_tokens=True)
        return any(s in tail for s in row.request.stops)

    def _finish(self, row: _Row, kv: list[tuple[Any, Any]]) -> None:
        """Answer the row (its reply ends with the stop token, if one came) and keep its cache for the next turn."""
        import torch

        cached = row.tokens[:-1]  # the last token was never fed to the model
        self.prefixes.add(torch.tensor(cached, device=self.device), kv)
        reply = row.tokens[len(row.request.input_ids):]
        row.request.future.set_result(reply)


class _GrowingLayer(DynamicLayer):
    """A cache layer with room to grow, written in place: ``DynamicLayer`` concatenates, copying the whole batch's
    cache at every token (most of a decoding step's time here, measured)."""

    def __init__(self, keys: Any, values: Any, length: int):
        super().__init__()
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.length, self._keys, self._values = length, keys, values  # buffers; the first ``length`` columns used
        self.keys, self.values = keys[:, :, :length], values[:, :, :length]

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        end = self.length + key_states.shape[2]
        if end > self._keys.shape[2]:
            self._keys, self._values = _with_room(self.keys, end), _with_room(self.values, end)
        self._keys[:, :, self.length:end] = key_states
        self._values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
        return self.keys, self.values


def _with_room(t: Any, room: int) -> Any:
    grown = t.new_empty(*t.shape[:2], t.shape[2] + room, t.shape[3])
    grown[:, :, : t.shape[2]] = t
    return grown


def _layers(cache: Any) -> list[tuple[Any, Any]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _room(rows: list[_Row], admitted: list[tuple[_Row, Any]]) -> int:
    """Columns the batch can still grow by: the longest reply still possible (the cache is copied past it)."""
    return max(r.request.max_new_tokens - r.generated for r in [*rows, *(r for r, _ in admitted)])


def _pack(rows: list[tuple[list[tuple[Any, Any]], int, int]], room: int) -> tuple[Any, Any]:
    """A batch cache of ``rows`` — each a cache's layers, the row in it and how many of its last columns are that
    row's tokens — right-aligned (left padding, so every row's next token goes in the same column), with ``room``
    columns to grow in place; and its attention mask. One copy of each row: the cost of a row joining or leaving."""
    import torch
    from transformers import DynamicCache

    width = max(n for _, _, n in rows)
    cache = DynamicCache()
    for layer in range(len(rows[0][0])):
        k0 = rows[0][0][layer][0]
        keys = k0.new_zeros(len(rows), k0.shape[1], width + room, k0.shape[3])
        values = keys.clone()
        for j, (source, i, n) in enumerate(rows):
            keys[j, :, width - n:width] = source[layer][0][i, :, -n:]
            values[j, :, width - n:width] = source[layer][1][i, :, -n:]
        cache.layers.append(_GrowingLayer(keys, values, width))
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=k0.device)
    for j, (_, _, n) in enumerate(rows):
        mask[j, width - n:] = 1
    return cache, mask


_BATCHERS: dict[tuple[str, str], _Batcher] = {}
_BATCHERS_LOCK = threading.Lock()  # concurrent first calls must load the model once (loading is not thread-safe)


def _batcher(path: str, device: str) -> _Batcher:
    with _BATCHERS_LOCK:
        key = (path, device)
        if key not in _BATCHERS:
            tokenizer, model = _load(path, device)
            _BATCHERS[key] = _Batcher(tokenizer, model, device)
        return _BATCHERS[key]


def release_local_model(path: str, device: str = "cpu", *, timeout_s: float = 60.0) -> bool:
    """Let go of the in-process model ``path`` on ``device``: its generation thread ends once idle and its weights
    and cached conversations (up to ``PREFIX_CACHE_BYTES``) are freed. Call it when a process is done with one model
    of many (the method study evaluates nine in turn). A later call of the model loads it again. Returns whether it
    was loaded, once the generation thread has ended (``timeout_s`` at most)."""
    with _BATCHERS_LOCK:
        batcher = _BATCHERS.pop((path, device), None)
        _load.cache_clear()
    if batcher is None:
        return False
    batcher.close()
    # Wait for the thread to free its caches: a daemon thread still freeing tensors when the interpreter exits is
    # killed inside torch's C++ and aborts the process (SIGABRT after a study's last evaluation, measured).
    if batcher.thread is not threading.current_thread():
        batcher.thread.join(timeout_s)
    return True


class LocalChatModel(BaseChatModel):
    """A transformers model folder answering chat messages in-process (see the module docstring)."""

    path: str
    max_new_tokens: int = 512
    device: str = "cpu"
    stop: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP))
    # A tuned model answering Thought/Action text (chat_model.speaks_thought_action).
    agentrefine_text_protocol: ClassVar[bool] = True

    @property
    def _llm_type(self) -> str:
        return "agentrefine-local"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"path": self.path, "max_new_tokens": self.max_new_tokens}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        batcher = _batcher(self.path, self.device)
        tokenizer = batcher.tokenizer
        chat = [{"role": _ROLES.get(m.type, "user"), "content": content_text(m.content)} for m in messages]
        input_ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True)
        prompt = list(input_ids["input_ids"])
        stops = [*(stop or []), *self.stop]
        limit = int(kwargs.get("max_tokens") or self.max_new_tokens)
        try:
            new = batcher.submit(prompt, limit, tuple(stops))
        except _Released:  # released after the lookup above: load it again, as any later call would
            new = _batcher(self.path, self.device).submit(prompt, limit, tuple(stops))
        text = trim_at_stop(tokenizer.decode(new, skip_special_tokens=True), stops)
        usage = {"input_tokens": len(prompt), "output_tokens": len(new), "total_tokens": len(prompt) + len(new)}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def local_chat_model(path: str, *, max_new_tokens: int = 512, device: str = "cpu") -> LocalChatModel:
    """The model folder ``path`` (or a known alias) as an in-process chat model."""
    return LocalChatModel(path=str(path), max_new_tokens=max_new_tokens, device=device)


__all__ = ["LocalChatModel", "local_chat_model", "release_local_model"]
