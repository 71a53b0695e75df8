"""The contract every held-out evaluation task follows, the task registry, and small shared helpers.

A task module ``agentrefine_lg.eval.<task>`` exposes:

- ``TASK: TaskInfo`` — name, family, description, whether it is held out, and an honesty note
  (e.g. "stands in for Jericho");
- ``available() -> str | None`` — None when it can run on this machine, else the reason
  (missing package, no Java, ...). The harness reports unavailable tasks, it never fakes them;
- ``make_env(episode: int, seed: int = 0, **options) -> TextEnv`` — episode ``i`` of the task, deterministic
  for a given ``(episode, seed)``;
- optionally ``NUM_EPISODES: int`` when the task has a fixed set of distinct episodes (the harness runs no
  more than that many, rather than repeating some). ``step`` never raises on unknown text: it answers with
  ``error='parameter_error'`` (no such command) or ``'logic_error'`` (the engine refused it).

Only this module is imported eagerly; engines load inside the task modules, so ``agentrefine eval --help``
does not start a JVM or import gym.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import string
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agentrefine_lg.env import TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import ActionSpec, Script


@dataclass(frozen=True)
class TaskInfo:
    """What a task is, for reports: ``name`` as on the command line, ``family`` the paper's column."""

    name: str
    family: str
    description: str
    held_out: bool = True
    note: str = ""


class TaskModule(Protocol):
    TASK: TaskInfo

    def available(self) -> str | None: ...

    def make_env(self, episode: int, seed: int = 0, **options: Any) -> TextEnv: ...


#: task name -> module. ``jericho`` runs TextWorld-Express games: the original Jericho ROMs can't be had offline.
TASKS: dict[str, str] = {
    "babyai": "agentrefine_lg.eval.babyai",
    "sciworld": "agentrefine_lg.eval.sciworld",
    "pddl": "agentrefine_lg.eval.pddl",
    "alfworld": "agentrefine_lg.eval.alfworld",
    "jericho": "agentrefine_lg.eval.twx",
    "textworld": "agentrefine_lg.eval.textworld",
}
BENCHMARK_TASKS: tuple[str, ...] = ("babyai", "sciworld", "pddl", "alfworld", "jericho")
"""What ``all`` means: the held-out benchmark families (``textworld`` needs a worlds file of one's own)."""


def task_names() -> list[str]:
    """The registered task names, in report order."""
    return list(TASKS)


def load_task(name: str) -> TaskModule:
    """Import the module of task ``name``; a clear :class:`InputError` for unknown names."""
    key = name.strip().lower()
    if key not in TASKS:
        raise InputError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}", field="tasks")
    return importlib.import_module(TASKS[key])  # type: ignore[return-value]


def parse_names(spec: str | Sequence[str], known: Sequence[str], *, what: str, field: str,
                every: Sequence[str] | None = None) -> list[str]:
    """``"a,b"`` / ``["a"]`` / ``"all"`` -> validated, de-duplicated names out of ``known``, in order given
    (``all``: ``every``, default ``known``)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in items:
        item = item.strip().lower()
        if not item:
            continue
        for name in ((every or known) if item == "all" else (item,)):
            if name not in known:
                raise InputError(f"unknown {what} {name!r}; known {what}s: {', '.join(known)}, all", field=field)
            if name not in names:
                names.append(name)
    if not names:
        raise InputError(f"no {what} given; known {what}s: {', '.join(known)}, all", field=field)
    return names


def parse_task_list(spec: str | Sequence[str]) -> list[str]:
    """``"babyai,pddl"`` or ``["babyai", "pddl"]`` or ``"all"`` -> validated, de-duplicated task names."""
    return parse_names(spec, list(TASKS), what="task", field="tasks", every=BENCHMARK_TASKS)


def task_unavailable(name: str) -> str | None:
    """None when task ``name`` can run here, else why not (an import failure counts as a reason)."""
    try:
        module = load_task(name)
    except ImportError as exc:  # the task module itself needs a missing package at import time
        return f"cannot import {TASKS[name]}: {exc}"
    return module.available()


def missing_modules(*modules: str) -> str | None:
    """Helper for ``available()``: None when every module imports, else which one is missing and why."""
    for mod in modules:
        try:
            with quiet():
                importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure makes the task unavailable
            return f"python package for {mod!r} unavailable ({type(exc).__name__}: {exc}); pip install 'agentrefine-lg[eval]'"
    return None


# --- action templates -> verification regexes (the training data's schema, docs/method.md §5/§6) ---

_SLOT = "(.+?)"


def template_regex(template: str) -> str:
    """A verification regex for a template: literal words, flexible whitespace, one group per ``{slot}``.

    ``"stack {block} {target}"`` -> ``^\\s*stack\\s+(.+?)\\s+(.+?)\\s*$`` (case is folded by the caller).
    """
    parts: list[str] = []
    for literal, slot, _, _ in string.Formatter().parse(template):
        for i, word in enumerate(literal.split(" ")):
            if i > 0:
                parts.append(r"\s+")
            parts.append(re.escape(word))
        if slot is not None:
            parts.append(_SLOT)
    body = "".join(parts)
    return rf"^\s*{body}\s*$"


def action_spec(template: str, description: str, parameters: Mapping[str, Iterable[str]] | None = None) -> ActionSpec:
    """One ``Available Actions`` entry with a regex derived from the template."""
    params = {slot: sorted({str(v) for v in values}) for slot, values in (parameters or {}).items()}
    return ActionSpec(template=template, description=description,
                      verification_code=template_regex(template), parameters=params)


def make_script(environment: Any, goal: str, completion_conditions: Sequence[str],
                actions: Sequence[ActionSpec]) -> Script:
    """Assemble a :class:`Script` from parts (action specs keyed by their template)."""
    return Script(
        environment=environment,
        goal=goal,
        completion_conditions=list(completion_conditions),
        available_actions={spec.template: spec for spec in actions},
    )


def normalize_action(action: str | None) -> str:
    """Lower-case, strip, collapse whitespace, drop a trailing period: how actions are compared."""
    text = " ".join((action or "").strip().split()).lower()
    return text.rstrip(".").strip()


class RunningMax:
    """AgentBoard reports progress as a running maximum over the episode."""

    def __init__(self) -> None:
        self.value = 0.0

    def update(self, value: float) -> float:
        self.value = max(self.value, min(1.0, max(0.0, float(value))))
        return self.value


# --- engine noise ---


# Episodes run in threads (``--workers``), and swapping ``sys.stdout`` or fds 1/2 per call is not thread-safe: two
# overlapping calls restore each other's replacement, which left the process's stdout a StringIO (every later print
# lost) after 16 concurrent BabyAI episodes. So the silencing is installed once while any thread needs it (counted
# under a lock), and it silences only the threads that asked for it.
_QUIET_LOCK = threading.RLock()
_QUIET_LOCAL = threading.local()
_quiet_streams: list[Any] = []  # the streams sys.stdout/sys.stderr replaced, while any quiet() is active
_quiet_users = 0
_fd_users = 0
_fd_saved: tuple[int, int] | None = None  # dups of the real fds 1/2 while quiet_fds() has pointed them at devnull


def _silenced() -> bool:
    return getattr(_QUIET_LOCAL, "depth", 0) > 0


class _ThreadFilter:
    """``sys.stdout``/``sys.stderr`` while some thread is in :func:`quiet`: that thread's writes are dropped, the
    others' go to the stream this one replaced (to the real terminal, even while :func:`quiet_fds` points fd 1/2
    at devnull)."""

    def __init__(self, target: Any, fd: int):
        self.target, self.fd = target, fd

    def write(self, text: str) -> int:
        if _silenced():
            return len(text)
        if _fd_saved is not None and _fileno(self.target) == self.fd:  # fd 1/2 is devnull just now: write past it
            with _QUIET_LOCK:  # the dups are closed under this lock when the last quiet_fds() ends
                saved = _fd_saved
                if saved is not None:
                    self.target.flush()
                    data = text.encode(getattr(self.target, "encoding", None) or "utf-8", errors="replace")
                    while data:
                        data = data[os.write(saved[self.fd - 1], data):]
                    return len(text)
        return self.target.write(text)

    def flush(self) -> None:
        if not _silenced():
            self.target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer, ...
        return getattr(self.target, name)


def _fileno(stream: Any) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Python-level prints of engines (minigrid's "Sampling rejected", gym's banner) in this thread; other
    threads' prints go through. Safe to use from many threads at once."""
    global _quiet_users
    with _QUIET_LOCK:
        if _quiet_users == 0:
            _quiet_streams[:] = [sys.stdout, sys.stderr]
            sys.stdout, sys.stderr = _ThreadFilter(sys.stdout, 1), _ThreadFilter(sys.stderr, 2)
        _quiet_users += 1
    _QUIET_LOCAL.depth = getattr(_QUIET_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _QUIET_LOCAL.depth -= 1
        with _QUIET_LOCK:
            _quiet_users -= 1
            if _quiet_users == 0:
                out, err = _quiet_streams
                _quiet_streams.clear()
                # put back what we replaced, unless someone replaced our filter in the meantime
                if isinstance(sys.stdout, _ThreadFilter) and sys.stdout.target is out:
                    sys.stdout = out
                if isinstance(sys.stderr, _ThreadFilter) and sys.stderr.target is err:
                    sys.stderr = err


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Like :func:`quiet`, also for writes to file descriptors 1/2 (subprocesses, JVMs, C code). Those fds are the
    process's: while any thread is inside, every thread's fd-level writes (not its Python prints) are dropped."""
    global _fd_users, _fd_saved
    with _QUIET_LOCK:
        if _fd_users == 0:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = (os.dup(1), os.dup(2))
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            os.close(devnull)
            _fd_saved = saved
        _fd_users += 1
    try:
        with quiet():
            yield
    finally:
        with _QUIET_LOCK:
            _fd_users -= 1
            if _fd_users == 0 and _fd_saved is not None:
                saved, _fd_saved = _fd_saved, None
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)


__all__ = [
    "TASKS",
    "RunningMax",
    "TaskInfo",
    "TaskModule",
    "action_spec",
    "load_task",
    "make_script",
    "missing_modules",
    "normalize_action",
    "parse_task_list",
    "quiet",
    "quiet_fds",
    "task_names",
    "task_unavailable",
    "template_regex",
]
