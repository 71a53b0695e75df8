"""Specification of the per-turn loss masks (training.data): which tokens get loss, token by token."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("transformers")

from agentrefine_lg.convert import trajectory_to_messages
from agentrefine_lg.schema import Message, Script, Trajectory
from training.data import IGNORE_INDEX, TemplateError, assistant_spans, build_dataset, tokenize_messages
from training.tiny import build_tiny_tokenizer

EOT = "<|eot_id|>"

QWEN_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Mistral-v0.3 style: the system prompt goes before the LAST user turn, so rendering a longer chat moves
# it (the template is not prefix-stable as a whole, only turn by turn).
MISTRAL_LAST_USER_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in loop_messages %}{%- if m['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.index0 == ns.last_user and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] | trim + eos_token }}{%- endif %}"
    "{%- endfor %}"
)

# Exactly Mistral v0.3's rule: the system prompt only appears when the chat ENDS with a user turn.
MISTRAL_V03_TEMPLATE = MISTRAL_LAST_USER_TEMPLATE.replace("loop.index0 == ns.last_user", "loop.last")

# A template that rewrites past assistant turns (keeps only their action), as reasoning-model templates
# do with earlier thoughts: a turn's tokens differ between its own rendering and the full chat.
REWRITING_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and not loop.last %}{% set content = content.split('Action:')[-1] %}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _variant(tokenizer, template: str, specials: list[str], eos: str | None = None):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": specials})
    if eos:
        tok.add_special_tokens({"eos_token": eos})
    tok.chat_template = template
    return tok


@pytest.fixture
def paper_messages(paper_script, paper_trajectory) -> list[Message]:
    return trajectory_to_messages(Script.model_validate(paper_script), Trajectory.model_validate(paper_trajectory))


def labelled_runs(tokenizer, row) -> list[str]:
    """Decode each maximal run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def test_paper_sample_masks_token_by_token(tokenizer, paper_messages):
    # The conversion marks the Player turns the DM flagged (trajectory turns 4 and 8) as train=False.
    roles = [(m.role, m.train) for m in paper_messages]
    assert [i for i, (r, t) in enumerate(roles) if r == "assistant" and t is False] == [4, 8]
    trained = [m.content for m in paper_messages if m.role == "assistant" and m.train]
    assert len(trained) == 3

    row = tokenize_messages(paper_messages, tokenizer)
    text = tokenizer.apply_chat_template([{"role": m.role, "content": m.content} for m in paper_messages],
                                         tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert row["input_ids"] == enc["input_ids"]
    assert row["attention_mask"] == [1] * len(row["input_ids"])

    # Independent oracle: find every message's text in order; a trained span is content + <|eot_id|>.
    expected_spans, masked_spans, cursor = [], [], 0
    for m in paper_messages:
        start = text.index(m.content, cursor)
        end = start + len(m.content)
        assert text[end:end + len(EOT)] == EOT
        cursor = end
        if m.role == "assistant" and m.train:
            expected_spans.append((start, end + len(EOT)))
        else:
            masked_spans.append((start, end + len(EOT)))
    for token, label, (s, e) in zip(row["input_ids"], row["labels"], enc["offset_mapping"]):
        inside = any(a <= s < b for a, b in expected_spans)
        assert (label != IGNORE_INDEX) == inside, (text[s:e], label)
        if inside:
            assert label == token
        if any(a <= s < b for a, b in masked_spans):
            assert label == IGNORE_INDEX  # system, user and erroneous assistant tokens

    assert labelled_runs(tokenizer, row) == [c + EOT for c in trained]
    # The erroneous actions never appear in a labelled run.
    joined = "".join(labelled_runs(tokenizer, row))
    assert "set mode=on in config.cfg" not in joined and "I will edit the file right away" not in joined


def test_no_mask_trains_every_assistant_turn(tokenizer, paper_messages):
    row = tokenize_messages(paper_messages, tokenizer, mask=False)
    every = [m.content + EOT for m in paper_messages if m.role == "assistant"]
    assert labelled_runs(tokenizer, row) == every


def test_dict_messages_and_schema_messages_agree(tokenizer, paper_messages):
    dicts = [m.to_dict() for m in paper_messages]
    assert tokenize_messages(dicts, tokenizer) == tokenize_messages(paper_messages, tokenizer)


def _chat() -> list[dict]:
    return [
        {"role": "system", "content": "You act in a text world."},
        {"role": "user", "content": "You are in a kitchen. A key is on the table."},
        {"role": "assistant", "content": "Thought: I need the key.\nAction: take the key", "train": False},
        {"role": "user", "content": "Error: Invalid command format."},
        {"role": "assistant", "content": "Thought: The usage is take ITEM.\nAction: take key"},
        {"role": "user", "content": "You take the key."},
        {"role": "assistant", "content": "Thought: Now open the door.\nAction: open door"},
    ]


def test_qwen_style_template(tokenizer):
    tok = _variant(tokenizer, QWEN_TEMPLATE, ["<|im_start|>", "<|im_end|>"], eos="<|im_end|>")
    row = tokenize_messages(_chat(), tok)
    # The newline the template writes after <|im_end|> is never generated, so it gets no loss.
    assert labelled_runs(tok, row) == [
        "Thought: The usage is take ITEM.\nAction: take key<|im_end|>",
        "Thought: Now open the door.\nAction: open door<|im_end|>",
    ]


def test_mistral_style_template_with_moving_system_prompt(tokenizer):
    tok = _variant(tokenizer, MISTRAL_LAST_USER_TEMPLATE, ["[INST]", "[/INST]", "</s>"], eos="</s>")
    full, spans = assistant_spans(_chat(), tok)
    assert "You act in a text world." in full
    row = tokenize_messages(_chat(), tok)
    assert labelled_runs(tok, row) == [
        " Thought: The usage is take ITEM.\nAction: take key</s>",
        " Thought: Now open the door.\nAction: open door</s>",
    ]
    assert [s.train for s in spans] == [False, True, True]


def test_template_that_drops_system_prompt_keeps_it_in_first_user_turn(tokenizer):
    tok = _variant(tokenizer, MISTRAL_V03_TEMPLATE, ["[INST]", "[/INST]", "</s>"], eos="</s>")
    full, _ = assistant_spans(_chat(), tok)
    assert full.startswith("<|begin_of_text|>[INST] You act in a text world.\n\nYou are in a kitchen.")
    row = tokenize_messages(_chat(), tok)
    assert len(labelled_runs(tok, row)) == 2


def test_rewriting_template_is_refused(tokenizer):
    tok = _variant(tokenizer, REWRITING_TEMPLATE, ["<|im_start|>", "<|im_end|>"])
    with pytest.raises(TemplateError, match="not prefix-stable"):
        tokenize_messages(_chat(), tok)


def test_tokenizer_without_chat_template_is_refused(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(TemplateError, match="no chat template"):
        tokenize_messages(_chat(), tok)


def test_truncation_keeps_prefix_and_drops_rows_without_trainable_tokens(tokenizer, paper_messages):
    full = tokenize_messages(paper_messages, tokenizer)
    first_label = next(i for i, x in enumerate(full["labels"]) if x != IGNORE_INDEX)
    cut = tokenize_messages(paper_messages, tokenizer, max_length=first_label + 3)
    assert cut["input_ids"] == full["input_ids"][: first_label + 3]
    assert sum(x != IGNORE_INDEX for x in cut["labels"]) == 3

    all_masked = [{**m, "train": False} if m["role"] == "assistant" else m for m in _chat()]
    samples = [
        {"id": "ok", "messages": [m.to_dict() for m in paper_messages]},
        {"id": "too-long", "messages": [m.to_dict() for m in paper_messages]},
        {"id": "nothing-to-learn", "messages": all_masked},
    ]
    # max_length below the first trainable token: the paper sample rows lose every label.
    ds, stats = build_dataset(samples[2:], tokenizer)
    assert len(ds) == 0 and stats.dropped_no_trainable == 1 and stats.dropped_ids == ["nothing-to-learn"]
    ds, stats = build_dataset(samples[:2], tokenizer, max_length=first_label)
    assert len(ds) == 0 and stats.dropped_truncated == 2 and stats.rows_in == 2
    ds, stats = build_dataset(samples, tokenizer, max_length=first_label + 3)
    assert len(ds) == 2 and stats.truncated == 2 and stats.dropped == 1
    assert stats.trainable_tokens == 6
    assert all(len(ids) == first_label + 3 for ids in ds["input_ids"])
