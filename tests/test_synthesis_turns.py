"""Specification of turns (synthesis/turns.py): a persona whose reply is in holds its loop's turn until it sends its
next request or ends, so replies are handled in arrival order; error replies, streams, requests outside a persona
and personas that make no HTTP call never hold it."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from agentrefine_lg.synthesis.turns import TurnTransport, persona_turn, turn_http_client


def _client(delays: dict[str, float], status: int = 200, content_type: str = "application/json") -> httpx2.AsyncClient:
    """Replies to ``/NAME`` after ``delays[NAME]`` seconds."""

    async def reply(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(delays.get(request.url.path.strip("/"), 0))
        return httpx2.Response(status, headers={"content-type": content_type}, content=b"{}")

    return httpx2.AsyncClient(transport=TurnTransport(httpx2.MockTransport(reply)), base_url="http://teacher")


def test_replies_are_handled_in_arrival_order_each_until_the_next_request():
    events: list[str] = []

    async def persona(lock: asyncio.Lock, client: httpx2.AsyncClient, name: str) -> None:
        async with persona_turn(lock):
            await client.get(f"/{name}")
            events.append(f"{name} handles its reply")
            await asyncio.sleep(0.05)  # while it holds the turn, no other reply is handled
            events.append(f"{name} sends again")
            await client.get("/again")
            events.append(f"{name} done")

    async def main() -> bool:
        lock = asyncio.Lock()
        client = _client({"first": 0.01, "second": 0.02, "again": 0.2})
        await asyncio.gather(persona(lock, client, "first"), persona(lock, client, "second"))
        return lock.locked()

    assert asyncio.run(main()) is False  # every turn given back at the end
    assert events[:4] == ["first handles its reply", "first sends again", "second handles its reply",
                          "second sends again"]


def test_without_turns_the_same_replies_interleave():
    events: list[str] = []

    async def persona(client: httpx2.AsyncClient, name: str) -> None:
        await client.get(f"/{name}")  # no persona_turn: the transport passes straight through
        events.append(f"{name} handles its reply")
        await asyncio.sleep(0.05)
        events.append(f"{name} sends again")

    async def main() -> None:
        client = _client({"first": 0.01, "second": 0.02})
        await asyncio.gather(persona(client, "first"), persona(client, "second"))

    asyncio.run(main())
    assert events == ["first handles its reply", "second handles its reply", "first sends again", "second sends again"]


@pytest.mark.parametrize("status,content_type", [(429, "application/json"), (503, "application/json"),
                                                 (200, "text/event-stream")])
def test_error_replies_and_streams_never_take_the_turn(status, content_type):
    async def main() -> bool:
        lock = asyncio.Lock()
        client = _client({}, status=status, content_type=content_type)
        async with persona_turn(lock):
            await client.get("/x")
            return lock.locked()  # a retry's backoff would otherwise hold every other persona

    assert asyncio.run(main()) is False


def test_a_persona_cancelled_while_it_waits_or_holds_leaves_the_turn_free():
    async def main() -> bool:
        lock = asyncio.Lock()
        client = _client({"slow": 0.01})

        async def holder() -> None:
            async with persona_turn(lock):
                await client.get("/slow")
                await asyncio.sleep(10)  # holds the turn

        async def waiter() -> None:
            async with persona_turn(lock):
                await client.get("/slow")

        first = asyncio.ensure_future(holder())
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(waiter())
        await asyncio.sleep(0.05)
        assert lock.locked() and not second.done()  # the second reply waits for the turn
        second.cancel()
        first.cancel()
        await asyncio.gather(first, second, return_exceptions=True)
        return lock.locked()

    assert asyncio.run(main()) is False


def test_the_teacher_client_keeps_the_sdks_defaults():
    client = turn_http_client(timeout=30)
    assert isinstance(client._transport, TurnTransport) and client.timeout.read == 30
    assert client.follow_redirects is True


def test_an_openai_compatible_teacher_sends_through_turns_and_the_embedded_one_makes_no_http_call():
    from agentrefine_lg.synthesis.teachers import build_teacher

    served = build_teacher(base_url="http://127.0.0.1:9/v1", model="m", api_key="k", mode="one_shot")
    assert isinstance(served.script_writer.model.http_async_client._transport, TurnTransport)
    assert not hasattr(build_teacher().script_writer, "model")  # the embedded teacher: nothing to take turns on
