"""Add the refine agent to an existing LangGraph app as a subgraph.

A small support-desk app over ``MessagesState``: ``triage`` turns a ticket into a request, the refine agent
works it with the app's tools (refining after every failed call) and appends its answer to ``messages``,
``reply`` writes the customer reply. The agent keeps its working keys to itself, so it drops in as one node.
Every episode is appended to a JSONL trace that ``agentrefine check`` accepts and ``python -m training.sft
--data`` trains on directly.

    python examples/refine_agent_in_your_app.py [--traces runs/traces.jsonl] [--episodes 3]

With ``AGENTREFINE_BASE_URL`` set (see ``agentrefine serve``), the served tuned model acts. Without it, a
scripted stand-in plays fixed replies so the example runs offline: it is not a model, it shows the wiring.
"""

from __future__ import annotations

import argparse
import os

from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import ToolException, tool
from langgraph.graph import END, START, MessagesState, StateGraph

from agentrefine_lg import chat_model, create_refine_agent

ORDERS = {1042: "shipped on 3 May, parcel DE-77", 1043: "waiting for stock"}


@tool
def lookup_order(order_id: int) -> str:
    """Status of an order, by its number (e.g. 1042)."""
    if order_id not in ORDERS:
        raise ToolException(f"no order {order_id}")
    return ORDERS[order_id]


@tool
def refund_policy() -> str:
    """The shop's refund policy."""
    return "Refunds within 30 days of delivery."


class DeskState(MessagesState, total=False):
    ticket: str
    reply: str


def stand_in_model():
    """Fixed replies in the tuned format: a wrong argument, its refinement, and the answer."""
    return FakeMessagesListChatModel(responses=[
        AIMessage("Thought: The customer asks about order #1042.\nAction: lookup_order[#1042]"),
        AIMessage("Thought: The order number must be a plain number.\nAction: lookup_order(order_id=1042)"),
        AIMessage("Thought: It has shipped.\nAction: finish[Order 1042 shipped on 3 May (parcel DE-77).]"),
    ] * 10)


def build_app(model, traces: str | None, *, text_protocol: bool | None = None):
    # text_protocol=True: the stand-in answers Thought/Action text like our tuned model (which is recognised
    # by itself); any other chat model is taken to speak tool calls.
    refine = create_refine_agent(model, tools=[lookup_order, refund_policy], max_steps=8, trace_sink=traces,
                                 text_protocol=text_protocol, name="desk_agent")

    def reply(state: DeskState) -> dict:
        answer = state["messages"][-1]  # the agent's answer, an AIMessage named "desk_agent"
        ok = answer.response_metadata["agentrefine"]["success"]
        return {"reply": answer.content if ok else "We will get back to you (escalated to a human)."}

    app = StateGraph(DeskState)
    app.add_node("triage", lambda s: {"messages": [HumanMessage(f"Answer this customer ticket: {s['ticket']}")]})
    app.add_node("refine", refine.compile())
    app.add_node("reply", reply)
    app.add_edge(START, "triage")
    app.add_edge("triage", "refine")
    app.add_edge("refine", "reply")
    app.add_edge("reply", END)
    return app.compile()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", default="runs/refine_traces.jsonl", help="JSONL trace sink")
    parser.add_argument("--episodes", type=int, default=1)
    args = parser.parse_args()
    served = bool(os.environ.get("AGENTREFINE_BASE_URL"))
    app = build_app(chat_model() if served else stand_in_model(), args.traces, text_protocol=None if served else True)
    for _ in range(args.episodes):
        # subgraphs=True: the refine agent's per-step events come up from inside the subgraph.
        for namespace, mode, chunk in app.stream({"ticket": "Where is my order #1042?"},
                                                 stream_mode=["custom", "values"], subgraphs=True):
            if mode == "custom" and "refine_step" in chunk:
                step = chunk["refine_step"]
                print(f"step {step['step']}: {step['action']!r} -> {step['observation'][:70]!r} {step['flags'] or ''}")
            elif mode == "values" and not namespace:
                final = chunk
        print("reply:", final["reply"])
    print(f"traces appended to {args.traces}")


if __name__ == "__main__":
    main()
