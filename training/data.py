"""Chat messages -> ``input_ids`` / ``labels`` with per-turn loss masks (refinement tuning, docs/method.md §5).

Labels are ``-100`` on system and user tokens and on assistant turns with ``train=False`` (the erroneous
steps: they stay in the context, the model conditions on them, but they get no loss). Trainable assistant
turns are labelled with their own token ids, including the template's end-of-turn token, so the tuned
model learns to stop.

Most chat templates (Llama 3, Qwen, Mistral) have no ``{% generation %}`` markers, so the assistant spans
are found by rendering: for assistant message ``i``, ``render(messages[:i], add_generation_prompt=True)``
ends where its generation starts and ``render(messages[:i+1])`` ends where it stops. The full
conversation is rendered and tokenized once (``return_offsets_mapping``) and every token whose first
character lies inside a trainable span is labelled. Templates that move earlier text when a turn is
added (Mistral v0.3 puts the system prompt before the *last* user turn) are handled by locating each
turn's rendered generation in the full text; a template for which neither works is refused.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError

IGNORE_INDEX = -100


class TemplateError(AgentRefineError):
    """The tokenizer's chat template cannot be used to find assistant spans."""


@dataclass
class Span:
    """Character span ``[start, end)`` of one assistant turn's generation in the rendered conversation."""

    start: int
    end: int
    train: bool
    index: int  # position of the message in the conversation


@dataclass
class DatasetStats:
    """What :func:`build_dataset` did with the rows: nothing is dropped silently."""

    rows_in: int = 0
    rows_kept: int = 0
    truncated: int = 0  # rows cut at max_length but still holding trainable tokens
    dropped_truncated: int = 0  # rows whose every trainable token fell beyond max_length
    dropped_no_trainable: int = 0  # rows with no trainable assistant turn at all (all train=False)
    tokens: int = 0
    trainable_tokens: int = 0
    dropped_ids: list[str] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_truncated + self.dropped_no_trainable

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["dropped"] = self.dropped
        out["dropped_ids"] = self.dropped_ids[:50]  # enough to find them; a log, not a dump
        return out


# ---------------------------------------------------------------------------------------------- messages


def _normalise(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """Messages as ``{"role", "content", "train"}`` dicts (accepts schema ``Message`` objects and dicts)."""
    out = []
    for i, m in enumerate(messages):
        if hasattr(m, "role") and hasattr(m, "content"):
            role, content, train = m.role, m.content, getattr(m, "train", None)
        elif isinstance(m, Mapping):
            role, content, train = m.get("role"), m.get("content"), m.get("train")
        else:
            raise InputError(f"message {i} is a {type(m).__name__}, not a message", field=f"messages[{i}]")
        if role not in {"system", "user", "assistant"}:
            raise InputError(f"message {i} has role {role!r}; expected system, user or assistant",
                             field=f"messages[{i}].role")
        if not isinstance(content, str):
            raise InputError(f"message {i} has no text content", field=f"messages[{i}].content")
        out.append({"role": role, "content": content, "train": True if train is None else bool(train)})
    if not out:
        raise InputError("no messages", field="messages")
    return out


def _render(tokenizer, messages: list[dict[str, Any]], *, add_generation_prompt: bool) -> str:
    # Only role and content reach the template: our 'train' flag is not the template's business.
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja raises its own errors (e.g. "roles must alternate")
        raise TemplateError(f"the chat template failed on this conversation: {exc}") from exc
    if not isinstance(text, str):  # some versions return a list for batched input
        text = text[0]
    return text


def _fold_system(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    system, rest = msgs[0], msgs[1:]
    if rest and rest[0]["role"] == "user":
        first = {**rest[0], "content": f"{system['content']}\n\n{rest[0]['content']}"}
        return [first, *rest[1:]]
    return [{"role": "user", "content": system["content"], "train": True}, *rest]


def check_chat_template(tokenizer) -> None:
    """Raise :class:`TemplateError` when the tokenizer cannot render chats or give character offsets."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '') or type(tokenizer).__name__} has no chat template; "
            "use an instruct/chat model or pass --chat_template FILE (a Jinja chat template)")
    if not getattr(tokenizer, "is_fast", False):
        raise TemplateError("a fast tokenizer is needed (labels come from character offsets); "
                            "load it with use_fast=True or convert it to tokenizer.json")


def assistant_spans(messages: Sequence[Any], tokenizer) -> tuple[str, list[Span]]:
    """The rendered conversation and the character span of each assistant turn's generation.

    A span runs from the end of the generation prompt to the end of the turn's end-of-turn token
    (trailing whitespace that the template writes after it, like Qwen's newline, is left out: the model
    stops at the end token and never generates it).
    """
    check_chat_template(tokenizer)
    msgs = _normalise(messages)
    full = _render(tokenizer, msgs, add_generation_prompt=False)
    if msgs[0]["role"] == "system" and msgs[0]["content"].strip() and msgs[0]["content"].strip() not in full:
        # Some templates (Mistral v0.3) print the system prompt only before a *final* user turn, so a
        # finished conversation would train without its task instruction. Keep the instruction: fold it
        # into the first user turn, the form those templates document for multi-turn chats.
        msgs = _fold_system(msgs)
        full = _render(tokenizer, msgs, add_generation_prompt=False)
    spans: list[Span] = []
    cursor = 0
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, msgs[:i], add_generation_prompt=True) if i else ""
        upto = _render(tokenizer, msgs[: i + 1], add_generation_prompt=False)
        if not upto.startswith(prefix):
            raise TemplateError(
                f"chat template is not prefix-stable: rendering messages[:{i + 1}] does not start with the "
                f"rendering of messages[:{i}] plus the generation prompt, so assistant turn {i} cannot be located")
        if full.startswith(upto) and len(prefix) >= cursor:
            start, end = len(prefix), len(upto)
        else:
            # The template rewrites earlier text as the chat grows: find this turn's generation in order.
            generation = upto[len(prefix):]
            start = full.find(generation, cursor) if generation else -1
            if start < 0:
                raise TemplateError(
                    f"chat template is not prefix-stable: assistant turn {i} renders differently inside the full "
                    "conversation than at its own position (e.g. it drops or rewrites earlier assistant turns), "
                    "so its tokens cannot be labelled; use a template that renders past turns verbatim")
            end = start + len(generation)
        stripped = full[start:end].rstrip()
        if stripped:
            end = start + len(stripped)
        spans.append(Span(start=start, end=end, train=m["train"], index=i))
        cursor = end
    return full, spans


def tokenize_messages(
    messages: Sequence[Any], tokenizer, *, max_length: int | None = None, mask: bool = True
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` of one conversation.

    ``mask=False`` (the ``--no_mask`` ablation) trains on every assistant turn, erroneous ones included.
    ``max_length`` keeps the first ``max_length`` tokens.
    """
    full, spans = assistant_spans(messages, tokenizer)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    trainable = [s for s in spans if s.train or not mask]
    labels = [IGNORE_INDEX] * len(input_ids)
    k = 0
    for t, (s, e) in enumerate(offsets):
        while k < len(trainable) and trainable[k].end <= s:
            k += 1
        if k == len(trainable):
            break
        # A token belongs to the span holding its first character (spans are sorted and disjoint).
        if trainable[k].start <= s < trainable[k].end and e > s:
            labels[t] = input_ids[t]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


# ---------------------------------------------------------------------------------------------- datasets


def _messages_of(sample: Any) -> tuple[str, list[Any]]:
    if hasattr(sample, "messages"):
        return str(getattr(sample, "id", "")), list(sample.messages)
    if isinstance(sample, Mapping) and "messages" in sample:
        return str(sample.get("id", "")), list(sample["messages"])
    if isinstance(sample, (list, tuple)):
        return "", list(sample)
    raise InputError(f"a sample must have 'messages', got {type(sample).__name__}")


def build_dataset(
    samples: Iterable[Any],
    tokenizer,
    *,
    max_length: int | None = None,
    mask: bool = True,
    source: str | None = None,
):
    """Tokenize samples into a ``datasets.Dataset`` (``input_ids``, ``attention_mask``, ``labels``).

    Rows left without a trainable token (all turns ``train=False``, or every trainable token beyond
    ``max_length``) are dropped and counted in the returned :class:`DatasetStats`, never silently.
    Samples are :class:`~agentrefine_lg.schema.RefinementSample` objects, dicts with ``messages``, or
    bare message lists.
    """
    from datasets import Dataset

    check_chat_template(tokenizer)
    stats = DatasetStats()
    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for n, sample in enumerate(samples):
        stats.rows_in += 1
        sid, messages = _messages_of(sample)
        sid = sid or f"{source or 'row'}#{n}"
        try:
            row = tokenize_messages(messages, tokenizer, mask=mask)
        except InputError as exc:
            raise InputError(exc.detail, where=sid, field=exc.field) from None
        except TemplateError as exc:
            raise TemplateError(f"{sid}: {exc}") from None
        if all(label == IGNORE_INDEX for label in row["labels"]):
            stats.dropped_no_trainable += 1
            stats.dropped_ids.append(sid)
            continue
        if max_length is not None and len(row["input_ids"]) > max_length:
            row = {key: value[:max_length] for key, value in row.items()}
            if all(label == IGNORE_INDEX for label in row["labels"]):
                stats.dropped_truncated += 1
                stats.dropped_ids.append(sid)
                continue
            stats.truncated += 1
        stats.rows_kept += 1
        stats.tokens += len(row["input_ids"])
        stats.trainable_tokens += sum(1 for label in row["labels"] if label != IGNORE_INDEX)
        for key in rows:
            rows[key].append(row[key])
    return Dataset.from_dict(rows), stats


def read_samples(path: str | os.PathLike, *, mask: bool = True) -> list[Any]:
    """Samples of any supported file format (ours, released AgentRefine rows, ShareGPT) as a list."""
    if not Path(path).exists():
        raise InputError("no such file", where=str(path))
    from agentrefine_lg.convert import read_samples as _read

    return list(_read(path, mask=mask))


__all__ = [
    "IGNORE_INDEX",
    "DatasetStats",
    "Span",
    "TemplateError",
    "assistant_spans",
    "build_dataset",
    "check_chat_template",
    "read_samples",
    "tokenize_messages",
]
