"""The one JSONL store: append-only files that survive a kill, read back with one rule for a torn last line.

Synthesis (``samples.jsonl``, ``ledger.jsonl``), evaluation (``episodes.jsonl``), refine-agent traces and
``agentrefine convert --append`` all write through :class:`JsonlFile`:

- :meth:`JsonlFile.append` writes whole lines in one write, flushes and ``fsync``s: a batch of rows is one
  group commit, durable when the call returns;
- :meth:`JsonlFile.read` returns the rows. A last line without its newline is what a killed writer leaves:
  it is cut off the file (so the next append starts on a line of its own) and **reported** — a warning on the
  ``agentrefine_lg`` logger naming the file and the bytes cut — never skipped silently. Any other line that
  is not a JSON object is an :class:`~agentrefine_lg.errors.InputError` naming ``file:line``.

Whole-file outputs (not appends) go through :func:`agentrefine_lg.outputs.atomic_output` instead.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from agentrefine_lg.errors import InputError
from agentrefine_lg.json_input import parse_json_text

log = logging.getLogger("agentrefine_lg")


class JsonlFile:
    """An append-only JSONL file (see the module docstring). Thread-safe; keeps its handle open between
    appends (a run appends thousands of times), :meth:`close` releases it."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._handle: IO[str] | None = None
        self._lock = threading.Lock()
        self.repaired_bytes = 0  # what the last read cut off (a torn last line)

    def read(self, *, repair: bool = True, check: Callable[[dict[str, Any], str], None] | None = None,
             ) -> list[dict[str, Any]]:
        """The rows; a torn last line is cut (``repair``) and reported. ``check(row, where)`` may raise
        :class:`InputError` for a row that does not belong in this file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = self._torn_tail(data, repair=repair)
        rows = []
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.path}:{lineno}"
            row = parse_json_text(line, where=where)
            if not isinstance(row, dict):
                raise InputError(f"expected a JSON object, got {type(row).__name__}", where=where)
            if check is not None:
                check(row, where)
            rows.append(row)
        return rows

    def _torn_tail(self, data: bytes, *, repair: bool) -> int:
        """Where the complete lines end; a torn last line after that is reported and, with ``repair``, cut."""
        end = data.rfind(b"\n") + 1
        self.repaired_bytes = len(data) - end
        if self.repaired_bytes:
            log.warning("%s: the last line (%d bytes) has no newline: a write was interrupted; %s", self.path,
                        self.repaired_bytes, "cut it off" if repair else "ignored it")
            if repair:
                with open(self.path, "r+b") as handle:
                    handle.truncate(end)
                    handle.flush()
                    os.fsync(handle.fileno())
        return end

    def append(self, rows: Iterable[dict[str, Any]]) -> int:
        """Append ``rows`` as whole lines in one write, then flush and fsync (one group commit)."""
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not data:
            return 0
        with self._lock:
            if self._handle is None or self._handle.closed:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                if self.path.exists() and self.path.stat().st_size:
                    with open(self.path, "rb") as tail:  # a torn last line would swallow the first new row
                        tail.seek(-1, os.SEEK_END)
                        if tail.read(1) != b"\n":
                            self._torn_tail(self.path.read_bytes(), repair=True)
                self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held between appends
            self._handle.write(data)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return data.count("\n")

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __enter__(self) -> JsonlFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict[str, Any]]) -> int:
    """Append rows to ``path`` durably (open, one write, fsync, close)."""
    with JsonlFile(path) as store:
        return store.append(rows)


__all__ = ["JsonlFile", "append_jsonl"]
