"""A local model folder as a LangChain chat model, in-process: evaluation and the refine agent without a server.

``local_chat_model("runs/sft/merged")`` loads the folder (or an alias such as ``gemma-3-270m``) with
transformers once per process, renders each conversation with the folder's chat template and answers greedily
(temperature 0, docs/method.md §6), cut at ``\\nObservation:`` as the served model is. It speaks text: the refine
agent and evaluation read its ``Thought/Action`` replies themselves.

Calls made at the same time (episodes run in threads, or ``abatch``) are **batched**: one generation thread per
model gathers the prompts waiting, left-pads them and runs one ``generate`` (KV cache) for all of them, so
concurrent episodes share each forward pass instead of queueing for the cores. Greedy replies in a batch are the
replies alone, up to floating-point ties. For tool calling in other LangGraph apps,
serve the folder (``agentrefine serve``) and use :func:`agentrefine_lg.chat_model.chat_model`.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from agentrefine_lg.agent_format import content_text
from agentrefine_lg.chat_model import DEFAULT_STOP
from agentrefine_lg.serve import trim_at_stop

_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "user"}
MAX_BATCH = 32
"""Most prompts one ``generate`` call takes (more wait for the next)."""


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrefine_lg.models import resolve_model

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
    future: Future = field(default_factory=Future)


class _Batcher:
    """One generation thread per loaded model: whatever prompts are waiting go into one batched ``generate``
    (one at a time per process: torch's threads are already all the cores)."""

    def __init__(self, tokenizer: Any, model: Any, device: str):
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.pending: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self.batches = 0  # generate calls made, and prompts answered: how much batching happened
        self.prompts = 0
        threading.Thread(target=self._loop, name="agentrefine-local-generate", daemon=True).start()

    def submit(self, input_ids: list[int], max_new_tokens: int) -> list[int]:
        request = _Request(input_ids, max_new_tokens)
        self.pending.put(request)
        return request.future.result()

    def _loop(self) -> None:
        while True:
            batch = [self.pending.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.pending.get_nowait())
                except queue.Empty:
                    break
            try:
                outputs = self._generate(batch)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller of the batch, which re-raises
                for request in batch:
                    request.future.set_exception(exc)
                continue
            for request, out in zip(batch, outputs):
                request.future.set_result(out)

    def _generate(self, batch: list[_Request]) -> list[list[int]]:
        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(r.input_ids) for r in batch)
        # left padding: every prompt ends at the same position, so the new tokens line up
        ids = torch.tensor([[pad] * (width - len(r.input_ids)) + r.input_ids for r in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.input_ids)) + [1] * len(r.input_ids) for r in batch],
                            device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                                      max_new_tokens=max(r.max_new_tokens for r in batch))
        self.batches += 1
        self.prompts += len(batch)
        eos = self.model.generation_config.eos_token_id
        stops = set(eos if isinstance(eos, list) else [eos]) | {pad}
        replies = []
        for row, request in zip(out[:, width:].tolist(), batch):
            row = row[: request.max_new_tokens]
            cut = next((i for i, t in enumerate(row) if t in stops), len(row))
            replies.append(row[: cut + 1] if cut < len(row) else row)
        return replies


_BATCHERS: dict[tuple[str, str], _Batcher] = {}
_BATCHERS_LOCK = threading.Lock()  # concurrent first calls must load the model once (loading is not thread-safe)


def _batcher(path: str, device: str) -> _Batcher:
    with _BATCHERS_LOCK:
        key = (path, device)
        if key not in _BATCHERS:
            tokenizer, model = _load(path, device)
            _BATCHERS[key] = _Batcher(tokenizer, model, device)
        return _BATCHERS[key]


class LocalChatModel(BaseChatModel):
    """A transformers model folder answering chat messages in-process (see the module docstring)."""

    path: str
    max_new_tokens: int = 512
    device: str = "cpu"
    stop: list[str] = Field(default_factory=lambda: list(DEFAULT_STOP))

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
        new = batcher.submit(prompt, int(kwargs.get("max_tokens") or self.max_new_tokens))
        text = tokenizer.decode(new, skip_special_tokens=True)
        text = trim_at_stop(text, [*(stop or []), *self.stop])
        usage = {"input_tokens": len(prompt), "output_tokens": len(new), "total_tokens": len(prompt) + len(new)}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def local_chat_model(path: str, *, max_new_tokens: int = 512, device: str = "cpu") -> LocalChatModel:
    """The model folder ``path`` (or a known alias) as an in-process chat model."""
    return LocalChatModel(path=str(path), max_new_tokens=max_new_tokens, device=device)


__all__ = ["LocalChatModel", "local_chat_model"]
