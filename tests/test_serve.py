"""Serving: the transformers backend over real HTTP on 127.0.0.1, and the vLLM launcher.

One tiny-model server is shared by the module (the model is a 2-layer random Llama: its text is noise, but
greedy decoding makes it deterministic, which is all these tests need).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI

from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.serving import server as serve
from agentrefine_lg.serving.chat_model import chat_model

MESSAGES = [{"role": "system", "content": "You are an agent."}, {"role": "user", "content": "You are in a room."}]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(tiny_model: Path):
    with serve.start_server(tiny_model, api_key="test-key", model_name="tuned") as handle:
        yield handle


def _client(server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key or server.api_key, max_retries=0)


def _complete(server, **kw):
    return _client(server).chat.completions.create(model=server.model_name, messages=MESSAGES, temperature=0, **kw)


def test_health_and_models(server) -> None:
    assert httpx.get(f"{server.url}/health").status_code == 200  # health needs no key (load balancers)
    models = _client(server).models.list()
    assert [m.id for m in models.data] == ["tuned"]


def test_chat_openai_non_streaming_and_streaming_agree(server) -> None:
    llm = ChatOpenAI(base_url=server.base_url, api_key=server.api_key, model=server.model_name, temperature=0,
                     max_tokens=12, use_responses_api=False, max_retries=0)
    reply = llm.invoke(MESSAGES)
    assert isinstance(reply.content, str) and reply.content
    assert 0 < reply.usage_metadata["output_tokens"] <= 12
    streamed = "".join(chunk.content for chunk in llm.stream(MESSAGES))
    assert streamed == reply.content  # greedy decoding: same text either way


def test_a_lone_request_runs_plain_generate_and_overlapping_ones_are_batched(server, monkeypatch) -> None:
    """Batching on (the default): a request that arrives alone is answered by plain ``generate`` (the batching
    scheduler's per-step work made it slower); requests that overlap share the scheduler's forward passes; greedy
    replies are the same either way."""
    import threading
    import time

    from transformers import LlamaForCausalLM

    forward, seen, lock = LlamaForCausalLM.forward, [], threading.Lock()

    def watched(self, *args, **kwargs):  # slow enough (~5 ms a token) for the concurrent requests to overlap
        with lock:
            seen.append(threading.current_thread().name)  # "... (_run)": generate; "... (_run_generation_loop)"
        time.sleep(0.005)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", watched)
    lone = _complete(server, max_tokens=16).choices[0].message.content
    assert seen and not any("generation_loop" in name for name in seen)
    seen.clear()

    replies: list[str] = []

    def one() -> None:
        replies.append(_complete(server, max_tokens=16).choices[0].message.content)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert replies == [lone] * 4
    assert any("generation_loop" in name for name in seen)  # the overlapping ones were batched


def test_max_tokens_is_respected(server) -> None:
    response = _complete(server, max_tokens=3)
    assert response.usage.completion_tokens <= 3
    assert response.choices[0].finish_reason in {"length", "stop"}


def test_stop_sequences_are_excluded_from_the_text(server) -> None:
    full = _complete(server, max_tokens=16).choices[0].message.content
    assert len(full) > 6
    stop = full[3:6]
    cut = full[: full.index(stop)]
    assert _complete(server, max_tokens=16, stop=[stop]).choices[0].message.content == cut
    stream = _client(server).chat.completions.create(model=server.model_name, messages=MESSAGES, temperature=0,
                                                     max_tokens=16, stop=[stop], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == cut


def test_wrong_or_missing_api_key_is_rejected_with_401(server) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        _client(server, key="wrong").chat.completions.create(model=server.model_name, messages=MESSAGES, max_tokens=2)
    assert info.value.status_code == 401
    bare = httpx.post(f"{server.base_url}/chat/completions", json={"model": "tuned", "messages": MESSAGES})
    assert bare.status_code == 401
    assert bare.json()["error"]["code"] == "invalid_api_key"


def test_unknown_model_name_is_an_error(server) -> None:
    with pytest.raises(openai.NotFoundError, match="tuned"):
        _client(server).chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)


def test_our_chat_model_speaks_to_the_server(server) -> None:
    model = chat_model(server.base_url, server.model_name, server.api_key, max_tokens=8)
    reply = model.invoke(MESSAGES)
    assert "agentrefine" in reply.response_metadata  # parsed (the noise has no Action: line)
    assert reply.response_metadata["agentrefine"]["error"] == "no Action: line"


def test_adapter_is_merged_and_its_chat_template_used(tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model))
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter))
    # A template that prepends a marker: the prompt grows, which the usage shows.
    template = (tiny_model / "chat_template.jinja").read_text() if (tiny_model / "chat_template.jinja").exists() else None
    assert template, "the tiny model saves its chat template as chat_template.jinja"
    (adapter / "chat_template.jinja").write_text("ADAPTER TEMPLATE MARKER " + template)
    with serve.start_server(tiny_model, adapter=adapter, api_key="k2") as handle:
        merged = openai.OpenAI(base_url=handle.base_url, api_key="k2").chat.completions.create(
            model=handle.model_name, messages=MESSAGES, max_tokens=4, temperature=0)
    with serve.start_server(tiny_model, api_key="k3") as handle:
        plain = openai.OpenAI(base_url=handle.base_url, api_key="k3").chat.completions.create(
            model=handle.model_name, messages=MESSAGES, max_tokens=4, temperature=0)
    assert merged.usage.prompt_tokens > plain.usage.prompt_tokens


def test_transformers_backend_needs_a_local_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="directory"):
        serve.start_server(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------- vLLM


def _adapter_dir(tmp_path: Path, r: int = 12, template: bool = True) -> Path:
    adapter = tmp_path / f"adapter-r{r}"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    if template:
        (adapter / "chat_template.jinja").write_text("{{ messages }}")
    return adapter


def test_vllm_command_with_adapter(tmp_path: Path) -> None:
    adapter = _adapter_dir(tmp_path, r=12)
    cmd = serve.vllm_command("meta-llama/Meta-Llama-3-8B-Instruct", adapter, api_key="sk", port=9000,
                             tensor_parallel=4, model_name="agentrefine", vllm_bin="/opt/vllm/bin/vllm")
    assert cmd[:3] == ["/opt/vllm/bin/vllm", "serve", "meta-llama/Meta-Llama-3-8B-Instruct"]

    def value(flag: str) -> str:
        return cmd[cmd.index(flag) + 1]

    assert "--enable-lora" in cmd
    assert value("--lora-modules") == f"agentrefine={adapter}"
    assert value("--max-lora-rank") == "16"  # 12 rounded up to vLLM's allowed ranks
    assert value("--chat-template") == str(adapter / "chat_template.jinja")
    assert value("--api-key") == "sk"
    assert value("--tensor-parallel-size") == "4"
    assert (value("--host"), value("--port")) == ("127.0.0.1", "9000")
    assert "--served-model-name" not in cmd


def test_vllm_command_without_adapter_names_the_model(tmp_path: Path) -> None:
    base = tmp_path / "merged"
    base.mkdir()
    (base / "chat_template.jinja").write_text("{{ messages }}")
    cmd = serve.vllm_command(str(base), api_key="sk", model_name="mine")
    assert cmd[cmd.index("--served-model-name") + 1] == "mine"
    assert cmd[cmd.index("--chat-template") + 1] == str(base / "chat_template.jinja")
    assert "--enable-lora" not in cmd


@pytest.mark.parametrize(("rank", "allowed"), [(1, 8), (8, 8), (9, 16), (64, 64), (300, 320), (512, 512)])
def test_lora_rank_rounding(rank: int, allowed: int) -> None:
    assert serve.vllm_max_lora_rank(rank) == allowed


def test_vllm_command_rejects_bad_adapters(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="exceeds"):
        serve.vllm_command("m", _adapter_dir(tmp_path, r=1024), api_key="k")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="adapter_config.json"):
        serve.vllm_command("m", empty, api_key="k")


FAKE_VLLM = """#!{python}
# Stands in for `vllm serve`: records its argv and answers /health on the given port.
import json, sys, http.server
argv = sys.argv[1:]
open({log!r}, "w").write(json.dumps(argv))
port = int(argv[argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def test_vllm_backend_launches_polls_health_and_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "argv.json"
    script = tmp_path / "vllm"
    script.write_text(FAKE_VLLM.format(python=sys.executable, log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("AGENTREFINE_VLLM", str(script))
    adapter = _adapter_dir(tmp_path, r=16)
    handle = serve.start_server("base-model", backend="vllm", adapter=adapter, api_key="k", startup_timeout_s=30)
    try:
        assert handle.is_alive() and handle.backend == "vllm"
        assert httpx.get(f"{handle.url}/health").status_code == 200
        argv = json.loads(log.read_text())
        assert argv[:2] == ["serve", "base-model"] and "--enable-lora" in argv
    finally:
        handle.stop()
    assert not handle.is_alive()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{handle.url}/health", timeout=1)


def test_missing_vllm_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTREFINE_VLLM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(AgentRefineError, match="own environment"):
        serve.resolve_vllm_bin()


def test_cli_print_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from agentrefine_lg.cli import main

    adapter = _adapter_dir(tmp_path, r=32)
    code = main(["serve", "--model", "base", "--adapter", str(adapter), "--backend", "vllm", "--print-command",
                 "--api-key", "abc", "--tensor-parallel", "2", "--vllm-bin", "vllm"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("vllm serve base ") and "--max-lora-rank 32" in line and "--tensor-parallel-size 2" in line
    assert os.environ.get("AGENTREFINE_API_KEY") != "abc"  # nothing leaked into the environment


def test_cli_serves_until_interrupted(tiny_model: Path) -> None:
    import signal
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrefine_lg.cli", "serve", "--backend", "transformers", "--model", str(tiny_model),
         "--port", "0", "--api-key", "cli-key"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=Path(__file__).parent.parent,
        # As from a terminal: a job started with `&` by a non-interactive shell (nohup, CI wrappers) ignores
        # SIGINT, and the child would inherit that and never see the Ctrl-C below.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = ""
        while "serving" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "the server exited before serving"
        base_url = line.split(" at ")[1].split()[0]
        assert "AGENTREFINE_API_KEY=cli-key" in proc.stdout.readline()
        reply = openai.OpenAI(base_url=base_url, api_key="cli-key").chat.completions.create(
            model="agentrefine", messages=MESSAGES, max_tokens=2)
        assert reply.choices[0].message.content is not None
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cpu_batching_keeps_a_kv_cache_for_a_few_requests_not_the_machines_memory(tmp_path):
    """transformers sizes its paged cache to 90 % of free device memory: on a CPU, the whole RAM (14 GB once)."""
    from transformers import AutoConfig

    from agentrefine_lg.serving.server import BATCH_SEQUENCES, ServeLimits, _cpu_batching_config
    from training.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    context = AutoConfig.from_pretrained(folder).max_position_embeddings
    config = _cpu_batching_config(str(folder), ServeLimits(max_prompt_tokens=1000, max_tokens=24))
    tokens = config.num_blocks * config.page_size
    assert BATCH_SEQUENCES * min(context, 1024) <= tokens <= BATCH_SEQUENCES * min(context, 1024) + config.page_size
