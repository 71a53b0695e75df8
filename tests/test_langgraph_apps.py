"""Our graphs in a LangGraph user's own app: messages state, supervisor, swarm, Send, async and MCP-style tools,
human approval with interrupt(), parallel tool calls, checkpointers, and traces that are training data.

Each test is written the way a user of LangGraph 1.x composes agents; none reaches into the agent's internals.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from fake_models import ScriptedChatModel, scripted, self_binding, tuned
from fake_synthesis_models import (
    FakeOpenAIServer,
    HTTPStatusError,
    ScriptedWriter,
    script_fixture,
    trajectory_fixture,
)
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt
from typing_extensions import TypedDict

import agentrefine_lg
from agentrefine_lg import RefineState, create_refine_agent, create_synthesis_graph
from agentrefine_lg.commands.check import check_file
from agentrefine_lg.errors import InputError
from agentrefine_lg.synthesis.graphs import recursion_limit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def lookup_order(order_id: str) -> str:
    """Look up an order's status (an async tool, the shape of every MCP tool)."""
    await asyncio.sleep(0)
    if order_id != "A-17":
        raise LookupError(f"no order {order_id}")
    return "order A-17: shipped"


def call(name: str, args: dict[str, Any], id: str, content: str = "") -> AIMessage:
    """A tool-calling model's reply."""
    return AIMessage(content=content, tool_calls=[{"name": name, "args": args, "id": id, "type": "tool_call"}])


def adder(name: str = "math") -> Any:
    model = tuned("Thought: add them\nAction: add(a=2, b=3)", "Thought: it is 5\nAction: finish[5]")
    return create_refine_agent(model, tools=[add], name=name).compile()


# ---------------------------------------------------------------------------------------------- the package


def test_the_public_api_is_importable_from_the_package_root() -> None:
    assert agentrefine_lg.__version__ and agentrefine_lg.__version__ != "0.0.0+unknown"
    assert (Path(agentrefine_lg.__file__).parent / "py.typed").exists()
    for name in ("create_refine_agent", "create_synthesis_graph", "create_script_graph", "create_trajectory_graph",
                 "chat_model", "tools_prompt", "llm_teacher", "grounded_teacher", "Script", "Trajectory", "Turn",
                 "RefinementSample", "SynthesisSettings", "RefineState", "check_trajectory"):
        assert getattr(agentrefine_lg, name) is not None, name


def test_studio_shows_the_task_not_the_working_keys() -> None:
    graph = adder()
    assert graph.name == "math"
    assert set(graph.get_input_jsonschema()["properties"]) == {"messages", "refine_task"}
    assert "refine_queue" not in graph.get_output_jsonschema()["properties"]


# ---------------------------------------------------------------------------------------------- messages


def test_a_node_of_a_messages_state_app_reads_the_last_human_message_and_appends_its_answer() -> None:
    app = StateGraph(MessagesState)
    app.add_node("math", adder())
    app.add_edge(START, "math")
    app.add_edge("math", END)
    out = app.compile().invoke({"messages": [HumanMessage("What is 2 + 3?")]})
    assert [type(m).__name__ for m in out["messages"]] == ["HumanMessage", "AIMessage"]
    answer = out["messages"][-1]
    assert answer.content == "5" and answer.name == "math"
    assert answer.response_metadata["agentrefine"]["success"] is True


def test_a_reused_thread_answers_each_new_question() -> None:
    model = tuned("Thought: a\nAction: add(a=1, b=1)", "Thought: b\nAction: finish[2]",
                     "Thought: c\nAction: add(a=2, b=2)", "Thought: d\nAction: finish[4]")
    agent = create_refine_agent(model, tools=[add]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "chat"}}
    agent.invoke({"messages": [HumanMessage("1 + 1?")]}, config)
    out = agent.invoke({"messages": [HumanMessage("2 + 2?")]}, config)
    assert [m.content for m in out["messages"]] == ["1 + 1?", "2", "2 + 2?", "4"]
    assert "2 + 2?" in model.calls[2][0].content  # the second episode's system prompt holds the new task


def test_two_agents_fanned_out_with_send_do_not_collide() -> None:
    def fan_out(state: MessagesState) -> list[Send]:
        return [Send("math", state), Send("math2", state)]

    app = StateGraph(MessagesState)
    app.add_node("math", adder("math"))
    app.add_node("math2", adder("math2"))
    app.add_conditional_edges(START, fan_out, ["math", "math2"])
    app.add_edge(["math", "math2"], END)
    out = app.compile().invoke({"messages": [HumanMessage("2 + 3?")]})
    assert sorted((m.name, m.content) for m in out["messages"] if isinstance(m, AIMessage)) == [
        ("math", "5"), ("math2", "5")]


def test_an_agent_of_create_supervisor() -> None:
    from langgraph_supervisor import create_supervisor

    boss = ScriptedChatModel(responses=[call("transfer_to_math", {}, "h1"), AIMessage("2 + 3 is 5.")])
    app = create_supervisor([adder()], model=boss, prompt="Route arithmetic to math.").compile()
    out = app.invoke({"messages": [HumanMessage("What is 2 + 3?")]})
    answers = [m for m in out["messages"] if isinstance(m, AIMessage) and m.name == "math"]
    assert answers and answers[0].content == "5"
    assert out["messages"][-1].content == "2 + 3 is 5."
    # The supervisor's model saw our agent's answer.
    assert any(getattr(m, "content", None) == "5" for m in boss.calls[-1])


def test_an_agent_of_create_swarm_that_hands_off() -> None:
    from langgraph_swarm import create_handoff_tool, create_swarm

    triage_model = ScriptedChatModel(responses=[call("transfer_to_math", {}, "t1", "Thought: arithmetic, not mine")])
    triage = create_refine_agent(triage_model, tools=[create_handoff_tool(agent_name="math")], name="triage")
    app = create_swarm([triage.compile(), adder()], default_active_agent="triage").compile(
        checkpointer=InMemorySaver())
    out = app.invoke({"messages": [HumanMessage("What is 2 + 3?")]}, {"configurable": {"thread_id": "s"}})
    assert out["active_agent"] == "math"
    assert out["messages"][-1].name == "math" and out["messages"][-1].content == "5"
    assert any(isinstance(m, ToolMessage) and "math" in m.content for m in out["messages"])


# ---------------------------------------------------------------------------------------------- any tool-calling model


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def weather_model() -> Any:
    """LangGraph's own fake pattern: bind_tools returns the model itself; it calls a tool, then answers."""
    return self_binding(call("get_weather", {"city": "Paris"}, "w1"), AIMessage("It is sunny in Paris."))


@pytest.mark.parametrize("bound_by", ["agent", "user"])
def test_a_messages_state_app_gets_the_answer_of_a_model_whose_bind_tools_returns_itself(bound_by: str) -> None:
    model = weather_model()
    agent = create_refine_agent(model if bound_by == "agent" else model.bind_tools([get_weather]),
                                tools=[get_weather], name="weather")
    app = StateGraph(MessagesState)
    app.add_node("weather", agent.compile())
    app.add_edge(START, "weather")
    app.add_edge("weather", END)
    out = app.compile().invoke({"messages": [HumanMessage("What is the weather in Paris?")]})
    answer = out["messages"][-1]
    assert answer.content == "It is sunny in Paris." and answer.name == "weather"
    assert answer.response_metadata["agentrefine"]["success"] is True
    assert answer.response_metadata["agentrefine"]["steps"] == 2 and model.remaining == 0
    assert [t["function"]["name"] for t in model.bound_tools] == ["get_weather"]
    # It got its tools as schemas: it was not asked for Thought/Action text.
    assert "Thought:" not in model.calls[0][0].content
    assert isinstance(model.calls[1][-1], ToolMessage) and model.calls[1][-1].content == "sunny in Paris"


def test_a_supervisor_gets_the_answer_of_a_worker_whose_bind_tools_returns_itself() -> None:
    from langgraph_supervisor import create_supervisor

    boss = ScriptedChatModel(responses=[call("transfer_to_weather", {}, "h1"), AIMessage("Paris: sunny.")])
    worker = create_refine_agent(weather_model(), tools=[get_weather], name="weather").compile()
    out = create_supervisor([worker], model=boss, prompt="Route weather questions.").compile().invoke(
        {"messages": [HumanMessage("What is the weather in Paris?")]})
    assert any(getattr(m, "content", None) == "It is sunny in Paris." for m in boss.calls[-1])
    assert out["messages"][-1].content == "Paris: sunny."


def test_a_real_chat_openai_against_an_openai_compatible_server() -> None:
    from langchain_openai import ChatOpenAI

    def responder(request: dict[str, Any]) -> str | dict[str, Any]:
        if request["messages"][-1]["role"] == "tool":
            return "It is sunny in Paris."
        return {"content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]}

    with FakeOpenAIServer(responder) as server:
        model = ChatOpenAI(base_url=server.base_url, api_key="k", model="any-tool-caller", max_retries=0)
        out = create_refine_agent(model, tools=[get_weather]).compile().invoke(
            {"messages": [HumanMessage("What is the weather in Paris?")]})
    assert out["messages"][-1].content == "It is sunny in Paris." and out["refine_success"] is True
    first, second = server.requests
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]  # the agent bound its tools
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny in Paris"}


def test_a_model_that_cannot_bind_tools_is_refused_unless_declared_text_protocol() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    with pytest.raises(InputError, match="text_protocol=True"):
        create_refine_agent(FakeListChatModel(responses=["x"]), tools=[add])
    model = FakeListChatModel(responses=["Thought: a\nAction: add(a=2, b=3)", "Thought: b\nAction: finish[5]"])
    out = create_refine_agent(model, tools=[add], text_protocol=True).compile().invoke(
        {"messages": [HumanMessage("2 + 3?")]})
    assert out["messages"][-1].content == "5" and out["refine_stats"]["tool_calls"] == 1


# ---------------------------------------------------------------------------------------------- tools


def test_async_tools_run_under_ainvoke_and_failures_are_feedback() -> None:
    model = tuned("Thought: look it up\nAction: lookup_order[A-71]",
                     "Thought: typo, it is A-17\nAction: lookup_order[A-17]",
                     "Thought: shipped\nAction: finish[shipped]")
    agent = create_refine_agent(model, tools=[lookup_order]).compile()
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage("Where is order A-17?")]}))
    assert out["refine_success"] is True and out["messages"][-1].content == "shipped"
    dm = [t for t in out["refine_sample"]["trajectory"] if t["role"] == "DM"]
    assert dm[1]["logic_error"] is True and "no order A-71" in dm[1]["Observation"]
    assert "order A-17: shipped" in dm[2]["Observation"]


def test_sync_invoke_of_an_async_tool_says_to_use_ainvoke() -> None:
    agent = create_refine_agent(tuned("Thought: x\nAction: lookup_order[A-17]"), tools=[lookup_order]).compile()
    with pytest.raises(RuntimeError, match="ainvoke"):
        agent.invoke({"messages": [HumanMessage("Where is A-17?")]})


def test_a_bug_in_a_tool_raises_instead_of_becoming_feedback() -> None:
    @tool
    def broken(x: str) -> str:
        """A tool with a bug."""
        return x.no_such_method()  # type: ignore[attr-defined]

    agent = create_refine_agent(tuned("Thought: x\nAction: broken[a]"), tools=[broken]).compile()
    with pytest.raises(AttributeError):
        agent.invoke({"messages": [HumanMessage("go")]})


def test_invalid_tool_arguments_are_a_parameter_error() -> None:
    model = tuned("Thought: add\nAction: add(a=\"two\", b=3)", "Thought: numbers\nAction: add(a=2, b=3)",
                     "Thought: 5\nAction: finish[5]")
    out = create_refine_agent(model, tools=[add]).compile().invoke({"messages": [HumanMessage("2+3")]})
    dm = [t for t in out["refine_sample"]["trajectory"] if t["role"] == "DM"]
    assert dm[1]["parameter_error"] is True and dm[2]["parameter_error"] is False


def test_a_tool_that_asks_a_human_pauses_the_thread_until_resumed() -> None:
    approvals: list[Any] = []

    @tool
    def refund(order_id: str) -> str:
        """Refund an order (needs a human's approval)."""
        answer = interrupt({"question": f"Refund {order_id}?"})
        approvals.append(answer)
        return f"refunded {order_id}" if answer == "yes" else "refund refused"

    model = tuned("Thought: refund it\nAction: refund[A-17]", "Thought: done\nAction: finish[refunded]")
    agent = create_refine_agent(model, tools=[refund]).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "hitl"}}

    async def go() -> tuple[Any, Any]:
        paused = await agent.ainvoke({"messages": [HumanMessage("Refund order A-17")]}, config)
        resumed = await agent.ainvoke(Command(resume="yes"), config)
        return paused, resumed

    paused, resumed = asyncio.run(go())
    assert paused["__interrupt__"][0].value == {"question": "Refund A-17?"}
    assert resumed["refine_success"] is True and approvals == ["yes"]
    dm = [t for t in resumed["refine_sample"]["trajectory"] if t["role"] == "DM"]
    assert dm[1]["Observation"] == "refunded A-17"


def test_every_call_of_a_parallel_batch_runs_in_order_with_its_own_feedback() -> None:
    batch = AIMessage(content="Both sums are needed.", tool_calls=[
        {"name": "add", "args": {"a": 1, "b": 2}, "id": "c1", "type": "tool_call"},
        {"name": "add", "args": {"a": "x", "b": 2}, "id": "c2", "type": "tool_call"},
        {"name": "add", "args": {"a": 3, "b": 4}, "id": "c3", "type": "tool_call"},
    ])
    model = ScriptedChatModel(responses=[batch, AIMessage("The sums are 3 and 7.")])
    agent = create_refine_agent(model.bind_tools([add]), tools=[add]).compile()
    out = agent.invoke({"messages": [HumanMessage("1+2 and 3+4?")]})
    # The model's next prompt answers each call with its own ToolMessage, in order.
    answers = [m for m in model.calls[1] if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.content) for m in answers][::2] == [("c1", "3"), ("c3", "7")]
    assert answers[1].tool_call_id == "c2" and "Error" in answers[1].content
    turns = out["refine_sample"]["trajectory"]
    players = [t for t in turns if t["role"] == "Player"]
    assert [p["Action"] for p in players[:3]] == ["add(a=1, b=2)", "add(a=\"x\", b=2)", "add(a=3, b=4)"]
    assert all(p["Thought"] == "Both sums are needed." for p in players[:3])  # the model's thought is kept
    # A tool-calling model's plain answer is its final answer, not a format error.
    assert out["refine_success"] is True and out["messages"][-1].content == "The sums are 3 and 7."
    assert out["refine_stats"]["format_errors"] == 0


# ---------------------------------------------------------------------------------------------- traces


def test_every_recorded_episode_passes_agentrefine_check_and_trains(tmp_path: Path, tiny_dir: Path) -> None:
    from test_refine_agent import DoorEnv

    traces = tmp_path / "traces.jsonl"
    # tool mode: a success with refinements, a clean success, a failure at the step budget, a format error
    runs = [
        (tuned("Thought: a\nAction: add(a=\"two\", b=3)", "Thought: b\nAction: add(a=2, b=3)",
               "Thought: c\nAction: finish[5]"), {}),
        (tuned("Thought: c\nAction: finish[5]"), {}),
        (tuned("I am not sure.", "Thought: try\nAction: multiply[2, 3]"), {"max_steps": 2}),
    ]
    for model, kw in runs:
        create_refine_agent(model, tools=[add], trace_sink=traces, **kw).compile().invoke(
            {"messages": [HumanMessage("2+3?")]})
    # env mode: an engine-judged episode with a logic error, and one that runs out of steps
    for replies, steps in ((["Thought: a\nAction: open blue", "Thought: b\nAction: open red",
                             "Thought: c\nAction: go through"], 5), (["Thought: a\nAction: Open Red"], 1)):
        create_refine_agent(scripted(*replies), env=DoorEnv(), trace_sink=traces, max_steps=steps).compile().invoke({})

    reports = list(check_file(str(traces)))
    assert len(reports) == 5
    assert all(report.ok for _, report in reports), [r.summary() for _, r in reports]
    cli = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "check", str(traces)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    out = tmp_path / "sft"
    train = subprocess.run([sys.executable, "-m", "training.sft", "--model", str(tiny_dir), "--data", str(traces),
                            "--output_dir", str(out), "--max_steps", "1", "--per_device_train_batch_size", "2",
                            "--max_length", "1024"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    log = json.loads((out / "train_log.json").read_text())
    # The failed episode whose every action was erroneous has nothing to train on: dropped, and said so.
    assert log["train_rows"] == 4 and log["refinement"]["dropped_no_trainable"] == 1


# ---------------------------------------------------------------------------------------------- tuned model


def test_bind_tools_puts_the_tools_into_the_tuned_models_system_prompt() -> None:
    from langchain.agents import create_agent

    from agentrefine_lg import chat_model, tools_prompt

    replies = iter(["Thought: add\nAction: add(a=2, b=3)", "Thought: 5\nAction: finish[5]"])
    with FakeOpenAIServer(lambda body: next(replies)) as server:
        agent = create_agent(chat_model(base_url=server.base_url), tools=[add], system_prompt="You do sums.")
        out = agent.invoke({"messages": [HumanMessage("2 + 3?")]})
    first = server.requests[0]["messages"]
    assert first[0]["role"] == "system" and first[0]["content"].startswith("You do sums.")
    assert tools_prompt([add]) in first[0]["content"] and "- add[a, b] — Add two integers." in first[0]["content"]
    assert "tools" not in server.requests[0]  # the schemas stay client-side: the model was trained on text
    assert out["messages"][-1].content == "5"


def test_the_tools_are_stated_once_when_the_refine_agent_drives_a_tuned_model() -> None:
    from agentrefine_lg import chat_model

    replies = iter(["Thought: 5\nAction: finish[5]"])
    with FakeOpenAIServer(lambda body: next(replies)) as server:
        model = chat_model(base_url=server.base_url).bind_tools([add])
        create_refine_agent(model, tools=[add]).compile().invoke({"messages": [HumanMessage("2 + 3?")]})
    system = server.requests[0]["messages"][0]["content"]
    assert system.count("- add[a, b]") == 1 and "Task: 2 + 3?" in system


# ---------------------------------------------------------------------------------------------- synthesis


def _sqlite_config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": recursion_limit()}


def test_synthesis_with_an_async_sqlite_checkpointer_and_sync_invoke_refused(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    builder = create_synthesis_graph(ScriptedWriter([script_fixture()]), ScriptedWriter([trajectory_fixture()]))

    async def go() -> dict[str, Any]:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "a.sqlite")) as saver:
            graph = builder.compile(checkpointer=saver)
            return await graph.ainvoke({"synth_persona": "A UNIX admin trainee."}, _sqlite_config("p1"))

    assert asyncio.run(go())["synth_status"] == "accepted"
    with SqliteSaver.from_conn_string(str(tmp_path / "s.sqlite")) as saver:
        with pytest.raises(TypeError, match="ainvoke"):
            builder.compile(checkpointer=saver).invoke({"synth_persona": "x"}, _sqlite_config("p2"))


def test_synthesis_stops_on_an_auth_error_and_resumes_on_the_same_thread(tmp_path: Path) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    scripts = ScriptedWriter([HTTPStatusError(401, "invalid api key"), script_fixture()])
    builder = create_synthesis_graph(scripts, ScriptedWriter([trajectory_fixture()]))

    async def go() -> tuple[Any, dict[str, Any]]:
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
            graph = builder.compile(checkpointer=saver)
            config = _sqlite_config("auth")
            with pytest.raises(HTTPStatusError, match="401"):
                await graph.ainvoke({"synth_persona": "A UNIX admin trainee."}, config)
            stopped = (await graph.aget_state(config)).next
            return stopped, await graph.ainvoke(None, config)  # the key was fixed: resume

    stopped, final = asyncio.run(go())
    assert stopped == ("write_script",)
    assert final["synth_status"] == "accepted" and final["synth_llm_failures"] == 0


def test_the_llm_teacher_over_http_raises_a_401_instead_of_rejecting() -> None:
    from langchain_openai import ChatOpenAI

    from agentrefine_lg import llm_teacher

    with FakeOpenAIServer(failures=[401]) as server:
        model = ChatOpenAI(base_url=server.base_url, model="teacher", api_key="bad", max_retries=0)
        graph = create_synthesis_graph(*llm_teacher(model)).compile()
        with pytest.raises(Exception, match="401|scripted"):
            asyncio.run(graph.ainvoke({"synth_persona": "A UNIX admin trainee."},
                                      {"recursion_limit": recursion_limit()}))
        with pytest.raises(TypeError, match="ainvoke"):
            graph.invoke({"synth_persona": "A UNIX admin trainee."})


def test_a_custom_state_schema_must_extend_ours() -> None:
    class Bare(TypedDict):
        messages: Annotated[list, lambda a, b: a + b]

    with pytest.raises(TypeError, match="RefineState"):
        create_refine_agent(scripted(), tools=[add], state_schema=Bare)


class Context(TypedDict):
    user: str


class AccountState(RefineState, total=False):
    account: str


@tool
def whoami(runtime: ToolRuntime[Context, AccountState]) -> str:
    """Say who is asking and for which account."""
    return f"{runtime.context['user']} / {runtime.state.get('account')}"


def test_a_custom_state_and_context_reach_the_tools() -> None:
    model = tuned("Thought: ask\nAction: whoami", "Thought: done\nAction: finish[ok]")
    graph = create_refine_agent(model, tools=[whoami], state_schema=AccountState, context_schema=Context).compile()
    out = graph.invoke({"messages": [HumanMessage("who?")], "account": "acme"}, context={"user": "ada"})
    assert [t["Observation"] for t in out["refine_sample"]["trajectory"] if t["role"] == "DM"][1] == "ada / acme"
    assert out["account"] == "acme" and "account" in graph.get_input_jsonschema()["properties"]


def test_injected_tool_call_ids_are_passed() -> None:
    @tool
    def echo_id(tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Echo the call id."""
        return tool_call_id

    batch = call("echo_id", {}, "call-42")
    model = ScriptedChatModel(responses=[batch, AIMessage("done")])
    out = create_refine_agent(model.bind_tools([echo_id]), tools=[echo_id]).compile().invoke(
        {"messages": [SystemMessage("x"), HumanMessage("id?")]})
    assert [t for t in out["refine_sample"]["trajectory"] if t["role"] == "DM"][1]["Observation"] == "call-42"


# ---------------------------------------------------------------------------------------------- Studio / Server


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 120) -> Any:
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read() or b"null")


def test_langgraph_dev_serves_every_registered_graph(tmp_path: Path, free_tcp_port: int) -> None:
    """`langgraph dev` (the in-memory Agent Server behind Studio) loads langgraph.json and runs each graph once
    over its HTTP API, with blocking calls refused as Studio refuses them (no --allow-blocking)."""
    import os
    import shutil
    import time

    exe = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    assert exe, "langgraph-cli is part of the [dev] extra"

    def responder(body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        return "Thought: 6 * 7 is 42\nAction: finish[42]" if "42" in last else "Thought: compute\nAction: calculator[6*7]"

    with FakeOpenAIServer(responder) as model_server:
        env = {**os.environ, "AGENTREFINE_BASE_URL": model_server.base_url, "AGENTREFINE_CACHE_DIR": str(tmp_path / "cache"),
               "AGENTREFINE_TRACES": str(tmp_path / "traces.jsonl")}
        log = (tmp_path / "server.log").open("w")
        server = subprocess.Popen([exe, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port",
                                   str(free_tcp_port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{free_tcp_port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    _http("GET", f"{base}/ok", timeout=5)
                    break
                except OSError:
                    assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                    assert time.monotonic() < deadline, "langgraph dev did not start in 120 s"
                    time.sleep(1)
            graphs = {a["graph_id"] for a in _http("POST", f"{base}/assistants/search", {"limit": 20})}
            assert graphs == {"synthesis", "synthesis_script", "synthesis_trajectory", "refine_agent"}

            persona = "A beekeeper who keeps careful logs of hive inspections."
            full = _http("POST", f"{base}/runs/wait", {"assistant_id": "synthesis", "input": {"synth_persona": persona}})
            assert full["synth_status"] == "accepted", full
            script = _http("POST", f"{base}/runs/wait", {"assistant_id": "synthesis_script",
                                                         "input": {"synth_persona": persona}})
            assert script["synth_script_status"] == "accepted"
            trajectory = _http("POST", f"{base}/runs/wait", {"assistant_id": "synthesis_trajectory",
                                                             "input": {"synth_script": script["synth_script"]}})
            assert trajectory["synth_trajectory_status"] == "accepted", trajectory
            agent = _http("POST", f"{base}/runs/wait", {"assistant_id": "refine_agent", "input": {
                "messages": [{"role": "user", "content": "What is 6 times 7?"}]}})
            assert agent["messages"][-1]["content"] == "42" and agent["refine_success"] is True
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    assert "BlockingError" not in (tmp_path / "server.log").read_text()
    assert list(check_file(str(tmp_path / "traces.jsonl")))[0][1].ok


def test_an_interrupt_inside_the_agent_surfaces_in_the_parent_app_and_resumes_there() -> None:
    @tool
    def refund(order_id: str) -> str:
        """Refund an order (needs a human's approval)."""
        return "refunded" if interrupt(f"Refund {order_id}?") == "yes" else "refused"

    model = tuned("Thought: refund\nAction: refund[A-17]", "Thought: done\nAction: finish[refunded]")
    app = StateGraph(MessagesState)
    app.add_node("desk", create_refine_agent(model, tools=[refund], name="desk").compile())
    app.add_edge(START, "desk")
    graph = app.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "parent"}}
    paused = graph.invoke({"messages": [HumanMessage("Refund A-17")]}, config)
    assert paused["__interrupt__"][0].value == "Refund A-17?"
    out = graph.invoke(Command(resume="yes"), config)
    assert out["messages"][-1].name == "desk" and out["messages"][-1].content == "refunded"


def test_astream_emits_each_step_and_the_trace_on_the_custom_stream() -> None:
    agent = adder()

    async def go() -> list[dict[str, Any]]:
        return [chunk async for chunk in agent.astream({"messages": [HumanMessage("2+3?")]}, stream_mode="custom")]

    events = asyncio.run(go())
    steps = [e["refine_step"] for e in events if "refine_step" in e]
    assert [s["action"] for s in steps] == ["add(a=2, b=3)", "finish[5]"]
    assert [e for e in events if "refine_trace" in e][0]["refine_trace"]["success"] is True


def test_the_tuned_chat_model_serves_one_event_loop_after_another() -> None:
    """`asyncio.run(agent.ainvoke(...))` twice (a notebook, a script): each run gets a client of its own loop."""
    from agentrefine_lg import chat_model

    with FakeOpenAIServer(lambda body: "Thought: 5\nAction: finish[5]") as server:
        agent = create_refine_agent(chat_model(base_url=server.base_url), tools=[add]).compile()
        answers = [asyncio.run(agent.ainvoke({"messages": [HumanMessage("2 + 3?")]}))["messages"][-1].content
                   for _ in range(3)]
    assert answers == ["5", "5", "5"]
