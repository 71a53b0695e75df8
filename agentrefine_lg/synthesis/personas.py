"""Persona sources: Persona Hub JSONL, plain text, and the built-in list (package data).

Each persona seeds one script (docs/method.md §0). Personas are deduplicated by their normalised text
(:func:`agentrefine_lg.schema.persona_id`: case and whitespace insensitive), first occurrence kept, so a
persona id names one persona everywhere: in the runner's ledger, in shards and in samples.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentrefine_lg.errors import InputError
from agentrefine_lg.json_input import parse_json_text
from agentrefine_lg.schema import Persona

# Keys Persona Hub subsets use for the persona text.
PERSONA_KEYS = ("persona", "input persona", "text")


def _from_row(row: Any, where: str) -> Persona | None:
    if isinstance(row, str):
        text = row
    elif isinstance(row, dict):
        key = next((k for k in PERSONA_KEYS if k in row), None)
        if key is None:
            raise InputError(f"no persona text: expected one of the keys {list(PERSONA_KEYS)}, got {sorted(row)[:8]}",
                             where=where)
        text = row[key]
        if not isinstance(text, str):
            raise InputError(f"the persona is a {type(text).__name__}, not text", where=where, field=key)
    else:
        raise InputError(f"a persona row must be text or an object, got {type(row).__name__}", where=where)
    if not text.strip():
        return None
    try:
        return Persona(text=text)
    except ValidationError as exc:  # pragma: no cover - text is non-empty here
        raise InputError(str(exc), where=where) from None


def iter_persona_file(path: str | Path) -> Iterator[Persona]:
    """Personas of one file, in order, not deduplicated.

    Format by content: lines starting with ``{`` are JSONL rows (``{"persona": ...}``); a file starting
    with ``[`` is a JSON list (of strings or rows); anything else is one persona per line (blank lines
    and lines starting with ``#`` skipped).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"persona file not found: {path}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not UTF-8 text (byte 0x{data[exc.start]:02x}); convert the file to UTF-8",
                         where=f"{path}:{line}") from None
    head = text.lstrip()[:1]
    if head == "[":
        rows = parse_json_text(text, where=str(path), document=True)  # bad JSON, depth, surrogates: InputError
        for i, row in enumerate(rows if isinstance(rows, list) else [rows]):
            persona = _from_row(row, f"{path}[{i}]")
            if persona is not None:
                yield persona
        return
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        if stripped.startswith("{"):
            row = parse_json_text(stripped, where=where)
        else:
            row = stripped
        persona = _from_row(row, where)
        if persona is not None:
            yield persona


def dedupe(personas: Iterable[Persona]) -> list[Persona]:
    """First occurrence of each persona id, in order."""
    seen: set[str] = set()
    out = []
    for persona in personas:
        if persona.id not in seen:
            seen.add(persona.id)
            out.append(persona)
    return out


def builtin_personas() -> list[Persona]:
    """The built-in list written for this project (``agentrefine_lg/data/personas.txt``), >= 200 personas."""
    text = resources.files("agentrefine_lg").joinpath("data/personas.txt").read_text(encoding="utf-8")
    return dedupe(Persona(text=line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def load_personas(source: str | Path | None = None, *, limit: int | None = None) -> list[Persona]:
    """Deduplicated personas from ``source`` (a file), or the built-in list when ``source`` is None."""
    personas = builtin_personas() if source is None else dedupe(iter_persona_file(source))
    if not personas:
        raise InputError(f"no personas in {source or 'the built-in list'}")
    return personas[:limit] if limit is not None else personas


__all__ = ["PERSONA_KEYS", "builtin_personas", "dedupe", "iter_persona_file", "load_personas"]
