"""The refinement loop in a LangChain 1.x app, two ways: our factory, or ``create_agent`` + ``RefineMiddleware``.

Both run the same episode — an async tool (the shape of an MCP tool) that fails once, the model's retry after
the feedback, its plain-text answer — and append it to the same JSONL trace that ``agentrefine check``
accepts and ``python -m training.sft --data`` trains on:

1. ``create_refine_agent(model, tools=...)``: a LangGraph agent, here a node of a ``MessagesState`` app;
2. ``create_agent(model, tools, middleware=[RefineMiddleware(...), ToolRetryMiddleware(...)])``: the agent
   LangChain users already have, with refinement feedback, bounded retries and traces added.

    python examples/refine_in_create_agent.py [--traces runs/create_agent_traces.jsonl]

With ``AGENTREFINE_BASE_URL`` set (see ``agentrefine serve``), the served tuned model acts. Without it, a
stand-in plays fixed tool calls the way LangGraph's own test fakes do (``bind_tools`` returns the model):
it is not a model, it shows the wiring.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import ToolRetryMiddleware
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph

from agentrefine_lg import RefineMiddleware, chat_model, create_refine_agent

QUESTION = "Where is my order 1042?"
_attempts = {"lookup_order": 0}


@tool
async def lookup_order(order_id: int) -> str:
    """Status of an order, by its number (e.g. 1042)."""
    await asyncio.sleep(0)
    _attempts["lookup_order"] += 1
    if _attempts["lookup_order"] % 2 == 1:  # every other call: the order service is briefly down
        raise ConnectionResetError("order service unavailable, try again")
    return "order 1042: shipped on 3 May, parcel DE-77"


class StandIn(GenericFakeChatModel):
    """Fixed replies of a tool-calling model; ``bind_tools`` returns the model itself (LangGraph's fakes)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> StandIn:
        return self


def stand_in_model() -> StandIn:
    def lookup(call_id: str, thought: str) -> AIMessage:
        return AIMessage(thought, tool_calls=[{"name": "lookup_order", "args": {"order_id": 1042}, "id": call_id,
                                               "type": "tool_call"}])

    replies = [lookup("call_1", "Look the order up."), lookup("call_2", "The service was down; try once more."),
               AIMessage("Order 1042 shipped on 3 May (parcel DE-77).")]
    return StandIn(messages=iter(replies * 2))  # one episode per way


def with_our_factory(model: Any, traces: str) -> str:
    """A ``MessagesState`` app whose node is the refine agent."""
    app = StateGraph(MessagesState)
    app.add_node("desk", create_refine_agent(model, tools=[lookup_order], trace_sink=traces, name="desk").compile())
    app.add_edge(START, "desk")
    app.add_edge("desk", END)
    out = asyncio.run(app.compile().ainvoke({"messages": [HumanMessage(QUESTION)]}))
    return out["messages"][-1].content


def with_create_agent(model: Any, traces: str) -> str:
    """LangChain's ``create_agent`` with the refinement loop as middleware (outermost, before the retries)."""
    agent = create_agent(model, tools=[lookup_order], middleware=[
        RefineMiddleware(trace_sink=traces, max_retries=3, agent_name="desk"),
        # Inside ours: timeouts are retried unseen; any other failure reaches RefineMiddleware, which feeds
        # it back to the model (a logic_error) so that the model refines its call.
        ToolRetryMiddleware(max_retries=2, retry_on=(TimeoutError,), initial_delay=0),
    ])
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage(QUESTION)]}))
    return out["messages"][-1].content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="runs/create_agent_traces.jsonl", help="JSONL trace sink")
    args = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.traces)), exist_ok=True)
    model = chat_model() if os.environ.get("AGENTREFINE_BASE_URL") else stand_in_model()
    print("create_refine_agent:", with_our_factory(model, args.traces))
    print("create_agent + RefineMiddleware:", with_create_agent(model, args.traces))
    print(f"both episodes appended to {args.traces}")


if __name__ == "__main__":
    main()
