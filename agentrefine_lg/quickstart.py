"""``agentrefine quickstart``: the whole AgentRefine loop in one command, offline on the embedded defaults.

synthesize (grounded teacher) -> check -> refinement-tune (tiny local model) -> serve (transformers backend on
loopback) -> evaluate the tuned and the untuned model through the LangGraph refine agent on held-out tasks
-> report (Markdown + PNG) in one folder.

Each stage is the very command a user would type (printed before it runs), run as a subprocess so that every
stage is also reproducible on its own, and so that a stage's memory is returned before the next starts.
``--teacher``, ``--base-model`` and ``--serve vllm`` swap in the real parts; ``--dry-run`` prints the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.errors import AgentRefineError, InputError

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

    def evaluate(port: int, name: str) -> list[str]:
        return [*CLI, "eval", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "agentrefine", "--api-key", key,
                "--tasks", args.tasks, "--episodes", str(args.episodes), "--max-steps", str(args.max_steps),
                "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), "--out", str(eval_dir / name)]

    return Plan(out=out, synthesize=synth, check=[*CLI, "check", "-q", str(data / "samples.jsonl")], train=train,
                serve_tuned=tuned, serve_base=base_cmd, eval_tuned=evaluate(ports[0], "tuned"),
                eval_base=evaluate(ports[1], "base"), api_key=key, ports=ports)


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
    """Runs stages one by one, one line each, logging their output to ``<out>/logs``."""

    def __init__(self, out: Path, total: int, secret: str):
        self.out, self.total, self.secret = out, total, secret
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.timings: dict[str, float] = {}

    def run(self, name: str, cmd: list[str], *, stream: bool = True) -> None:
        self.n += 1
        print(f"[{self.n}/{self.total}] {name}: {show(cmd, secret=self.secret)}", flush=True)
        start = time.perf_counter()
        log = self.logs / f"{self.n:02d}-{name.replace(' ', '_')}.log"
        with log.open("w", encoding="utf-8") as fh:
            # stderr (progress bars) goes to the terminal; stdout (reports) to the log and the terminal.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None if stream else fh, text=True,
                                    env=_child_env())
            assert proc.stdout is not None
            for line in proc.stdout:
                fh.write(line)
                if stream:
                    print(f"    {line.rstrip()}", flush=True)
            code = proc.wait()
        self.timings[name] = time.perf_counter() - start
        if code != 0:
            raise AgentRefineError(f"stage '{name}' failed with exit code {code}; see {log}")
        print(f"    done in {self.timings[name]:.1f}s", flush=True)

    def serve(self, name: str, cmd: list[str], port: int) -> subprocess.Popen:
        """Start a server stage in the background and wait until it answers ``/health``."""
        import urllib.request

        self.n += 1
        print(f"[{self.n}/{self.total}] {name}: {show(cmd, secret=self.secret)}", flush=True)
        start = time.perf_counter()
        log = (self.logs / f"{self.n:02d}-{name.replace(' ', '_')}.log").open("w", encoding="utf-8")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_child_env())
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AgentRefineError(f"stage '{name}': the server exited with code {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            proc.terminate()
            raise AgentRefineError(f"stage '{name}': no answer on port {port} within 600 s")
        self.timings[name] = time.perf_counter() - start
        print(f"    serving at http://127.0.0.1:{port}/v1 (ready in {self.timings[name]:.1f}s)", flush=True)
        return proc


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------------------------------- report


def data_stats(samples_path: Path) -> dict[str, Any]:
    """Error->refine statistics of the synthesized data, recomputed from the samples themselves."""
    from agentrefine_lg.checks import check_trajectory
    from agentrefine_lg.convert import read_samples

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


def _plot_comparison(tuned: dict, base: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in tuned.get("tasks", {}) if t in base.get("tasks", {})]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    width = 0.38
    panels = ((axes[0], "success_rate", "success rate"), (axes[1], "progress_rate", "progress rate"),
              (axes[2], "format_error_rate", "format-error rate (lower is better)"))
    for ax, metric, title in panels:
        xs = range(len(tasks))
        ax.bar([x - width / 2 for x in xs], [100 * base["tasks"][t][metric] for t in tasks], width, label="untuned base")
        ax.bar([x + width / 2 for x in xs], [100 * tuned["tasks"][t][metric] for t in tasks], width, label="refinement-tuned")
        ax.set_xticks(list(xs), tasks)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_data(stats: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    pairs = stats["pairs"] or [0]
    axes[0].hist(pairs, bins=range(max(pairs) + 2), align="left", rwidth=0.8)
    axes[0].set_xlabel("error->refine pairs per trajectory")
    axes[0].set_ylabel("trajectories")
    kinds = stats["error_kinds"]
    axes[1].bar(list(kinds) or ["none"], list(kinds.values()) or [0])
    axes[1].set_title("DM error flags in the data")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def write_report(plan: Plan, timings: dict[str, float], args: argparse.Namespace) -> Path:
    """``report.md`` and its PNGs, every number read from this run's own outputs."""
    out = plan.out
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    summary = manifest.get("summary", {})
    stats = data_stats(out / "data" / "samples.jsonl")
    train_log = json.loads((out / "train" / "train_log.json").read_text())
    tuned = json.loads((out / "eval" / "tuned" / "summary.json").read_text())
    base = json.loads((out / "eval" / "base" / "summary.json").read_text())
    _plot_data(stats, out / "data_stats.png")
    _plot_comparison(tuned, base, out / "eval_comparison.png")
    loss_png = out / "train" / "loss.png"

    mean = (lambda xs: sum(xs) / len(xs) if xs else 0.0)
    lines = [
        "# AgentRefine quickstart report", "",
        f"Run of `agentrefine quickstart` in `{out}`; every number below is read from this run's outputs.", "",
        "## Stages", "", "| stage | command | seconds |", "|---|---|---|",
    ]
    cmds = {"synthesize": plan.synthesize, "check": plan.check, "train": plan.train, "serve tuned": plan.serve_tuned,
            "eval tuned": plan.eval_tuned, "serve base": plan.serve_base, "eval base": plan.eval_base}
    for name, cmd in cmds.items():
        lines.append(f"| {name} | `{show(cmd, secret=plan.api_key)}` | {timings.get(name, 0.0):.1f} |")
    lines += [
        f"| **total** | | {sum(timings.values()):.1f} |", "",
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
        f"(dropped {train_log.get('dropped_rows')}); optimizer steps {len(train_log.get('steps', []))}",
        f"- loss: first {train_log['steps'][0]['loss']:.4f} → final {train_log['steps'][-1]['loss']:.4f}"
        if train_log.get("steps") else "- loss: (no steps logged)",
        f"- throughput {train_log.get('tokens_per_second') or 0:.0f} tokens/s, train runtime "
        f"{train_log.get('train_runtime_s', 0):.1f}s", "",
    ]
    if loss_png.exists():
        lines += ["![loss](train/loss.png)", ""]
    lines += [
        "## Held-out evaluation (refine agent, same loop for both models)", "",
        f"Tasks `{args.tasks}`, {args.episodes} episode(s) each, at most {args.max_steps} steps, temperature 0, "
        f"reply cap {args.max_tokens} tokens. Each episode runs through `create_refine_agent`'s graph "
        "(act → execute → feedback → retry-on-error).", "",
        "| task | model | success % | progress % | invalid action % | format error % | repeated mistake % |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in tuned.get("tasks", {}):
        for label, summ in (("untuned base", base), ("refinement-tuned", tuned)):
            row = summ["tasks"].get(task)
            if row:
                lines.append(f"| {task} | {label} | {_pct(row['success_rate'])} | {_pct(row['progress_rate'])} | "
                             f"{_pct(row['invalid_action_rate'])} | {_pct(row['format_error_rate'])} | "
                             f"{_pct(row['repeated_mistake_rate'])} |")
    unavailable = {**base.get("unavailable", {}), **tuned.get("unavailable", {})}
    for task, why in unavailable.items():
        lines.append(f"| {task} | – | unavailable: {why} | | | | |")
    lines += [
        "", "![evaluation](eval_comparison.png)", "",
        "With the embedded defaults the student is a tiny randomly initialised model trained for minutes on",
        "templated data: at best it learns the answer format (compare the format-error columns), not the tasks.",
        "The scores show that the loop runs end to end, not the method's effect. Use `--teacher`, `--base-model`",
        "and `--serve vllm` for real runs (see the README and `examples/paper_recipe/`).", "",
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------- CLI


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
        for name in ("synthesize", "check", "train", "serve_tuned", "eval_tuned", "serve_base", "eval_base"):
            print(f"{name}: {show(getattr(plan, name), secret=plan.api_key)}")
        return 0
    started = time.perf_counter()
    stages = Stages(plan.out, total=8, secret=plan.api_key)
    stages.run("synthesize", plan.synthesize)
    stages.run("check", plan.check)
    stages.run("train", plan.train)
    for label, serve_cmd, eval_cmd, port in (("tuned", plan.serve_tuned, plan.eval_tuned, plan.ports[0]),
                                             ("base", plan.serve_base, plan.eval_base, plan.ports[1])):
        server = None
        try:
            server = stages.serve(f"serve {label}", serve_cmd, port)
            stages.run(f"eval {label}", eval_cmd)
        finally:
            _stop(server)
    stages.n += 1
    print(f"[{stages.n}/{stages.total}] report", flush=True)
    report = write_report(plan, stages.timings, args)
    print(f"    {report} (total {time.perf_counter() - started:.0f}s)")
    return 0
