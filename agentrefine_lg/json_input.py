"""Untrusted JSON text in, a value out, or one :class:`~agentrefine_lg.errors.InputError` naming where.

Every reader of the package (JSONL stores, sample files, persona files, the server's request bodies) parses
through :func:`parse_json_text`, so a hostile or broken input costs bounded memory and ends in one line that
names the file, record and field: undecodable bytes, invalid JSON, NaN/Infinity, nesting deeper than
:data:`MAX_DEPTH`, lone UTF-16 surrogates.
"""

from __future__ import annotations

import json
import re
from typing import Any

from agentrefine_lg.errors import InputError

MAX_DEPTH = 64
"""Deepest nesting of objects and lists in a record (ours need under 10)."""

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # only JSON escapes can produce a surrogate


def _child_path(path: str, key: Any) -> str:
    child = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
    return child if len(child) <= 160 else f"{child[:60]}...{child[-90:]}"  # the message stays one short line


def validate_json_value(value: Any, *, where: str, surrogates: bool = True) -> None:
    """Raise :class:`InputError` naming the field when ``value`` nests deeper than :data:`MAX_DEPTH` or
    (with ``surrogates``) holds a lone UTF-16 surrogate (``"\\ud800"``), which no UTF-8 writer or
    tokenizer accepts. Iterative, so it never recurses itself."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if surrogates and _LONE_SURROGATE.search(item):
                raise InputError("text holds a lone UTF-16 surrogate (an escape like \\ud800 without its pair); "
                                 "it cannot be written as UTF-8", where=where, field=path or None)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise InputError(f"nested deeper than {MAX_DEPTH} levels", where=where, field=path or None)
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if surrogates and isinstance(key, str) and _LONE_SURROGATE.search(key):
                    raise InputError("a key holds a lone UTF-16 surrogate", where=where, field=path or None)
                stack.append((child, _child_path(path, key), depth + 1))


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}); convert the file "
                         "to UTF-8, e.g. iconv -f latin1 -t utf-8", where=where) from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_text(raw: bytes | str, *, where: str, document: bool = False) -> Any:
    """One JSON value from bytes or text, with every failure an :class:`InputError` naming ``where``:
    undecodable bytes, invalid JSON, nesting beyond :data:`MAX_DEPTH` (or Python's own limit) and lone
    surrogates. ``document``: a multi-line document, whose errors name ``where:line``."""
    text = _decode(raw, where) if isinstance(raw, bytes) else raw
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        if document:
            raise InputError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
                             where=f"{where}:{exc.lineno}") from None
        raise InputError(f"invalid JSON: {exc.msg} at column {exc.colno}", where=where) from None
    except RecursionError:
        raise InputError(f"nested deeper than {MAX_DEPTH} levels", where=where) from None
    except ValueError as exc:  # NaN/Infinity (below), or an integer of more than 4300 digits
        raise InputError(f"not valid JSON: {exc}", where=where) from None
    encoded = raw if isinstance(raw, bytes) else None
    validate_json_value(value, where=where,
                        surrogates=encoded is None or _ESCAPED_SURROGATE.search(encoded) is not None)
    return value


__all__ = ["MAX_DEPTH", "parse_json_text", "validate_json_value"]
