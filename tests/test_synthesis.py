"""Specification of the synthesis graphs: retry edges, counted attempts, refinement traces, LLM failures."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import pytest
from fake_synthesis_models import (
    FakeOpenAIServer,
    HTTPStatusError,
    ScriptedTurns,
    ScriptedWriter,
    script_fixture,
    trajectory_fixture,
)
from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from agentrefine_lg.synthesis.graphs import (
    SynthesisSettings,
    create_script_graph,
    create_synthesis_graph,
    create_trajectory_graph,
    recursion_limit,
)
from agentrefine_lg.synthesis.llm_roles import MalformedOutputError

FAST = {"retry_initial_interval": 0.001, "retry_jitter": False}
PERSONA = "A recent graduate joining the IT department and eager to learn UNIX administration."


def run(graph, inputs: dict[str, Any], *, mode: str = "one_shot", settings: SynthesisSettings | None = None):
    """Run a compiled graph; return (final state, custom events)."""
    async def go():
        events, final = [], {}
        config = {"recursion_limit": recursion_limit(settings, mode)}
        async for kind, chunk in graph.astream(inputs, config, stream_mode=["custom", "values"]):
            (events.append(chunk) if kind == "custom" else None)
            if kind == "values":
                final = chunk
        return final, events

    return asyncio.run(go())


def bad_regex_script() -> dict:
    script = script_fixture()
    script["Available Actions"]["cd {path}"]["verification code"] = "^(a+)+$"
    return script


def missing_keys_script() -> dict:
    script = script_fixture()
    del script["Goal"]
    del script["Completion Conditions"]
    return script


def unflagged_invalid() -> list[dict]:
    """Turn 6 (index 5) uses an action outside the templates and the DM (index 6) does not flag it."""
    t = trajectory_fixture()
    t[5]["Action"] = "teleport project"
    return t


def interactive_fixture() -> list[dict]:
    """The paper's trajectory with ``task_completed`` on the last DM turn, which ends an interactive episode."""
    t = trajectory_fixture()
    t[-1]["task_completed"] = True
    return t


def one_pair() -> list[dict]:
    """Only one error->refine pair: the syntax mistake at turns 8-10 is replaced by a valid action."""
    t = trajectory_fixture()
    del t[7:9]  # drop the bad "set mode=on in config.cfg" and its flagged DM answer
    return t


# ---------------------------------------------------------------------------------------------- script graph


def test_script_graph_retries_bad_json_missing_keys_and_unsafe_regex_then_accepts():
    writer = ScriptedWriter(['{"Environment": {"rooms": ["lab"], ', missing_keys_script(), bad_regex_script(), script_fixture()])
    graph = create_script_graph(writer, max_script_attempts=4, **FAST).compile()
    final, events = run(graph, {"synth_persona": PERSONA})

    assert final["synth_script_status"] == "accepted"
    assert final["synth_script_attempts"] == 4
    assert final["synth_script"]["Goal"].startswith("Navigate")
    traces = final["synth_traces"]
    assert [t["stage"] for t in traces] == ["script"] * 3
    assert [t["attempt"] for t in traces] == [1, 2, 3]
    assert all(t["blame"] == "script" and t["decision"] == "retry" for t in traces)
    assert "bad_json" in traces[0]["problems"][0]
    assert any("missing_key" in p for p in traces[1]["problems"])
    assert any("regex_unsafe" in p for p in traces[2]["problems"])
    # The retry edge feeds each rejection's problems into the next prompt.
    assert writer.calls[0]["problems"] == []
    assert writer.calls[1]["problems"] == traces[0]["problems"]
    assert writer.calls[3]["problems"] == traces[2]["problems"]
    # Every rejection is also streamed.
    assert [{k: v for k, v in e.items() if k != "type"} for e in events if e["type"] == "rejected"] == traces


def test_script_graph_gives_up_after_max_attempts():
    writer = ScriptedWriter(["not json at all", bad_regex_script()])
    final, _ = run(create_script_graph(writer, max_script_attempts=2).compile(), {"synth_persona": PERSONA})
    assert final["synth_script_status"] == "rejected"
    assert final["synth_status"] == "rejected"
    assert final["synth_script_attempts"] == 2
    assert [t["decision"] for t in final["synth_traces"]] == ["retry", "give_up"]
    assert "2 attempt" in final["synth_reason"]


def test_script_graph_is_a_usable_subgraph():
    class App(TypedDict, total=False):
        synth_persona: str
        synth_script: dict
        synth_script_status: str
        user_note: str

    writer = ScriptedWriter([script_fixture()])
    app = StateGraph(App)
    app.add_node("make_script", create_script_graph(writer).compile())
    app.add_node("note", lambda s: {"user_note": f"got {len(s['synth_script']['Available Actions'])} actions"})
    app.add_edge(START, "make_script")
    app.add_edge("make_script", "note")
    app.add_edge("note", END)
    out = asyncio.run(app.compile().ainvoke({"synth_persona": PERSONA}))
    assert out["synth_script_status"] == "accepted"
    assert out["user_note"] == "got 4 actions"


# ---------------------------------------------------------------------------------------------- one-shot


def test_one_shot_continues_from_the_verified_prefix_after_an_unflagged_invalid_action():
    writer = ScriptedWriter([unflagged_invalid(), trajectory_fixture()])
    graph = create_trajectory_graph(writer, mode="one_shot").compile()
    final, _ = run(graph, {"synth_script": script_fixture()})

    assert final["synth_trajectory_status"] == "accepted"
    assert final["synth_trajectory_attempts"] == 2
    assert final["synth_continuations"] == 1
    (trace,) = final["synth_traces"]
    assert trace["decision"] == "continue" and trace["blame"] == "trajectory"
    assert trace["verified_prefix"] == 5
    assert any("unflagged_invalid_action" in p for p in trace["problems"])
    # The second call continues from exactly the five verified turns, with the problem in the prompt.
    assert writer.calls[1]["prefix"] == trajectory_fixture()[:5]
    assert writer.calls[1]["problems"] == trace["problems"]


def test_one_shot_accepts_a_continuation_without_the_prefix():
    """A writer may return only the new turns; the graph prepends the verified prefix."""
    writer = ScriptedWriter([one_pair(), trajectory_fixture()[7:]])
    final, _ = run(create_trajectory_graph(writer).compile(), {"synth_script": script_fixture()})
    assert final["synth_trajectory_status"] == "accepted"
    trace = final["synth_traces"][0]
    assert any("too_few_pairs" in p for p in trace["problems"])
    # One pair after a completion: the completing exchange is dropped so the continuation adds a refinement.
    assert trace["verified_prefix"] == len(one_pair()) - 2
    assert [(t["role"], t.get("Action")) for t in final["synth_trajectory"]] == [
        (t["role"], t.get("Action")) for t in trajectory_fixture()]
    assert [t["turn"] for t in final["synth_trajectory"]] == list(range(1, 12))


def test_repeated_faults_restart_from_empty_then_give_the_script_up():
    writer = ScriptedWriter([unflagged_invalid()] * 3)
    graph = create_trajectory_graph(writer, restart_after=2, max_trajectory_attempts=3).compile()
    final, _ = run(graph, {"synth_script": script_fixture()})

    assert [t["decision"] for t in final["synth_traces"]] == ["continue", "restart", "new_script"]
    assert final["synth_continuations"] == 1 and final["synth_restarts"] == 1
    assert final["synth_trajectory_attempts"] == 3
    assert final["synth_trajectory_status"] == "script_rejected"
    assert [len(c["prefix"]) for c in writer.calls] == [0, 5, 0]  # continue from 5, then restart from empty


def test_unparseable_trajectory_is_a_counted_attempt_with_feedback():
    writer = ScriptedWriter(["Sure! Here is the trajectory: [{'turn': 1,", trajectory_fixture()])
    final, _ = run(create_trajectory_graph(writer).compile(), {"synth_script": script_fixture()})
    assert final["synth_trajectory_status"] == "accepted"
    assert final["synth_trajectory_attempts"] == 2
    assert "bad_json" in final["synth_traces"][0]["problems"][0]
    assert "bad_json" in writer.calls[1]["problems"][0]


# ---------------------------------------------------------------------------------------------- interactive


def test_interactive_player_and_dm_alternate_and_flagged_errors_route_back_to_the_player():
    turns = interactive_fixture()
    dm = ScriptedTurns([t for t in turns if t["role"] == "DM"])
    player = ScriptedTurns([t for t in turns if t["role"] == "Player"])
    graph = create_trajectory_graph((player, dm), mode="interactive").compile()
    final, _ = run(graph, {"synth_script": script_fixture()}, mode="interactive")

    assert final["synth_trajectory_status"] == "accepted"
    assert final["synth_refinements"] == 2  # two flagged DM turns answered by the player
    assert len(final["synth_trajectory"]) == len(turns)
    assert [len(h) for h in dm.histories] == [0, 2, 4, 6, 8, 10]  # the DM opens, then answers each action
    assert [len(h) for h in player.histories] == [1, 3, 5, 7, 9]


def test_interactive_fault_continues_from_the_verified_prefix_with_the_player():
    turns = interactive_fixture()
    dm_turns = [t for t in turns if t["role"] == "DM"]
    players = [t for t in turns if t["role"] == "Player"]
    bad = copy.deepcopy(players)
    bad[2]["Action"] = "teleport project"  # unflagged by the DM -> a trajectory fault at index 5
    # Episode 1 runs to completion (flagged as done by the DM), is rejected, then continues from 5 turns.
    dm = ScriptedTurns(dm_turns + dm_turns[3:])
    player = ScriptedTurns(bad + players[2:])
    graph = create_trajectory_graph((player, dm), mode="interactive").compile()
    final, _ = run(graph, {"synth_script": script_fixture()}, mode="interactive")

    assert final["synth_trajectory_status"] == "accepted"
    assert final["synth_traces"][0]["verified_prefix"] == 5
    assert final["synth_continuations"] == 1
    assert len(player.histories[5]) == 5  # the player acts again on the verified prefix


def test_interactive_stops_at_max_turns():
    dm_turn = {"role": "DM", "Thought": "", "Observation": "Nothing happens.", "parameter_error": False,
               "place_error": False, "logic_error": False, "task_completed": False}
    player_turn = {"role": "Player", "Thought": "look", "Action": "ls ."}
    dm, player = ScriptedTurns([dm_turn] * 10), ScriptedTurns([player_turn] * 10)
    graph = create_trajectory_graph((player, dm), mode="interactive", max_turns=5, max_trajectory_attempts=1).compile()
    final, _ = run(graph, {"synth_script": script_fixture()}, mode="interactive")
    assert final["synth_trajectory_status"] == "script_rejected"
    assert final["synth_traces"][0]["turns"] == 5


# ---------------------------------------------------------------------------------------------- pipeline


def test_synthesis_writes_a_new_script_after_too_many_failed_trajectories_and_emits_a_sample():
    scripts = ScriptedWriter([script_fixture(), script_fixture()])
    trajectories = ScriptedWriter([one_pair(), one_pair(), trajectory_fixture()])
    graph = create_synthesis_graph(scripts, trajectories, max_trajectory_attempts=2, restart_after=5).compile()
    final, events = run(graph, {"synth_persona": PERSONA})

    assert final["synth_status"] == "accepted"
    sample = final["synth_sample"]
    assert sample["attempts"]["script"] == 2
    assert sample["attempts"]["trajectory"] == 3
    assert [t["decision"] for t in final["synth_traces"]] == ["continue", "new_script"]
    # The new script's prompt says why the last one was given up.
    assert any("trajectories for the previous script failed" in p for p in scripts.calls[1]["problems"])
    assert sample["persona"] == PERSONA and sample["pairs"] == 2 and sample["teacher"] == "fake-teacher"
    assert sample["usage"]["calls"] == 5  # every call counted, rejected attempts included
    assert [m["train"] for m in sample["messages"] if m["role"] == "assistant"] == [True, False, True, False, True]
    assert events[-1]["type"] == "accepted"
    assert [{k: v for k, v in e.items() if k != "type"} for e in events if e["type"] == "rejected"] == final["synth_traces"]


def test_synthesis_gives_up_when_no_script_attempts_are_left():
    scripts = ScriptedWriter([script_fixture()])
    trajectories = ScriptedWriter([one_pair()])
    graph = create_synthesis_graph(scripts, trajectories, max_script_attempts=1, max_trajectory_attempts=1).compile()
    final, events = run(graph, {"synth_persona": PERSONA})
    assert final["synth_status"] == "rejected"
    assert final.get("synth_sample") is None
    assert final["synth_traces"][-1]["decision"] == "give_up"
    assert "no script attempts left" in final["synth_reason"]
    assert events[-1]["type"] == "given_up"


# ---------------------------------------------------------------------------------------------- LLM errors


def test_transient_llm_errors_are_retried_and_counted():
    scripts = ScriptedWriter([HTTPStatusError(429, "rate limited"), HTTPStatusError(503), script_fixture()])
    trajectories = ScriptedWriter([TimeoutError("read timeout"), trajectory_fixture()])
    graph = create_synthesis_graph(scripts, trajectories, **FAST).compile()
    final, events = run(graph, {"synth_persona": PERSONA})
    assert final["synth_status"] == "accepted"
    assert final["synth_transient_retries"] == 3
    assert final["synth_llm_failures"] == 0
    assert final["synth_script_attempts"] == 1  # retries of one call are not new attempts
    assert sorted(e["node"] for e in events if e["type"] == "retry") == ["write_script", "write_trajectory"]


def test_a_malformed_model_answer_is_a_counted_failure_of_the_persona():
    bad = MalformedOutputError("no JSON object in the reply")
    scripts = ScriptedWriter([bad, script_fixture()])
    trajectories = ScriptedWriter([MalformedOutputError("still not a list of turns"), trajectory_fixture()])
    graph = create_synthesis_graph(scripts, trajectories, **FAST).compile()
    final, _ = run(graph, {"synth_persona": PERSONA})
    assert final["synth_status"] == "accepted"
    assert final["synth_llm_failures"] == 2
    assert final["synth_script_attempts"] == 2  # the malformed answer counts as a script attempt
    assert final["synth_trajectory_attempts"] == 2
    blames = [(t["stage"], t["blame"]) for t in final["synth_traces"]]
    assert blames == [("script", "llm"), ("trajectory", "llm")]
    assert "MalformedOutputError" in final["synth_traces"][0]["problems"][0]


def test_malformed_answers_end_in_a_rejection_when_attempts_run_out():
    scripts = ScriptedWriter([MalformedOutputError("garbage")] * 2)
    graph = create_synthesis_graph(scripts, ScriptedWriter([]), max_script_attempts=2, **FAST).compile()
    final, _ = run(graph, {"synth_persona": PERSONA})
    assert final["synth_status"] == "rejected"
    assert final["synth_llm_failures"] == 2


@pytest.mark.parametrize("error", [
    HTTPStatusError(401, "invalid api key"),
    TypeError("awrite_script() takes 2 positional arguments but 3 were given"),
    NotImplementedError("no async support"),
    ValueError("a bug in the role"),
], ids=["401", "TypeError", "NotImplementedError", "ValueError"])
def test_configuration_and_programming_errors_raise_from_the_node(error):
    graph = create_synthesis_graph(ScriptedWriter([error]), ScriptedWriter([])).compile()
    with pytest.raises(type(error)):
        run(graph, {"synth_persona": PERSONA})


def test_an_outage_outlasting_the_retries_raises_and_the_thread_resumes_once_fixed():
    from langgraph.checkpoint.memory import InMemorySaver

    scripts = ScriptedWriter([HTTPStatusError(503)] * 2 + [script_fixture()])
    graph = create_synthesis_graph(scripts, ScriptedWriter([trajectory_fixture()]), llm_max_attempts=2,
                                   **FAST).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}, "recursion_limit": recursion_limit()}

    async def go():
        with pytest.raises(HTTPStatusError, match="503"):
            await graph.ainvoke({"synth_persona": PERSONA}, config)
        assert (await graph.aget_state(config)).next == ("write_script",)  # stopped at the failing node
        return await graph.ainvoke(None, config)  # the endpoint is back: resume where it stopped

    final = asyncio.run(go())
    assert final["synth_status"] == "accepted"
    assert final["synth_llm_failures"] == 0 and final["synth_script_attempts"] == 1


def test_sync_invoke_says_to_use_ainvoke():
    graph = create_synthesis_graph(ScriptedWriter([script_fixture()]), ScriptedWriter([])).compile()
    with pytest.raises(TypeError, match="ainvoke"):
        graph.invoke({"synth_persona": PERSONA})


def test_a_new_persona_on_a_reused_thread_starts_with_fresh_counters():
    from langgraph.checkpoint.memory import InMemorySaver

    scripts = ScriptedWriter(['{"Environment": ', script_fixture(), script_fixture()])
    trajectories = ScriptedWriter([trajectory_fixture(), trajectory_fixture()])
    graph = create_synthesis_graph(scripts, trajectories, **FAST).compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "reused"}, "recursion_limit": recursion_limit()}

    async def go():
        first = await graph.ainvoke({"synth_persona": PERSONA}, config)
        second = await graph.ainvoke({"synth_persona": "A marine biologist cataloguing reef fish."}, config)
        return first, second

    first, second = asyncio.run(go())
    assert first["synth_script_attempts"] == 2 and len(first["synth_traces"]) == 1
    assert second["synth_status"] == "accepted"
    assert second["synth_script_attempts"] == 1 and second["synth_traces"] == []
    assert second["synth_sample"]["persona"].startswith("A marine biologist")


def test_studio_forms_show_the_input_not_the_working_keys():
    graph = create_synthesis_graph(ScriptedWriter([]), ScriptedWriter([])).compile()
    assert set(graph.get_input_jsonschema()["properties"]) == {"synth_persona"}
    trajectory = create_trajectory_graph(ScriptedWriter([])).compile()
    assert set(trajectory.get_input_jsonschema()["properties"]) == {"synth_script"}
    assert graph.name == "synthesis" and "synth_prefix" not in graph.get_output_jsonschema()["properties"]


def test_settings_are_validated():
    with pytest.raises(TypeError, match="unknown synthesis setting"):
        create_script_graph(ScriptedWriter([]), max_scripts=3)
    with pytest.raises(ValueError, match="max_script_attempts"):
        SynthesisSettings(max_script_attempts=0)
    with pytest.raises(TypeError, match="player, dm"):
        create_trajectory_graph(ScriptedWriter([]), mode="interactive")


# ---------------------------------------------------------------------------------------------- end to end


def test_end_to_end_through_langchain_openai_retries_429_and_500():
    """The real ChatOpenAI client against a local OpenAI-compatible server that first answers 429, then 500."""
    from langchain_openai import ChatOpenAI

    from agentrefine_lg.synthesis.llm_roles import llm_teacher

    with FakeOpenAIServer(failures=[429, 500]) as server:
        chat = ChatOpenAI(base_url=server.base_url, model="fake-teacher", api_key="test", max_retries=0, timeout=10)
        writer, trajectory_writer = llm_teacher(chat, mode="one_shot")
        graph = create_synthesis_graph(writer, trajectory_writer, **FAST).compile()
        final, events = run(graph, {"synth_persona": PERSONA})

    assert server.statuses == [429, 500, 200, 200]
    assert final["synth_status"] == "accepted"
    assert final["synth_transient_retries"] == 2
    assert sum(1 for e in events if e["type"] == "retry") == 1  # both retries on the script call
    usage = final["synth_sample"]["usage"]
    assert usage == {"input_tokens": 240, "output_tokens": 120, "total_tokens": 360, "calls": 2}
    # Structured output was requested from the server (json_schema), and the fenced reply still parsed.
    assert server.requests[0]["response_format"]["type"] == "json_schema"
    assert final["synth_sample"]["teacher"] == "openai:fake-teacher"
    assert json.loads(json.dumps(final["synth_sample"]))["script"]["Persona"] == PERSONA
