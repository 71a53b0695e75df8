"""The tuned model's text format, and the chat model that speaks tool calls through it."""

from __future__ import annotations

import warnings

import pytest
from fake_models import tuned
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import ToolException, tool

from agentrefine_lg.errors import InputError
from agentrefine_lg.serving.chat_model import (
    DEFAULT_STOP,
    chat_model,
    format_tool_call,
    parse_action,
    parse_tool_call,
    to_tuned_messages,
)

# ---------------------------------------------------------------------------------------------- parse_action


@pytest.mark.parametrize(
    ("text", "thought", "action"),
    [
        ("Thought: the door is locked\nAction: open door", "the door is locked", "open door"),
        # several Action lines: the LAST one counts (docs/method.md §6)
        ("Thought: a\nAction: go west\nThought: no, east\nAction: go east", "no, east", "go east"),
        # no Thought label: the text before the action is the thought
        ("I should look around first.\nAction: look", "I should look around first.", "look"),
        ("Action: inventory", None, "inventory"),
        # code fences and trailing text after the action line
        ("```\nThought: t\nAction: cd project\n```\nThis will move me.", "t", "cd project"),
        # an invented observation after the action is not part of it
        ("Thought: t\nAction: ls\nObservation: config.cfg", "t", "ls"),
        # case, markdown bold, inline code, full-width colon, extra spaces
        ("THOUGHT: x\nACTION:   take   key  ", "x", "take key"),
        ("**Thought:** x\n**Action:** `cat notes.txt`", "x", "cat notes.txt"),
        ("thought: x\naction：go north", "x", "go north"),
        # the action on the line after an empty "Action:"
        ("Thought: x\nAction:\nopen box", "x", "open box"),
        # LangChain ReAct style
        ("Thought: x\nAction: search\nAction Input: langgraph retry policy", "x", "search[langgraph retry policy]"),
    ],
)
def test_parse_action_reads_the_last_action_line(text: str, thought: str | None, action: str) -> None:
    parsed = parse_action(text)
    assert parsed.ok, parsed
    assert parsed.action == action
    assert parsed.thought == thought


@pytest.mark.parametrize("text", ["", "   ", None, "I am not sure what to do.", "Thought: hmm\nObservation: x"])
def test_parse_action_without_an_action_line_is_a_format_error(text: str | None) -> None:
    parsed = parse_action(text)
    assert not parsed.ok
    assert parsed.action is None
    assert parsed.error == "no Action: line"


def test_parse_action_with_an_empty_action_is_a_format_error() -> None:
    parsed = parse_action("Thought: something\nAction:   ")
    assert parsed.error == "empty action"
    assert parsed.thought == "something"


def test_action_input_label_is_not_mistaken_for_an_action_line() -> None:
    assert parse_action("Action Input: foo").error == "no Action: line"


# ---------------------------------------------------------------------------------------------- tool calls


@tool
def search(query: str, k: int = 3) -> str:
    """Search the documentation."""
    return f"{k} results for {query}"


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    if city.lower() == "atlantis":
        raise ToolException("unknown city")
    return f"sunny in {city}"


get_weather.handle_tool_error = True  # ToolNode turns the exception into an error ToolMessage


TOOLS = [search, get_weather]


@pytest.mark.parametrize(
    ("action", "name", "args"),
    [
        ("search[retry policy]", "search", {"query": "retry policy"}),
        ('search(query="x", k=5)', "search", {"query": "x", "k": 5}),
        ('search("x", 2)', "search", {"query": "x", "k": 2}),
        ('search({"query": "y"})', "search", {"query": "y"}),
        ('search {"query": "z", "k": "4"}', "search", {"query": "z", "k": 4}),  # "4" coerced to the int schema
        ("search what is langgraph", "search", {"query": "what is langgraph"}),
        ("Search[Case]", "search", {"query": "Case"}),
        ("get weather[Paris]", "get_weather", {"city": "Paris"}),  # underscore written as a space
        ("get_weather(city=Paris)", "get_weather", {"city": "Paris"}),  # a bare word is a string
    ],
)
def test_parse_tool_call_conventions(action: str, name: str, args: dict) -> None:
    call = parse_tool_call(action, TOOLS)
    assert call.known and not call.finish
    assert (call.name, call.args) == (name, args)


def test_parse_tool_call_never_evaluates_code() -> None:
    call = parse_tool_call('search(__import__("os").system("echo hacked"))', TOOLS)
    assert call.name == "search"
    assert call.args == {"query": '__import__("os").system("echo hacked")'}  # kept as text, not run
    # Text that only looks like a call expression is kept whole.
    assert parse_tool_call("search(x) + (y)", TOOLS).args == {"query": "x) + (y"}


def test_unknown_tool_and_finish() -> None:
    unknown = parse_tool_call("browse[http://x]", TOOLS)
    assert not unknown.known and unknown.name == "browse"
    finish = parse_tool_call("finish[It is sunny.]", TOOLS)
    assert finish.finish and finish.args == {"answer": "It is sunny."}


def test_format_tool_call_round_trips() -> None:
    for name, args in [("search", {"query": "x"}), ("search", {"query": "x", "k": 2}), ("get_weather", {"city": "a]b"})]:
        text = format_tool_call(name, args)
        assert parse_tool_call(text, TOOLS).args == args, text


# ---------------------------------------------------------------------------------------------- messages


def test_history_is_rendered_in_the_tuned_format() -> None:
    history = [
        SystemMessage("sys"),
        HumanMessage("weather in Paris?"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "1", "type": "tool_call"}]),
        ToolMessage("sunny in Paris", tool_call_id="1"),
    ]
    out = to_tuned_messages(history)
    assert [type(m).__name__ for m in out] == ["SystemMessage", "HumanMessage", "AIMessage", "HumanMessage"]
    assert out[2].content == "Thought: \nAction: get_weather[Paris]" and not out[2].tool_calls
    assert out[3].content == "sunny in Paris"  # observations are plain user turns, as in training (docs/method.md §5)
    assert to_tuned_messages(history, observation_prefix="Observation: ")[3].content == "Observation: sunny in Paris"


def test_bound_tools_turn_the_action_into_a_tool_call_and_are_not_sent_to_the_server() -> None:
    model = tuned("Thought: I need the weather\nAction: get_weather[Paris]")
    reply = model.bind_tools(TOOLS).invoke("weather in Paris?")
    assert reply.tool_calls[0]["name"] == "get_weather"
    assert reply.tool_calls[0]["args"] == {"city": "Paris"}
    assert reply.content.startswith("Thought: I need the weather")
    assert "tools" not in model.call_kwargs[0]  # never forwarded to the transport
    assert reply.response_metadata["agentrefine"]["thought"] == "I need the weather"


def test_streaming_with_tools_yields_the_tool_call() -> None:
    model = tuned("Thought: t\nAction: search[x]")
    chunks = list(model.bind_tools(TOOLS).stream("q"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.tool_calls[0]["name"] == "search" and merged.tool_calls[0]["args"] == {"query": "x"}


def test_without_tools_the_text_passes_through_with_its_parse() -> None:
    reply = tuned("Thought: t\nAction: go north").invoke("start")
    assert not reply.tool_calls
    assert reply.response_metadata["agentrefine"]["action"] == "go north"


def _agent_script():
    return tuned(
        "Thought: let me browse\nAction: browse[weather paris]",  # no such tool: must be recoverable
        "Thought: use the weather tool\nAction: get_weather[Atlantis]",  # the tool raises
        "Thought: try the right city\nAction: get_weather(city=\"Paris\")",
        "Thought: I know it now\nAction: finish[It is sunny in Paris.]",
    )


def _check_agent_run(model, messages) -> None:
    assert isinstance(messages[-1], AIMessage) and messages[-1].content == "It is sunny in Paris."
    tool_results = [m for m in messages if isinstance(m, ToolMessage)]
    assert "not a valid tool" in tool_results[0].content and "get_weather" in tool_results[0].content
    assert "unknown city" in tool_results[1].content
    assert tool_results[2].content == "sunny in Paris"
    # The model saw tool results as plain user turns and its own earlier replies as Thought/Action text.
    last_prompt = model.calls[-1]
    assert all(not isinstance(m, ToolMessage) for m in last_prompt)
    assert any(isinstance(m, HumanMessage) and m.content == "sunny in Paris" for m in last_prompt)


def test_works_in_langchain_create_agent() -> None:
    from langchain.agents import create_agent

    model = _agent_script()
    out = create_agent(model, TOOLS).invoke({"messages": [HumanMessage("weather in Paris?")]})
    _check_agent_run(model, out["messages"])


def test_works_in_langgraph_create_react_agent() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from langgraph.prebuilt import create_react_agent

        model = _agent_script()
        out = create_react_agent(model, TOOLS).invoke({"messages": [HumanMessage("weather in Paris?")]})
    _check_agent_run(model, out["messages"])


def test_a_reply_without_action_ends_the_agent_loop_as_the_answer() -> None:
    from langchain.agents import create_agent

    model = tuned("The weather is nice.")
    out = create_agent(model, TOOLS).invoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "The weather is nice."
    assert out["messages"][-1].response_metadata["agentrefine"]["error"] == "no Action: line"


# ---------------------------------------------------------------------------------------------- chat_model()


def test_chat_model_defaults() -> None:
    model = chat_model("http://127.0.0.1:9/v1", "agentrefine", "k")
    assert model.temperature == 0
    assert model.stop == DEFAULT_STOP
    assert model.use_responses_api is False
    assert model.model_name == "agentrefine"
    assert chat_model("http://127.0.0.1:9/v1", temperature=0.7).temperature == 0.7


def test_chat_model_needs_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTREFINE_BASE_URL", raising=False)
    with pytest.raises(InputError, match="base_url"):
        chat_model()
