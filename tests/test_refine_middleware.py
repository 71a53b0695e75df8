"""RefineMiddleware: the refinement loop inside a user's own ``langchain.agents.create_agent`` app."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fake_models import self_binding
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRetryMiddleware, ToolRetryMiddleware
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from test_labels import EOT, labelled_runs

from agentrefine_lg import RefineMiddleware, create_refine_agent
from agentrefine_lg.commands.check import check_file
from agentrefine_lg.errors import InputError
from agentrefine_lg.refine_feedback import TRACE_CHECK, CriticVerdict

ROOT = Path(__file__).resolve().parents[1]


def call(name: str, args: dict[str, Any], id: str, content: str = "") -> AIMessage:
    """A tool-calling model's reply."""
    return AIMessage(content=content, tool_calls=[{"name": name, "args": args, "id": id, "type": "tool_call"}])


def flaky_async_fetch() -> tuple[Any, dict[str, int]]:
    """An async tool (the shape of an MCP tool) that fails on its first call and succeeds after."""
    calls = {"n": 0}

    @tool
    async def fetch(url: str) -> str:
        """Fetch a web page."""
        await asyncio.sleep(0)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("503 service unavailable")
        return f"the answer is 42 ({url})"

    return fetch, calls


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def recovering_model() -> Any:
    """It calls fetch (which fails), calls it again after the feedback, then answers."""
    return self_binding(call("fetch", {"url": "u"}, "c1", "Fetch the page."),
                        call("fetch", {"url": "u"}, "c2", "The server was busy, retry."), "The page says 42.")


def test_an_async_tool_that_fails_once_recovers_and_its_trace_checks_and_trains(tmp_path: Path) -> None:
    from training.data import read_samples, tokenize_messages
    from training.tiny import build_tiny_tokenizer

    fetch, calls = flaky_async_fetch()
    model = recovering_model()
    traces = tmp_path / "traces.jsonl"
    agent = create_agent(model, tools=[fetch], middleware=[RefineMiddleware(trace_sink=traces)])
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage("What number is on u?")]}))

    assert calls["n"] == 2 and out["messages"][-1].content == "The page says 42."
    # The failure went back to the model as an error ToolMessage carrying the DM's flag.
    failed = model.calls[1][-1]
    assert isinstance(failed, ToolMessage) and failed.status == "error"
    assert failed.content == "Error: 503 service unavailable"
    assert failed.response_metadata["agentrefine"]["flags"] == ["logic_error"]

    sample = out["refine_sample"]
    assert sample["check"] == TRACE_CHECK and sample["success"] is True and sample["stop_reason"] == "done"
    assert [(t["role"], t.get("Action"), t.get("logic_error")) for t in sample["trajectory"]] == [
        ("DM", None, False), ("Player", "fetch[u]", None), ("DM", None, True), ("Player", "fetch[u]", None),
        ("DM", None, False), ("Player", "finish[The page says 42.]", None), ("DM", None, False)]

    # `agentrefine check` accepts the file, as it accepts the refine agent's traces.
    reports = list(check_file(str(traces)))
    assert len(reports) == 1 and reports[0][1].ok, reports[0][1].summary()
    cli = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "check", str(traces)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=False)
    assert cli.returncode == 0, cli.stdout + cli.stderr

    # training.data reads it and labels only the turns that did not fail.
    (row,) = read_samples(traces)
    trained = tokenize_messages(row.messages, build_tiny_tokenizer())
    runs = labelled_runs(build_tiny_tokenizer(), trained)
    assert runs == ["Thought: The server was busy, retry.\nAction: fetch[u]" + EOT,
                    "Thought: The page says 42.\nAction: finish[The page says 42.]" + EOT]
    assert not any("Fetch the page." in r for r in runs)  # the erroneous turn gets no loss


def test_the_trace_is_the_refine_agents_trace_of_the_same_episode() -> None:
    fetch, _ = flaky_async_fetch()
    via_middleware = asyncio.run(create_agent(recovering_model(), tools=[fetch], middleware=[RefineMiddleware()])
                                 .ainvoke({"messages": [HumanMessage("What number is on u?")]}))["refine_sample"]
    fetch, _ = flaky_async_fetch()
    via_factory = asyncio.run(create_refine_agent(recovering_model(), tools=[fetch]).compile()
                              .ainvoke({"messages": [HumanMessage("What number is on u?")]}))["refine_sample"]
    assert via_middleware["trajectory"] == via_factory["trajectory"]
    assert via_middleware["messages"] == via_factory["messages"]
    assert via_middleware["script"] == via_factory["script"] and via_middleware["id"] == via_factory["id"]


def test_invalid_arguments_and_unknown_tools_are_parameter_errors() -> None:
    model = self_binding(call("add", {"a": "two", "b": 3}, "c1"), call("plus", {"a": 2, "b": 3}, "c2"),
                         call("add", {"a": 2, "b": 3}, "c3"), "5")
    out = create_agent(model, tools=[add], middleware=[RefineMiddleware()]).invoke(
        {"messages": [HumanMessage("2 + 3?")]})
    judged = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [m.response_metadata["agentrefine"]["flags"] for m in judged] == [["parameter_error"], ["parameter_error"], []]
    assert "plus is not a valid tool" in judged[1].content
    assert out["messages"][-1].content == "5" and out["refine_sample"]["success"] is True


def test_erroneous_calls_in_a_row_are_bounded_by_max_retries(tmp_path: Path) -> None:
    @tool
    def broken_search(query: str) -> str:
        """Search (the index is down)."""
        raise LookupError("index unavailable")

    model = self_binding(*(call("broken_search", {"query": f"q{i}"}, f"c{i}") for i in range(5)))
    out = create_agent(model, tools=[broken_search], middleware=[RefineMiddleware(max_retries=1)]).invoke(
        {"messages": [HumanMessage("find it")]})
    closing = out["messages"][-1]
    assert closing.content == "I could not complete the task: stopped (max_retries) after 2 step(s)."
    assert model.remaining == 3  # two calls, then the run ended before a third model call
    assert out["refine_sample"]["stop_reason"] == "max_retries" and out["refine_sample"]["success"] is False
    assert len(list(check_file_rows(out["refine_sample"], tmp_path))) == 1


def check_file_rows(row: dict[str, Any], tmp_path: Path) -> Any:
    """`agentrefine check` on one trace row written to a file; yields the passing reports."""
    import json

    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(row) + "\n")
    for sample, report in check_file(str(path)):
        assert report.ok, report.summary()
        yield sample


def test_a_repeat_of_a_successful_call_is_not_run_again() -> None:
    seen: list[int] = []

    @tool
    def charge(amount: int) -> str:
        """Charge the card."""
        seen.append(amount)
        return f"charged {amount}"

    model = self_binding(call("charge", {"amount": 5}, "c1"), call("charge", {"amount": 5}, "c2"), "Charged 5.")
    out = create_agent(model, tools=[charge], middleware=[RefineMiddleware()]).invoke(
        {"messages": [HumanMessage("charge 5")]})
    assert seen == [5]
    repeat = model.calls[2][-1]
    assert repeat.status == "error" and "already called charge" in repeat.content
    assert repeat.response_metadata["agentrefine"]["flags"] == ["logic_error"]
    assert out["messages"][-1].content == "Charged 5."


def test_a_critic_flags_a_call_and_its_feedback_reaches_the_model() -> None:
    def critic(step: dict[str, Any]) -> CriticVerdict:
        wrong = step["action"] == "add(a=2, b=2)"
        return CriticVerdict(logic_error=wrong, feedback="The task asks for 2 + 3." if wrong else "")

    model = self_binding(call("add", {"a": 2, "b": 2}, "c1"), call("add", {"a": 2, "b": 3}, "c2"), "5")
    out = create_agent(model, tools=[add], middleware=[RefineMiddleware(critic=critic)]).invoke(
        {"messages": [HumanMessage("2 + 3?")]})
    flagged = model.calls[1][-1]
    assert flagged.status == "error" and flagged.content == "4\nFeedback: The task asks for 2 + 3."
    assert out["refine_sample"]["trajectory"][2]["logic_error"] is True


def test_it_composes_with_langchains_retry_middleware() -> None:
    fetch, calls = flaky_async_fetch()
    # ModelRetryMiddleware retries the dropped connection; ToolRetryMiddleware (inside ours) the 503.
    model = self_binding(ConnectionError("connection reset"), call("fetch", {"url": "u"}, "c1"), "42")
    middleware = [RefineMiddleware(), ModelRetryMiddleware(max_retries=1, initial_delay=0, jitter=False),
                  ToolRetryMiddleware(max_retries=1, initial_delay=0, jitter=False)]
    out = asyncio.run(create_agent(model, tools=[fetch], middleware=middleware).ainvoke(
        {"messages": [HumanMessage("What number is on u?")]}))
    assert calls["n"] == 2 and out["messages"][-1].content == "42"
    # Retried inside: the model never saw the failure, the trace has no error.
    assert not any(t.get("logic_error") for t in out["refine_sample"]["trajectory"])

    @tool
    def down(x: str) -> str:
        """Always fails."""
        raise RuntimeError("still down")

    model = self_binding(call("down", {"x": "a"}, "c1"), "gave up")
    out = create_agent(model, tools=[down], middleware=[RefineMiddleware(), ToolRetryMiddleware(
        max_retries=1, initial_delay=0, jitter=False)]).invoke({"messages": [HumanMessage("try")]})
    # A failure that outlasts the retries comes back as ToolRetryMiddleware's message, flagged by us.
    assert model.calls[1][-1].response_metadata["agentrefine"]["flags"] == ["logic_error"]


def test_a_bug_in_a_tool_raises_instead_of_becoming_feedback() -> None:
    @tool
    def buggy(x: str) -> str:
        """Has a bug."""
        return x.nope  # type: ignore[attr-defined]

    model = self_binding(call("buggy", {"x": "a"}, "c1"))
    with pytest.raises(AttributeError):
        create_agent(model, tools=[buggy], middleware=[RefineMiddleware()]).invoke({"messages": [HumanMessage("go")]})


def test_bad_settings_are_refused() -> None:
    with pytest.raises(InputError, match="max_retries"):
        RefineMiddleware(max_retries=-1)


def test_the_installed_langchain_and_langgraph_meet_the_declared_minimums() -> None:
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    declared = {Requirement(r).name: Requirement(r).specifier
                for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    for name in ("langchain", "langchain-core", "langgraph", "langgraph-prebuilt"):
        assert name in declared, f"{name} has no declared version range"
        assert version(name) in declared[name], f"{name} {version(name)} is outside {declared[name]}"
