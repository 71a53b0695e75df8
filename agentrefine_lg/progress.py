"""Progress of long stages: a tqdm bar on a terminal, a few plain summary lines in a log otherwise.

A bar redrawn with carriage returns is unreadable in a log file, and tqdm hides itself when its output is not a
terminal, which left logs with no sign of progress at all. :func:`progress_bar` therefore draws tqdm on a
terminal and, elsewhere, writes one line per tenth of the work plus a closing summary, in the format that
:func:`parse_progress` reads back (``agentrefine quickstart`` follows its stages' logs with it).
"""

from __future__ import annotations

import re
import sys
import time
from typing import IO, Any, Self

PREFIX = "progress:"
_LINE = re.compile(rf"^{PREFIX} (?P<desc>\S+) (?P<n>\d+)/(?P<total>\d+) ")


def _fmt_postfix(postfix: dict[str, Any]) -> str:
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in postfix.items()]
    return f" ({', '.join(parts)})" if parts else ""


class LogProgress:
    """The tqdm subset the package uses (``update``, ``set_postfix``, ``write``, ``close``), as log lines."""

    def __init__(self, total: int, desc: str, unit: str, *, initial: int = 0, file: IO[str] | None = None,
                 steps: int = 10):
        self.total, self.desc, self.unit, self.n = max(int(total), 0), desc, unit, int(initial)
        self.file = file if file is not None else sys.stderr
        self.steps = steps
        self.postfix: dict[str, Any] = {}
        self.started = time.perf_counter()
        self._bucket = self._bucket_of(self.n)
        self.closed = False

    def _bucket_of(self, n: int) -> int:
        return (n * self.steps) // self.total if self.total else 0

    def _emit(self, tail: str) -> None:
        print(f"{PREFIX} {self.desc} {self.n}/{self.total} {self.unit}{tail}", file=self.file, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units; writes a line when another tenth of the total is done."""
        self.n += int(n)
        bucket = self._bucket_of(self.n)
        if n and bucket > self._bucket and self.n < self.total:
            self._bucket = bucket
            self._emit(f", {time.perf_counter() - self.started:.0f}s{_fmt_postfix(self.postfix)}")

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = values

    def write(self, message: str) -> None:
        print(message, file=self.file, flush=True)

    def close(self) -> None:
        """The closing summary line (once)."""
        if self.closed:
            return
        self.closed = True
        self._emit(f" in {time.perf_counter() - self.started:.1f}s{_fmt_postfix(self.postfix)}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True,
                 file: IO[str] | None = None) -> Any:
    """A tqdm bar when ``file`` (default stderr) is a terminal, a :class:`LogProgress` otherwise; with
    ``enabled=False`` a silent tqdm (``--no-progress``)."""
    from tqdm.auto import tqdm

    stream = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, initial=initial, disable=True)
    if getattr(stream, "isatty", lambda: False)():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=stream, dynamic_ncols=True)
    return LogProgress(total, desc, unit, initial=initial, file=stream)


def parse_progress(line: str) -> tuple[str, int, int] | None:
    """``(desc, done, total)`` of a line written by :class:`LogProgress`; None for any other line."""
    m = _LINE.match(line)
    return (m["desc"], int(m["n"]), int(m["total"])) if m else None


__all__ = ["PREFIX", "LogProgress", "parse_progress", "progress_bar"]
