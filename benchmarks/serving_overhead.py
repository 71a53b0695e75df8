"""Overhead of our chat model (ChatOpenAI subclass + Thought/Action parsing) over a raw ``openai`` call.

Both clients send the same chat-completions request to the same local server (transformers backend, tiny
model, greedy, fixed ``max_tokens``); requests alternate so drift hits both alike. Prints the median latency
of each and their ratio (target <= 1.05).

    python benchmarks/serving_overhead.py [--requests 40] [--max-tokens 32] [--base-url URL --model M --api-key K]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack

import openai

from agentrefine_lg.serving.chat_model import chat_model, parse_action

MESSAGES = [
    {"role": "system", "content": "You are an agent in a text world. Answer with Thought: ... then Action: ..."},
    {"role": "user", "content": "You are in a hall. There is a red door and a blue door."},
]


CANNED = {
    "id": "x", "object": "chat.completion", "created": 0, "model": "agentrefine",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Thought: the red door is closer.\nAction: open red"}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52},
}


def client_side_cost(n: int = 300) -> tuple[float, float]:
    """Median per-call client time of each stack against an in-process transport with a canned reply.

    No network, no model: what remains is request building, response parsing and (ours) LangChain's
    message conversion, callbacks and the Thought/Action parse.
    """
    import httpx

    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=CANNED))
    raw = openai.OpenAI(base_url="http://bench/v1", api_key="k", max_retries=0,
                        http_client=httpx.Client(transport=transport))
    ours = chat_model("http://bench/v1", "agentrefine", "k", max_tokens=32, max_retries=0,
                      http_client=httpx.Client(transport=transport))

    def timed(fn) -> float:
        times = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    call_raw = lambda: raw.chat.completions.create(model="agentrefine", messages=MESSAGES, temperature=0,
                                                   max_tokens=32, stop=["\nObservation:"])
    call_ours = lambda: ours.invoke(MESSAGES)
    for _ in range(20):
        call_raw(), call_ours()
    return timed(call_raw), timed(call_ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--base-url")
    parser.add_argument("--model", default="agentrefine")
    parser.add_argument("--api-key", default="EMPTY")
    args = parser.parse_args()
    with ExitStack() as stack:
        if args.base_url:
            base_url, name, key = args.base_url, args.model, args.api_key
        else:
            from agentrefine_lg.serving.server import start_server
            from training.tiny import build_tiny_model

            server = stack.enter_context(start_server(build_tiny_model(stack.enter_context(tempfile.TemporaryDirectory()))))
            base_url, name, key = server.base_url, server.model_name, server.api_key
        raw = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
        ours = chat_model(base_url, name, key, max_tokens=args.max_tokens, max_retries=0)

        def call_raw() -> str:
            response = raw.chat.completions.create(model=name, messages=MESSAGES, temperature=0,
                                                   max_tokens=args.max_tokens, stop=["\nObservation:"])
            text = response.choices[0].message.content or ""
            return text

        def call_ours() -> str:
            reply = ours.invoke(MESSAGES)  # parse_action runs inside (response_metadata["agentrefine"])
            return reply.content

        for _ in range(3):  # warm-up: model caches, connection pools
            call_raw(), call_ours()
        t_raw: list[float] = []
        t_ours: list[float] = []
        for i in range(args.requests):
            order = (call_raw, call_ours) if i % 2 == 0 else (call_ours, call_raw)
            for fn in order:
                start = time.perf_counter()
                text = fn()
                (t_raw if fn is call_raw else t_ours).append(time.perf_counter() - start)
        assert call_raw() == call_ours(), "both clients must get the same text"
        parse_action(text)
    m_raw, m_ours = statistics.median(t_raw), statistics.median(t_ours)
    # Paired differences (same iteration, back to back) are robust to load drift on a shared machine.
    paired = statistics.median(o - r for o, r in zip(t_ours, t_raw))
    print(f"requests: {args.requests} each, max_tokens={args.max_tokens}")
    print(f"raw openai client : median {m_raw * 1000:.2f} ms")
    print(f"agentrefine model : median {m_ours * 1000:.2f} ms (ChatOpenAI + tuned-format parsing)")
    print(f"ratio ours/raw    : {m_ours / m_raw:.3f} (target <= 1.05)")
    print(f"paired overhead   : median {paired * 1000:+.2f} ms per request ({paired / m_raw:+.1%} of the raw median)")
    c_raw, c_ours = client_side_cost()
    print(f"client-side cost (canned in-process transport): raw {c_raw * 1000:.3f} ms, ours {c_ours * 1000:.3f} ms "
          f"-> our layer adds {1000 * (c_ours - c_raw):.3f} ms per call")


if __name__ == "__main__":
    main()
