"""A real small model, measured: does refinement tuning cut repeated mistakes on held-out tasks?

One command runs the AgentRefine paper's comparison at the smallest scale (Gemma 3 270M by default)::

    python examples/small_model_study/run.py --out runs/study

Four arms, the same held-out tasks, the same grounded-teacher worlds and the same training budget:

- ``base``: the untuned model;
- ``bc``: behaviour cloning on *clean* trajectories of the same worlds (the grounded Player with no mistakes,
  verified with ``check_trajectory(min_pairs=0)``; the AgentGym-style baseline);
- ``refine``: refinement tuning on error->refine trajectories of the same worlds, erroneous turns masked;
- ``refine_nomask``: the same refinement data trained with ``--no_mask`` (the paper's ablation).

Stages (each skipped when its outputs are complete, so re-running resumes): ``data`` (both datasets, one
verified world per persona, kept only when both rows fit ``--max-length``), ``train <arm> s<seed>``
(``python -m training.sft`` as a subprocess, LoRA on every linear projection, the same seed and optimizer steps
for every arm), ``eval <arm> s<seed>`` (the arm served on loopback with the transformers backend, the package's
harness ``run_eval`` with greedy decoding and a token cap; the harness itself resumes per episode), and
``report`` (``report.md``, ``results.json``, ``study.png``). ``--dry-run`` prints the plan and what is done.

``--device cuda`` moves serving to the GPU and lets training use it (TRL picks it up); ``--device cpu`` hides
GPUs from training. Nothing here depends on a particular torch build or Python minor version beyond the
package's own requirements.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a file from anywhere: the package and training/ live at the repo root
    sys.path.insert(0, str(ROOT))

from agentrefine_lg.errors import AgentRefineError, InputError

# ---------------------------------------------------------------------------------------------- arms


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison: which dataset it trains on (None: untuned) and whether errors are masked."""

    name: str
    data: str | None  # "clean" | "refine" | None
    mask: bool
    description: str


ARMS: dict[str, Arm] = {
    "base": Arm("base", None, True, "untuned base model"),
    "bc": Arm("bc", "clean", True, "behaviour cloning on clean trajectories of the same worlds"),
    "refine": Arm("refine", "refine", True, "refinement tuning, erroneous turns masked"),
    "refine_nomask": Arm("refine_nomask", "refine", False, "same refinement data, erroneous turns trained (--no_mask)"),
}
DATASETS = ("clean", "refine")
MAX_VARIANTS = 10  # worlds per persona at most (the built-in list has ~230 personas)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""Every linear projection of a Llama/Gemma/Qwen-style block: attention and MLP (not the embeddings/lm_head)."""

METRICS: tuple[tuple[str, str], ...] = (
    ("format_error_rate", "format error %"),
    ("invalid_action_rate", "invalid action %"),
    ("repeated_mistake_rate", "repeated mistake %"),
    ("success_rate", "success %"),
    ("progress_rate", "progress %"),
)
# Small worlds: short walks and few objects keep a whole trajectory (system prompt included) near 1k tokens.
SMALL_WORLDS: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "coin_collector": lambda rng: {"level": rng.randint(1, 3)},
    "custom": lambda rng: {"nb_rooms": rng.randint(1, 2), "nb_objects": rng.randint(2, 3), "quest_length": 3},
    "treasure_hunter": lambda rng: {"level": rng.randint(1, 3)},
}


# ---------------------------------------------------------------------------------------------- configuration


@dataclass
class StudyConfig:
    """Everything that defines a study run (the command line, typed)."""

    out: Path
    model: str = "gemma-3-270m"
    n_train: int = 8
    episodes: int = 6
    tasks: tuple[str, ...] = ("babyai", "pddl")
    seeds: tuple[int, ...] = (0,)
    device: str = "cpu"
    max_steps: int = 6
    max_tokens: int = 80
    arms: tuple[str, ...] = tuple(ARMS)
    epochs: int = 2
    batch_size: int = 1
    learning_rate: float = 1e-3
    lora_r: int = 16
    lora_alpha: int = 32
    max_length: int = 1024
    kinds: tuple[str, ...] = ("coin_collector", "custom")
    errors: int = 2  # mistakes per refinement trajectory (each one refined: that many error->refine pairs)
    teacher_seed: int = 0
    threads: int | None = None
    cache_dir: Path | None = None  # generated TextWorld games (default: <out>/data/worlds)
    python: str = sys.executable

    @property
    def optimizer_steps(self) -> int:
        """The same number of optimizer steps for every trained arm (passed as ``--max_steps``)."""
        return self.epochs * math.ceil(self.n_train / self.batch_size)

    def data_fingerprint(self) -> dict[str, Any]:
        return {"model": self.model, "n_train": self.n_train, "max_length": self.max_length, "kinds": list(self.kinds),
                "errors": self.errors, "teacher_seed": self.teacher_seed}


def parse_args(argv: Sequence[str] | None = None) -> tuple[StudyConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(
        prog="python examples/small_model_study/run.py",
        description="base vs behaviour cloning vs refinement tuning (masked / unmasked) on held-out tasks, "
                    "with the same grounded-teacher worlds and training budget per arm. Re-run to resume.")
    p.add_argument("--out", required=True, help="output folder (resumable), e.g. runs/study")
    p.add_argument("--model", default="gemma-3-270m", help="base model: alias, local folder or hub id")
    p.add_argument("--n-train", type=int, default=8, help="training trajectories per arm (same worlds; default 8)")
    p.add_argument("--episodes", type=int, default=6, help="evaluation episodes per task and seed (default 6)")
    p.add_argument("--tasks", default="babyai,pddl", help="held-out tasks, comma-separated (default babyai,pddl)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds: training seed and evaluation episode seed "
                                                "of each replicate (default 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available, else cpu")
    p.add_argument("--max-steps", type=int, default=6, help="actions per evaluation episode (default 6)")
    p.add_argument("--max-tokens", type=int, default=80, help="reply token cap at evaluation (default 80: the longest "
                                                                 "training reply, a first turn restating the goal, is 81 tokens)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"arms to run (default {','.join(ARMS)})")
    p.add_argument("--epochs", type=int, default=2, help="passes over the N rows (default 2)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=1e-3, help="LoRA learning rate (default 1e-3)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--lora-alpha", type=int, default=32)
    p.add_argument("--max-length", type=int, default=1024, help="training sequence length; worlds whose rows "
                                                                "do not fit are skipped (default 1024)")
    p.add_argument("--kinds", default="coin_collector,custom",
                   help=f"grounded game kinds, small settings ({', '.join(SMALL_WORLDS)}; default coin_collector,custom)")
    p.add_argument("--errors", type=int, default=2, help="mistakes (error->refine pairs) per refinement trajectory")
    p.add_argument("--teacher-seed", type=int, default=0, help="seed of the grounded Player's mistakes")
    p.add_argument("--threads", type=int, default=None, help="torch threads for training and serving "
                                                             "(default: torch's; use 1 on a loaded machine)")
    p.add_argument("--cache-dir", help="where generated TextWorld games are cached (default <out>/data/worlds)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (stages, commands, done/todo) and exit")
    args = p.parse_args(argv)

    def ints(text: str, what: str) -> tuple[int, ...]:
        try:
            values = tuple(int(x) for x in text.split(",") if x.strip())
        except ValueError:
            raise InputError(f"--{what} must be comma-separated integers, got {text!r}", field=what) from None
        if not values:
            raise InputError(f"--{what} is empty", field=what)
        return tuple(dict.fromkeys(values))

    names = lambda text: tuple(dict.fromkeys(x.strip() for x in text.split(",") if x.strip()))
    cfg = StudyConfig(
        out=Path(args.out), model=args.model, n_train=args.n_train, episodes=args.episodes, tasks=names(args.tasks),
        seeds=ints(args.seeds, "seeds"), device=args.device or _default_device(), max_steps=args.max_steps,
        max_tokens=args.max_tokens, arms=names(args.arms), epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, lora_r=args.lora_r, lora_alpha=args.lora_alpha, max_length=args.max_length,
        kinds=names(args.kinds), errors=args.errors, teacher_seed=args.teacher_seed, threads=args.threads,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    validate(cfg)
    return cfg, args


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency of training
        return "cpu"


def validate(cfg: StudyConfig) -> None:
    """Refuse settings that cannot work, naming the option."""
    for name in ("n_train", "episodes", "max_steps", "max_tokens", "epochs", "batch_size", "lora_r", "errors"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}", field=name)
    if cfg.max_length < 128:
        raise InputError(f"--max-length {cfg.max_length} is too small for a system prompt and a turn", field="max_length")
    unknown = [a for a in cfg.arms if a not in ARMS]
    if unknown or not cfg.arms:
        raise InputError(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}", field="arms")
    bad = [k for k in cfg.kinds if k not in SMALL_WORLDS]
    if bad or not cfg.kinds:
        raise InputError(f"unknown game kind(s) {bad}; choose from {', '.join(SMALL_WORLDS)}", field="kinds")
    if cfg.device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {cfg.device!r}", field="device")
    if not cfg.tasks:
        raise InputError("--tasks is empty", field="tasks")
    from agentrefine_lg.eval.base import parse_task_list

    cfg.tasks = tuple(parse_task_list(list(cfg.tasks)))  # unknown names fail here, "all" expands
    if cfg.threads is not None and cfg.threads < 1:
        raise InputError("--threads must be at least 1", field="threads")


# ---------------------------------------------------------------------------------------------- paths


def data_dir(cfg: StudyConfig) -> Path:
    return cfg.out / "data"


def data_file(cfg: StudyConfig, dataset: str) -> Path:
    return data_dir(cfg) / f"{dataset}.jsonl"


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def train_dir(cfg: StudyConfig, arm: str, seed: int) -> Path:
    return cfg.out / "train" / run_name(arm, seed)


def eval_dir(cfg: StudyConfig, arm: str, seed: int) -> Path:
    return cfg.out / "eval" / run_name(arm, seed)


def served_model(cfg: StudyConfig, arm: str, seed: int) -> str:
    """What the arm serves: the base model itself, or the merged tuned model."""
    return cfg.model if ARMS[arm].data is None else str(train_dir(cfg, arm, seed) / "merged")


# ---------------------------------------------------------------------------------------------- the plan


def train_command(cfg: StudyConfig, arm: str, seed: int) -> list[str]:
    """``python -m training.sft`` for one trained arm: identical for every arm but ``--data``/``--no_mask``."""
    spec = ARMS[arm]
    if spec.data is None:
        raise ValueError(f"arm {arm!r} is not trained")
    cmd = [cfg.python, "-m", "training.sft", "--model", cfg.model, "--data", str(data_file(cfg, spec.data)),
           "--output_dir", str(train_dir(cfg, arm, seed)), "--seed", str(seed),
           "--method", "lora", "--lora_r", str(cfg.lora_r), "--lora_alpha", str(cfg.lora_alpha),
           "--lora_target_modules", *LORA_TARGETS,
           "--max_length", str(cfg.max_length), "--per_device_train_batch_size", str(cfg.batch_size),
           "--gradient_accumulation_steps", "1", "--max_steps", str(cfg.optimizer_steps),
           "--learning_rate", str(cfg.learning_rate), "--save_strategy", "no", "--logging_steps", "1"]
    if cfg.device == "cpu":
        cmd += ["--use_cpu", "true"]
    if not spec.mask:
        cmd.append("--no_mask")
    return cmd


@dataclass
class Stage:
    """One resumable step of the study."""

    name: str
    kind: str  # data | train | eval | report
    arm: str | None = None
    seed: int | None = None
    out: Path | None = None
    command: list[str] | None = None
    depends: list[str] = field(default_factory=list)


def build_plan(cfg: StudyConfig) -> list[Stage]:
    """The stages in order: data, one training per trained arm and seed, one evaluation per arm and seed, report."""
    stages = [Stage("data", "data", out=data_dir(cfg))]
    for seed in cfg.seeds:
        for arm in cfg.arms:
            if ARMS[arm].data is not None:
                stages.append(Stage(f"train {arm} s{seed}", "train", arm, seed, train_dir(cfg, arm, seed),
                                    train_command(cfg, arm, seed), depends=["data"]))
    for seed in cfg.seeds:
        for arm in cfg.arms:
            deps = [f"train {arm} s{seed}"] if ARMS[arm].data is not None else []
            stages.append(Stage(f"eval {arm} s{seed}", "eval", arm, seed, eval_dir(cfg, arm, seed), depends=deps))
    stages.append(Stage("report", "report", out=cfg.out))
    return stages


# ---------------------------------------------------------------------------------------------- done checks


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def data_done(cfg: StudyConfig) -> bool:
    """Both datasets and their manifest exist for these settings; other settings in ``--out`` are refused."""
    manifest = _read_json(data_dir(cfg) / "manifest.json")
    if manifest is None:
        return False
    if manifest.get("config") != cfg.data_fingerprint():
        raise InputError(f"{data_dir(cfg)} holds data made with other settings ({manifest.get('config')}); "
                         "use another --out", field="out")
    return all(data_file(cfg, d).is_file() for d in DATASETS)


def train_done(cfg: StudyConfig, arm: str, seed: int) -> bool:
    """The arm's merged model and log exist for this exact command; another command there is refused."""
    folder = train_dir(cfg, arm, seed)
    recorded = _read_json(folder / "study_command.json")
    if recorded is not None and recorded != _portable(train_command(cfg, arm, seed)):
        raise InputError(f"{folder} was trained with another command ({shlex.join(recorded)}); use another --out",
                         field="out")
    return recorded is not None and (folder / "train_log.json").is_file() and (folder / "merged" / "config.json").is_file()


def expected_episodes(task: str, episodes: int) -> int:
    """Episodes the harness runs for ``task`` (tasks with a fixed episode set are capped)."""
    from agentrefine_lg.eval.base import load_task

    distinct = getattr(load_task(task), "NUM_EPISODES", None)
    return min(episodes, distinct) if distinct is not None else episodes


def eval_done(cfg: StudyConfig, arm: str, seed: int) -> bool:
    """Every (task, episode) of the plan is in the arm's ``episodes.jsonl`` and its summary is written."""
    from agentrefine_lg.eval.harness import read_rows

    folder = eval_dir(cfg, arm, seed)
    summary = _read_json(folder / "summary.json")
    if summary is None:
        return False
    unavailable = set(summary.get("unavailable") or {})
    have = {(r.get("task"), int(r.get("episode", -1))) for r in read_rows(folder / "episodes.jsonl")}
    for task in cfg.tasks:
        if task in unavailable:
            continue
        if any((task, e) not in have for e in range(expected_episodes(task, cfg.episodes))):
            return False
    return True


def stage_done(cfg: StudyConfig, stage: Stage) -> bool:
    if stage.kind == "data":
        return data_done(cfg)
    if stage.kind == "train":
        return train_done(cfg, stage.arm, stage.seed)  # type: ignore[arg-type]
    if stage.kind == "eval":
        return eval_done(cfg, stage.arm, stage.seed)  # type: ignore[arg-type]
    return False  # the report is always rewritten (cheap, and reflects every finished stage)


def _portable(cmd: Sequence[str]) -> list[str]:
    """A command without the interpreter path, so a resume under another venv path is the same command."""
    return ["python", *cmd[1:]] if cmd and cmd[0] == sys.executable else list(cmd)


# ---------------------------------------------------------------------------------------------- stage: data


def small_spec(persona: str, kinds: Sequence[str], variant: int = 0):
    """A small TextWorld game for a persona: kind and size drawn from a seed of the persona text."""
    from agentrefine_lg.grounded import GameSpec
    from agentrefine_lg.grounded.engine import persona_seed

    seed = persona_seed(persona, variant)
    rng = random.Random(seed)
    kind = rng.choice(list(kinds))
    return GameSpec(kind, seed, tuple(sorted(SMALL_WORLDS[kind](rng).items())), 3)


class _SmallWorldWriter:
    """The grounded script writer's job for one fixed small game (``synthesize_grounded`` asks it for a script)."""

    def __init__(self, worlds: Any, spec: Any):
        self.worlds, self.spec = worlds, spec

    def write_script(self, persona: str, variant: int = 0):
        return self.worlds.script_for(self.spec, persona=persona)


def world_samples(persona: str, spec: Any, worlds: Any, *, errors: int, teacher_seed: int = 0) -> dict[str, Any]:
    """The clean and the refinement trajectory of one world, each verified; raises on a failed check.

    Clean: the grounded Player with ``min_errors=max_errors=0``; it must have no flagged turn and pass
    ``check_trajectory(min_pairs=0)``. Refinement: ``errors`` mistakes, each refined; it must pass
    ``check_trajectory(min_pairs=errors)``.
    """
    from agentrefine_lg.checks import check_trajectory
    from agentrefine_lg.convert import sample_from_trajectory
    from agentrefine_lg.grounded import GroundedDM, GroundedPlayer, synthesize_grounded

    writer, dm = _SmallWorldWriter(worlds, spec), GroundedDM(worlds)
    out: dict[str, Any] = {}
    for dataset, n_errors, min_pairs in (("clean", 0, 0), ("refine", errors, errors)):
        player = GroundedPlayer(worlds, seed=teacher_seed, min_errors=n_errors, max_errors=n_errors)
        script, turns = synthesize_grounded(persona, teacher_seed, teacher=(writer, player, dm))
        report = check_trajectory(script, turns, min_pairs=min_pairs)
        if not report.ok:
            raise AgentRefineError(f"{dataset} trajectory failed the check: {report.summary()}")
        flagged = sum(1 for t in turns if t.flagged)
        if dataset == "clean" and (flagged or report.pairs or any(report.erroneous)):
            raise AgentRefineError(f"clean trajectory has {flagged} flagged turn(s)")
        out[dataset] = sample_from_trajectory(script, turns, persona=persona, teacher=f"grounded:{dataset}",
                                              source=f"small_model_study:{dataset}", grounded_game=spec.stem)
    return out


def generate_data(cfg: StudyConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write ``clean.jsonl`` and ``refine.jsonl`` (the same N worlds, row i of each from the same game) and
    ``manifest.json`` (written last: the stage's done marker). Worlds whose rows do not fit ``max_length``
    tokens, or whose trajectories fail a check, are skipped and counted."""
    from transformers import AutoTokenizer

    from agentrefine_lg.convert import write_jsonl
    from agentrefine_lg.grounded import GroundedWorlds
    from agentrefine_lg.models import resolve_model
    from agentrefine_lg.personas import load_personas
    from training.data import tokenize_messages

    started = time.monotonic()
    folder = data_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(cfg.model)))
    worlds = GroundedWorlds(cfg.cache_dir or folder / "worlds")
    kept: dict[str, list[Any]] = {d: [] for d in DATASETS}
    lengths: dict[str, list[int]] = {d: [] for d in DATASETS}
    skipped: dict[str, int] = {"too_long": 0, "failed": 0}
    failures: list[str] = []
    games: list[str] = []
    personas = load_personas()
    # Each persona gives one world per variant: pass 0 uses every persona once, later passes their next
    # variants, so N may exceed the number of built-in personas.
    candidates = ((persona.text, variant) for variant in range(MAX_VARIANTS) for persona in personas)
    try:
        for text, variant in candidates:
            if len(kept["clean"]) >= cfg.n_train:
                break
            spec = small_spec(text, cfg.kinds, variant)
            try:
                pair = world_samples(text, spec, worlds, errors=cfg.errors, teacher_seed=cfg.teacher_seed)
            except (AgentRefineError, RuntimeError, ValueError) as exc:
                skipped["failed"] += 1
                failures.append(f"{spec.stem}: {exc}"[:300])
                continue
            n_tokens = {d: len(tokenize_messages(s.messages, tokenizer)["input_ids"]) for d, s in pair.items()}
            if max(n_tokens.values()) > cfg.max_length:
                skipped["too_long"] += 1
                continue
            for d in DATASETS:
                kept[d].append(pair[d])
                lengths[d].append(n_tokens[d])
            games.append(spec.stem)
            log(f"[data] {len(kept['clean'])}/{cfg.n_train} {spec.stem}: clean {n_tokens['clean']} tokens, "
                f"refine {n_tokens['refine']} tokens")
    finally:
        worlds.close()
    if len(kept["clean"]) < cfg.n_train:
        raise AgentRefineError(f"only {len(kept['clean'])} of {cfg.n_train} worlds fit --max-length {cfg.max_length} "
                               f"with the built-in personas (skipped {skipped}); raise --max-length or lower --n-train")
    for d in DATASETS:
        write_jsonl(kept[d], data_file(cfg, d))
    stats = {d: _dataset_stats(kept[d], lengths[d]) for d in DATASETS}
    manifest = {"config": cfg.data_fingerprint(), "worlds": games, "skipped": skipped, "failures": failures[:20], "stats": stats,
                "seconds": round(time.monotonic() - started, 1)}
    tmp = data_dir(cfg) / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, data_dir(cfg) / "manifest.json")
    return manifest


def _dataset_stats(samples: Sequence[Any], lengths: Sequence[int]) -> dict[str, Any]:
    """Rows, tokens and assistant turns trained / masked, recomputed from the rows themselves."""
    trained = masked = 0
    for s in samples:
        for m in s.messages:
            if m.role == "assistant":
                trained += bool(m.train)
                masked += not m.train
    return {"rows": len(samples), "tokens_mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
            "tokens_max": max(lengths, default=0), "assistant_turns_trained": trained,
            "assistant_turns_masked": masked}


# ---------------------------------------------------------------------------------------------- stage: train


def child_env(cfg: StudyConfig) -> dict[str, str]:
    """Environment of the training subprocess: offline, quiet tokenizers, CPU-only when asked, thread cap."""
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    if cfg.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    if cfg.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(cfg.threads)
    return env


def run_training(cfg: StudyConfig, stage: Stage, log: Callable[[str], None] = print) -> None:
    """Run ``python -m training.sft`` for one arm; its output goes to ``<train dir>/train.out``."""
    assert stage.command is not None and stage.out is not None
    stage.out.mkdir(parents=True, exist_ok=True)
    (stage.out / "study_command.json").write_text(json.dumps(_portable(stage.command)), encoding="utf-8")
    log(f"[{stage.name}] {shlex.join(_portable(stage.command))}")
    with (stage.out / "train.out").open("w", encoding="utf-8") as fh:
        code = subprocess.run(stage.command, env=child_env(cfg), stdout=fh, stderr=subprocess.STDOUT,
                              check=False).returncode
    if code != 0:
        tail = (stage.out / "train.out").read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        raise AgentRefineError(f"{stage.name} failed (exit {code}); see {stage.out / 'train.out'}:\n" + "\n".join(tail))


# ---------------------------------------------------------------------------------------------- stage: eval


def model_spec(base_url: str, name: str, api_key: str, max_tokens: int):
    """A harness ``ModelSpec`` whose label is the arm's name, not the server's ephemeral port, so the harness's
    resume check (same model label) holds across runs."""
    from agentrefine_lg.eval.harness import ModelSpec

    class _ArmSpec(ModelSpec):
        @property
        def label(self) -> str:  # type: ignore[override]
            return f"study:{self.model}"

    return _ArmSpec(base_url=base_url, model=name, api_key=api_key, max_tokens=max_tokens)


def run_arm_eval(cfg: StudyConfig, stage: Stage, log: Callable[[str], None] = print) -> None:
    """Serve the arm on loopback (transformers backend, ``cfg.device``) and run the harness on it (greedy)."""
    from agentrefine_lg.eval.harness import run_eval
    from agentrefine_lg.serve import start_server

    assert stage.arm is not None and stage.seed is not None and stage.out is not None
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    name = f"{cfg.model.rstrip('/').split('/')[-1]}-{run_name(stage.arm, stage.seed)}"
    with start_server(served_model(cfg, stage.arm, stage.seed), backend="transformers", device=cfg.device,
                      model_name=name) as server:
        spec = model_spec(server.base_url, name, server.api_key, cfg.max_tokens)
        run_eval(tasks=list(cfg.tasks), episodes=cfg.episodes, model=spec, out=stage.out, max_steps=cfg.max_steps,
                 seed=stage.seed, workers=1, embeddings=False, log=lambda m: log(f"[{stage.name}] {m}"))


# ---------------------------------------------------------------------------------------------- results


def ratio_ci(numerators: Sequence[float], denominators: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
             seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(num) / sum(den)`` resampling episodes (the unit of independence:
    steps of one episode are not independent)."""
    import numpy as np

    num = np.asarray(list(numerators), dtype=float)
    den = np.asarray(list(denominators), dtype=float)
    if num.size == 0 or den.sum() == 0:
        return float("nan"), float("nan")
    if num.size == 1:
        value = float(num.sum() / den.sum())
        return value, value
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(n_boot, num.size))
    d = den[idx].sum(axis=1)
    ratios = np.where(d > 0, num[idx].sum(axis=1) / np.where(d > 0, d, 1), np.nan)
    low, high = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


_COUNTS = {"format_error_rate": "format_errors", "invalid_action_rate": "invalid_actions",
           "repeated_mistake_rate": "repeated_mistakes"}


def metric_row(arm: str, task: str, episodes: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> dict[str, Any]:
    """One table row: the five rates with 95% bootstrap CIs over episodes (error rates per step, pooled)."""
    from agentrefine_lg.eval.metrics import bootstrap_ci

    steps = [int(r["steps"]) for r in episodes]
    row: dict[str, Any] = {"arm": arm, "task": task, "episodes": len(episodes), "steps": sum(steps),
                           "seeds": list(seeds)}
    for metric, count in _COUNTS.items():
        nums = [int(r[count]) for r in episodes]
        row[metric] = sum(nums) / sum(steps) if sum(steps) else float("nan")
        row[f"{metric}_ci"] = list(ratio_ci(nums, steps))
    for metric, values in (("success_rate", [1.0 if r["success"] else 0.0 for r in episodes]),
                           ("progress_rate", [float(r["progress"]) for r in episodes])):
        row[metric] = sum(values) / len(values) if values else float("nan")
        row[f"{metric}_ci"] = list(bootstrap_ci(values)) if values else [float("nan")] * 2
    return row


def collect_rows(cfg: StudyConfig) -> list[dict[str, Any]]:
    """Metric rows per arm and task (episodes pooled over seeds), plus an ``all`` row per arm."""
    from agentrefine_lg.eval.harness import read_rows

    out: list[dict[str, Any]] = []
    for arm in cfg.arms:
        per_task: dict[str, list[dict[str, Any]]] = {t: [] for t in cfg.tasks}
        seeds = []
        for seed in cfg.seeds:
            rows = read_rows(eval_dir(cfg, arm, seed) / "episodes.jsonl")
            if rows:
                seeds.append(seed)
            for r in rows:
                if r.get("task") in per_task and not r.get("noop") and int(r["episode"]) < cfg.episodes:
                    per_task[r["task"]].append(r)
        for task, episodes in per_task.items():
            if episodes:
                out.append(metric_row(arm, task, episodes, seeds))
        pooled = [r for eps in per_task.values() for r in eps]
        if pooled and len([t for t, e in per_task.items() if e]) > 1:
            out.append(metric_row(arm, "all", pooled, seeds))
    return out


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results as a Markdown table: rates in %, 95% bootstrap CIs in brackets."""
    head = "| task | arm | N episodes | steps | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|" + "---|" * (4 + len(METRICS))]
    order = {t: i for i, t in enumerate(dict.fromkeys(r["task"] for r in rows if r["task"] != "all"))}
    order["all"] = len(order)
    for r in sorted(rows, key=lambda r: order.get(r["task"], 0)):
        cells = []
        for metric, _ in METRICS:
            low, high = r.get(f"{metric}_ci") or (None, None)
            cells.append(f"{_pct(r[metric])} [{_pct(low)}, {_pct(high)}]")
        task = "**all tasks**" if r["task"] == "all" else f"`{r['task']}`"
        lines.append(f"| {task} | {r['arm']} | {r['episodes']} | {r['steps']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rows(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str = "") -> Path:
    """One panel per metric: grouped bars per task, one bar per arm, 95% CI whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    by = {(r["arm"], r["task"]): r for r in rows}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.3 * len(METRICS), 3.6), sharey=True)
    width = 0.8 / max(1, len(arms))
    for ax, (metric, label) in zip(axes, METRICS):
        for i, arm in enumerate(arms):
            xs, ys, errs = [], [], [[], []]
            for j, task in enumerate(tasks):
                r = by.get((arm, task))
                if r is None or r[metric] is None or math.isnan(r[metric]):
                    continue
                low, high = r.get(f"{metric}_ci") or (r[metric], r[metric])
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(100 * r[metric])
                errs[0].append(max(0.0, 100 * (r[metric] - low)) if not math.isnan(low) else 0.0)
                errs[1].append(max(0.0, 100 * (high - r[metric])) if not math.isnan(high) else 0.0)
            ax.bar(xs, ys, width, yerr=errs, capsize=2, label=arm)
        ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_ylim(0, 105)
    axes[0].set_ylabel("% (95% bootstrap CI)")
    axes[-1].legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(cfg: StudyConfig, timings: Mapping[str, Any], log: Callable[[str], None] = print) -> Path:
    """``results.json``, ``results.md`` (the table), ``study.png`` and ``report.md`` from this run's outputs."""
    rows = collect_rows(cfg)
    manifest = _read_json(data_dir(cfg) / "manifest.json") or {}
    training = {}
    for seed in cfg.seeds:
        for arm in cfg.arms:
            tl = _read_json(train_dir(cfg, arm, seed) / "train_log.json") if ARMS[arm].data else None
            if tl:
                steps = tl.get("steps") or []
                training[run_name(arm, seed)] = {
                    "rows": tl.get("train_rows"), "dropped_rows": tl.get("dropped_rows"),
                    "truncated_rows": (tl.get("refinement") or {}).get("truncated"),
                    "trainable_tokens": (tl.get("refinement") or {}).get("trainable_tokens"),
                    "optimizer_steps": len(steps), "first_loss": steps[0]["loss"] if steps else None,
                    "final_loss": steps[-1]["loss"] if steps else None, "train_runtime_s": tl.get("train_runtime_s")}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k != "python"}
    results = {"config": config, "rows": rows, "data": manifest.get("stats"), "data_skipped": manifest.get("skipped"),
               "training": training, "timings": dict(timings)}
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    table = markdown_table(rows) if rows else "(no evaluation rows yet)"
    (cfg.out / "results.md").write_text(table + "\n", encoding="utf-8")
    if rows:
        plot_rows(rows, cfg.out / "study.png",
                  title=f"{cfg.model}: {cfg.n_train} training worlds, {cfg.episodes} episodes/task/seed, seeds "
                        f"{','.join(map(str, cfg.seeds))}, max {cfg.max_steps} steps")
    lines = [
        f"# Small-model study: {cfg.model}", "",
        (f"Held-out tasks `{','.join(cfg.tasks)}`; {cfg.episodes} episode(s) per task and seed; seeds "
         f"{', '.join(map(str, cfg.seeds))}; at most {cfg.max_steps} actions per episode; greedy decoding, replies "
         f"capped at {cfg.max_tokens} tokens; device `{cfg.device}`."),
        (f"Training: the same {cfg.n_train} grounded-teacher worlds for every trained arm, LoRA r={cfg.lora_r} "
         f"alpha={cfg.lora_alpha} on {', '.join(LORA_TARGETS)}, lr {cfg.learning_rate}, {cfg.optimizer_steps} "
         f"optimizer steps of batch {cfg.batch_size}, max length {cfg.max_length}."), "",
        ("Rates in %; 95% percentile bootstrap CIs over episodes in brackets (error rates: per step, episodes "
         "resampled). N episodes pooled over seeds."), "", table, "", "![study](study.png)", "",
        "## Data", "",
    ]
    for d, s in (manifest.get("stats") or {}).items():
        lines.append(f"- `{d}`: {s['rows']} rows, {s['tokens_mean']} tokens on average (max {s['tokens_max']}), "
                     f"assistant turns trained {s['assistant_turns_trained']} / masked {s['assistant_turns_masked']}")
    if manifest.get("skipped"):
        lines.append(f"- worlds skipped: {manifest['skipped']['too_long']} longer than {cfg.max_length} tokens, "
                     f"{manifest['skipped']['failed']} failed generation or a check")
    lines += ["", "## Training", "",
              "| run | rows | dropped | truncated | trainable tokens | steps | loss first → final | seconds |",
              "|---|---|---|---|---|---|---|---|"]
    for name, t in training.items():
        loss = f"{t['first_loss']:.3f} → {t['final_loss']:.3f}" if t["first_loss"] is not None else "–"
        lines.append(f"| {name} | {t['rows']} | {t['dropped_rows']} | {t['truncated_rows']} | {t['trainable_tokens']} | "
                     f"{t['optimizer_steps']} | {loss} | {t['train_runtime_s'] or 0:.0f} |")
    lines += ["", "## Wall time per stage", "", "| stage | seconds | status |", "|---|---|---|"]
    for name, t in timings.items():
        lines.append(f"| {name} | {t.get('seconds', 0):.0f} | {t.get('status', '')} |")
    report = cfg.out / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


# ---------------------------------------------------------------------------------------------- driver


@dataclass
class Runners:
    """The stage implementations (replaceable in tests)."""

    data: Callable[..., Any] = generate_data
    train: Callable[..., Any] = run_training
    eval: Callable[..., Any] = run_arm_eval
    report: Callable[..., Any] = write_report


def run_study(cfg: StudyConfig, runners: Runners | None = None, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage that is not done yet, in order; returns the timings (also in ``<out>/timings.json``)."""
    runners = runners or Runners()
    cfg.out.mkdir(parents=True, exist_ok=True)
    timings_path = cfg.out / "timings.json"
    timings: dict[str, Any] = _read_json(timings_path) or {}
    for stage in build_plan(cfg):
        if stage.kind == "report":
            started = time.monotonic()
            report = runners.report(cfg, timings, log=log)
            timings["report"] = {"seconds": round(time.monotonic() - started, 1), "status": "written"}
            log(f"[report] {report}")
            break
        if stage_done(cfg, stage):
            log(f"[{stage.name}] done already; skipped")
            timings.setdefault(stage.name, {"seconds": 0.0, "status": "done earlier"})
            continue
        log(f"[{stage.name}] running")
        started = time.monotonic()
        if stage.kind == "data":
            runners.data(cfg, log=log)
        elif stage.kind == "train":
            runners.train(cfg, stage, log=log)
        else:
            runners.eval(cfg, stage, log=log)
        elapsed = round(time.monotonic() - started, 1)
        previous = timings.get(stage.name, {})
        if previous.get("status") == "ran":  # a resumed stage: add this run's time to the earlier one's
            elapsed = round(elapsed + float(previous.get("seconds", 0.0)), 1)
        timings[stage.name] = {"seconds": elapsed, "status": "ran"}
        timings_path.write_text(json.dumps(timings, indent=2), encoding="utf-8")
        log(f"[{stage.name}] finished in {elapsed:.0f}s")
    timings_path.write_text(json.dumps(timings, indent=2), encoding="utf-8")
    return timings


def describe_plan(cfg: StudyConfig) -> str:
    """The plan as text: one line per stage with its status and command."""
    lines = []
    for stage in build_plan(cfg):
        status = "done" if stage.kind != "report" and stage_done(cfg, stage) else "todo"
        extra = f": {shlex.join(_portable(stage.command))}" if stage.command else ""
        if stage.kind == "eval":
            extra = f": serve {served_model(cfg, stage.arm, stage.seed)} on {cfg.device}, eval {','.join(cfg.tasks)} x " \
                    f"{cfg.episodes} (seed {stage.seed}) -> {stage.out}"
        lines.append(f"[{status}] {stage.name}{extra}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        cfg, args = parse_args(argv)
        if args.dry_run:
            print(describe_plan(cfg))
            return 0
        started = time.monotonic()
        run_study(cfg, log=lambda m: print(m, flush=True))
        print(f"total {time.monotonic() - started:.0f}s; see {cfg.out / 'report.md'}")
        print((cfg.out / "results.md").read_text(encoding="utf-8"))
    except AgentRefineError as exc:
        print(f"small_model_study: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
