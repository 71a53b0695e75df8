"""Scripted chat models for tests: the one shared fake (import it, don't write another).

``ScriptedChatModel(responses=[...])`` answers each call with the next response:

- a ``str`` or ``AIMessage`` -> returned as the reply (strings become ``AIMessage(content=...)``);
- an ``Exception`` instance -> raised (to test retries of transient errors);
- a callable ``f(messages) -> str | AIMessage`` -> called with the prompt messages.

It records every prompt in ``.calls`` (lists of messages), supports ``bind_tools`` (records the tools and
passes them on as the ``tools`` kwarg) and ``with_structured_output`` (the next response's text is parsed as
JSON into the schema: a pydantic model, a TypedDict/JSON-schema dict, or ``include_raw=True``). Running out
of responses raises ``AssertionError`` naming the call, so a test that loops too long fails clearly.

``TunedScriptedModel`` is the same model speaking tool calls through the ``Thought/Action`` format
(:class:`agentrefine_lg.serving.chat_model.TunedFormatMixin`): what ``chat_model()`` does, without a server.

``SelfBindingChatModel`` is LangGraph's own testing pattern (its test fakes): ``bind_tools`` records the tools
and returns the model itself, so no ``RunnableBinding`` carries them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, Field, PrivateAttr

from agentrefine_lg.serving.chat_model import TunedFormatMixin


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that plays back a script of responses (see the module docstring)."""

    messages: Any = Field(default=None, exclude=True)  # GenericFakeChatModel's iterator; unused here
    responses: list[Any] = Field(default_factory=list)
    calls: list[list[BaseMessage]] = Field(default_factory=list)
    call_kwargs: list[dict[str, Any]] = Field(default_factory=list)
    bound_tools: list[dict[str, Any]] = Field(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _next: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "scripted-fake"

    @property
    def remaining(self) -> int:
        return len(self.responses) - self._next

    def _pop(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            if self._next >= len(self.responses):
                raise AssertionError(f"ScriptedChatModel ran out of responses at call {self._next + 1}")
            item = self.responses[self._next]
            self._next += 1
        if isinstance(item, BaseException):
            raise item
        if callable(item) and not isinstance(item, (str, AIMessage)):
            item = item(messages)
        return AIMessage(content=item) if isinstance(item, str) else item

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        self.calls.append(list(messages))
        self.call_kwargs.append({"stop": stop, **kwargs})
        message = self._pop(messages)
        if stop and isinstance(message.content, str):  # honour stop sequences like a server would
            cut = min((message.content.find(s) for s in stop if s in message.content), default=-1)
            if cut >= 0:
                message = AIMessage(content=message.content[:cut], tool_calls=message.tool_calls, id=message.id)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        self.bound_tools = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=self.bound_tools, **kwargs)

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable:
        def parse(value: Any) -> Any:
            message = self.invoke(value)
            data = json.loads(message.content)
            if isinstance(schema, type) and issubclass(schema, BaseModel):
                parsed: Any = schema.model_validate(data)
            else:
                parsed = data
            return {"raw": message, "parsed": parsed, "parsing_error": None} if include_raw else parsed

        return RunnableLambda(parse)


class TunedScriptedModel(TunedFormatMixin, ScriptedChatModel):
    """The scripted model behind the tuned-format tool-calling layer (what ``chat_model()`` returns)."""

    @property
    def _llm_type(self) -> str:
        return "scripted-tuned-fake"


class SelfBindingChatModel(ScriptedChatModel):
    """The scripted model whose ``bind_tools`` returns itself, as LangGraph's test fakes do."""

    @property
    def _llm_type(self) -> str:
        return "scripted-self-binding-fake"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Runnable:
        self.bound_tools = [convert_to_openai_tool(t) for t in tools]
        return self


def scripted(*responses: str | AIMessage | BaseException | Callable[[list[BaseMessage]], Any]) -> ScriptedChatModel:
    """Shorthand: ``scripted("Thought: a\\nAction: b", ...)``."""
    return ScriptedChatModel(responses=list(responses))


def tuned(*responses: str | AIMessage | BaseException | Callable[[list[BaseMessage]], Any]) -> TunedScriptedModel:
    """Shorthand for a :class:`TunedScriptedModel`."""
    return TunedScriptedModel(responses=list(responses))


def self_binding(*responses: str | AIMessage | BaseException | Callable[[list[BaseMessage]], Any]) -> SelfBindingChatModel:
    """Shorthand for a :class:`SelfBindingChatModel`."""
    return SelfBindingChatModel(responses=list(responses))


__all__ = ["ScriptedChatModel", "SelfBindingChatModel", "TunedScriptedModel", "scripted", "self_binding", "tuned"]
