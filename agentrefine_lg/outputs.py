"""Outputs are never destroyed: files are written whole or not at all, and an output folder belongs to one
run at a time.

- :func:`atomic_output` writes through a temporary file in the target's folder and renames it over the
  target only when everything was written (a failing or killed run leaves the old file, or none);
- :func:`refuse_same_file` stops ``convert X X`` before the output is opened (opening it truncates the input);
- :func:`lock_output_dir` holds an OS lock (``flock``, via ``filelock``) on ``DIR/.agentrefine.lock`` for
  a run's lifetime: a second run on the same folder stops with one line instead of interleaving its lines
  with the first. The kernel drops the lock when the holder dies, even by ``kill -9``, so a stale lock file
  never blocks a resume.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agentrefine_lg.errors import AgentRefineError, InputError

LOCK_NAME = ".agentrefine.lock"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, encoding: str = "utf-8") -> Iterator[IO[str]]:
    """A text handle whose content replaces ``path`` (fsync'd, then renamed) only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp makes the file private (0600); give it the mode an ordinary new file would get.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    # Reading the umask means setting it; the mask only matters for new files, and this runs once per output.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_same_file(source: str | os.PathLike, output: str | os.PathLike) -> None:
    """Raise :class:`InputError` when ``output`` is ``source`` (same path, a link to it, or a hard link)."""
    src, out = Path(source), Path(output)
    same = src.resolve() == out.resolve()
    if not same and src.exists() and out.exists():
        with contextlib.suppress(OSError):
            same = os.path.samefile(src, out)
    if same:
        raise InputError(f"the output is the input file ({source}); write to another file", where=str(output))


@contextlib.contextmanager
def lock_output_dir(directory: str | os.PathLike, *, command: str = "agentrefine") -> Iterator[None]:
    """Hold ``directory``'s lock for the block; raise :class:`AgentRefineError` at once if another run holds it."""
    from filelock import FileLock, Timeout

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(directory / LOCK_NAME), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise AgentRefineError(f"{directory} is in use by another run (its lock {directory / LOCK_NAME} is held); "
                               f"wait for that {command} to finish or use another output folder") from None
    try:
        yield
    finally:
        lock.release()


__all__ = ["LOCK_NAME", "atomic_output", "lock_output_dir", "refuse_same_file"]
