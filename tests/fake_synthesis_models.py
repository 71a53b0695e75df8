"""Test doubles for synthesis: the shared scripted chat model extended for teachers, scripted roles and a scripted
OpenAI-compatible HTTP server (stdlib, in a thread) for end-to-end tests through ``langchain-openai``."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fake_models import ScriptedChatModel
from langchain_core.outputs import ChatResult
from langchain_core.runnables import RunnableLambda

from agentrefine_lg.schema import Script, TokenUsage, Turn

FIXTURES = Path(__file__).parent / "fixtures"


def script_fixture() -> dict[str, Any]:
    return json.loads((FIXTURES / "script_unix_admin.json").read_text())


def trajectory_fixture() -> list[dict[str, Any]]:
    return json.loads((FIXTURES / "trajectory_unix_admin.json").read_text())


class TeacherModel(ScriptedChatModel):
    """The shared scripted fake (``tests/fake_models.py``) extended for teacher tests: every reply carries
    ``usage_metadata``, and ``with_structured_output(..., include_raw=True)`` behaves like LangChain's
    (a reply that is not JSON gives ``parsed=None`` and a ``parsing_error``, it does not raise)."""

    input_tokens: int = 100
    output_tokens: int = 40
    model_name: str = "scripted-teacher"
    structured_methods: list[Any] = []

    def _generate(self, messages, stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        result = super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)
        message = result.generations[0].message
        message.usage_metadata = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                                  "total_tokens": self.input_tokens + self.output_tokens}
        return result

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any):
        self.structured_methods.append(kwargs.get("method"))

        async def parse(value: Any) -> Any:
            message = await self.ainvoke(value)
            try:
                parsed, error = json.loads(message.content), None
            except json.JSONDecodeError as exc:
                parsed, error = None, exc
            if include_raw:
                return {"raw": message, "parsed": parsed, "parsing_error": error}
            if error:
                raise error
            return parsed

        return RunnableLambda(lambda v: None, afunc=parse)


class TextOnlyModel(TeacherModel):
    """A teacher without structured output (like many local models): the roles must parse its text."""

    def with_structured_output(self, schema: Any, **kwargs: Any):
        raise NotImplementedError("with_structured_output is not implemented for this model.")


# ---------------------------------------------------------------------------------------------- roles


class ScriptedWriter:
    """A ScriptWriter / TrajectoryWriter returning scripted outputs (or raising scripted exceptions)."""

    def __init__(self, outputs: list[Any], name: str = "fake-teacher", tokens: int = 10):
        self.outputs = list(outputs)
        self.name = name
        self.tokens = tokens
        self.calls: list[dict[str, Any]] = []

    def _pop(self) -> Any:
        item = self.outputs.pop(0)
        if isinstance(item, BaseException):
            raise item
        return copy.deepcopy(item)

    def _usage(self) -> TokenUsage:
        return TokenUsage(input_tokens=self.tokens, output_tokens=self.tokens, total_tokens=2 * self.tokens, calls=1)

    async def awrite_script(self, persona: str, problems: list[str]):
        self.calls.append({"persona": persona, "problems": list(problems)})
        return self._pop(), self._usage()

    async def awrite_trajectory(self, script: Script, prefix: list[Turn], problems: list[str]):
        self.calls.append({"prefix": [t.to_paper() for t in prefix], "problems": list(problems)})
        return self._pop(), self._usage()


class ScriptedTurns:
    """A Player or DM answering with scripted turns (dicts in the paper's keys) or raising exceptions."""

    def __init__(self, turns: list[Any], name: str = "fake-teacher"):
        self.turns = list(turns)
        self.name = name
        self.histories: list[list[dict[str, Any]]] = []

    async def _next(self, history: list[Turn]):
        self.histories.append([t.to_paper() for t in history])
        item = self.turns.pop(0)
        if isinstance(item, BaseException):
            raise item
        return Turn.model_validate(item), TokenUsage(input_tokens=5, output_tokens=5, total_tokens=10, calls=1)

    async def aact(self, script: Script, history: list[Turn]):
        return await self._next(history)

    async def arespond(self, script: Script, history: list[Turn]):
        return await self._next(history)


class HTTPStatusError(Exception):
    """An error carrying an HTTP status, like openai's APIStatusError."""

    def __init__(self, status_code: int, message: str = "http error"):
        super().__init__(f"{status_code} {message}")
        self.status_code = status_code


# ---------------------------------------------------------------------------------------------- server


def completion(content: str | dict[str, Any], *, model: str = "fake-model", prompt_tokens: int = 120,
               completion_tokens: int = 60) -> dict:
    """A chat completion answering ``content``: a text, or an assistant message dict (e.g. with ``tool_calls``)."""
    message = content if isinstance(content, dict) else {"role": "assistant", "content": content}
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def paper_responder(request: dict[str, Any]) -> str:
    """A realistic teacher: the fixture script for script prompts, the fixture trajectory for trajectory prompts."""
    system = request["messages"][0]["content"]
    if "design scripts" in system:
        return "Here is the script:\n```json\n" + json.dumps(script_fixture()) + "\n```"
    return json.dumps(trajectory_fixture())


class FakeOpenAIServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that answers from a responder.

    The responder returns the reply's text, or an assistant message dict (``{"content": None, "tool_calls":
    [...]}`` in OpenAI's wire format) for a tool-calling model.

    ``failures`` is a list of HTTP statuses answered (in order) before normal replies, e.g. ``[429, 500]``.
    ``latency`` seconds are slept per request. Every request body is recorded in ``requests``.
    """

    def __init__(self, responder: Callable[[dict[str, Any]], str | dict[str, Any]] = paper_responder, *, failures: list[int] | None = None,
                 latency: float = 0.0):
        self.responder = responder
        self.failures = list(failures or [])
        self.latency = latency
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with server._lock:
                    server.requests.append(body)
                    status = server.failures.pop(0) if server.failures else 200
                    server.statuses.append(status)
                if server.latency:
                    time.sleep(server.latency)
                if status != 200:
                    payload = {"error": {"message": f"scripted {status}", "type": "server_error", "code": status}}
                else:
                    payload = completion(server.responder(body), model=body.get("model", "fake-model"))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------- teacher


class FixtureTeacher:
    """A stateless, instant one-shot teacher for runner tests: the paper's script for every persona and the
    paper's trajectory, except for personas containing ``reject`` whose trajectories never verify."""

    name = "fixture-teacher"

    def __init__(self) -> None:
        self.personas: list[str] = []

    async def awrite_script(self, persona: str, problems: list[str]):
        self.personas.append(persona)
        return script_fixture(), TokenUsage(input_tokens=30, output_tokens=20, total_tokens=50, calls=1)

    async def awrite_trajectory(self, script: Script, prefix: list[Turn], problems: list[str]):
        trajectory = trajectory_fixture()
        if "reject" in (script.persona or "").lower():
            trajectory = trajectory[:5]  # never completes
        return trajectory, TokenUsage(input_tokens=60, output_tokens=40, total_tokens=100, calls=1)


def wait_for_samples(proc: Any, path: Path, n: int, *, timeout_s: float) -> None:
    """Wait until the synthesis run ``proc`` (a ``subprocess.Popen``) has written ``n`` lines to ``path``; fail the test
    if it ends first or the time is up (a kill test needs the run still going)."""
    import pytest

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be killed: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"{path} did not reach {n} lines in {timeout_s:.0f} s")
