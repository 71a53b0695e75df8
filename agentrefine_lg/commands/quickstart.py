"""``agentrefine quickstart``: the whole AgentRefine loop in one command, offline on the embedded defaults.

synthesize (grounded teacher) -> check -> refinement-tune (tiny local model) -> serve (transformers backend on
loopback) -> evaluate the tuned and the untuned model through the LangGraph refine agent on held-out tasks, and
the engines' oracle as the ceiling -> report (Markdown + PNG) in one folder.

Each stage is the very command a user would type (the first line of its log in ``<out>/logs/``), run as a
subprocess so that every stage is also reproducible on its own, and so that a stage's memory is returned before
the next starts. The console gets one line per stage: what ran, its key figure, its time.
``--teacher``, ``--base-model`` and ``--serve vllm`` swap in the real parts; ``--dry-run`` prints the plan.

Command-line code, so it lives in ``commands/``: the stages are other commands, run as subprocesses; what they
compute is the library's (synthesis, ``training.sft``, serving, evaluation, the eval report's formatting).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.checks import check_trajectory
from agentrefine_lg.convert import read_samples
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.eval.report import (  # the same formatting as the eval reports
    METRICS,
    draw_bars,
    format_ci,
    format_pct,
    model_caption,
    percent_axis,
)
from agentrefine_lg.progress import parse_progress
from agentrefine_lg.serving.server import stop_process

CLI = [sys.executable, "-m", "agentrefine_lg.cli"]
DEFAULT_TASKS = "babyai,pddl,alfworld,jericho"


@dataclass
class Plan:
    """The commands of one quickstart run, derived from its arguments (tested without running them)."""

    out: Path
    synthesize: list[str]
    check: list[str]
    train: list[str]
    serve_tuned: list[str]
    serve_base: list[str]
    eval_tuned: list[str]
    eval_base: list[str]
    eval_oracle: list[str]
    api_key: str = field(repr=False, default="")
    ports: tuple[int, int] = (0, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_plan(args: argparse.Namespace) -> Plan:
    """Turn the quickstart's arguments into the stage commands."""
    out = Path(args.out)
    data, train_dir, eval_dir = out / "data", out / "train", out / "eval"
    synth = [*CLI, "synthesize", "--n", str(args.n), "--out", str(data), "--concurrency", str(args.concurrency)]
    if args.teacher:
        synth += ["--teacher", args.teacher]
    if args.teacher_base_url:
        synth += ["--base-url", args.teacher_base_url, "--model", args.teacher_model or "teacher"]
    if args.personas:
        synth += ["--personas", args.personas]
    train = [sys.executable, "-m", "training.sft", "--data", str(data / "samples.jsonl"), "--output_dir", str(train_dir),
             "--seed", str(args.seed)]
    if args.base_model:
        train += ["--model", args.base_model, "--num_train_epochs", str(args.epochs or 3)]
    else:
        # The tiny default is randomly initialised: LoRA on it learns nothing visible in minutes, full
        # fine-tuning at a high learning rate at least learns the answer format (tested in the report).
        train += ["--method", "full", "--learning_rate", "3e-3", "--num_train_epochs", str(args.epochs or 10),
                  "--max_length", "4096", "--per_device_train_batch_size", "2"]
    # The untuned model is the base the adapter was trained on: the tiny default is built into train/base-model.
    base = args.base_model or str(train_dir / "base-model")
    key = args.api_key or secrets.token_urlsafe(16)
    ports = (args.port or _free_port(), _free_port())
    if args.serve == "vllm":
        tuned = [*CLI, "serve", "--backend", "vllm", "--model", base, "--adapter", str(train_dir)]
        base_cmd = [*CLI, "serve", "--backend", "vllm", "--model", base]
        if args.vllm_bin:
            tuned += ["--vllm-bin", args.vllm_bin]
            base_cmd += ["--vllm-bin", args.vllm_bin]
    else:
        tuned = [*CLI, "serve", "--backend", "transformers", "--model", str(train_dir / "merged")]
        base_cmd = [*CLI, "serve", "--backend", "transformers", "--model", base]
    tuned += ["--port", str(ports[0]), "--api-key", key]
    base_cmd += ["--port", str(ports[1]), "--api-key", key]

    common = ["--tasks", args.tasks, "--episodes", str(args.episodes), "--max-steps", str(args.max_steps),
              "--seed", str(args.seed)]

    def evaluate(port: int, name: str, weights: str) -> list[str]:
        return [*CLI, "eval", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "agentrefine", "--api-key", key,
                *common, "--max-tokens", str(args.max_tokens), "--label", name, "--model-path", weights,
                "--out", str(eval_dir / name)]

    tuned_weights = str(train_dir / "merged") if args.serve != "vllm" else f"{base} + adapter {train_dir}"
    return Plan(out=out, synthesize=synth, check=[*CLI, "check", str(data / "samples.jsonl")], train=train,
                serve_tuned=tuned, serve_base=base_cmd, eval_tuned=evaluate(ports[0], "tuned", tuned_weights),
                eval_base=evaluate(ports[1], "base", base),
                # the engines' own solvers: the ceiling these tasks allow within --max-steps
                eval_oracle=[*CLI, "eval", "--agent", "oracle", *common, "--label", "oracle",
                             "--out", str(eval_dir / "oracle")],
                api_key=key, ports=ports)


def show(cmd: list[str], *, secret: str = "") -> str:
    """A command as a user would type it (``agentrefine ...``), with the API key hidden."""
    words = list(cmd)
    if words[:3] == CLI:
        words = ["agentrefine", *words[3:]]
    elif words[:2] == [sys.executable, "-m"]:
        words = ["python", "-m", *words[2:]]
    text = shlex.join(words)
    return text.replace(secret, "$KEY") if secret else text


# ---------------------------------------------------------------------------------------------- running


class Stages:
    """Runs stages one by one: one console line each (what ran, its key figure, its time), everything the
    stage prints in ``<out>/logs/NN-name.log``, and on a terminal a progress bar fed by the log's progress
    lines (:mod:`agentrefine_lg.progress`)."""

    def __init__(self, out: Path, total: int, secret: str):
        self.out, self.total, self.secret = out, total, secret
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.timings: dict[str, float] = {}

    def _open_log(self, name: str, cmd: list[str]) -> Path:
        self.n += 1
        log = self.logs / f"{self.n:02d}-{name.replace(' ', '_')}.log"
        log.write_text(f"$ {show(cmd, secret=self.secret)}\n", encoding="utf-8")
        return log

    def line(self, name: str, figure: str, seconds: float) -> None:
        print(f"[{self.n}/{self.total}] {name:<11} {figure}  ({seconds:.1f}s)", flush=True)

    def run(self, name: str, cmd: list[str], figure: Callable[[Path], str]) -> None:
        """Run ``cmd`` to completion; ``figure(log)`` gives the stage's key figure from its outputs."""
        log = self._open_log(name, cmd)
        start = time.perf_counter()
        with log.open("a", encoding="utf-8") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env())
            code = _follow(proc, log, f"[{self.n}/{self.total}] {name}")
        self.timings[name] = time.perf_counter() - start
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"exit code {code} after {self.timings[name]:.1f}s\n")
        if code != 0:
            raise AgentRefineError(f"stage '{name}' failed with exit code {code}; its output: {log}\n"
                                   + _tail(log))
        self.line(name, figure(log), self.timings[name])

    def serve(self, name: str, cmd: list[str], port: int) -> subprocess.Popen:
        """Start a server stage in the background and wait until it answers ``/health``."""
        import urllib.request

        log = self._open_log(name, cmd)
        start = time.perf_counter()
        with log.open("a", encoding="utf-8") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=_child_env())
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AgentRefineError(f"stage '{name}': the server exited with code {proc.returncode}; its output: "
                                       f"{log}\n" + _tail(log))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            proc.terminate()
            raise AgentRefineError(f"stage '{name}': no answer on port {port} within 600 s; its output: {log}")
        self.timings[name] = time.perf_counter() - start
        self.line(name, f"ready at http://127.0.0.1:{port}/v1", self.timings[name])
        return proc


def _follow(proc: subprocess.Popen, log: Path, desc: str) -> int:
    """Wait for ``proc``; on a terminal, draw a bar from the progress lines it writes to ``log``."""
    from tqdm.auto import tqdm

    bar = None
    offset = 0
    while True:
        code = proc.poll()
        if sys.stderr.isatty():
            with log.open("rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            cut = chunk.rfind(b"\n") + 1  # a partial last line waits for the next read
            offset += cut
            for line in chunk[:cut].decode("utf-8", errors="replace").splitlines():
                parsed = parse_progress(line)
                if parsed is None:
                    continue
                what, done, total = parsed
                if bar is None or bar.total != total:
                    if bar is not None:
                        bar.close()
                    bar = tqdm(total=total, desc=f"{desc} ({what})", leave=False, dynamic_ncols=True)
                bar.update(done - bar.n)
        if code is not None:
            if bar is not None:
                bar.close()
            return code
        time.sleep(0.3)


def scrub_logs(logs: Path, secret: str) -> None:
    """Replace the run's API key in the stage logs (``agentrefine serve`` prints it for copy-pasting)."""
    if not secret:
        return
    for log in logs.glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        if secret in text:
            log.write_text(text.replace(secret, "$KEY"), encoding="utf-8")


def _tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join("    " + line for line in text[-lines:])


# ---------------------------------------------------------------------------------------------- key figures


def synth_figure(data_dir: Path) -> str:
    """The synthesize stage's key figure, from its manifest."""
    summary = json.loads((data_dir / "manifest.json").read_text()).get("summary", {})
    rate, pairs = summary.get("acceptance_rate"), summary.get("mean_pairs")
    return (f"{summary.get('accepted', 0)} samples accepted"
            f"{'' if rate is None else f' ({100 * rate:.0f}% of personas)'}, "
            f"{'no' if pairs is None else f'{pairs:.2f}'} error->refine pairs per trajectory")


_CHECKED = re.compile(r"checked (\d+) record\(s\): (\d+) ok, (\d+) with problems")


def check_figure(log: Path) -> str:
    """The check stage's key figure: its own closing count, read from its log."""
    found = _CHECKED.findall(log.read_text(encoding="utf-8", errors="replace"))
    if not found:
        return "no count printed (see the log)"
    total, ok, bad = found[-1]
    return f"{ok}/{total} records pass the rule checks" + (f", {bad} with problems" if int(bad) else "")


def train_figure(train_dir: Path) -> str:
    """The train stage's key figure, from train_log.json: steps and the first, last and mean loss."""
    log = json.loads((train_dir / "train_log.json").read_text())
    steps = log.get("steps") or []
    if not steps:
        return f"{log.get('train_rows')} rows, no loss logged"
    return (f"{len(steps)} steps on {log.get('train_rows')} rows, loss {steps[0]['loss']:.3f} -> "
            f"{steps[-1]['loss']:.3f} (last step; mean {log.get('mean_loss', float('nan')):.3f})")


def eval_figure(eval_dir: Path) -> str:
    """An eval stage's key figure, from its summary.json: the mean over tasks and the pooled error rates."""
    summary = json.loads((eval_dir / "summary.json").read_text())
    overall = summary.get("overall") or {}
    unavailable = summary.get("unavailable") or {}
    text = (f"success {format_pct(overall.get('success_rate_task_mean'))}%, progress "
            f"{format_pct(overall.get('progress_rate_task_mean'))}%, invalid actions {format_pct(overall.get('invalid_action_rate'))}%, "
            f"format errors {format_pct(overall.get('format_error_rate'))}% ({overall.get('episodes', 0)} episodes)")
    return text + (f"; unavailable: {', '.join(unavailable)}" if unavailable else "")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers' weight loading/saving bars are carriage-return noise in a log; ours summarise the stages
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


# ---------------------------------------------------------------------------------------------- report


def data_stats(samples_path: Path) -> dict[str, Any]:
    """Error->refine statistics of the synthesized data, recomputed from the samples themselves."""
    pairs: list[int] = []
    kinds: Counter[str] = Counter()
    turns: list[int] = []
    masked = trained = 0
    for sample in read_samples(samples_path):
        if sample.script is not None and sample.trajectory is not None:
            report = check_trajectory(sample.script, sample.trajectory)
            pairs.append(report.pairs)
            turns.append(len(sample.trajectory))
            for turn in sample.trajectory:
                kinds.update(turn.flags)
        for m in sample.messages:
            if m.role == "assistant":
                trained += bool(m.train)
                masked += not m.train
    return {"samples": len(turns), "pairs": pairs, "error_kinds": dict(kinds), "turns": turns,
            "assistant_turns_trained": trained, "assistant_turns_masked": masked}


#: The models the quickstart compares, in plot order, with their colours.
MODELS: tuple[tuple[str, str], ...] = (("base", "#9aa5b1"), ("tuned", "#2f6db5"), ("oracle", "#2a9d4b"))


def plot_comparison(summaries: dict[str, dict], path: Path) -> None:
    """``eval_comparison.png``: the five reported metrics per task for each model (base / tuned / oracle),
    every bar labelled (0 included), success and progress with 95% Wilson intervals, the models' weights in
    the last panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    present = [(name, colour) for name, colour in MODELS if name in summaries]
    tasks = [t for t in next(iter(summaries.values())).get("tasks", {})
             if all(t in summ.get("tasks", {}) for summ in summaries.values())]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    width = 0.8 / max(len(present), 1)
    for ax, (key, ci_key, label) in zip(axes.flat, METRICS):
        for i, (name, colour) in enumerate(present):
            rows = summaries[name]["tasks"]
            xs = [x + (i - (len(present) - 1) / 2) * width for x in range(len(tasks))]
            draw_bars(ax, xs, [rows[t].get(key) for t in tasks], width=width, color=colour, label=name,
                      cis=[rows[t].get(ci_key) for t in tasks] if ci_key else None)
        ax.set_xticks(list(range(len(tasks))), tasks)
        ax.set_xlabel("task")
        per = "episodes, 95% Wilson CI" if ci_key else "steps, pooled"
        percent_axis(ax, f"{label} rate (%)")
        ax.set_title(f"{label} rate (% of {per})" + ("" if ci_key else ", lower is better"))
    last = axes.flat[len(METRICS)]
    last.axis("off")
    last.set_title("models")
    # one legend for all panels, here: per-panel legends would cover the value labels near 100
    handles = [Patch(color=colour, label=name) for name, colour in present]
    last.legend(handles=handles, loc="lower left", fontsize=9, title="bars", frameon=False)
    lines = [model_caption(summaries[name]) for name, _ in present]
    first = next(iter(summaries.values()))
    lines += ["", f"{first.get('max_steps', '?')} steps at most per episode, seed {first.get('seed', '?')};",
              "the oracle is each engine's own solver: the ceiling", "these tasks allow within that step cap."]
    wrapped = "\n".join(textwrap.fill(line, 60, subsequent_indent="    ") if line else "" for line in lines)
    last.text(0, 1, wrapped, va="top", ha="left", fontsize=8, family="monospace", transform=last.transAxes)
    fig.suptitle("Held-out evaluation through the refine agent: untuned base vs refinement-tuned vs oracle")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_data(stats: dict, path: Path) -> None:
    """``data_stats.png``: error->refine pairs per trajectory and the DM's error flags, counts labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    pairs = stats["pairs"]
    edges = range(max(pairs or [0]) + 2)
    counts = [pairs.count(k) for k in edges[:-1]]
    bars = axes[0].bar(list(edges[:-1]), counts, width=0.8, color="#2f6db5")
    axes[0].bar_label(bars, fontsize=8)
    axes[0].set_xticks(list(edges[:-1]))
    axes[0].set_xlabel("error->refine pairs in the trajectory")
    axes[0].set_ylabel("trajectories")
    axes[0].set_title(f"error->refine pairs per trajectory ({len(pairs)} trajectories)")
    kinds = stats["error_kinds"]
    names = ["parameter_error", "place_error", "logic_error"]
    names += [k for k in kinds if k not in names]
    bars = axes[1].bar(names, [kinds.get(k, 0) for k in names], width=0.6, color="#c8553d")
    axes[1].bar_label(bars, fontsize=8)
    axes[1].set_xlabel("DM error flag")
    axes[1].set_ylabel("flagged DM turns")
    axes[1].set_title("DM error flags in the data")
    for ax in axes:
        ax.set_ylim(0, max([*counts, *kinds.values(), 1]) * 1.15)
    fig.suptitle("Synthesized refinement-tuning data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


STAGE_NAMES = ("synthesize", "check", "train", "serve tuned", "eval tuned", "serve base", "eval base",
               "eval oracle")


def write_report(plan: Plan, timings: dict[str, float], total_s: float, args: argparse.Namespace) -> Path:
    """``report.md`` and its PNGs, every number read from this run's own outputs; ``total_s`` is the wall
    time the console reports too."""
    out = plan.out
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    summary = manifest.get("summary", {})
    stats = data_stats(out / "data" / "samples.jsonl")
    train_log = json.loads((out / "train" / "train_log.json").read_text())
    evals = {name: json.loads((out / "eval" / name / "summary.json").read_text()) for name, _ in MODELS}
    plot_data(stats, out / "data_stats.png")
    plot_comparison(evals, out / "eval_comparison.png")
    loss_png = out / "train" / "loss.png"

    mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
    lines = [
        "# AgentRefine quickstart report", "",
        f"Run of `agentrefine quickstart` in `{out}`; every number below is read from this run's outputs.", "",
        "## Stages", "", "| stage | command | seconds |", "|---|---|---|",
    ]
    cmds = dict(zip(STAGE_NAMES, (plan.synthesize, plan.check, plan.train, plan.serve_tuned, plan.eval_tuned,
                                  plan.serve_base, plan.eval_base, plan.eval_oracle), strict=True))
    for name, cmd in cmds.items():
        lines.append(f"| {name} | `{show(cmd, secret=plan.api_key)}` | {timings.get(name, 0.0):.1f} |")
    steps = train_log.get("steps") or []
    lines += [
        f"| **total** (wall clock, start to last stage; the console prints the same) | | {total_s:.1f} |", "",
        "Each stage's full output is in `logs/`.", "",
        "## Data (synthesis + verification)", "",
        f"- teacher: `{manifest.get('teacher', {}).get('name') if isinstance(manifest.get('teacher'), dict) else manifest.get('teacher')}`",
        f"- accepted samples: {stats['samples']}; acceptance rate: {summary.get('acceptance_rate')}",
        f"- error→refine pairs per trajectory: mean {mean(stats['pairs']):.2f}, min {min(stats['pairs'] or [0])}, "
        f"max {max(stats['pairs'] or [0])}",
        f"- turns per trajectory: mean {mean(stats['turns']):.1f}",
        f"- DM error flags: {', '.join(f'{k} {v}' for k, v in stats['error_kinds'].items()) or 'none'}",
        f"- assistant turns trained / masked (erroneous): {stats['assistant_turns_trained']} / "
        f"{stats['assistant_turns_masked']}",
        f"- distinct action templates {summary.get('distinct_action_templates')}, distinct environments "
        f"{summary.get('distinct_environments')}", "",
        "![data](data_stats.png)", "",
        "## Refinement tuning", "",
        f"- base model: `{train_log.get('base_model')}`; rows {train_log.get('train_rows')} "
        f"(dropped {train_log.get('dropped_rows')}); optimizer steps {len(steps)}",
        (f"- loss: first step {steps[0]['loss']:.4f} → last step {steps[-1]['loss']:.4f}; mean over training "
         f"{train_log.get('mean_loss', float('nan')):.4f}") if steps else "- loss: (no steps logged)",
        f"- throughput {train_log.get('tokens_per_second') or 0:.0f} tokens/s, train runtime "
        f"{train_log.get('train_runtime_s', 0):.1f}s", "",
    ]
    if loss_png.exists():
        lines += ["![loss](train/loss.png)", ""]
    lines += [
        "## Held-out evaluation (refine agent, same loop for every model)", "",
        f"Tasks `{args.tasks}`, {args.episodes} episode(s) each, at most {args.max_steps} steps, temperature 0, "
        f"reply cap {args.max_tokens} tokens. Each episode runs through `create_refine_agent`'s graph "
        "(act → execute → feedback → retry-on-error). Success and progress: mean over episodes with the 95% "
        "Wilson score interval in brackets (wide with few episodes, as it should be); error rates: per step.", "",
        *(f"- {model_caption(evals[name])}" for name, _ in MODELS), "",
        "| task | model | success % | progress % | invalid action % | format error % | repeated mistake % |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in evals["tuned"].get("tasks", {}):
        for name, _ in MODELS:
            row = evals[name]["tasks"].get(task)
            if row:
                lines.append(f"| {task} | {name} | {format_pct(row['success_rate'])}{format_ci(row.get('success_rate_ci'))} | "
                             f"{format_pct(row['progress_rate'])}{format_ci(row.get('progress_rate_ci'))} | "
                             f"{format_pct(row['invalid_action_rate'])} | {format_pct(row['format_error_rate'])} | "
                             f"{format_pct(row['repeated_mistake_rate'])} |")
    unavailable = {k: v for summ in evals.values() for k, v in (summ.get("unavailable") or {}).items()}
    for task, why in unavailable.items():
        lines.append(f"| {task} | – | unavailable: {why} | | | | |")
    lines += [
        "", "![evaluation](eval_comparison.png)", "",
        "Per-task plots: `eval/<model>/<task>.png`.", "",
        "With the embedded defaults the student is a tiny randomly initialised model trained for minutes on",
        "templated data: at best it learns the answer format (compare the format-error columns), not the tasks.",
        "The scores show that the loop runs end to end, not the method's effect. Use `--teacher`, `--base-model`",
        "and `--serve vllm` for real runs (see the README and `examples/paper_recipe/`).", "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


def cli_add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/quickstart", help="output folder (default runs/quickstart)")
    parser.add_argument("--n", type=int, default=16, help="samples to synthesize (default 16)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--personas", help="persona file (default: the built-in list)")
    parser.add_argument("--teacher", help="LLM teacher spec, e.g. openai:gpt-4o (default: the embedded grounded teacher)")
    parser.add_argument("--teacher-base-url", help="OpenAI-compatible teacher endpoint (vLLM), with --teacher-model")
    parser.add_argument("--teacher-model", help="model name at --teacher-base-url")
    parser.add_argument("--base-model", help="student model: hub id or local folder (default: the tiny local model)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="training epochs (default: 10 for the tiny model, 3 for --base-model)")
    parser.add_argument("--serve", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--vllm-bin", help="vLLM executable (its own environment)")
    parser.add_argument("--port", type=int, default=0, help="port of the tuned model's server (default: a free one)")
    parser.add_argument("--api-key", help="API key for the served models (default: a random one)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help=f"held-out tasks (default {DEFAULT_TASKS})")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task and model (default 2)")
    parser.add_argument("--max-steps", type=int, default=8, help="actions per episode (default 8; the paper: 30)")
    parser.add_argument("--max-tokens", type=int, default=48, help="reply token cap (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true", help="print the stage commands and exit")


def cli_run(args: argparse.Namespace) -> int:
    if args.n < 1 or args.episodes < 1 or args.max_steps < 1:
        raise InputError("--n, --episodes and --max-steps must be at least 1")
    if args.teacher_base_url and not args.teacher_model:
        raise InputError("--teacher-base-url needs --teacher-model", field="teacher-model")
    plan = build_plan(args)
    if args.dry_run:
        for name in ("synthesize", "check", "train", "serve_tuned", "eval_tuned", "serve_base", "eval_base",
                     "eval_oracle"):
            print(f"{name}: {show(getattr(plan, name), secret=plan.api_key)}")
        return 0
    started = time.perf_counter()
    stages = Stages(plan.out, total=len(STAGE_NAMES) + 1, secret=plan.api_key)
    print(f"agentrefine quickstart: {stages.total} stages into {plan.out}/ (each stage's command and output: "
          f"{stages.logs}/; the commands alone: --dry-run)", flush=True)
    data, train_dir, eval_dir = plan.out / "data", plan.out / "train", plan.out / "eval"
    try:
        stages.run("synthesize", plan.synthesize, lambda log: synth_figure(data))
        stages.run("check", plan.check, check_figure)
        stages.run("train", plan.train, lambda log: train_figure(train_dir))
        for label, serve_cmd, eval_cmd, port in (("tuned", plan.serve_tuned, plan.eval_tuned, plan.ports[0]),
                                                 ("base", plan.serve_base, plan.eval_base, plan.ports[1])):
            server = None
            try:
                server = stages.serve(f"serve {label}", serve_cmd, port)
                stages.run(f"eval {label}", eval_cmd, lambda log, label=label: eval_figure(eval_dir / label))
            finally:
                stop_process(server)
        stages.run("eval oracle", plan.eval_oracle, lambda log: eval_figure(eval_dir / "oracle"))
    finally:
        scrub_logs(stages.logs, plan.api_key)
    total = time.perf_counter() - started
    t0 = time.perf_counter()
    report = write_report(plan, stages.timings, total, args)
    stages.n += 1
    stages.line("report", f"{report} (total {total:.0f}s, as in the report)", time.perf_counter() - t0)
    return 0
