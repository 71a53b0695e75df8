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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError

IGNORE_INDEX = -100
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
        if _LONE_SURROGATE.search(content):  # tokenizers raise a bare TypeError on these
            raise InputError(f"message {i} holds a lone UTF-16 surrogate", field=f"messages[{i}].content")
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

    Time is linear in the conversation for templates that write each assistant turn as the same header,
    its content verbatim and the same trailer (Llama 3, Qwen, ChatML...): one rendering with markers
    around each assistant content finds every turn, calibrated and checked against the exact per-turn
    method on the first and last turn. Other templates get the exact method, two renderings per turn.
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
    spans = _marked_spans(tokenizer, msgs, full)
    return full, spans if spans is not None else _rendered_spans(tokenizer, msgs, full)


def _exact_span(tokenizer, msgs: list[dict[str, Any]], full: str, i: int, cursor: int) -> tuple[int, int]:
    """Assistant turn ``i``'s span by rendering the chat up to it (with and without the turn)."""
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
    return start, _rstrip_end(full, start, end)


def _rstrip_end(full: str, start: int, end: int) -> int:
    stripped = full[start:end].rstrip()
    return start + len(stripped) if stripped else end


def _rendered_spans(tokenizer, msgs: list[dict[str, Any]], full: str) -> list[Span]:
    spans: list[Span] = []
    cursor = 0
    for i, m in enumerate(msgs):
        if m["role"] == "assistant":
            start, end = _exact_span(tokenizer, msgs, full, i, cursor)
            spans.append(Span(start=start, end=end, train=m["train"], index=i))
            cursor = end
    return spans


_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: markers no real text or template contains


def _marked_spans(tokenizer, msgs: list[dict[str, Any]], full: str) -> list[Span] | None:
    """Every assistant span from one marked rendering, or None when the template does not allow it."""
    assistants = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    if not assistants or _OPEN in full or _CLOSE in full:
        return None
    marked_msgs = [{**m, "content": f"{_OPEN}{m['content']}{_CLOSE}"} if m["role"] == "assistant" else m for m in msgs]
    marked = _render(tokenizer, marked_msgs, add_generation_prompt=False)
    # Strip the markers, noting where each content starts and ends in the unmarked text.
    pieces, bounds, pos, shift = [], [], 0, 0
    while True:
        i = marked.find(_OPEN, pos)
        if i < 0:
            break
        j = marked.find(_CLOSE, i + 1)
        if j < 0 or _OPEN in marked[i + 1:j]:
            return None
        pieces += [marked[pos:i], marked[i + 1:j]]
        start = i - shift
        shift += 1
        bounds.append((start, j - shift))
        shift += 1
        pos = j + 1
    pieces.append(marked[pos:])
    if len(bounds) != len(assistants) or "".join(pieces) != full:
        return None  # the template moved, dropped or rewrote an assistant content
    # The header gap and trailer of the first turn, from the exact method; every turn must have the same.
    first_start, first_end = _exact_span(tokenizer, msgs, full, assistants[0], 0)
    content_start, content_end = bounds[0]
    if not (first_start <= content_start and first_end >= content_start):
        return None
    gap = full[first_start:content_start]
    trailer = full[content_end:first_end] if first_end >= content_end else None
    spans: list[Span] = []
    cursor = 0
    for index, (cs, ce) in zip(assistants, bounds):
        start = cs - len(gap)
        if start < cursor or full[start:cs] != gap:
            return None
        if trailer is None:  # the first turn's own trailing whitespace was cut: only a bare template fits
            end = _rstrip_end(full, start, ce)
        else:
            if full[ce:ce + len(trailer)] != trailer:
                return None
            end = _rstrip_end(full, start, ce + len(trailer))
        spans.append(Span(start=start, end=end, train=msgs[index]["train"], index=index))
        cursor = end
    if (spans[0].start, spans[0].end) != (first_start, first_end):
        return None
    if len(assistants) > 1:
        last = _exact_span(tokenizer, msgs, full, assistants[-1], spans[-2].end)
        if last != (spans[-1].start, spans[-1].end):
            return None  # the last turn renders differently (e.g. reasoning templates)
    return spans


# Characters per token assumed when cutting text before tokenizing it: generous (real text averages 3-5),
# and :func:`tokenize_messages` widens the cut until ``max_length`` tokens lie safely inside it.
_CHARS_PER_TOKEN = 16
_MARGIN_TOKENS = 32


def _tokenize(messages: Sequence[Any], tokenizer, *, max_length: int | None, mask: bool
              ) -> tuple[dict[str, list[int]], bool]:
    """The row and whether it was cut at ``max_length``. Never tokenizes far more than ``max_length``
    tokens' worth of text: the rendered chat is tokenized in growing prefixes (``max_length`` x 16
    characters, then x4) until ``max_length`` + 32 tokens lie inside, so a 50 MB message costs a window."""
    full, spans = assistant_spans(messages, tokenizer)
    limit = len(full) if max_length is None else max_length * _CHARS_PER_TOKEN
    while True:
        text = full[:limit]
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if limit >= len(full) or len(enc["input_ids"]) >= max_length + _MARGIN_TOKENS:  # type: ignore[operator]
            break
        limit *= 4
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
    truncated = max_length is not None and (len(input_ids) > max_length or len(text) < len(full))
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}, truncated


def tokenize_messages(
    messages: Sequence[Any], tokenizer, *, max_length: int | None = None, mask: bool = True
) -> dict[str, list[int]]:
    """``input_ids``, ``attention_mask`` and ``labels`` of one conversation.

    ``mask=False`` (the ``--no_mask`` ablation) trains on every assistant turn, erroneous ones included.
    ``max_length`` keeps the first ``max_length`` tokens (and bounds the tokenization work to about that).
    """
    return _tokenize(messages, tokenizer, max_length=max_length, mask=mask)[0]


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
            row, truncated = _tokenize(messages, tokenizer, max_length=max_length, mask=mask)
        except InputError as exc:
            raise InputError(exc.detail, where=sid, field=exc.field) from None
        except TemplateError as exc:
            raise TemplateError(f"{sid}: {exc}") from None
        if all(label == IGNORE_INDEX for label in row["labels"]):
            if truncated and any(m["role"] == "assistant" and (m["train"] or not mask) for m in _normalise(messages)):
                stats.dropped_truncated += 1
            else:
                stats.dropped_no_trainable += 1
            stats.dropped_ids.append(sid)
            continue
        if truncated:
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
