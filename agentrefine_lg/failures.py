"""One classification of exceptions for the whole package: retry it, turn it into feedback, or raise it.

- **transient** (:func:`is_transient_error`): the same call may succeed later — 429, 5xx, timeouts, dropped
  connections. Graph nodes retry these with a ``RetryPolicy``; once retries are exhausted they *raise*, so a
  run stops on an outage instead of booking its work as failed.
- **fatal** (:func:`is_fatal_error`): configuration and programming errors that every later call would repeat
  — 401/403/404, a missing API key, ``TypeError``, ``NotImplementedError``, a ``BlockingError`` from
  ``langgraph dev``. They always raise from the node, never become a "rejected" sample or tool feedback.
- everything else raised by a *tool* is feedback for the agent (a ``logic_error``); everything else raised by
  a synthesis role is raised too — only :class:`MalformedOutputError` (the model's
  answer stayed unusable) is the persona's fault and counts as a failed attempt.
"""

from __future__ import annotations

import asyncio
import re

from agentrefine_lg.schema import TokenUsage

_TRANSIENT_STATUS = {408, 409, 425, 429}
_FATAL_STATUS = {401, 403, 404}
# Matched by class name so no provider package is needed (openai, httpx, anthropic, langgraph).
_TRANSIENT_NAMES = {"APITimeoutError", "APIConnectionError", "RateLimitError", "InternalServerError",
                    "TimeoutException", "ConnectError", "ReadError", "RemoteProtocolError", "NodeTimeoutError",
                    "ServiceUnavailableError", "OverloadedError", "TransportError"}
_FATAL_NAMES = {"AuthenticationError", "PermissionDeniedError", "BlockingError", "NotFoundError"}
_PROGRAMMING = (TypeError, NotImplementedError, AttributeError, NameError, ImportError, SyntaxError,
                AssertionError, RecursionError)


class MalformedOutputError(ValueError):
    """The model's answer stayed unusable after ``format_retries`` corrections. Carries the usage it cost."""

    def __init__(self, message: str, *, usage: TokenUsage | None = None, raw: str | None = None):
        super().__init__(message)
        self.usage = usage or TokenUsage()
        self.raw = raw


def _class_names(exc: BaseException) -> set[str]:
    """The names of ``exc``'s class and its bases; for an error raised in a synthesis worker process
    (:class:`~agentrefine_lg.synthesis.workers.WorkerError`), those of the original exception too."""
    return {cls.__name__ for cls in type(exc).__mro__} | set(getattr(exc, "class_names", ()))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status an API error carries (``exc.status_code`` or ``exc.response.status_code``)."""
    for obj in (exc, getattr(exc, "response", None)):
        status = getattr(obj, "status_code", None)
        if isinstance(status, int):
            return status
    return None


def is_transient_error(exc: BaseException) -> bool:
    """Worth retrying the same call: rate limits (429), server errors (5xx), timeouts, dropped connections.
    Malformed output and bad requests are not."""
    names = _class_names(exc)
    if "MalformedOutputError" in names:
        return False
    status = status_of(exc)
    if status is not None:
        return status in _TRANSIENT_STATUS or status >= 500
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    return bool(names & (_TRANSIENT_NAMES | {"TimeoutError", "ConnectionError"}))


def is_refused(exc: BaseException) -> bool:
    """The endpoint refused us (401/403/404, a bad or missing key): a configuration error."""
    if status_of(exc) in _FATAL_STATUS:
        return True
    names = _class_names(exc)
    if names & (_FATAL_NAMES - {"BlockingError"}):
        return True
    # openai raises OpenAIError("The api_key client option must be set ...") when no key is configured.
    return "OpenAIError" in names and "api_key" in str(exc)


def is_fatal_error(exc: BaseException) -> bool:
    """Configuration or programming errors that every later call would repeat: raise, never count them."""
    names = _class_names(exc)
    if is_refused(exc) or "BlockingError" in names:
        return True
    return isinstance(exc, _PROGRAMMING) or bool(names & {cls.__name__ for cls in _PROGRAMMING})


_CONTEXT_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|prompt is \d+ tokens|too many tokens|prompt is too long",
    re.IGNORECASE)


def is_context_overflow(exc: BaseException) -> bool:
    """The request was refused because the conversation no longer fits the model's context (a 400 from OpenAI,
    vLLM or our server): the episode is over for this model, no retry or fix of the code helps."""
    status = status_of(exc)
    if status is not None and status not in (400, 413, 422):
        return False
    code = getattr(exc, "code", None)
    return code == "context_length_exceeded" or bool(_CONTEXT_OVERFLOW.search(str(exc)))


_UNREACHABLE_NAMES = {"APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout"}


def is_unreachable(exc: BaseException) -> bool:
    """The endpoint cannot be reached or refuses us, looking through the exception's causes: every further
    call would fail alike (evaluation stops at once instead of failing each episode)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError) or is_refused(current) or \
                _class_names(current) & (_UNREACHABLE_NAMES | {"ConnectionError"}):
            return True
        current = current.__cause__ or current.__context__
    return False


__all__ = ["MalformedOutputError", "is_context_overflow", "is_fatal_error", "is_refused", "is_transient_error",
           "is_unreachable", "status_of"]
