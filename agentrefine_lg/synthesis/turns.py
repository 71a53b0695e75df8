"""First come, first served turns on one event loop for personas waiting on an LLM endpoint.

Many personas in flight send their requests together, and the endpoint's replies come back together. On one event
loop the handling of each reply (the openai SDK, langchain, the synthesis graph, the next request) is split at
every ``await``, so the replies of a wave are handled interleaved and all finish near the end of the burst: each
waits about as long as the whole wave takes, and the next requests leave together again, so the next wave arrives
together too (benchmarks/synthesis.py measured a persona at 1.13-1.15 s against the ideal 1.0 s at 64 in flight).
With turns, a persona whose reply arrives waits for *the turn* and keeps it until it sends its next request or
ends: replies are handled one after another in arrival order, the next requests leave one by one, and the waves
spread out.

How it is wired: the runner runs each persona inside :func:`persona_turn` (each ``--workers`` process too, with its
own lock), and the LLM teacher's HTTP client sends through :class:`TurnTransport` (:func:`turn_http_client`). Only
a successful, complete reply takes the turn: an error reply or a timeout does not (a retry's backoff never holds it),
a persona that makes no HTTP call (the embedded teacher) never waits for it, a streamed reply passes through, and a
request made outside a persona (any other use of the client) is not affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2

CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
"""The openai SDK's own connection limits (its default client's), which a client given a transport does not apply."""


@dataclass
class _Turn:
    """One persona's claim on its event loop's turn."""

    lock: asyncio.Lock
    holding: bool = False

    async def take(self) -> None:
        if not self.holding:
            await self.lock.acquire()
            self.holding = True

    def give_back(self) -> None:
        if self.holding:
            self.holding = False
            self.lock.release()


_CURRENT: contextvars.ContextVar[_Turn | None] = contextvars.ContextVar("agentrefine_persona_turn", default=None)


@contextlib.asynccontextmanager
async def persona_turn(lock: asyncio.Lock) -> AsyncIterator[None]:
    """Run one persona with turns on ``lock`` (one lock per event loop, shared by its personas); its turn is given
    back when it ends, however it ends."""
    turn = _Turn(lock)
    token = _CURRENT.set(turn)
    try:
        yield
    finally:
        turn.give_back()
        _CURRENT.reset(token)


class TurnTransport(httpx2.AsyncBaseTransport):
    """An HTTP transport that gives the calling persona's turn back while its request is out, and takes it again
    once the reply is in (see the module docstring)."""

    def __init__(self, inner: httpx2.AsyncBaseTransport):
        self.inner = inner

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        turn = _CURRENT.get()
        if turn is None:
            return await self.inner.handle_async_request(request)
        turn.give_back()
        response = await self.inner.handle_async_request(request)
        if response.status_code < 400 and "text/event-stream" not in response.headers.get("content-type", ""):
            await response.aread()  # the whole reply is in before the persona queues for its turn
            await turn.take()
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def turn_http_client(**kwargs: Any) -> httpx2.AsyncClient:
    """The openai SDK's async HTTP client (its defaults; ``kwargs`` such as ``timeout`` added), sending through a
    :class:`TurnTransport`: give it to ``ChatOpenAI(http_async_client=...)``."""
    import openai

    transport = TurnTransport(httpx2.AsyncHTTPTransport(limits=CONNECTION_LIMITS))
    return openai.DefaultAsyncHttpxClient(transport=transport, **kwargs)


__all__ = ["CONNECTION_LIMITS", "TurnTransport", "persona_turn", "turn_http_client"]
