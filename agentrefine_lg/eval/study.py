"""The method study as a library: a controlled comparison of training arms on world sets (issues 16, 25).

``examples/small_model_study/run.py`` is its command line. Stages, each skipped when its outputs are complete (a
rerun resumes): ``data`` (:mod:`agentrefine_lg.synthesis.grounded.worldsets`), ``student`` (``training.tiny``),
``train <arm> s<seed>`` (``python -m training.sft``, the command users run, identical for every arm but ``--data``
and ``--no_mask``), ``eval <arm> s<seed>`` (the tuned model in-process through the refine agent on every
evaluation world, as is and once per injected mistake kind) and ``report`` (paired comparisons over worlds,
:func:`agentrefine_lg.eval.paired.compare_arms`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentrefine_lg.convert import read_samples
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.eval.harness import ModelSpec, read_rows, run_episode
from agentrefine_lg.eval.injection import Injection
from agentrefine_lg.eval.paired import INJECTED, UNINJECTED, compare_arms, episode_values
from agentrefine_lg.eval.textworld import load_worlds
from agentrefine_lg.jsonl import JsonlFile
from agentrefine_lg.synthesis.grounded.worldsets import GENERATORS, PROBE_SPLIT, WorldPlan, generate_worlds

ROOT = Path(__file__).resolve().parents[2]
"""The source tree: ``training.sft`` runs from here, and ``--docs`` writes into its ``docs/``."""

SCRATCH = "scratch"


@dataclass(frozen=True)
class Arm:
    """One arm: the dataset it trains on and whether erroneous turns are masked."""

    name: str
    data: str
    mask: bool
    description: str


ARMS: dict[str, Arm] = {
    "bc": Arm("bc", "clean", True, "behaviour cloning on clean trajectories of the train worlds"),
    "refine": Arm("refine", "refine", True, "refinement tuning: error->refine trajectories, erroneous turns masked"),
    "refine_nomask": Arm("refine_nomask", "refine", False, "the same rows, erroneous turns trained (--no_mask)"),
    "mix": Arm("mix", "mix", True, "both rows of every train world: the refinement trajectory with its clean steps, "
                                  "erroneous turns masked"),
}
CONDITIONS = ("none", "parameter_error", "place_error", "logic_error")
"""Each evaluation world is played once as is and once per injected mistake kind."""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class StudyConfig:
    """Everything that defines a study run (the command line, typed)."""

    out: Path
    model: str = SCRATCH
    n_train: int = 360
    n_heldout: int = 24
    n_unseen: int = 24
    n_trainprobe: int = 24
    # Three trained generators and two never trained on, all in one action vocabulary: the paper credits the
    # diversity of its environments for generalization, and judges on task families it never trained on
    # (worldsets.GENERATORS says why these).
    kinds: tuple[str, ...] = ("coin_collector", "coin_collector_long", "treasure_hunter")
    unseen_kinds: tuple[str, ...] = ("treasure_hunter_long", "coin_collector_xl")
    errors: int = 2
    seeds: tuple[int, ...] = (0, 1, 2)
    arms: tuple[str, ...] = tuple(ARMS)
    # Every arm takes the same optimizer steps of the same batch size (its data decides how many epochs that is:
    # the mix arm has twice the rows). Sized to the budget: 12 trainings and 12 evaluations in about 90 minutes on
    # 2 AVX2 cores, where one step of 4 rows takes about 1 s in float32 (2026-12-03). The 2026-11-26 default
    # (1,200 steps at lr 1.4e-3) needed a machine with native bf16, 3x this rate.
    steps: int = 300
    batch_size: int = 4
    learning_rate: float = 2e-3
    adam_beta2: float = 0.95  # the GPU loop's (and nanoGPT's) value; TRL's default 0.999 was not compared alone
    # bf16 autocast where the hardware has it (a GPU, or a CPU with AVX512-BF16/AMX: 1.85x the float32 rate on
    # one such machine); float32 elsewhere: on an AVX2-only CPU bf16 is emulated, 11.3x *slower* than float32
    # (30 steps of the study's student: 350 s against 31 s, 2026-12-03)
    bf16: bool = field(default_factory=lambda: native_bf16("cpu"))
    max_length: int = 2048
    device: str = "cpu"
    max_steps: int = 12  # replies per episode: the longest (coin_collector_xl) worlds take 9 actions, 11 with a
    # mistake and its fix
    max_tokens: int = 128
    inject_step: int = 2
    workers: int = 32
    eval_worlds: int | None = None  # at most this many worlds of each evaluation split (None: all)
    threads: int | None = None
    parallel: int = 1  # training runs at once: 1 on a CPU (each uses every core); several fit one GPU
    python: str = sys.executable

    @property
    def scratch(self) -> bool:
        return self.model == SCRATCH

    def plan(self) -> WorldPlan:
        return WorldPlan(self.n_train, self.n_heldout, self.n_unseen, self.kinds, self.unseen_kinds, self.errors,
                         n_trainprobe=min(self.n_trainprobe, self.n_train))


QUICK = {"n_train": 24, "n_heldout": 6, "n_unseen": 4, "n_trainprobe": 3, "seeds": (0,), "steps": 6, "workers": 8,
         "max_steps": 5, "max_tokens": 64, "eval_worlds": None}
"""``--quick``: every stage end to end in a few minutes (the slow test suite); the numbers mean nothing."""


def native_bf16(device: str) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU, or a CPU whose flags list AVX512-BF16 or AMX-BF16."""
    if device == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: float32, the safe choice
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def validate(cfg: StudyConfig) -> None:
    """Refuse settings that cannot work, naming the option."""
    for name in ("n_train", "n_heldout", "steps", "batch_size", "max_steps", "max_tokens", "errors", "workers"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}", field=name)
    for name in ("n_unseen", "n_trainprobe"):
        if getattr(cfg, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0", field=name)
    if not cfg.seeds:
        raise InputError("--seeds is empty", field="seeds")
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown or not cfg.arms:
        raise InputError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}", field="arms")
    bad = [k for k in (*cfg.kinds, *cfg.unseen_kinds) if k not in GENERATORS]
    if bad or not cfg.kinds:
        raise InputError(f"unknown world generator(s) {bad}; choose from {', '.join(GENERATORS)}", field="kinds")
    if cfg.n_unseen and not cfg.unseen_kinds:
        raise InputError("--n-unseen needs --unseen-kinds", field="unseen_kinds")
    both = sorted(set(cfg.unseen_kinds) & set(cfg.kinds))
    if both:
        raise InputError(f"--unseen-kinds {', '.join(both)} also trained (--kinds)", field="unseen_kinds")
    if not 1 <= cfg.inject_step < cfg.max_steps:
        raise InputError("--inject-step must be between 1 and --max-steps - 1", field="inject_step")
    if cfg.threads is not None and cfg.threads < 1:
        raise InputError("--threads must be at least 1", field="threads")
    if cfg.parallel < 1:
        raise InputError("--parallel must be at least 1", field="parallel")


# ---------------------------------------------------------------------------------------------- paths and plan


def data_dir(cfg: StudyConfig) -> Path:
    return cfg.out / "data"


def student_dir(cfg: StudyConfig) -> Path:
    return cfg.out / "student"


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def train_dir(cfg: StudyConfig, arm: str, seed: int) -> Path:
    return cfg.out / "train" / run_name(arm, seed)


def eval_file(cfg: StudyConfig, arm: str, seed: int) -> Path:
    return cfg.out / "eval" / f"{run_name(arm, seed)}.jsonl"


def base_model(cfg: StudyConfig) -> str:
    return str(student_dir(cfg)) if cfg.scratch else cfg.model


def train_command(cfg: StudyConfig, arm: str, seed: int) -> list[str]:
    """``python -m training.sft`` for one arm: identical for every arm but ``--data`` and ``--no_mask``."""
    spec = ARMS[arm]
    cmd = [cfg.python, "-m", "training.sft", "--model", base_model(cfg),
           "--data", str(data_dir(cfg) / f"{spec.data}.jsonl"), "--output_dir", str(train_dir(cfg, arm, seed)),
           "--seed", str(seed), "--max_steps", str(cfg.steps),
           "--per_device_train_batch_size", str(cfg.batch_size), "--gradient_accumulation_steps", "1",
           "--learning_rate", str(cfg.learning_rate), "--lr_scheduler_type", "cosine", "--warmup_steps", "30",
           "--adam_beta2", str(cfg.adam_beta2), "--bf16", str(cfg.bf16).lower(),
           "--max_length", str(cfg.max_length), "--save_strategy", "no", "--logging_steps", "5", "--no_plot"]
    if cfg.scratch:
        cmd += ["--method", "full", "--weight_decay", "0.01"]
    else:
        cmd += ["--method", "lora", "--lora_r", "16", "--lora_alpha", "32", "--lora_target_modules", *LORA_TARGETS]
    if cfg.device == "cpu":
        cmd += ["--use_cpu", "true"]
    if not spec.mask:
        cmd.append("--no_mask")
    return cmd


STAGE_KINDS = ("data", "student", "train", "eval", "report")


@dataclass
class Stage:
    name: str
    kind: str  # data | student | train | eval | report
    arm: str | None = None
    seed: int | None = None
    command: list[str] | None = None


def build_plan(cfg: StudyConfig) -> list[Stage]:
    stages = [Stage("data", "data")]
    if cfg.scratch:
        stages.append(Stage("student", "student"))
    for seed in cfg.seeds:
        for arm in cfg.arms:
            stages.append(Stage(f"train {arm} s{seed}", "train", arm, seed, train_command(cfg, arm, seed)))
    for seed in cfg.seeds:
        for arm in cfg.arms:
            stages.append(Stage(f"eval {arm} s{seed}", "eval", arm, seed))
    stages.append(Stage("report", "report"))
    return stages


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _portable(cmd: Sequence[str]) -> list[str]:
    """The command without the interpreter path, so a resume under another venv is the same command."""
    return ["python", *cmd[1:]] if cmd and cmd[0] == sys.executable else list(cmd)


def eval_jobs(cfg: StudyConfig) -> list[tuple[str, int, str]]:
    """(split, world index, condition) of every evaluation episode, in a fixed order."""
    worlds = data_dir(cfg) / "eval_worlds.jsonl"
    jobs = []
    for split, n in eval_splits(cfg):
        count = len(load_worlds(worlds, split))
        if cfg.eval_worlds is not None:
            count = min(count, cfg.eval_worlds)
        conditions = ("none",) if split == PROBE_SPLIT else CONDITIONS  # the probe asks how it starts, uninjected
        jobs += [(split, i, c) for i in range(count) for c in conditions]
    return jobs


def eval_splits(cfg: StudyConfig) -> list[tuple[str, int]]:
    """The evaluation splits this run plays, with their planned sizes."""
    sizes = (("heldout", cfg.n_heldout), ("unseen", cfg.n_unseen), (PROBE_SPLIT, min(cfg.n_trainprobe, cfg.n_train)))
    return [(split, n) for split, n in sizes if n]


def _job_key(row: Mapping[str, Any]) -> tuple[str, int, str]:
    return row["split"], int(row["episode"]), row["condition"]


def stage_done(cfg: StudyConfig, stage: Stage) -> bool:
    if stage.kind == "data":
        manifest = _read_json(data_dir(cfg) / "manifest.json")
        if manifest is not None and manifest.get("config") != cfg.plan().fingerprint():
            raise InputError(f"{data_dir(cfg)} holds worlds made with other settings; use another --out", field="out")
        return manifest is not None
    if stage.kind == "student":
        return (student_dir(cfg) / "tiny_model.json").is_file()
    if stage.kind == "train":
        folder = train_dir(cfg, stage.arm, stage.seed)  # type: ignore[arg-type]
        recorded = _read_json(folder / "study_command.json")
        if recorded is not None and recorded != _portable(stage.command or []):
            raise InputError(f"{folder} was trained with another command ({shlex.join(recorded)}); use another --out",
                             field="out")
        return recorded is not None and (folder / "train_log.json").is_file() and \
            (folder / "merged" / "config.json").is_file()
    if stage.kind == "eval":
        path = eval_file(cfg, stage.arm, stage.seed)  # type: ignore[arg-type]
        if not path.is_file() or not (data_dir(cfg) / "eval_worlds.jsonl").is_file():
            return False
        done = {_job_key(r) for r in read_rows(path)}
        return all(job in done for job in eval_jobs(cfg))
    return False


# ---------------------------------------------------------------------------------------------- stages


def child_env(cfg: StudyConfig) -> dict[str, str]:
    """The training subprocess's environment: offline, CPU-only when asked, thread cap."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if cfg.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if cfg.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg.threads)
    return env


def run_data(cfg: StudyConfig, stage: Stage, log: Callable[[str], None]) -> None:
    manifest = generate_worlds(cfg.plan(), data_dir(cfg), workers=2, log=log)
    log(f"[data] worlds per split and kind: {manifest['kinds']}; skipped {manifest['skipped']}")


def run_student(cfg: StudyConfig, stage: Stage, log: Callable[[str], None]) -> None:
    from training.tiny import build_student

    folder = build_student(student_dir(cfg), [data_dir(cfg) / "clean.jsonl", data_dir(cfg) / "refine.jsonl"])
    info = _read_json(folder / "tiny_model.json")
    log(f"[student] {info['parameters'] / 1e6:.2f} M parameters, vocabulary {info['vocab_actual']}: {folder}")


def run_training(cfg: StudyConfig, stage: Stage, log: Callable[[str], None]) -> None:
    """``python -m training.sft`` as a subprocess; its output goes to ``<train dir>/train.out``."""
    assert stage.command is not None and stage.arm is not None and stage.seed is not None
    folder = train_dir(cfg, stage.arm, stage.seed)
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[{stage.name}] {shlex.join(_portable(stage.command))}")
    with (folder / "train.out").open("w", encoding="utf-8") as fh:
        code = subprocess.run(stage.command, cwd=ROOT, env=child_env(cfg), stdout=fh, stderr=subprocess.STDOUT,
                              check=False).returncode
    if code != 0:
        tail = (folder / "train.out").read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise AgentRefineError(f"{stage.name} failed (exit {code}); see {folder / 'train.out'}:\n" + "\n".join(tail))
    (folder / "study_command.json").write_text(json.dumps(_portable(stage.command)), encoding="utf-8")
    tl = _read_json(folder / "train_log.json") or {}
    steps = tl.get("steps") or []
    if steps:
        log(f"[{stage.name}] loss {steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f} in {len(steps)} logged steps")


def run_eval(cfg: StudyConfig, stage: Stage, log: Callable[[str], None]) -> None:
    """Every evaluation episode of one tuned model, ``cfg.workers`` at a time (their replies batched)."""
    from agentrefine_lg.serving.local_model import release_local_model

    assert stage.arm is not None and stage.seed is not None
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    path = eval_file(cfg, stage.arm, stage.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {_job_key(r) for r in read_rows(path)} if path.is_file() else set()
    todo = [job for job in eval_jobs(cfg) if job not in done]
    worlds = data_dir(cfg) / "eval_worlds.jsonl"
    model_dir = str(train_dir(cfg, stage.arm, stage.seed) / "merged")
    spec = ModelSpec(local=model_dir, max_tokens=cfg.max_tokens, device=cfg.device)
    lock, started, finished = threading.Lock(), time.monotonic(), [0]
    store = JsonlFile(path)

    def one(job: tuple[str, int, str]) -> None:
        split, index, condition = job
        inject = None if condition == "none" else Injection(condition, cfg.inject_step)
        row = run_episode("textworld", index, model=spec, seed=stage.seed, max_steps=cfg.max_steps,  # type: ignore[arg-type]
                          options={"worlds": str(worlds), "split": split, "cache_dir": str(data_dir(cfg) / "games")},
                          inject=inject)
        world = load_worlds(worlds, split)[index]
        row.update(arm=stage.arm, split=split, condition=condition, world=world["game"], kind=world["kind"])
        with lock:
            store.append([row])
            finished[0] += 1
            if finished[0] % 40 == 0 or finished[0] == len(todo):
                log(f"[{stage.name}] {finished[0]}/{len(todo)} episodes, {time.monotonic() - started:.0f}s")

    try:
        with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
            for future in [pool.submit(one, job) for job in todo]:
                future.result()  # an engine or model failure stops the stage (rerun resumes)
    finally:
        store.close()
        # nine models are evaluated in one process: each one's weights and cached conversations go with its stage
        release_local_model(model_dir, cfg.device)


# ---------------------------------------------------------------------------------------------- report


DIFFS = (("mix", "bc"), ("refine", "bc"), ("mix", "refine"), ("refine", "refine_nomask"), ("refine_nomask", "bc"))
"""The paired differences the report shows (a - b, the same worlds)."""


def collect(cfg: StudyConfig) -> dict[str, Any]:
    """Estimates per arm, split and condition, and the paired differences between arms (worlds resampled)."""
    values: dict[str, list[dict[str, Any]]] = {}
    planned = set(eval_jobs(cfg))  # rows beyond the planned worlds (a larger earlier run) are left out
    for arm in cfg.arms:
        for seed in cfg.seeds:
            path = eval_file(cfg, arm, seed)
            if path.is_file():
                values.setdefault(arm, []).extend(episode_values(r) for r in read_rows(path) if _job_key(r) in planned)
    return compare_arms(values, [s for s, _ in eval_splits(cfg)], CONDITIONS, DIFFS)


def _pct(e: Mapping[str, Any] | None, signed: bool = False) -> str:
    if not e or e.get("value") is None or (isinstance(e["value"], float) and math.isnan(e["value"])):
        return "–"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    return f"{fmt.format(100 * e['value'])} [{fmt.format(100 * e['low'])}, {fmt.format(100 * e['high'])}]"


SPLIT_TITLES = {"heldout": "held-out worlds of the trained kinds", "unseen": "held-out worlds of kinds never trained on",
                PROBE_SPLIT: "train worlds, played as evaluation worlds (the probe)"}


def markdown(results: Mapping[str, Any]) -> str:
    lines: list[str] = []
    table = results["table"]
    for split in dict.fromkeys(r["split"] for r in table):
        title = SPLIT_TITLES.get(split, split)
        lines += [f"### {title} (`{split}`)", "", "Uninjected episodes:", "",
                  "| arm | N worlds | " + " | ".join(label for _, label in UNINJECTED) + " |",
                  "|---|---|" + "---|" * len(UNINJECTED)]
        for r in table:
            if r["split"] == split and r["condition"] == "none":
                lines.append(f"| {r['arm']} | {r['success']['n']} | " + " | ".join(_pct(r[m]) for m, _ in UNINJECTED) + " |")
        kinds = [r for r in results.get("by_kind", []) if r["split"] == split]
        if len({r["kind"] for r in kinds}) > 1:
            lines += ["", "Uninjected success by game kind:", "", "| arm | kind | N worlds | success % |",
                      "|---|---|---|---|"]
            lines += [f"| {r['arm']} | {r['kind']} | {r['success']['n']} | {_pct(r['success'])} |" for r in kinds]
        injected = [r for r in table if r["split"] == split and r["condition"] != "none"]
        if injected:
            lines += ["", "Injected mistakes (at the given reply the agent's action is replaced by one of the kind):", "",
                      "| kind | arm | N worlds (injected episodes) | " + " | ".join(label for _, label in INJECTED) + " |",
                      "|---|---|---|" + "---|" * len(INJECTED)]
        for r in injected:
            lines.append(f"| {r['condition']} | {r['arm']} | {r['recovered']['n']} ({r['applied']}) | "
                         + " | ".join(_pct(r[m]) for m, _ in INJECTED) + " |")
        lines += ["", "Paired differences (same worlds; points, 95% bootstrap CI over worlds):", "",
                  "| condition | metric | difference | value [CI] | N worlds |", "|---|---|---|---|---|"]
        for d in results["diffs"]:
            if d["split"] == split and d["metric"] in ("success", "progress", "invalid_rate", "first_valid", "recovered",
                                                       "repeated", "success_after"):
                lines.append(f"| {d['condition']} | {d['metric']} | {d['a']} − {d['b']} | {_pct(d, signed=True)} | {d['n']} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Mapping[str, Any], path: Path, *, title: str) -> Path:
    """Recovery and repeat rate per mistake kind and arm (held-out worlds of the trained kinds, and unseen),
    plus uninjected success, with 95% bootstrap CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = results["table"]
    splits = [s for s in dict.fromkeys(r["split"] for r in table) if s != PROBE_SPLIT]
    arms = list(dict.fromkeys(r["arm"] for r in table))
    panels = [("recovered", "recovery rate"), ("repeated", "repeat rate"), ("success", "success (uninjected)")]
    fig, axes = plt.subplots(len(splits), len(panels), figsize=(4.2 * len(panels), 3.4 * len(splits)), squeeze=False)
    width = 0.8 / max(1, len(arms))
    for i, split in enumerate(splits):
        for j, (metric, label) in enumerate(panels):
            ax = axes[i][j]
            groups = ["none"] if metric == "success" else list(CONDITIONS[1:])
            for k, arm in enumerate(arms):
                xs, ys, lo, hi = [], [], [], []
                for g, cond in enumerate(groups):
                    r = next((r for r in table if r["split"] == split and r["arm"] == arm and r["condition"] == cond), None)
                    e = r.get(metric) if r else None
                    if not e or e["value"] is None or math.isnan(e["value"]):
                        continue
                    xs.append(g - 0.4 + width * (k + 0.5))
                    ys.append(100 * e["value"])
                    lo.append(max(0.0, 100 * (e["value"] - e["low"])))
                    hi.append(max(0.0, 100 * (e["high"] - e["value"])))
                ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=arm)
                for x, y, up in zip(xs, ys, hi):  # above the interval's top, where the error bar cannot hide it
                    ax.text(x, y + up + 1, f"{y:.0f}", ha="center", va="bottom", fontsize=6)
            ax.set_xticks(range(len(groups)), [g.replace("_error", "") if g != "none" else "no injection" for g in groups],
                          fontsize=8)
            ax.set_ylim(0, 110)
            ax.set_title(f"{label} — {split}", fontsize=9)
            if j == 0:
                ax.set_ylabel("% (95% bootstrap CI over worlds)", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_summary(cfg: StudyConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for seed in cfg.seeds:
        for arm in cfg.arms:
            tl = _read_json(train_dir(cfg, arm, seed) / "train_log.json")
            if not tl:
                continue
            steps = tl.get("steps") or []
            ref = tl.get("refinement") or {}
            rows, opt_steps = tl.get("train_rows"), steps[-1]["step"] if steps else None
            batch = ((tl.get("args") or {}).get("per_device_train_batch_size") or cfg.batch_size)
            # rows seen = steps x batch; each pass over the data trains ref["trainable_tokens"] tokens
            passes = (opt_steps * batch / rows) if rows and opt_steps else None
            trained_seen = round(ref["trainable_tokens"] * passes) if passes and ref.get("trainable_tokens") else None
            out[run_name(arm, seed)] = {
                "rows": rows, "tokens": ref.get("tokens"), "trainable_tokens": ref.get("trainable_tokens"),
                "optimizer_steps": opt_steps, "passes": passes, "tokens_seen": tl.get("tokens_seen"),
                "trained_tokens_seen": trained_seen,
                "first_loss": steps[0]["loss"] if steps else None, "final_loss": steps[-1]["loss"] if steps else None,
                "train_runtime_s": tl.get("train_runtime_s"), "tokens_per_s": tl.get("tokens_per_second")}
    return out


def data_stats(cfg: StudyConfig) -> dict[str, Any]:
    """What each dataset supervises (issue 25, item 1): assistant turns trained and how many of them follow an
    error-free history (the only history an uninjected episode has), rows whose first turn is trained, and at
    which Player turn the mistakes sit."""
    out: dict[str, Any] = {}
    for arm in cfg.arms:
        dataset = ARMS[arm].data
        path = data_dir(cfg) / f"{dataset}.jsonl"
        if not path.is_file() or dataset in out:
            continue
        rows = turns = trained = clean_trained = first_trained = 0
        positions: dict[int, int] = {}
        for sample in read_samples(path):
            rows += 1
            replies = [m for m in sample.messages if m.role == "assistant"]
            turns += len(replies)
            erred = False
            for i, m in enumerate(replies):
                if m.train:
                    trained += 1
                    clean_trained += not erred
                else:
                    positions[i + 1] = positions.get(i + 1, 0) + 1
                    erred = True
            first_trained += bool(replies) and bool(replies[0].train)
        out[dataset] = {"rows": rows, "assistant_turns": turns, "trained_turns": trained,
                        "trained_from_error_free_history": clean_trained, "rows_first_turn_trained": first_trained,
                        "mistake_at_player_turn": dict(sorted(positions.items()))}
    return out


def write_report(cfg: StudyConfig, timings: Mapping[str, Any], log: Callable[[str], None], *,
                 docs: bool = False) -> Path:
    results = collect(cfg)
    manifest = _read_json(data_dir(cfg) / "manifest.json") or {}
    student = _read_json(student_dir(cfg) / "tiny_model.json") if cfg.scratch else None
    training = training_summary(cfg)
    stats = data_stats(cfg)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "python"}
    (cfg.out / "results.json").write_text(json.dumps(
        {"config": config, **results, "data": manifest, "data_stats": stats, "student": student, "training": training,
         "timings": dict(timings)}, indent=2, default=str), encoding="utf-8")
    title = (f"{'from-scratch student' if cfg.scratch else cfg.model}: {cfg.n_train} train worlds, arms x seeds "
             f"{','.join(map(str, cfg.seeds))}, mistake injected at reply {cfg.inject_step}")
    png = plot(results, cfg.out / "study.png", title=title) if results["table"] else None
    body = report_text(cfg, results, manifest, student, training, timings, stats)
    report = cfg.out / "report.md"
    report.write_text(body, encoding="utf-8")
    if docs and png is not None:
        (ROOT / "docs" / "method_study.png").write_bytes(png.read_bytes())
        (ROOT / "docs" / "method_study_results.md").write_text(body.replace("(study.png)", "(method_study.png)"),
                                                                encoding="utf-8")
        log("[report] docs/method_study_results.md and docs/method_study.png written")
    return report


def report_text(cfg: StudyConfig, results: Mapping[str, Any], manifest: Mapping[str, Any], student: Any,
                training: Mapping[str, Any], timings: Mapping[str, Any], stats: Mapping[str, Any] | None = None) -> str:
    kinds = manifest.get("kinds") or {}
    lines = [
        "# Refinement tuning vs behaviour cloning, measured (issues 16 and 25)", "",
        f"Command: `{shlex.join(['python', os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])}` (settings below).", "",
        "## Setup", "",
        f"- **Worlds** (grounded teacher, TextWorld, split by world): train {kinds.get('train')}, held-out of the "
        f"trained kinds {kinds.get('heldout')}, held-out of an unseen kind {kinds.get('unseen')}. Each train world "
        f"gives a clean row and an error->refine row ({cfg.errors} mistakes, each flagged and refined), both checked "
        f"by our rules. Skipped while generating: {manifest.get('skipped')}.",
        (f"- **Student**: a Llama trained from scratch, {student['parameters'] / 1e6:.2f} M parameters "
         f"({student['config']['num_hidden_layers']} layers, hidden {student['config']['hidden_size']}), byte-level "
         f"BPE of {student['vocab_actual']} tokens trained on the rows." if student else f"- **Model**: `{cfg.model}`, LoRA."),
        (f"- **Training**: `python -m training.sft`, {cfg.steps} optimizer steps of {cfg.batch_size} rows for every "
         f"arm, lr {cfg.learning_rate} (cosine), AdamW β₂ {cfg.adam_beta2}, "
         f"{'bf16 autocast' if cfg.bf16 else 'float32'} on {cfg.device}, seeds {', '.join(map(str, cfg.seeds))}; "
         "every arm the same worlds."
         if not any(t.get("where") for t in training.values()) else
         f"- **Training**: elsewhere (see the training runs below), seeds {', '.join(map(str, cfg.seeds))}; every "
         "arm the same worlds and optimizer steps."),
        f"- **Evaluation**: the refine-agent graph with the tuned model in-process, greedy, replies capped at "
        f"{cfg.max_tokens} tokens, at most {cfg.max_steps} replies. Every evaluation world is played as is and once per "
        f"mistake kind injected at reply {cfg.inject_step}. Recovery = the next action is accepted and is not the "
        f"injected one; repeat = the next action is the injected one again.",
        "- **Statistics**: an arm's value on a world is its mean over seeds; intervals are 95% percentile bootstraps "
        "over worlds; differences between arms are paired (the same worlds resampled for both).", "",
        "## What each dataset supervises", "",
        "| dataset | rows | assistant turns | trained | trained from an error-free history | rows whose first turn "
        "is trained | mistakes at Player turn (1-based: count) |", "|---|---|---|---|---|---|---|"]
    for dataset, d in (stats or {}).items():
        where = ", ".join(f"{k}: {v}" for k, v in d["mistake_at_player_turn"].items()) or "none"
        lines.append(f"| {dataset} | {d['rows']} | {d['assistant_turns']} | {d['trained_turns']} | "
                     f"{d['trained_from_error_free_history']} | {d['rows_first_turn_trained']} | {where} |")
    lines += [
        "", "## Training runs", "",
        "| run | rows | trained tokens per pass | optimizer steps | passes | trained tokens seen | tokens seen | "
        "loss first → last | seconds | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for name, t in training.items():
        loss = (f"{t['first_loss']:.2f} → {t['final_loss']:.2f}" if t["first_loss"] is not None
                else f"→ {t['final_loss']:.2f}" if t.get("final_loss") is not None else "–")
        passes = f"{t['passes']:.1f}" if t.get("passes") else "–"
        lines.append(f"| {name} | {t['rows']} | {t['trainable_tokens']} | {t['optimizer_steps']} | {passes} | "
                     f"{t.get('trained_tokens_seen') or '–'} | {t.get('tokens_seen') or '–'} | {loss} | "
                     f"{(t['train_runtime_s'] or 0):.0f} | {(t['tokens_per_s'] or 0):.0f} |")
    where = sorted({t["where"] for t in training.values() if t.get("where")})
    if where:
        lines += ["", f"These runs were trained on {'; '.join(where)}: a plain PyTorch loop over the same rows, masks, "
                      "tokenizer and initial student, not `training.sft` (the GPU machine's image has no TRL); the "
                      "evaluation below ran here, with the study's own harness."]
    lines += ["", "## Results", "", markdown(results), "![study](study.png)", ""]
    if timings:
        lines += ["## Wall time per stage", "", "| stage | seconds |", "|---|---|"]
        total = 0.0
        for name, t in timings.items():
            lines.append(f"| {name} | {t.get('seconds', 0):.0f} |")
            total += float(t.get("seconds", 0))
        lines += [f"| **total** | {total:.0f} |", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- driver


RUNNERS: dict[str, Callable[[StudyConfig, Stage, Callable[[str], None]], None]] = {
    "data": run_data, "student": run_student, "train": run_training, "eval": run_eval}


def run_study(cfg: StudyConfig, *, log: Callable[[str], None] = print, docs: bool = False,
              kinds: Sequence[str] = STAGE_KINDS) -> dict[str, Any]:
    """Run every stage of ``kinds`` not done yet, in order (training runs ``cfg.parallel`` at a time); returns
    the timings (also in ``<out>/timings.json``). ``kinds=("eval", "report")`` evaluates arms trained elsewhere
    (``--stages train`` on a GPU machine, through ``training.sft``)."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    timings_path = cfg.out / "timings.json"
    timings: dict[str, Any] = _read_json(timings_path) or {}
    lock = threading.Lock()

    def run(stage: Stage) -> None:
        started = time.monotonic()
        RUNNERS[stage.kind](cfg, stage, log)
        with lock:  # parallel training runs finish in any order; the file always holds every finished one
            elapsed = time.monotonic() - started + float(timings.get(stage.name, {}).get("seconds", 0.0))
            timings[stage.name] = {"seconds": round(elapsed, 1)}
            timings_path.write_text(json.dumps(timings, indent=2), encoding="utf-8")
        log(f"[{stage.name}] finished in {elapsed:.0f}s")

    plan = [stage for stage in build_plan(cfg) if stage.kind in kinds]
    for stage in plan:
        if stage.kind == "report":
            report = write_report(cfg, timings, log, docs=docs)
            log(f"[report] {report}")
            break
        if stage_done(cfg, stage):
            log(f"[{stage.name}] done already; skipped")
            continue
        if stage.kind == "train" and cfg.parallel > 1:
            batch = [s for s in plan if s.kind == "train" and not stage_done(cfg, s)]
            with ThreadPoolExecutor(cfg.parallel) as pool:
                list(pool.map(run, batch))  # the first failure is raised once the others have ended
            continue
        run(stage)
    return timings


def describe_plan(cfg: StudyConfig) -> str:
    lines = []
    for stage in build_plan(cfg):
        status = "done" if stage.kind != "report" and stage_done(cfg, stage) else "todo"
        extra = f": {shlex.join(_portable(stage.command))}" if stage.command else ""
        lines.append(f"[{status}] {stage.name}{extra}")
    return "\n".join(lines)
