"""World sets: grounded-teacher worlds split by world, each train world as a clean and an error->refine row.

Built for the method study (``examples/small_model_study``) and usable by any experiment that needs held-out worlds
of known game kinds: ``generate_worlds(WorldPlan(...), folder)`` writes the rows and the evaluation scripts that
``agentrefine eval --task textworld`` plays.

Splits (disjoint seeds, duplicates by content removed): ``train`` (the trained game kinds), ``heldout`` (new
worlds of the trained kinds) and ``unseen`` (worlds of a kind never trained on). Every train world gives two
rows, both checked by our rules: ``clean`` (the grounded Player makes no mistake; behaviour cloning) and
``refine`` (``errors`` mistakes, each flagged by the DM and refined). Evaluation worlds are stored as scripts.

Generation runs in worker processes (TextWorld compiles each game); the result is cached under ``folder`` and a
manifest written last marks it complete, so a rerun with the same settings does not regenerate.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentrefine_lg.checks import check_trajectory
from agentrefine_lg.convert import sample_from_trajectory, write_jsonl
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.schema import RefinementSample
from agentrefine_lg.synthesis.grounded.dm import GroundedDM, GroundedWorlds
from agentrefine_lg.synthesis.grounded.engine import GameSpec
from agentrefine_lg.synthesis.grounded.player import GroundedPlayer
from agentrefine_lg.synthesis.grounded.teacher import synthesize_grounded

# World generators: a study kind names a TextWorld game kind and the settings it is drawn with. Small worlds
# (short walks, few objects) keep a whole row near 1k tokens. Every generator speaks the same action vocabulary
# (go, take, take ... from, drop, open, insert, put, lock/unlock). The default study trains on three generators
# that each teach part of one skill -- follow the goal's directions, then take what it names: short walks to a
# coin, long walks to a coin, short walks to a named object -- and holds out two it never trains on that need
# those parts in a combination or at a length not trained: long walks to a named object among distractors
# (`treasure_hunter_long`), and the longest walks (`coin_collector_xl`). The `custom` quests (containers, keys)
# were not learnt by the 2 M-parameter student at any size tried, even on its own train worlds
# (docs/study_runs/), so they are kept for --kinds but left out of the default.
GENERATORS: dict[str, tuple[str, Callable[[random.Random], dict[str, Any]]]] = {
    "coin_collector": ("coin_collector", lambda rng: {"level": rng.randint(1, 3)}),
    "coin_collector_long": ("coin_collector", lambda rng: {"level": rng.randint(4, 6)}),
    "coin_collector_xl": ("coin_collector", lambda rng: {"level": rng.randint(7, 9)}),
    "treasure_hunter": ("treasure_hunter", lambda rng: {"level": rng.randint(1, 3)}),
    "treasure_hunter_long": ("treasure_hunter", lambda rng: {"level": rng.randint(7, 10)}),
    "custom": ("custom", lambda rng: {"nb_rooms": rng.randint(1, 2), "nb_objects": rng.randint(2, 3),
                                      "quest_length": 3}),
    "custom_1room": ("custom", lambda rng: {"nb_rooms": 1, "nb_objects": rng.randint(2, 3), "quest_length": 3}),
    "custom_2rooms": ("custom", lambda rng: {"nb_rooms": 2, "nb_objects": rng.randint(2, 3), "quest_length": 3}),
}
SMALL_WORLDS = GENERATORS  # the name earlier versions used
SPLITS = ("train", "heldout", "unseen")
PROBE_SPLIT = "trainprobe"
"""Evaluation rows of the first few train worlds, played like the held-out ones: they tell underfitting (a wrong
first action on worlds the model trained on) from expecting errors (a valid start, then invalid actions)."""
MAX_WORDS = 900
"""Longest refinement row kept, in words (the student's tokenizer is trained on the kept rows, so the filter
cannot use it): keeps every row inside the training length with room to spare."""


@dataclass(frozen=True)
class WorldPlan:
    """How many worlds of which kinds each split holds."""

    n_train: int
    n_heldout: int
    n_unseen: int
    kinds: tuple[str, ...]
    unseen_kinds: tuple[str, ...]
    errors: int
    teacher_seed: int = 0
    n_trainprobe: int = 0

    def fingerprint(self) -> dict[str, Any]:
        return {"n_train": self.n_train, "n_heldout": self.n_heldout, "n_unseen": self.n_unseen,
                "n_trainprobe": self.n_trainprobe, "kinds": list(self.kinds), "unseen_kinds": list(self.unseen_kinds),
                "errors": self.errors, "teacher_seed": self.teacher_seed, "max_words": MAX_WORDS,
                "first_step_clean": True}

    def wanted(self, split: str) -> int:
        return {"train": self.n_train, "heldout": self.n_heldout, "unseen": self.n_unseen}[split]

    def kinds_of(self, split: str) -> tuple[str, ...]:
        return self.unseen_kinds if split == "unseen" else self.kinds


def world_spec(split: str, index: int, kinds: Sequence[str]):
    """The ``index``-th candidate world of ``split``: its seed comes from the split's name, so splits never share
    a seed; kinds alternate so every split holds them in equal shares."""
    seed = int(hashlib.sha256(f"study|{split}|{index}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF
    rng = random.Random(seed)
    engine_kind, settings = GENERATORS[world_kind(index, kinds)]
    return GameSpec(engine_kind, seed, tuple(sorted(settings(rng).items())), 3)


def world_kind(index: int, kinds: Sequence[str]) -> str:
    """The generator of the ``index``-th candidate world of a split drawn from ``kinds``."""
    return kinds[index % len(kinds)]


class _FixedWorld:
    """The grounded script writer's job for one fixed game (``synthesize_grounded`` asks it for a script)."""

    def __init__(self, worlds: Any, spec: Any):
        self.worlds, self.spec = worlds, spec

    def write_script(self, persona: str, variant: int = 0):
        return self.worlds.script_for(self.spec, persona=persona)


def world_rows(spec: Any, worlds: Any, *, errors: int, teacher_seed: int = 0) -> dict[str, Any]:
    """The clean and the refinement row of one world, each verified; raises AgentRefineError on a failed check.

    Clean: the grounded Player with no mistakes; no flagged turn, ``check_trajectory(min_pairs=0)``.
    Refinement: ``errors`` mistakes, each refined; ``check_trajectory(min_pairs=errors)``.
    """
    writer, dm = _FixedWorld(worlds, spec), GroundedDM(worlds)
    out: dict[str, Any] = {}
    for dataset, n_errors in (("clean", 0), ("refine", errors)):
        player = GroundedPlayer(worlds, seed=teacher_seed, min_errors=n_errors, max_errors=n_errors)
        script, turns = synthesize_grounded(spec.stem, teacher_seed, teacher=(writer, player, dm))
        report = check_trajectory(script, turns, min_pairs=n_errors)
        if not report.ok:
            raise AgentRefineError(f"{dataset} trajectory failed the check: {report.summary()}")
        if dataset == "clean" and (any(t.flagged for t in turns) or report.pairs):
            raise AgentRefineError("clean trajectory has a flagged turn")
        out[dataset] = sample_from_trajectory(script, turns, persona=None, teacher=f"grounded:{dataset}",
                                              source=f"method_study:{dataset}", grounded_game=spec.stem)
    return out


def _content_key(script: Any) -> str:
    """Two seeds can give the same world: the same goal and starting map count as one world."""
    body = json.dumps({"goal": script.goal, "env": script.environment}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _words(sample: Any) -> int:
    return sum(len(m.content.split()) for m in sample.messages)


def _paper(script: Any) -> dict[str, Any]:
    return script.to_paper() if hasattr(script, "to_paper") else script.model_dump(mode="json", by_alias=True)


def _make_world(job: tuple[str, int, tuple[str, ...], int, int, str]) -> dict[str, Any]:
    """Worker: one candidate world -> its rows (train) or its script (evaluation), or why it was skipped."""
    split, index, kinds, errors, teacher_seed, cache = job
    spec = world_spec(split, index, kinds)
    worlds = GroundedWorlds(cache)
    try:
        if split == "train":
            rows = world_rows(spec, worlds, errors=errors, teacher_seed=teacher_seed)
            if _words(rows["refine"]) > MAX_WORDS:
                return {"split": split, "index": index, "skipped": "too_long"}
            script = worlds.script_for(spec)
            return {"split": split, "index": index, "kind": world_kind(index, kinds), "stem": spec.stem,
                    "key": _content_key(script), "script": _paper(script),
                    "clean": rows["clean"].model_dump(mode="json"), "refine": rows["refine"].model_dump(mode="json")}
        script = worlds.script_for(spec)
        # an evaluation world must be solvable by the rules: its clean trajectory passes the check too
        rows = world_rows(spec, worlds, errors=0, teacher_seed=teacher_seed)
        if _words(rows["clean"]) > MAX_WORDS:
            return {"split": split, "index": index, "skipped": "too_long"}
        return {"split": split, "index": index, "kind": world_kind(index, kinds), "stem": spec.stem,
                "key": _content_key(script), "script": _paper(script)}
    except InputError:
        raise  # the teacher was called wrongly: a bug here, never a skipped world
    except AgentRefineError as exc:
        # TextWorld could not make a usable game from this seed (NoUsableGameError), or the teacher's trajectory
        # failed a check: the world is skipped and counted; anything else (a bug, TextWorld's included) propagates
        return {"split": split, "index": index, "skipped": "failed", "why": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        worlds.close()


def generate_worlds(plan: WorldPlan, folder: Path, *, workers: int = 2, log: Callable[[str], None] = print
                    ) -> dict[str, Any]:
    """Write ``clean.jsonl``/``refine.jsonl`` (row i of both: the same train world), ``eval_worlds.jsonl`` (held-out
    and unseen scripts) and ``manifest.json`` (last: the done marker). Returns the manifest."""
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("config") != plan.fingerprint():
            raise InputError(f"{folder} holds worlds made with other settings ({manifest.get('config')}); use "
                             "another --out", field="out")
        return manifest
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    cache = str(folder / "games")
    kept: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    skipped = {"too_long": 0, "failed": 0, "duplicate": 0}
    failures: list[str] = []
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in SPLITS:
            wanted, index = plan.wanted(split), 0
            while len(kept[split]) < wanted:
                if index > 20 * wanted + 50:
                    raise AgentRefineError(f"only {len(kept[split])} of {wanted} {split} worlds could be made "
                                           f"(skipped {skipped}); first failures: {failures[:3]}")
                batch = [(split, i, plan.kinds_of(split), plan.errors, plan.teacher_seed, cache)
                         for i in range(index, index + max(2, workers * 4))]
                index += len(batch)
                for result in pool.map(_make_world, batch):  # in order: the same worlds whatever the timing
                    if len(kept[split]) >= wanted:
                        break
                    if "skipped" in result:
                        skipped[result["skipped"]] += 1
                        if result.get("why"):
                            failures.append(result["why"])
                    elif result["key"] in seen:
                        skipped["duplicate"] += 1
                    else:
                        seen.add(result["key"])
                        kept[split].append(result)
            log(f"[data] {split}: {len(kept[split])} worlds ({time.monotonic() - started:.0f}s)")
    for dataset in ("clean", "refine"):
        write_jsonl([RefinementSample.model_validate(w[dataset]) for w in kept["train"]], folder / f"{dataset}.jsonl")
    # the paper's data as it is: every world's refinement trajectory together with its clean steps, i.e. both rows
    write_jsonl([RefinementSample.model_validate(w[d]) for w in kept["train"] for d in ("clean", "refine")],
                folder / "mix.jsonl")
    evaluated = [(s, w) for s in ("heldout", "unseen") for w in kept[s]]
    evaluated += [(PROBE_SPLIT, w) for w in kept["train"][: plan.n_trainprobe]]
    with (folder / "eval_worlds.jsonl").open("w", encoding="utf-8") as fh:
        for split, w in evaluated:
            fh.write(json.dumps({"split": split, "kind": w["kind"], "game": w["stem"], "script": w["script"]}) + "\n")
    manifest = {
        "config": plan.fingerprint(),
        "worlds": {s: [w["stem"] for w in kept[s]] for s in SPLITS},
        "kinds": {s: {k: sum(w["kind"] == k for w in kept[s]) for k in dict.fromkeys(w["kind"] for w in kept[s])}
                  for s in SPLITS},
        "trainprobe": [w["stem"] for w in kept["train"][: plan.n_trainprobe]],
        "skipped": skipped, "failures": failures[:20], "seconds": round(time.monotonic() - started, 1),
    }
    tmp = folder / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, manifest_path)
    return manifest


__all__ = ["GENERATORS", "MAX_WORDS", "PROBE_SPLIT", "SMALL_WORLDS", "SPLITS", "WorldPlan", "generate_worlds",
           "world_kind", "world_rows", "world_spec"]
