"""A local model folder as a LangChain chat model, in-process: evaluation and the refine agent without a server.

``local_chat_model("runs/sft/merged")`` loads the folder (or an alias such as ``gemma-3-270m``) with
transformers once per process, renders each conversation with the folder's chat template and answers greedily
(temperature 0, docs/method.md §6), cut at ``\\nObservation:`` as the served model is. It speaks text: the refine
agent and evaluation read its ``Thought/Action`` replies themselves. For tool calling in other LangGraph apps,
serve the folder (``agentrefine serve``) and use :func:`agentrefine_lg.chat_model.chat_model`.
"""

from __future__ import annotations

import threading
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
_LOCK = threading.Lock()  # one generate at a time per process: torch's threads are already all the cores


@lru_cache(maxsize=4)
def _load(path: str, device: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentrefine_lg.models import resolve_model

    folder = str(resolve_model(path))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    return tokenizer, model


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
        import torch

        tokenizer, model = _load(self.path, self.device)
        chat = [{"role": _ROLES.get(m.type, "user"), "content": content_text(m.content)} for m in messages]
        encoded = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                return_dict=True).to(self.device)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with _LOCK, torch.inference_mode():
            out = model.generate(**encoded, max_new_tokens=int(kwargs.get("max_tokens") or self.max_new_tokens),
                                 do_sample=False, pad_token_id=pad)
        prompt_tokens = encoded["input_ids"].shape[1]
        text = tokenizer.decode(out[0, prompt_tokens:], skip_special_tokens=True)
        text = trim_at_stop(text, [*(stop or []), *self.stop])
        usage = {"input_tokens": prompt_tokens, "output_tokens": int(out.shape[1] - prompt_tokens),
                 "total_tokens": int(out.shape[1])}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def local_chat_model(path: str, *, max_new_tokens: int = 512, device: str = "cpu") -> LocalChatModel:
    """The model folder ``path`` (or a known alias) as an in-process chat model."""
    return LocalChatModel(path=str(path), max_new_tokens=max_new_tokens, device=device)


__all__ = ["LocalChatModel", "local_chat_model"]
