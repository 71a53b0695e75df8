"""Trajectories to refinement-tuning chat samples (docs/method.md §5), and the readers/writers of sample files.

Conversion: the system message is the task instruction (environment, goal, completion conditions,
available actions with their usage, answer format); DM observations become user turns; Player turns
become ``Thought: ...\\nAction: ...`` assistant turns. Erroneous assistant turns stay in the context with
``train=False`` so their tokens get no loss.

Readers (all streaming, one record at a time, errors name ``file:line`` and the field):
- ours: JSONL of :class:`~agentrefine_lg.schema.RefinementSample` rows (``messages`` with ``train``), or rows
  with ``script`` + ``trajectory`` in the paper's format (converted on the fly);
- released AgentRefine rows and AgentInstruct / ShareGPT ``conversations`` (``from``/``value``/``loss``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

# The trained format (system prompt, assistant turn) lives in agent_format; re-exported for this module's readers.
from agentrefine_lg.agent_format import format_assistant, render_actions, render_environment, system_prompt  # noqa: F401
from agentrefine_lg.checks import erroneous_turns  # the one decision of which turns get no loss
from agentrefine_lg.errors import InputError
from agentrefine_lg.json_input import MAX_DEPTH, parse_json_text, validate_json_value
from agentrefine_lg.jsonl import JsonlFile
from agentrefine_lg.outputs import atomic_output
from agentrefine_lg.schema import Message, RefinementSample, Script, TokenUsage, Trajectory

Format = Literal["auto", "ours", "agentrefine", "sharegpt"]

# ---------------------------------------------------------------------------------------------- conversion


def trajectory_to_messages(script: Script, trajectory: Trajectory | list, *, mask: bool = True,
                           dm_authoritative: bool = False) -> list[Message]:
    """docs/method.md §5: system = task instruction; DM observation -> user; Player -> assistant (train flag)."""
    if not isinstance(trajectory, Trajectory):
        trajectory = Trajectory.model_validate(trajectory)
    if not trajectory.turns:
        raise InputError("trajectory has no turns", field="trajectory")
    bad = (erroneous_turns(script, trajectory, dm_authoritative=dm_authoritative) if mask
           else [False] * len(trajectory.turns))
    messages = [Message(role="system", content=system_prompt(script))]
    for i, turn in enumerate(trajectory.turns):
        if turn.is_dm:
            text = (turn.observation or "").strip()
            if messages[-1].role == "user":  # two DM turns in a row: keep both observations in one user turn
                messages[-1] = Message(role="user", content=f"{messages[-1].content}\n{text}")
            else:
                messages.append(Message(role="user", content=text))
        else:
            if messages[-1].role != "user":  # chat templates expect a user turn before the first assistant turn
                messages.append(Message(role="user", content=f"Your task: {script.goal}"))
            messages.append(Message(role="assistant", content=format_assistant(turn.thought, turn.action),
                                    train=not bad[i]))
    while messages and messages[-1].role == "user":  # a closing observation has nothing to train on
        messages.pop()
    if not any(m.role == "assistant" for m in messages):
        raise InputError("trajectory has no Player turn", field="trajectory")
    return messages


def sample_id(script: Script, trajectory: Trajectory) -> str:
    """Content hash of (script, trajectory): the same data always gets the same id (dedup on resume)."""
    blob = json.dumps([script.to_paper(), trajectory.to_paper()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def sample_from_trajectory(
    script: Script,
    trajectory: Trajectory | list,
    *,
    persona: str | None = None,
    teacher: str | None = None,
    attempts: dict[str, int] | None = None,
    usage: TokenUsage | dict | None = None,
    source: str = "agentrefine-lg",
    mask: bool = True,
    id: str | None = None,
    **extra: Any,
) -> RefinementSample:
    """A :class:`RefinementSample` with provenance, keeping script and trajectory for re-verification."""
    if not isinstance(trajectory, Trajectory):
        trajectory = Trajectory.model_validate(trajectory)
    return RefinementSample(
        id=id or sample_id(script, trajectory),
        messages=trajectory_to_messages(script, trajectory, mask=mask,
                                        dm_authoritative=bool((extra.get("check") or {}).get("dm_authoritative"))),
        persona=persona if persona is not None else script.persona,
        teacher=teacher,
        attempts=attempts or {},
        usage=usage if isinstance(usage, TokenUsage) else TokenUsage.model_validate(usage or {}),
        source=source,
        script=script,
        trajectory=trajectory,
        **extra,
    )


# ---------------------------------------------------------------------------------------------- readers

_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user", "user": "user", "observation": "user", "environment": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant",
}
# Observations that say the previous action failed, for released rows that carry no loss flags.
ERROR_OBSERVATION = re.compile(
    r"^\s*(error\b|invalid\b|nothing happens|you can'?t\b|cannot\b|unknown (command|action)|"
    r"that'?s not\b|i don'?t understand)", re.IGNORECASE)


def _conversations_to_messages(conv: list, where: str, *, reidentify: bool) -> list[Message]:
    messages: list[Message] = []
    for j, turn in enumerate(conv):
        if not isinstance(turn, Mapping):
            raise InputError(f"conversation turn {j} is not an object", where=where, field="conversations")
        speaker = turn.get("from", turn.get("role"))
        text = turn.get("value", turn.get("content"))
        role = _SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        if role is None:
            raise InputError(f"turn {j} has unknown speaker {speaker!r} (expected one of {sorted(_SHAREGPT_ROLES)})",
                             where=where, field=f"conversations[{j}].from")
        if not isinstance(text, str):
            raise InputError(f"turn {j} has no text", where=where, field=f"conversations[{j}].value")
        loss = turn.get("loss", turn.get("train"))
        if role == "assistant":
            train = True if loss is None else bool(loss)
            messages.append(Message(role="assistant", content=text, train=train))
        else:
            messages.append(Message(role=role, content=text))
    if reidentify:
        # Released rows may be plain lists: an assistant turn answered by an error observation is erroneous.
        for k, m in enumerate(messages[:-1]):
            if m.role == "assistant" and messages[k + 1].role == "user" and ERROR_OBSERVATION.search(messages[k + 1].content):
                m.train = False
    return messages


def _detect(row: Mapping[str, Any]) -> str:
    if "messages" in row:
        return "ours"
    if "script" in row and "trajectory" in row:
        return "ours"
    if "conversations" in row:
        conv = row["conversations"]
        has_loss = isinstance(conv, list) and any(isinstance(t, Mapping) and "loss" in t for t in conv)
        return "sharegpt" if has_loss else "agentrefine"
    raise InputError("row has none of 'messages', 'script'+'trajectory' or 'conversations'")


def row_to_sample(row: Any, *, where: str, fmt: Format = "auto", mask: bool = True) -> RefinementSample:
    """One record of any supported format -> :class:`RefinementSample`."""
    if not isinstance(row, Mapping):
        raise InputError(f"record is a {type(row).__name__}, not a JSON object", where=where)
    try:
        kind = _detect(row) if fmt == "auto" else fmt
    except InputError as exc:
        raise InputError(exc.detail, where=where) from None
    try:
        if kind == "ours" and "messages" not in row:
            script = Script.model_validate(row["script"])
            trajectory = Trajectory.model_validate(row["trajectory"])
            extra = {k: v for k, v in row.items() if k not in {"script", "trajectory"}}
            return sample_from_trajectory(script, trajectory, mask=mask, **extra)
        if kind == "ours":
            sample = RefinementSample.model_validate(
                {"id": row.get("id") or _row_hash(row), **{k: v for k, v in row.items() if k != "id"}})
        else:
            conv = row.get("conversations")
            if not isinstance(conv, list) or not conv:
                raise InputError("'conversations' must be a non-empty list", where=where, field="conversations")
            messages = _conversations_to_messages(conv, where, reidentify=(kind == "agentrefine"))
            sample = RefinementSample(
                id=str(row.get("id") or _row_hash(row)), messages=messages,
                source="agentrefine-released" if kind == "agentrefine" else "sharegpt",
            )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(err["msg"], where=where, field=".".join(str(x) for x in err["loc"]) or None) from None
    if not mask:
        for m in sample.messages:
            if m.role == "assistant":
                m.train = True
    return sample


def _row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(row, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Limits every reader applies, so a hostile or broken file costs bounded memory and ends in one line.
MAX_RECORD_BYTES = 32 * 1024 * 1024
"""Largest JSONL line (one record) read: 32 MiB; a longer one is refused, not loaded."""
MAX_DOCUMENT_BYTES = 512 * 1024 * 1024
"""Largest ``.json`` document (a list of records or one object) read whole: 512 MiB; use JSONL above it."""
def _open_input(path: Path):
    if not path.exists():
        raise InputError("no such file", where=str(path))
    if path.is_dir():
        raise InputError("is a directory, expected a .jsonl or .json file", where=str(path))
    try:
        return path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=str(path)) from None


def load_json_file(path: str | os.PathLike) -> Any:
    """A whole ``.json`` document (at most :data:`MAX_DOCUMENT_BYTES`), hostile input turned into
    :class:`InputError` like :func:`iter_records`."""
    path = Path(path)
    with _open_input(path) as handle:
        data = handle.read(MAX_DOCUMENT_BYTES + 1)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise InputError(f"larger than the {MAX_DOCUMENT_BYTES >> 20} MiB limit for a JSON document; "
                         "write one record per line (JSONL)", where=str(path))
    if not data.strip():
        raise InputError("empty file: no JSON document", where=str(path))
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (Windows editors)
        data = data[3:]
    return parse_json_text(data, where=str(path), document=True)


def _read_line(handle, where: str) -> bytes | None:
    """The next line (bytes, newline included) of at most :data:`MAX_RECORD_BYTES`; None at the end."""
    line = handle.readline(MAX_RECORD_BYTES + 1)
    if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
        raise InputError(f"record longer than the {MAX_RECORD_BYTES >> 20} MiB limit per record", where=where)
    return line or None


def iter_records(path: str | os.PathLike, *, allow_empty: bool = False) -> Iterator[tuple[str, Any]]:
    """Yield ``(where, record)`` from a JSONL file (one per line) or a JSON file (a list or one object).

    ``where`` is ``path:line`` (``path[i]`` in a JSON list). Every problem is an :class:`InputError` naming
    the file, the record and, where there is one, the field: undecodable bytes, invalid JSON, a record over
    :data:`MAX_RECORD_BYTES`, nesting over :data:`MAX_DEPTH`, lone surrogates, and a file with no record at
    all (unless ``allow_empty``).
    """
    path = Path(path)
    with _open_input(path) as handle:
        lineno = 0
        first: bytes | None = None
        while True:  # peek past blank lines to tell a JSON document from JSONL
            line = _read_line(handle, f"{path}:{lineno + 1}")
            if line is None:
                break
            lineno += 1
            if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if line.strip():
                first = line
                break
        if first is None:
            if allow_empty:
                return
            raise InputError("empty file: no records", where=str(path))
        head = first.strip()
        if head.startswith(b"[") or (path.suffix == ".json" and head in {b"{", b"["}):
            doc = load_json_file(path)
            records = doc if isinstance(doc, list) else [doc]
            if not records and not allow_empty:
                raise InputError("an empty list: no records", where=str(path))
            for i, record in enumerate(records):
                yield f"{path}[{i}]", record
            return
        line = first
        while line is not None:
            if line.strip():
                yield f"{path}:{lineno}", parse_json_text(line, where=f"{path}:{lineno}")
            line = _read_line(handle, f"{path}:{lineno + 1}")
            lineno += 1


def read_samples(path: str | os.PathLike, *, fmt: Format = "auto", mask: bool = True) -> Iterator[RefinementSample]:
    """Stream :class:`RefinementSample` records from a file of any supported format."""
    for where, record in iter_records(path):
        yield row_to_sample(record, where=where, fmt=fmt, mask=mask)


# ---------------------------------------------------------------------------------------------- writers


def write_jsonl(samples: Iterable[RefinementSample], path: str | os.PathLike, *, append: bool = False) -> int:
    """Write samples as JSONL; returns the number written. A new file (``append=False``) is written through a
    temporary file renamed on success, so a failure leaves any earlier file intact; appends go through the JSONL
    store (:class:`~agentrefine_lg.jsonl.JsonlFile`)."""
    path = Path(path)
    n = 0
    if not append:
        with atomic_output(path) as handle:
            for sample in samples:
                handle.write(json.dumps(sample.to_dict(), ensure_ascii=False) + "\n")
                n += 1
        return n
    with JsonlFile(path) as store:  # appends through the JSONL store, in durable batches
        batch: list[dict[str, Any]] = []
        for sample in samples:
            batch.append(sample.to_dict())
            n += 1
            if len(batch) >= 1000:
                store.append(batch)
                batch = []
        store.append(batch)
    return n


def to_sharegpt(sample: RefinementSample) -> dict[str, Any]:
    """AgentInstruct/ShareGPT-style row: ``conversations`` of ``from``/``value``/``loss``."""
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    conv = []
    for m in sample.messages:
        turn: dict[str, Any] = {"from": names[m.role], "value": m.content}
        turn["loss"] = bool(m.train) if m.role == "assistant" else False
        conv.append(turn)
    return {"id": sample.id, "conversations": conv}


def to_dataset(samples: Iterable[RefinementSample]):
    """A ``datasets.Dataset`` with ``id``, ``messages`` (role/content/train), ``source`` and ``persona``."""
    from datasets import Dataset

    rows = [
        {"id": s.id, "messages": [{"role": m.role, "content": m.content, "train": bool(m.train)} for m in s.messages],
         "source": s.source, "persona": s.persona or ""}
        for s in samples
    ]
    return Dataset.from_list(rows)


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "MAX_RECORD_BYTES",
    "erroneous_turns",
    "format_assistant",
    "iter_records",
    "load_json_file",
    "parse_json_text",
    "read_samples",
    "render_actions",
    "render_environment",
    "row_to_sample",
    "sample_from_trajectory",
    "sample_id",
    "system_prompt",
    "to_dataset",
    "to_sharegpt",
    "trajectory_to_messages",
    "validate_json_value",
    "write_jsonl",
]
