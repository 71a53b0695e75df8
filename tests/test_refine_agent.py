"""The refine agent: act -> execute -> feedback -> refine on error, its trace, and run_env_episode."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypedDict

import pytest
from fake_models import scripted, tuned
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph

from agentrefine_lg.convert import read_samples
from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.refine_agent import CriticVerdict, create_refine_agent, run_env_episode
from agentrefine_lg.schema import ActionSpec, Script


def flaky_fetch_tool():
    """A tool that fails on its first call and succeeds after."""
    calls = {"n": 0}

    @tool
    def fetch(url: str) -> str:
        """Fetch a web page."""
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("503 service unavailable")
        return f"<html>the answer is 42 ({url})</html>"

    return fetch, calls


def test_a_failing_tool_call_is_refined_and_the_trace_masks_it(tmp_path: Path) -> None:
    fetch, calls = flaky_fetch_tool()
    model = tuned(
        "Thought: fetch the page\nAction: fetch[http://x]",
        "Thought: the server was busy, retry\nAction: fetch[http://x]",
        "Thought: the page says 42\nAction: finish[42]",
    )
    sink = tmp_path / "traces.jsonl"
    agent = create_refine_agent(model, tools=[fetch], trace_sink=sink).compile()
    out = agent.invoke({"refine_task": "What number is on http://x?"})

    assert calls["n"] == 2
    assert out["refine_success"] is True and out["refine_answer"] == "42"
    assert out["refine_stop_reason"] == "done" and out["refine_stats"]["steps"] == 3
    # The failure went back to the model as its next observation.
    second_prompt = model.calls[1]
    assert isinstance(second_prompt[-1], HumanMessage) and "503 service unavailable" in second_prompt[-1].content

    dm = [t for t in out["refine_sample"]["trajectory"] if t["role"] == "DM"]
    assert dm[1]["logic_error"] is True and dm[-1]["task_completed"] is True

    samples = list(read_samples(sink))
    assert len(samples) == 1
    assistant = [m for m in samples[0].messages if m.role == "assistant"]
    assert [m.train for m in assistant] == [False, True, True]  # the failed turn gets no loss
    assert assistant[1].content == "Thought: the server was busy, retry\nAction: fetch[http://x]"
    assert samples[0].source == "refine-agent"
    assert samples[0].messages[0].content.startswith("You are an agent that solves a task by calling tools")


def test_trace_is_emitted_on_the_custom_stream() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned("Thought: a\nAction: fetch[u]", "Thought: b\nAction: fetch[u]", "Thought: c\nAction: finish[done]")
    agent = create_refine_agent(model, tools=[fetch]).compile()
    events = [chunk for chunk in agent.stream({"refine_task": "t"}, stream_mode="custom")]
    steps = [e["refine_step"] for e in events if "refine_step" in e]
    traces = [e["refine_trace"] for e in events if "refine_trace" in e]
    assert [s["flags"] for s in steps] == [["logic_error"], [], []]
    assert len(traces) == 1 and traces[0]["trajectory"][-1]["task_completed"] is True


def test_an_unparsable_reply_is_a_format_error_fed_back() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned("I am not sure.", "Thought: ok\nAction: finish[x]")
    out = create_refine_agent(model, tools=[fetch]).compile().invoke({"refine_task": "t"})
    assert out["refine_stats"]["format_errors"] == 1
    assert out["refine_sample"]["trajectory"][2]["parameter_error"] is True
    assert "could not be parsed" in model.calls[1][-1].content
    assert model.calls[1][-2].content == "I am not sure."  # the model sees its own bad reply


def test_unknown_tool_names_are_invalid_actions() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned("Thought: a\nAction: browse[u]", "Thought: b\nAction: finish[x]")
    out = create_refine_agent(model, tools=[fetch]).compile().invoke({"refine_task": "t"})
    assert out["refine_stats"]["invalid_actions"] == 1
    assert "browse is not a valid tool" in model.calls[1][-1].content


def test_retries_run_out() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned(*["Thought: a\nAction: nope[x]"] * 3)
    out = create_refine_agent(model, tools=[fetch], max_retries=2).compile().invoke({"refine_task": "t"})
    assert out["refine_stop_reason"] == "max_retries"
    assert out["refine_stats"]["steps"] == 3 and model.remaining == 0
    assert out["refine_success"] is False


def test_max_steps_bounds_the_episode() -> None:
    @tool
    def noop(x: str) -> str:
        """Do nothing."""
        return "nothing happens"

    model = tuned(*["Thought: a\nAction: noop[x]"] * 4)
    out = create_refine_agent(model, tools=[noop], max_steps=4).compile().invoke({"refine_task": "t"})
    assert out["refine_stop_reason"] == "max_steps" and out["refine_stats"]["steps"] == 4


def test_transient_model_errors_are_retried_by_the_node_policy() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned(ConnectionError("connection reset"), "Thought: ok\nAction: finish[x]")
    out = create_refine_agent(model, tools=[fetch]).compile().invoke({"refine_task": "t"})
    assert out["refine_success"] is True and len(model.calls) == 2


def test_other_model_errors_propagate() -> None:
    fetch, _ = flaky_fetch_tool()
    model = scripted(ValueError("bad request"))
    with pytest.raises(ValueError, match="bad request"):
        create_refine_agent(model, tools=[fetch]).compile().invoke({"refine_task": "t"})


def test_an_llm_critic_can_reject_a_step() -> None:
    fetch, _ = flaky_fetch_tool()
    model = tuned("Thought: guess\nAction: finish[41]", "Thought: check properly\nAction: finish[42]")
    critic = scripted(
        json.dumps({"logic_error": True, "feedback": "You did not look at the page."}),
        json.dumps({}),
    )
    out = create_refine_agent(model, tools=[fetch], critic=critic).compile().invoke({"refine_task": "t"})
    assert out["refine_answer"] == "42" and out["refine_stats"]["steps"] == 2
    assert out["refine_sample"]["trajectory"][2]["logic_error"] is True
    assert "You did not look at the page." in model.calls[1][-1].content


def test_a_callable_critic() -> None:
    fetch, _ = flaky_fetch_tool()
    seen: list[dict] = []

    def critic(step: dict[str, Any]) -> CriticVerdict:
        seen.append(step)
        return CriticVerdict(place_error=step["action"] == "finish[nowhere]", feedback="not there")

    model = tuned("Thought: a\nAction: finish[nowhere]", "Thought: b\nAction: finish[here]")
    out = create_refine_agent(model, tools=[fetch], critic=critic).compile().invoke({"refine_task": "t"})
    assert out["refine_sample"]["trajectory"][2]["place_error"] is True and out["refine_answer"] == "here"
    assert seen[0]["action"] == "finish[nowhere]"


def test_a_tool_calling_model_works_too() -> None:
    fetch, calls = flaky_fetch_tool()
    call = {"name": "fetch", "args": {"url": "u"}, "type": "tool_call"}
    model = scripted(AIMessage("", tool_calls=[{**call, "id": "1"}]), AIMessage("", tool_calls=[{**call, "id": "2"}]),
                     "The page says 42.")
    out = create_refine_agent(model, tools=[fetch]).compile().invoke({"refine_task": "t"})
    assert calls["n"] == 2 and out["refine_answer"] == "The page says 42." and out["refine_success"] is True
    assert [t["Action"] for t in out["refine_sample"]["trajectory"] if t["role"] == "Player"] == [
        "fetch[u]", "fetch[u]", "finish[The page says 42.]"]


def test_a_text_protocol_model_that_calls_a_tool_answers_in_plain_text_afterwards() -> None:
    fetch, calls = flaky_fetch_tool()
    call = {"name": "fetch", "args": {"url": "u"}, "type": "tool_call"}
    # Declared text-protocol, yet it returned a tool call: from then on a plain reply is its answer.
    model = scripted("Thought: fetch\nAction: fetch[u]", AIMessage("", tool_calls=[{**call, "id": "1"}]), "It is 42.")
    out = create_refine_agent(model, tools=[fetch], text_protocol=True).compile().invoke({"refine_task": "t"})
    assert calls["n"] == 2 and out["refine_answer"] == "It is 42." and out["refine_stats"]["format_errors"] == 0


def test_exactly_one_executor() -> None:
    with pytest.raises(InputError, match="exactly one"):
        create_refine_agent(scripted())
    with pytest.raises(InputError, match="exactly one"):
        create_refine_agent(scripted(), tools=[flaky_fetch_tool()[0]], env=DoorEnv())


def test_factory_returns_an_uncompiled_graph() -> None:
    graph = create_refine_agent(scripted(), tools=[flaky_fetch_tool()[0]])
    assert isinstance(graph, StateGraph)
    assert {"start", "act", "execute", "feedback", "finish"} <= set(graph.nodes)


def test_as_a_subgraph_of_a_users_app() -> None:
    class AppState(TypedDict, total=False):
        question: str
        report: str
        refine_task: str
        refine_answer: str | None
        refine_success: bool

    fetch, _ = flaky_fetch_tool()
    model = tuned("Thought: a\nAction: fetch[u]", "Thought: b\nAction: fetch[u]", "Thought: c\nAction: finish[42]")
    app = StateGraph(AppState)
    app.add_node("prepare", lambda s: {"refine_task": f"Answer: {s['question']}"})
    app.add_node("refine", create_refine_agent(model, tools=[fetch]).compile())
    app.add_node("report", lambda s: {"report": f"answer={s['refine_answer']} ok={s['refine_success']}"})
    app.add_edge(START, "prepare")
    app.add_edge("prepare", "refine")
    app.add_edge("refine", "report")
    app.add_edge("report", END)
    out = app.compile().invoke({"question": "what is on u?"})
    assert out["report"] == "answer=42 ok=True"


# ---------------------------------------------------------------------------------------------- env mode


class DoorEnv(TextEnv):
    """Open the red door: `open {door}` with door in red/blue; `go {place}`; blue is locked (logic error)."""

    name = "test/door"

    def __init__(self) -> None:
        self.opened = False

    def script(self) -> Script:
        return Script(
            environment="A hall with a red door and a blue door.",
            goal="Go through the red door.",
            completion_conditions=["The player is behind the red door."],
            available_actions={
                "open {door}": ActionSpec(template="open {door}", verification_code=r"^\s*open\s+(\w+)\s*$",
                                          parameters={"door": ["red", "blue"]}),
                "go {place}": ActionSpec(template="go {place}", verification_code=r"^\s*go\s+(\w+)\s*$",
                                         parameters={"place": ["through", "back"]}),
            },
        )

    def reset(self) -> str:
        self.opened = False
        return "You are in a hall. There is a red door and a blue door."

    def step(self, action: str) -> StepResult:
        action = action.strip().lower()
        if action == "open blue":
            return StepResult("The blue door is locked.", progress=0.0, error="logic_error")
        if action == "open red":
            self.opened = True
            return StepResult("The red door opens.", progress=0.5)
        if action == "go through":
            if self.opened:
                return StepResult("You walk through the red door. Done!", done=True, progress=1.0)
            return StepResult("The door is closed.", progress=0.0, error="logic_error")
        return StepResult("Nothing happens.", error="parameter_error")


def test_run_env_episode_refines_and_succeeds() -> None:
    model = scripted(
        "Thought: try blue\nAction: open blue",
        "Thought: blue is locked, open the green one\nAction: open green",  # not an allowed value
        "Thought: red then\nAction: open red",
        "Thought: go\nAction: go through",
    )
    result = run_env_episode(model, DoorEnv(), max_steps=10)
    assert result.success and result.stop_reason == "done"
    assert result.steps == 4 and result.progress == 1.0
    assert result.invalid_actions == 1 and result.format_errors == 0
    assert [t.role for t in result.turns][:3] == ["DM", "Player", "DM"]
    assert result.turns[4].parameter_error is True  # "open green": the rule check rejects the value
    # The rule check's feedback reached the model.
    assert "not an allowed" in model.calls[2][-1].content and "open {door}" in model.calls[2][-1].content
    # The system prompt is the training task instruction (docs/method.md §5).
    assert "Go through the red door." in model.calls[0][0].content
    assert [m.train for m in result.sample.messages if m.role == "assistant"] == [False, False, True, True]


def test_run_env_episode_ends_within_max_steps() -> None:
    model = scripted(*["Thought: hmm\nAction: open blue"] * 5)
    result = run_env_episode(model, DoorEnv(), max_steps=5)
    assert not result.success and result.steps == 5 and result.stop_reason == "max_steps"
    assert model.remaining == 0


def test_an_engine_that_ends_the_episode_stops_the_loop() -> None:
    class TrapEnv(DoorEnv):
        def step(self, action: str) -> StepResult:
            if action.strip() == "open blue":
                return StepResult("A trap! You lose.", error="logic_error", info={"episode_over": True})
            return super().step(action)

    model = scripted(*["Thought: hmm\nAction: open blue"] * 5)
    result = run_env_episode(model, TrapEnv(), max_steps=5)
    assert not result.success and result.steps == 1 and result.stop_reason == "episode_over"
    assert model.remaining == 4  # the model is not asked again once the game is lost


def test_the_deployable_graph_module(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.setenv("AGENTREFINE_BASE_URL", "http://127.0.0.1:9/v1")  # never contacted at import
    module = importlib.import_module("graphs.refine_agent")
    assert hasattr(module.graph, "invoke")
    assert module.calculator.invoke({"expression": "3 * (4 + 5)"}) == "27"
    with pytest.raises(ValueError, match="only numbers"):
        module.calculator.invoke({"expression": "__import__('os').getcwd()"})


def test_with_an_engine_its_verdict_decides_unless_rules_are_strict() -> None:
    # "Open Red": the engine folds case and accepts it; the case-sensitive rule regex does not match.
    replies = ["Thought: a\nAction: Open Red", "Thought: b\nAction: go through"]
    lenient = run_env_episode(scripted(*replies), DoorEnv(), max_steps=4)
    assert lenient.success and lenient.invalid_actions == 0
    assert not lenient.turns[2].flagged
    strict = run_env_episode(scripted(*replies), DoorEnv(), max_steps=4, rule_check=True)
    assert strict.turns[2].parameter_error is True and strict.invalid_actions == 1
    assert strict.success  # the engine still completed the task: its `done` is authoritative


class WordyDoorEnv(DoorEnv):
    """DoorEnv whose engine words its own rejection of an unknown action, as BabyAI's and PDDL's do."""

    def step(self, action: str) -> StepResult:
        if action.strip().lower() == "open green":
            return StepResult("Invalid action 'open green'. Valid actions are: open red, open blue.",
                              progress=0.0, error="parameter_error")
        return super().step(action)


def test_the_invalid_action_feedback_is_said_once_per_observation() -> None:
    model = scripted("Thought: green\nAction: open green", "Thought: red\nAction: open red",
                     "Thought: go\nAction: go through")
    result = run_env_episode(model, WordyDoorEnv(), max_steps=10)
    observation = result.turns[2].observation
    assert result.turns[2].parameter_error and observation.lower().count("invalid action") == 1
    # DoorEnv's "Nothing happens." explains nothing: there the rule note still adds the reason
    model = scripted("Thought: green\nAction: open green", "Thought: red\nAction: open red",
                     "Thought: go\nAction: go through")
    assert "not an allowed" in run_env_episode(model, DoorEnv(), max_steps=10).turns[2].observation


def test_a_conversation_that_outgrows_the_models_context_ends_the_episode_and_keeps_its_trace(tmp_path: Path) -> None:
    from fake_synthesis_models import HTTPStatusError

    from agentrefine_lg.commands.check import check_file

    overflow = HTTPStatusError(400, "This model's maximum context length is 4096 tokens; your messages resulted in 4300")
    model = scripted("Thought: open it\nAction: open red", overflow)
    sink = tmp_path / "traces.jsonl"
    out = create_refine_agent(model, env=DoorEnv(), trace_sink=sink).compile().invoke({})
    assert out["refine_stop_reason"] == "context_full" and out["refine_success"] is False
    assert out["refine_stats"]["steps"] == 1 and len(out["refine_sample"]["trajectory"]) == 3
    assert all(report.ok for _, report in check_file(str(sink)))


def test_other_bad_requests_still_raise() -> None:
    from fake_synthesis_models import HTTPStatusError

    model = scripted(HTTPStatusError(400, "unknown parameter 'foo'"))
    with pytest.raises(HTTPStatusError, match="foo"):
        create_refine_agent(model, env=DoorEnv()).compile().invoke({})
