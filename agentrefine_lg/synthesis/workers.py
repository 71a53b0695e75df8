"""Synthesis in worker processes: ``agentrefine synthesize --workers N``.

One event loop spends 4-5 ms of CPU on each LLM call (langchain-openai, the graph, the checks), so past about 64
personas in flight one client process is bound by one core (benchmarks/synthesis.py), and the grounded teacher's
world compilation is CPU-bound from the start. :class:`SynthesisWorkers` starts N processes; each builds the
synthesis graph itself (from a picklable factory) and runs the personas handed to it. The runner in the parent
keeps everything else — the output lock, the one ledger and samples file, resume, the manifest — and drives the
pool as it drives a compiled graph, through :meth:`SynthesisWorkers.astream`. A persona goes to the worker with
the fewest in flight (an even split whatever the persona ids hash to, unlike ``--shard``).

What crosses the process boundary: the persona's input and config one way; the graph's custom stream chunks and
its final state back (a ``"values"`` chunk once, at the end). An exception raised in a worker comes back as a
:class:`WorkerError` that keeps the original's class names and HTTP status, so :mod:`agentrefine_lg.failures`
classifies it as it would the original (a 429 is retried on resume, a bug stops the run). A worker that dies fails
its personas with an :class:`AgentRefineError` (nothing ledgered for them); a parent that dies closes the workers'
pipes and they exit.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from agentrefine_lg.errors import AgentRefineError
from agentrefine_lg.failures import status_of
from agentrefine_lg.synthesis.turns import persona_turn

GraphFactory = Callable[[], tuple[Any, Sequence[Any]]]
"""Builds, in the worker, the compiled synthesis graph and the roles whose ``stats`` counters to report."""


class WorkerError(Exception):
    """An exception raised in a worker process, as the parent sees it. ``class_names`` (the original's class and
    its bases) and ``status_code`` are what :mod:`agentrefine_lg.failures` classifies by."""

    def __init__(self, message: str, class_names: Sequence[str] = (), status_code: int | None = None):
        super().__init__(message)
        self.class_names, self.status_code = tuple(class_names), status_code

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.class_names, self.status_code)


def describe(exc: BaseException) -> WorkerError:
    """``exc`` as a picklable :class:`WorkerError` (the original may hold an HTTP response or a lock)."""
    return WorkerError(str(exc), [cls.__name__ for cls in type(exc).__mro__], status_of(exc))


def role_stats(pairs: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``(role class name, its stats counters)`` pairs summed per class name: the manifest's ``role_stats``."""
    total: dict[str, dict[str, Any]] = {}
    for name, stats in pairs:
        into = total.setdefault(name, {})
        for key, value in stats.items():
            into[key] = into.get(key, 0) + value if isinstance(value, (int, float)) else value
    return total


# ---------------------------------------------------------------------------------------------- worker side


def _worker_main(factory: GraphFactory, inbox: Any, outbox: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent decides
    try:
        graph, roles = factory()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops with it
        outbox.send(("fatal", None, describe(exc)))
        return
    outbox.send(("ready", None, None))
    try:
        asyncio.run(_serve(graph, roles, inbox, outbox))
    except (BrokenPipeError, EOFError, OSError):  # the parent went away: nobody to answer
        pass


async def _serve(graph: Any, roles: Sequence[Any], inbox: Any, outbox: Any) -> None:
    loop = asyncio.get_running_loop()
    messages: asyncio.Queue[tuple[str, int, Any] | None] = asyncio.Queue()

    def read() -> None:  # blocking reads off the loop; None when the parent closes the pipe or dies
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                message = None
            try:
                loop.call_soon_threadsafe(messages.put_nowait, message)
            except RuntimeError:  # the loop has ended (the worker is stopping): nothing more to hand over
                return
            if message is None:
                return

    threading.Thread(target=read, name="agentrefine-synthesize-inbox", daemon=True).start()
    tasks: dict[int, asyncio.Task] = {}

    turns = asyncio.Lock()  # this worker's loop's turn (synthesis/turns.py)

    async def run(key: int, graph_input: Any, config: Any, modes: list[str]) -> None:
        final: Any = None
        try:
            async with persona_turn(turns):
                async for mode, chunk in graph.astream(graph_input, config, stream_mode=modes):
                    if mode == "values":
                        final = chunk  # only the last state crosses back: the runner reads nothing else of it
                    else:
                        outbox.send(("chunk", key, (mode, chunk)))
            outbox.send(("done", key, final))
        except asyncio.CancelledError:
            raise
        except (BrokenPipeError, EOFError):
            raise
        except BaseException as exc:  # noqa: BLE001 - the parent classifies it (failures.py) and decides
            outbox.send(("failed", key, describe(exc)))
        finally:
            tasks.pop(key, None)

    while (message := await messages.get()) is not None:
        kind, key, payload = message
        if kind == "stop":
            break
        if kind == "run":
            tasks[key] = asyncio.ensure_future(run(key, *payload))
        elif kind == "cancel" and key in tasks:
            tasks[key].cancel()
    left = list(tasks.values())
    for task in left:
        task.cancel()
    await asyncio.gather(*left, return_exceptions=True)
    outbox.send(("stats", None, [(type(r).__name__, dict(r.stats)) for r in roles if getattr(r, "stats", None)]))


# ---------------------------------------------------------------------------------------------- parent side


@dataclass
class _Worker:
    index: int
    process: Any
    inbox: Any  # parent -> worker
    outbox: Any  # worker -> parent
    ready: asyncio.Future
    pending: dict[int, asyncio.Queue] = field(default_factory=dict)
    stats: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    gone: str | None = None  # why it can take no more personas
    finished: threading.Event = field(default_factory=threading.Event)

    def send(self, message: tuple[str, int | None, Any]) -> None:
        if self.gone is None:
            try:
                self.inbox.send(message)
            except (BrokenPipeError, OSError) as exc:
                self.gone = f"its pipe is closed ({exc})"


class SynthesisWorkers:
    """``processes`` worker processes running synthesis graphs built by ``factory``, used as an async context
    manager around :func:`~agentrefine_lg.synthesis.runner.run_synthesis` (pass the pool as its ``graph``)."""

    def __init__(self, factory: GraphFactory, processes: int, *, start_timeout_s: float = 300.0):
        if processes < 1:
            raise ValueError(f"processes must be >= 1, got {processes}")
        self.factory, self.processes, self.start_timeout_s = factory, processes, start_timeout_s
        self._workers: list[_Worker] = []
        self._keys = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def role_stats(self) -> dict[str, dict[str, Any]]:
        """The roles' ``stats`` counters summed over the workers (known once the pool is closed)."""
        return role_stats(stats for worker in self._workers for stats in worker.stats)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (for measuring them)."""
        return [w.process.pid for w in self._workers]

    async def __aenter__(self) -> Self:
        # spawn: the parent runs threads (the event loop's, httpx's), which fork would copy in an unknown state
        ctx = mp.get_context("spawn")
        self._loop = asyncio.get_running_loop()
        try:
            for i in range(self.processes):
                inbox_read, inbox_write = ctx.Pipe(duplex=False)
                outbox_read, outbox_write = ctx.Pipe(duplex=False)
                process = ctx.Process(target=_worker_main, args=(self.factory, inbox_read, outbox_write),
                                      name=f"agentrefine-synthesize-{i}", daemon=True)
                process.start()
                inbox_read.close()  # the child's ends: closed here so that a dead child reads as EOF
                outbox_write.close()
                worker = _Worker(i, process, inbox_write, outbox_read, self._loop.create_future())
                self._workers.append(worker)
                threading.Thread(target=self._read, args=(worker,), name=f"agentrefine-synthesize-read-{i}",
                                 daemon=True).start()
            await asyncio.wait_for(asyncio.gather(*(w.ready for w in self._workers)), self.start_timeout_s)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for worker in self._workers:
            worker.send(("stop", None, None))
            worker.inbox.close()
        # each worker cancels what it still runs and reports its stats, then its pipe closes
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for worker in self._workers:
            worker.finished.wait(30)
            worker.process.join(10)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(5)

    def _read(self, worker: _Worker) -> None:
        """The worker's messages, delivered on the event loop; the worker's end when its pipe closes."""
        assert self._loop is not None
        while True:
            try:
                message = worker.outbox.recv()
            except (EOFError, OSError):
                break
            try:
                self._loop.call_soon_threadsafe(self._deliver, worker, message)
            except RuntimeError:  # the loop is closed: the run is over
                break
        worker.process.join(5)
        why = f"synthesis worker {worker.index} (pid {worker.process.pid}) exited with code {worker.process.exitcode}"
        try:
            self._loop.call_soon_threadsafe(self._ended, worker, why)
        except RuntimeError:  # the loop is closed: the run is over
            pass
        worker.finished.set()

    def _deliver(self, worker: _Worker, message: tuple[str, int | None, Any]) -> None:
        kind, key, payload = message
        if kind == "ready":
            if not worker.ready.done():
                worker.ready.set_result(None)
        elif kind == "fatal":
            worker.gone = "it could not build its graph"
            if not worker.ready.done():
                worker.ready.set_exception(AgentRefineError(
                    f"synthesis worker {worker.index} could not build its graph: "
                    f"{payload.class_names[0] if payload.class_names else 'error'}: {payload}"))
        elif kind == "stats":
            worker.stats = payload
        elif key in worker.pending:
            worker.pending[key].put_nowait((kind, payload))

    def _ended(self, worker: _Worker, why: str) -> None:
        worker.gone = worker.gone or why
        if not worker.ready.done():
            worker.ready.set_exception(AgentRefineError(f"{why} before it was ready"))
        for queue in worker.pending.values():
            queue.put_nowait(("died", why))
        worker.pending.clear()

    async def astream(self, graph_input: Any, config: Any = None, *, stream_mode: Sequence[str] = ("values",)
                      ) -> AsyncIterator[tuple[str, Any]]:
        """Run one persona's graph in the least busy worker: its custom chunks as they come, then
        ``("values", final state)``. Cancelling the caller cancels the persona in the worker."""
        alive = [w for w in self._workers if w.gone is None]
        if not alive:
            raise AgentRefineError("no synthesis worker is running: " + "; ".join(
                f"worker {w.index}: {w.gone}" for w in self._workers))
        worker = min(alive, key=lambda w: len(w.pending))
        key = next(self._keys)
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        worker.pending[key] = queue
        worker.send(("run", key, (graph_input, config, list(stream_mode))))
        try:
            while True:
                kind, payload = await queue.get()
                if kind == "chunk":
                    yield payload
                elif kind == "done":
                    worker.pending.pop(key, None)
                    yield ("values", payload)
                    return
                elif kind == "failed":
                    worker.pending.pop(key, None)
                    raise payload
                else:  # died
                    raise AgentRefineError(f"{payload}; its personas were not ledgered")
        finally:
            if worker.pending.pop(key, None) is not None:  # left before its end: cancelled
                worker.send(("cancel", key, None))


__all__ = ["GraphFactory", "SynthesisWorkers", "WorkerError", "describe", "role_stats"]
