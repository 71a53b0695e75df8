"""Specification of behaviour under faults and hostile input (issue 17): nothing accepted is lost, nothing is
wrongly rejected or overwritten, every bad file ends in one line naming file, record and field (exit 2), and
every request is bounded. Servers are on 127.0.0.1 only; every wait has a deadline."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import regex
from fake_synthesis_models import FakeOpenAIServer, FixtureTeacher, script_fixture

from agentrefine_lg import checks
from agentrefine_lg.cli import main as cli
from agentrefine_lg.convert import MAX_DEPTH, iter_records
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.outputs import lock_output_dir
from agentrefine_lg.schema import Persona
from agentrefine_lg.synthesis.graphs import create_synthesis_graph
from agentrefine_lg.synthesis.runner import run_synthesis

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SAMPLE = {"conversations": [{"from": "human", "value": "You are in a room."}, {"from": "gpt", "value": "Action: look"}]}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- hostile files

HOSTILE = {
    # name: (bytes, what the one-line error must say)
    "binary.jsonl": (b"\x00\xff\xfe\x89PNG\r\n\x1a\n", "not UTF-8"),
    "latin1.jsonl": ('{"conversations": [{"from": "human", "value": "café"}]}\n'.encode("latin-1"), "not UTF-8"),
    "deep_list.jsonl": (b"[" * 100_000 + b"\n", "nested deeper"),
    "deep_object.jsonl": (("{\"a\":" * (MAX_DEPTH + 5) + "1" + "}" * (MAX_DEPTH + 5) + "\n").encode(), "nested deeper"),
    "surrogate.jsonl": (b'{"conversations": [{"from": "human", "value": "hi \\ud800"}, {"from": "gpt", "value": "x"}]}\n',
                        "lone UTF-16 surrogate"),
    "empty.jsonl": (b"", "empty file"),
    "blank.jsonl": (b"\n \n\n", "empty file"),
    "empty_list.json": (b"[]", "no records"),
    "not_json.jsonl": (b"{\"conversations\": [\n", "invalid JSON"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("command", ["check", "convert"])
def test_hostile_files_end_in_one_line_naming_the_file(tmp_path, capsys, name, command):
    data, expected = HOSTILE[name]
    path = tmp_path / name
    path.write_bytes(data)
    args = [command, str(path)] + ([str(tmp_path / "out.jsonl")] if command == "convert" else [])
    assert cli(args) == 2
    line = one_error_line(capsys)
    assert expected in line and str(path) in line
    assert not (tmp_path / "out.jsonl").exists()  # a failed convert writes nothing


def test_errors_name_the_record_and_field(tmp_path, capsys):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(json.dumps(SAMPLE).encode() + b"\n"
                     + b'{"conversations": [{"from": "human", "value": "ok"}, {"from": "gpt", "value": "a \\udfff"}]}\n')
    assert cli(["convert", str(path), str(tmp_path / "out.jsonl")]) == 2
    line = one_error_line(capsys)
    assert f"{path}:2" in line and "conversations[1].value" in line


def test_a_huge_line_is_refused_without_being_loaded(tmp_path, monkeypatch):
    from agentrefine_lg import convert

    monkeypatch.setattr(convert, "MAX_RECORD_BYTES", 1024)
    path = tmp_path / "huge.jsonl"
    path.write_text(json.dumps(SAMPLE) + "\n" + json.dumps({"x": "y" * 5000}) + "\n")
    with pytest.raises(InputError, match=r"huge.jsonl:2: record longer than .* limit per record"):
        list(iter_records(path))


def test_training_and_persona_readers_give_the_same_errors(tmp_path):
    from agentrefine_lg.synthesis.personas import load_personas
    from training.data import read_samples as train_samples

    for name in ("latin1.jsonl", "surrogate.jsonl", "deep_object.jsonl"):
        path = tmp_path / name
        path.write_bytes(HOSTILE[name][0])
        with pytest.raises(InputError, match=HOSTILE[name][1]):
            train_samples(path)
    personas = tmp_path / "personas.txt"
    personas.write_bytes("a chef\na café owner\n".encode("latin-1"))
    with pytest.raises(InputError, match="personas.txt:2: not UTF-8"):
        load_personas(personas)


# ---------------------------------------------------------------------------------------------- outputs


def test_convert_refuses_in_equals_out_and_never_truncates(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(SAMPLE) + "\n")
    before = path.read_bytes()
    assert cli(["convert", str(path), str(path)]) == 2
    assert "the output is the input" in one_error_line(capsys)
    link = tmp_path / "link.jsonl"
    link.symlink_to(path)
    assert cli(["convert", str(path), str(link)]) == 2
    capsys.readouterr()
    assert path.read_bytes() == before


def test_a_failing_convert_leaves_the_previous_output(tmp_path, capsys):
    good, bad, out = tmp_path / "good.jsonl", tmp_path / "bad.jsonl", tmp_path / "out.jsonl"
    good.write_text(json.dumps(SAMPLE) + "\n")
    bad.write_text(json.dumps(SAMPLE) + "\n" + "{broken\n")
    assert cli(["convert", str(good), str(out)]) == 0
    written = out.read_bytes()
    assert cli(["convert", str(bad), str(out)]) == 2
    assert out.read_bytes() == written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "good.jsonl", "out.jsonl"]  # no temp left


def test_an_output_folder_is_locked_by_one_run(tmp_path):
    with lock_output_dir(tmp_path), pytest.raises(AgentRefineError, match="in use by another run"):
        run(FixtureTeacher(), personas(3), tmp_path, n=2)
    run(FixtureTeacher(), personas(3), tmp_path, n=2)  # free again once the holder is done


def _synth(out: Path, base_url: str, persona_file: Path, n: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agentrefine_lg.cli", "synthesize", "--base-url", base_url, "--model", "fake",
            "--api-key", "k", "--personas", str(persona_file), "--n", str(n), "--out", str(out), "--no-progress",
            "--retry-interval", "0.01", "--llm-max-attempts", "2", *extra]


def _wait_for(predicate, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()}")
        if time.time() > deadline:
            pytest.fail("timed out")
        time.sleep(0.05)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def test_a_second_run_on_the_same_folder_says_so_and_exits(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(20)) + "\n")
    out = tmp_path / "run"
    # 8 personas x 2 calls x 0.4 s: the first run is still going while the second one starts (imports take seconds).
    with FakeOpenAIServer(latency=0.4) as server:
        first = subprocess.Popen(_synth(out, server.base_url, persona_file, 8, "--concurrency", "1"), env=ENV,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_for(lambda: len(_lines(out / "samples.jsonl")) >= 1, proc=first)
        second = subprocess.run(_synth(out, server.base_url, persona_file, 8), env=ENV, capture_output=True,
                                text=True, timeout=120, check=False)
        first.communicate(timeout=120)
    assert second.returncode == 2 and "in use by another run" in second.stderr and "Traceback" not in second.stderr
    assert first.returncode == 0
    samples = _lines(out / "samples.jsonl")
    assert len(samples) == 8 and len({s["persona_id"] for s in samples}) == 8


# ---------------------------------------------------------------------------------------------- runner


def personas(n: int) -> list[Persona]:
    return [Persona(text=f"Persona number {i}, a careful operator.") for i in range(n)]


def graph_of(teacher):
    return create_synthesis_graph(teacher, teacher, max_script_attempts=2, max_trajectory_attempts=1,
                                  llm_max_attempts=2, retry_initial_interval=0.01).compile()


def run(teacher, people, out, **kwargs):
    return asyncio.run(run_synthesis(graph_of(teacher), people, out, progress=False, **kwargs))


class DeadEndpoint(FixtureTeacher):
    """Every call fails the way an unreachable server does."""

    async def awrite_script(self, persona, problems):
        raise ConnectionRefusedError("[Errno 111] Connection refused")


class BuggyGraph:
    """A compiled graph whose run raises for one persona (a bug, an engine error, a refused key...)."""

    def __init__(self, error: BaseException):
        self.error = error

    async def astream(self, state, config, stream_mode):
        raise self.error
        yield  # an async generator, like the real one


def test_infrastructure_failures_stop_the_run_and_never_reject_a_persona(tmp_path, capsys):
    with pytest.raises(AgentRefineError, match="failed for 3 personas in a row.*Connection refused"):
        run(DeadEndpoint(), personas(10), tmp_path, n=5, concurrency=1)
    assert _lines(tmp_path / "ledger.jsonl") == []
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "stopped" and "Connection refused" in manifest["stopped"]
    assert capsys.readouterr().err.count("not ledgered") == 3
    result = run(FixtureTeacher(), personas(10), tmp_path, n=5, concurrency=2)  # nothing was burned
    assert result.new_accepted == 5 and result.new_rejected == 0


def test_an_exception_escaping_the_graph_stops_the_run_without_a_ledger_line(tmp_path):
    graph = BuggyGraph(TypeError("awrite_trajectory() got an unexpected keyword argument"))
    with pytest.raises(AgentRefineError, match=r"persona [0-9a-f]+ failed with TypeError.*not a rejection"):
        asyncio.run(run_synthesis(graph, personas(4), tmp_path, n=2, concurrency=1, progress=False))
    assert _lines(tmp_path / "ledger.jsonl") == []
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "stopped"


def test_a_dead_endpoint_on_the_command_line(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(6)) + "\n")
    out = tmp_path / "run"
    res = subprocess.run(_synth(out, "http://127.0.0.1:1/v1", persona_file, 5), env=ENV, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.splitlines()[-1].startswith("agentrefine synthesize: error: the teacher failed for 3 personas")
    assert _lines(out / "ledger.jsonl") == []
    with FakeOpenAIServer() as server:  # the endpoint comes back: every persona is still there to do
        res = subprocess.run(_synth(out, server.base_url, persona_file, 5), env=ENV, capture_output=True, text=True,
                             timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert len(_lines(out / "samples.jsonl")) == 5 and all(r["status"] == "accepted" for r in _lines(out / "ledger.jsonl"))


def test_a_teacher_that_fails_mid_run_rejects_nobody(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(30)) + "\n")
    out = tmp_path / "run"
    with FakeOpenAIServer(latency=0.05) as server:
        proc = subprocess.Popen(_synth(out, server.base_url, persona_file, 20, "--concurrency", "2"), env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: len(_lines(out / "samples.jsonl")) >= 3, proc=proc)
        with server._lock:  # from now on the endpoint answers 503 to everything
            server.failures.extend([503] * 100_000)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "failed for 3 personas in a row" in err
    ledger = _lines(out / "ledger.jsonl")
    assert ledger and all(r["status"] == "accepted" for r in ledger)
    assert {r["persona_id"] for r in ledger} == {s["persona_id"] for s in _lines(out / "samples.jsonl")}


def test_a_silent_teacher_is_bounded_by_the_llm_timeout(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(4)) + "\n")
    with SilentServer() as url:
        started = time.monotonic()
        res = subprocess.run(_synth(tmp_path / "run", url, persona_file, 2, "--llm-timeout", "0.5",
                                    "--llm-max-attempts", "1", "--concurrency", "3"),
                             env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and "failed for 3 personas in a row" in res.stderr
    assert time.monotonic() - started < 60
    assert _lines(tmp_path / "run" / "ledger.jsonl") == []


def test_samples_and_ledger_agree_again_after_a_kill_between_the_two_writes(tmp_path):
    run(FixtureTeacher(), personas(6), tmp_path, n=3)
    ledger = _lines(tmp_path / "ledger.jsonl")
    lost = ledger.pop()  # the kill came after the sample's fsync, before its ledger line
    (tmp_path / "ledger.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ledger))
    result = run(FixtureTeacher(), personas(6), tmp_path, n=3)
    assert result.new_accepted == 0 and result.summary["accepted"] == 3
    ledger = _lines(tmp_path / "ledger.jsonl")
    assert {r["persona_id"] for r in ledger if r["status"] == "accepted"} == \
        {s["persona_id"] for s in _lines(tmp_path / "samples.jsonl")}
    assert next(r for r in ledger if r.get("recovered"))["persona_id"] == lost["persona_id"]


def test_sigterm_finalises_like_sigint(tmp_path):
    persona_file = tmp_path / "personas.txt"
    persona_file.write_text("\n".join(p.text for p in personas(40)) + "\n")
    out = tmp_path / "run"
    with FakeOpenAIServer(latency=0.05) as server:
        proc = subprocess.Popen(_synth(out, server.base_url, persona_file, 30), env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        _wait_for(lambda: len(_lines(out / "samples.jsonl")) >= 2, proc=proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err and "Traceback" not in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    samples = _lines(out / "samples.jsonl")
    assert {r["persona_id"] for r in _lines(out / "ledger.jsonl") if r["status"] == "accepted"} == \
        {s["persona_id"] for s in samples}


# ---------------------------------------------------------------------------------------------- regexes


def test_a_literal_prefix_does_not_hide_a_slow_regex():
    with pytest.raises(checks.RegexRefused) as info:
        checks.compile_verification(r"^shout ((?:a|aa)*c)$")
    assert info.value.kind == "regex_timeout"
    for fine in (r"^go to (\w+)$", r"^take (.+) from (.+)$", r'^say "([^"]*)"$', r"^(north|south|east|west)$"):
        checks.compile_verification(fine)


def _slow_script(n_templates: int) -> dict:
    script = script_fixture()
    script["Available Actions"] = {
        f"shout{i} {{word}}": {"description": "shout", "parameters": {"word": ["aac"]},
                               "verification code": rf"^shout{i} ((?:a|aa)*c)$"} for i in range(n_templates)}
    return script


def test_many_turns_with_a_slow_regex_cost_one_timeout():
    turns = []
    for _ in range(2500):
        turns += [{"role": "Player", "thought": "t", "action": "shout0 " + "a" * 40}, {"role": "DM", "observation": "No."}]
    started = time.monotonic()
    report = checks.check_trajectory(_slow_script(1), turns, min_pairs=0, require_completion=False)
    assert time.monotonic() - started < 5
    assert not report.ok and any("regex" in p.kind for p in report.problems)


def test_regex_time_is_bounded_per_record(monkeypatch):
    # Patterns the probes miss (simulated by switching the probes off) still cost one record at most the budget.
    monkeypatch.setattr(checks, "_PROBES", ())
    monkeypatch.setattr(checks, "_pattern_probes", lambda pattern, parsed: [])
    monkeypatch.setattr(checks, "_SLOW", set())
    checks.compile_verification.cache_clear()
    try:
        # 30 distinct patterns, each exponential on the action: 30 x 0.25 s without a per-record budget.
        actions = {f"shout {{word}} {i}": {"description": "", "parameters": {"word": ["aac"]},
                                           "verification code": rf"^(?:shout|yell{i}) ((?:a|aa)*c)$"} for i in range(30)}
        started = time.monotonic()
        match = checks.bounded_regex_time(checks.match_action)(actions, "shout " + "a" * 60)
        elapsed = time.monotonic() - started
    finally:
        checks.compile_verification.cache_clear()
    assert not match.ok and match.kind == "regex_error"
    assert elapsed < checks.RECORD_REGEX_BUDGET_S + 1.5  # 30 timeouts would be 7.5 s


# ---------------------------------------------------------------------------------------------- training


class CountingTokenizer:
    """Wraps a tokenizer, counting chat-template renderings and the characters sent to tokenization."""

    def __init__(self, inner):
        self.inner, self.renders, self.tokenized = inner, 0, []

    def apply_chat_template(self, *args, **kwargs):
        self.renders += 1
        return self.inner.apply_chat_template(*args, **kwargs)

    def __call__(self, text, **kwargs):
        self.tokenized.append(len(text))
        return self.inner(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _chat(turns: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You act in a text world."}]
    for i in range(turns):
        msgs += [{"role": "user", "content": f"You see door {i}."},
                 {"role": "assistant", "content": f"Thought: try {i}.\nAction: open door {i}", "train": i % 3 != 0}]
    return msgs


def test_label_spans_take_a_constant_number_of_renderings():
    pytest.importorskip("transformers")
    from training import data
    from training.tiny import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    counts = []
    for turns in (10, 1000):
        counting = CountingTokenizer(tok)
        full, spans = data.assistant_spans(_chat(turns), counting)
        counts.append(counting.renders)
        assert len(spans) == turns
    assert counts[0] == counts[1] <= 6  # the per-turn method would render 2 x turns times
    # ...and the spans are exactly the per-turn method's.
    msgs = data._normalise(_chat(40))
    full = data._render(tok, msgs, add_generation_prompt=False)
    assert data._marked_spans(tok, msgs, full) == data._rendered_spans(tok, msgs, full)


def test_tokenization_is_bounded_by_max_length():
    pytest.importorskip("transformers")
    from training import data
    from training.tiny import build_tiny_tokenizer

    counting = CountingTokenizer(build_tiny_tokenizer())
    huge = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "word " * 2_000_000}]  # 10 MB
    row = data.tokenize_messages(huge, counting, max_length=256)
    assert len(row["input_ids"]) == 256 and any(x != data.IGNORE_INDEX for x in row["labels"])
    assert max(counting.tokenized) <= 256 * 16 * 4  # a window, not the 10 MB message


# ---------------------------------------------------------------------------------------------- grounded engine


def test_fresh_cache_worlds_are_safe_at_any_concurrency(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    pytest.importorskip("textworld")
    from agentrefine_lg.synthesis.grounded.engine import (
        TextWorldSession,
        generate_game,
        load_game_info,
        spec_for_persona,
    )

    stdout, swapped = sys.stdout, []
    stop = threading.Event()

    def watch() -> None:  # another thread's output must never be redirected
        while not stop.is_set():
            if sys.stdout is not stdout:
                swapped.append(True)
            time.sleep(0.001)

    def world(i: int) -> int:
        path = generate_game(spec_for_persona(f"persona {i} of a concurrent run"), tmp_path)
        info = load_game_info(path)
        session = TextWorldSession(path)
        try:
            session.reset()
            session.sync(info.walkthrough[:2])
        finally:
            session.close()
        return len(info.walkthrough)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            lengths = list(pool.map(world, range(6)))
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert all(n >= 3 for n in lengths)
    assert not swapped


# ---------------------------------------------------------------------------------------------- evaluation


class SilentServer:
    """Accepts connections on 127.0.0.1 and never answers."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.conns, self.stop = [], threading.Event()

        def accept() -> None:
            while not self.stop.is_set():
                try:
                    self.conns.append(self.sock.accept()[0])
                except OSError:
                    pass

        self.thread = threading.Thread(target=accept, daemon=True)
        self.thread.start()
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.sock.close()


def test_eval_against_a_silent_endpoint_stops_in_bounded_time(tmp_path):
    with SilentServer() as url:
        started = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "agentrefine_lg.cli", "eval", "--base-url", url, "--model", "m",
                              "--tasks", "pddl", "--episodes", "1", "--out", str(tmp_path / "e"), "--timeout", "2"],
                             env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "checking the model" in res.stderr and "timed out" in res.stderr.lower()
    assert time.monotonic() - started < 60


def test_eval_stores_replies_capped(tmp_path):
    from agentrefine_lg.eval import base
    from agentrefine_lg.eval.harness import MAX_STORED_CHARS, ModelSpec, run_eval

    # The [eval] extra installs the PDDL engine: an unavailable task here is a broken install, not a skip.
    assert base.task_unavailable("pddl") is None
    reply = "Thought: " + "ramble " * 200_000 + "\nAction: look"  # 1.4 MB per reply
    with FakeOpenAIServer(lambda request: reply) as server:
        run_eval(tasks="pddl", episodes=1, max_steps=3, out=tmp_path, embeddings=False, log=lambda _m: None,
                 model=ModelSpec(base_url=server.base_url, model="m", api_key="k"))
    size = (tmp_path / "episodes.jsonl").stat().st_size
    assert size < 12 * MAX_STORED_CHARS  # 3 steps x (message + trajectory thought) capped, not 8 MB
    row = _lines(tmp_path / "episodes.jsonl")[0]
    assert row["steps"] >= 1 and "more characters not stored" in json.dumps(row)


# ---------------------------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("transformers")
    from agentrefine_lg.serving import server as serve
    from training.tiny import build_tiny_model

    model = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    limits = serve.ServeLimits(max_request_bytes=64 * 1024, max_prompt_tokens=400, max_tokens=1200)
    with serve.start_server(model, api_key="k", model_name="tuned", limits=limits) as handle:
        handle.model_dir = str(model)
        yield handle


def _post(server, body, *, raw: bytes | None = None, timeout: float = 60):
    import httpx

    headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(f"{server.base_url}/chat/completions", content=content, headers=headers, timeout=timeout)


MSG = [{"role": "user", "content": "You are in a room."}]


@pytest.mark.parametrize("body, param", [
    ({"messages": MSG, "max_tokens": -5}, "max_tokens"),
    ({"messages": MSG, "max_tokens": "many"}, "max_tokens"),
    ({"messages": MSG, "max_tokens": 1e8}, "max_tokens"),
    ({"messages": [5]}, "messages[0]"),
    ({"messages": [{"content": "no role"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": {"x": 1}}]}, "messages[0].content"),
    ({"messages": MSG, "stop": [None]}, "stop"),
    ({"messages": MSG, "n": 3}, "n"),
    ({"messages": MSG, "temperature": "hot"}, "temperature"),
    ({"messages": MSG, "logit_bias": {"x": 1}}, "logit_bias"),
    ({"messages": []}, "messages"),
    ({"prompt": "hi"}, "messages"),
])
def test_malformed_requests_get_openai_style_400s(server, body, param):
    res = _post(server, body)
    assert res.status_code == 400, res.text
    error = res.json()["error"]
    assert set(error) >= {"message", "type", "param"} and error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("raw", [b"not json", b"[" * 50_000, b'{"messages": [{"role": "user", "content": "\\ud800"}]}',
                                 b"\xff\xfe"])
def test_unparseable_bodies_get_400s(server, raw):
    res = _post(server, None, raw=raw)
    assert res.status_code == 400 and "message" in res.json()["error"]


def test_oversized_bodies_and_prompts_are_refused(server):
    res = _post(server, {"messages": [{"role": "user", "content": "x" * 200_000}]})
    assert res.status_code == 413 and res.json()["error"]["code"] == "request_too_large"
    res = _post(server, {"messages": [{"role": "user", "content": "word " * 5_000}]})  # < 64 KiB, > 400 tokens
    assert res.status_code == 400 and res.json()["error"]["code"] == "context_length_exceeded"
    assert _post(server, {"messages": MSG, "max_tokens": 2}).status_code == 200  # still serving


def test_max_tokens_is_capped_by_the_server(server):
    res = _post(server, {"messages": MSG, "max_tokens": 100_000_000, "temperature": 0}, timeout=120)
    assert res.status_code == 200, res.text
    assert res.json()["usage"]["completion_tokens"] <= 1200


def test_models_list_discloses_no_local_path(server):
    import httpx

    res = httpx.get(f"{server.base_url}/models", headers={"Authorization": "Bearer k"}, timeout=10)
    assert res.status_code == 200 and server.model_dir not in res.text
    assert [m["id"] for m in res.json()["data"]] == ["tuned"]


def test_other_requests_are_served_while_one_is_long(server, monkeypatch):
    import httpx
    from transformers import LlamaForCausalLM

    forward = LlamaForCausalLM.forward

    def slow_forward(self, *args, **kwargs):  # a model that takes ~10 ms a token, like a real one on CPU
        time.sleep(0.01)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", slow_forward)
    ended: dict[str, float] = {}

    def long_request() -> None:
        res = _post(server, {"messages": MSG, "max_tokens": 300, "temperature": 0}, timeout=120)
        ended["long"] = time.monotonic()
        ended["tokens"] = res.json()["usage"]["completion_tokens"]

    thread = threading.Thread(target=long_request)
    thread.start()
    time.sleep(0.3)
    health = httpx.get(f"{server.url}/health", timeout=10)
    models = httpx.get(f"{server.base_url}/models", headers={"Authorization": "Bearer k"}, timeout=10)
    answered = time.monotonic()
    thread.join(timeout=120)
    assert health.status_code == 200 and models.status_code == 200
    assert ended["tokens"] == 300  # greedy noise from the tiny model runs to max_tokens
    assert answered < ended["long"] - 1.0  # answered while the long one was still generating


def test_a_timeout_while_the_thread_waited_for_a_core_is_retried_and_does_not_mark_the_pattern_slow(monkeypatch):
    # Under load (many episodes in threads, other processes) the regex module's wall-clock timeout can pass
    # while the thread is not even running; that must not refuse '^look$' for the rest of the process.
    monkeypatch.setattr(checks, "_SLOW", set())
    compiled = regex.compile(r"^\s*look\s*$")
    calls = []

    class Preempted:
        pattern = compiled.pattern

        def fullmatch(self, text, timeout):
            calls.append(timeout)
            if len(calls) == 1:
                raise TimeoutError("regex timed out")  # no CPU spent: the thread was descheduled
            return compiled.fullmatch(text, timeout=timeout)

    assert checks._fullmatch(Preempted(), "look") is not None
    assert len(calls) == 2 and compiled.pattern not in checks._SLOW


def test_a_pattern_that_really_burns_its_timeout_is_marked_slow(monkeypatch):
    monkeypatch.setattr(checks, "_SLOW", set())
    slow = regex.compile(r"^(?:shout|yell0) ((?:a|aa)*c)$", flags=regex.VERSION0)
    with pytest.raises(checks.RegexRefused):
        checks._fullmatch(slow, "shout " + "a" * 60)
    assert slow.pattern in checks._SLOW
