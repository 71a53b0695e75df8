"""Use the served tuned model from LangChain: plain ``ChatOpenAI``, our ``chat_model``, and an agent.

    agentrefine serve --model BASE --adapter ADAPTER      # prints AGENTREFINE_BASE_URL / _MODEL / _API_KEY
    python examples/served_model_chatopenai.py

Without ``AGENTREFINE_BASE_URL`` it starts the transformers backend on the tiny local model (random weights:
the text is noise, the plumbing is real).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import ExitStack

from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from agentrefine_lg.serving.chat_model import chat_model, parse_action

MESSAGES = [
    ("system", "You are an agent in a text world. Answer with Thought: ... then Action: ..."),
    ("user", "You are in a hall. There is a red door."),
]


@tool
def open_door(color: str) -> str:
    """Open a door by its color."""
    return f"The {color} door opens."


def main() -> None:
    with ExitStack() as stack:
        if os.environ.get("AGENTREFINE_BASE_URL"):
            base_url, name, key = (os.environ["AGENTREFINE_BASE_URL"], os.environ.get("AGENTREFINE_MODEL", "agentrefine"),
                                   os.environ.get("AGENTREFINE_API_KEY", "EMPTY"))
        else:
            from agentrefine_lg.serving.server import start_server
            from training.tiny import build_tiny_model

            model_dir = build_tiny_model(stack.enter_context(tempfile.TemporaryDirectory()))
            server = stack.enter_context(start_server(model_dir))
            base_url, name, key = server.base_url, server.model_name, server.api_key

        # 1. Plain ChatOpenAI: chat-completions API (vLLM and the transformers backend speak it).
        llm = ChatOpenAI(base_url=base_url, model=name, api_key=key, temperature=0, max_tokens=48,
                         use_responses_api=False, stop=["\nObservation:"])
        text = llm.invoke(MESSAGES).content
        print("ChatOpenAI:", repr(text[:80]), "->", parse_action(text))

        # 2. chat_model(): the same, with the tuned format's parse in response_metadata ...
        model = chat_model(base_url, name, key, max_tokens=48)
        print("chat_model:", model.invoke(MESSAGES).response_metadata["agentrefine"])

        # 3. ... and tool calls parsed from the Action line, so it runs LangChain agents.
        agent = create_agent(model, [open_door])
        out = agent.invoke({"messages": [("user", "Open the red door.")]}, {"recursion_limit": 8})
        print("agent:", [f"{type(m).__name__}: {str(m.content)[:50]!r}" for m in out["messages"]])


if __name__ == "__main__":
    main()
