"""Comparing arms on the same worlds: per-arm bootstrap intervals and paired differences, worlds resampled.

Every arm of a controlled comparison plays the same worlds (and the same injections), so the unit of
independence is the **world**: an arm's value on a world is the mean over its replicates (training seeds), its
interval resamples worlds, and a difference between two arms resamples worlds once for both (paired), which
removes the between-world variance that two independent intervals would carry twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentrefine_lg.eval.metrics import bootstrap_ci, step_outcomes

N_BOOT = 4000


@dataclass(frozen=True)
class Estimate:
    """A mean over worlds with its 95% percentile bootstrap interval; ``n`` worlds."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def per_world(rows: Iterable[Mapping[str, Any]], key: str, *, world: str = "world") -> dict[str, float]:
    """World -> mean of ``row[key]`` (booleans count 0/1) over its rows (replicates); rows where the key is
    missing or None do not count (e.g. an injection that could not be made in that world)."""
    sums: dict[str, list[float]] = {}
    for row in rows:
        value = row.get(key)
        if value is None:
            continue
        sums.setdefault(str(row[world]), []).append(float(value))
    return {w: sum(v) / len(v) for w, v in sums.items()}


def estimate(by_world: Mapping[str, float], *, n_boot: int = N_BOOT, seed: int = 0) -> Estimate:
    """The mean over worlds with its bootstrap interval (worlds resampled)."""
    values = [by_world[w] for w in sorted(by_world)]
    if not values:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)  # the project's one percentile bootstrap
    return Estimate(sum(values) / len(values), low, high, len(values))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], *, n_boot: int = N_BOOT,
                      seed: int = 0) -> Estimate:
    """Mean of ``a[w] - b[w]`` over the worlds both have, with its bootstrap interval (worlds resampled)."""
    shared = sorted(set(a) & set(b))
    return estimate({w: a[w] - b[w] for w in shared}, n_boot=n_boot, seed=seed)


# metric key, column title
UNINJECTED = (("success", "success %"), ("progress", "progress %"), ("invalid_rate", "invalid actions %"),
              ("repeated_rate", "repeated mistakes %"), ("first_valid", "first action accepted %"),
              ("invalid_after_start", "invalid after a valid start %"))
INJECTED = (("recovered", "recovery %"), ("repeated", "repeat %"), ("success_after", "success after %"))


def episode_values(row: Mapping[str, Any]) -> dict[str, Any]:
    """One evaluation episode (a harness row with ``world``, ``split``, ``condition``) as the quantities a
    comparison averages per world: uninjected success, progress, invalid and repeat rates, whether the first action
    was accepted and the share of failed steps after a valid start; after an injection, recovery, repeat and
    success."""
    steps = max(1, int(row.get("steps") or 0))
    out: dict[str, Any] = {"world": row["world"], "split": row["split"], "condition": row["condition"],
                           "kind": row.get("kind")}
    if row["condition"] == "none":
        outcomes = step_outcomes(row.get("trajectory") or [])
        first_valid = bool(outcomes) and outcomes[0][0] is not None and not outcomes[0][1]
        later = outcomes[1:]
        out.update(success=bool(row["success"]), progress=float(row["progress"]),
                   invalid_rate=int(row["invalid_actions"]) / steps,
                   repeated_rate=int(row["repeated_mistakes"]) / steps,
                   first_valid=first_valid,
                   # after a valid first action, the share of later steps that failed: expecting errors
                   invalid_after_start=(sum(a is None or bad for a, bad in later) / len(later)
                                        if first_valid and later else None))
    else:
        inj = row.get("injection") or {}
        applied = bool(inj.get("applied"))
        out.update(applied=applied, recovered=inj.get("recovered") if applied else None,
                   repeated=inj.get("repeated") if applied else None,
                   success_after=inj.get("success_after") if applied else None)
    return out


def compare_arms(values: Mapping[str, Sequence[Mapping[str, Any]]], splits: Sequence[str], conditions: Sequence[str],
                 pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Arms compared on the same worlds: ``values`` maps an arm to its :func:`episode_values` rows (every seed).

    Returns ``table`` (per split, condition and arm: each metric's :class:`Estimate`), ``diffs`` (per split,
    condition, metric and pair ``(a, b)`` of ``pairs``: the paired ``a - b``) and ``by_kind`` (uninjected success
    per game kind), every estimate as a dict.
    """
    table: list[dict[str, Any]] = []
    diffs: list[dict[str, Any]] = []
    by_kind: list[dict[str, Any]] = []  # uninjected success per game kind: where an arm's successes come from
    for split in splits:
        for arm, rows in values.items():
            chosen = [r for r in rows if r["split"] == split and r["condition"] == "none"]
            for kind in sorted({r["kind"] for r in chosen if r.get("kind")}):
                of_kind = [r for r in chosen if r.get("kind") == kind]
                by_kind.append({"split": split, "arm": arm, "kind": kind,
                                "success": estimate(per_world(of_kind, "success")).to_dict()})
        for condition in conditions:
            metrics = UNINJECTED if condition == "none" else INJECTED
            by_arm: dict[str, dict[str, dict[str, float]]] = {}
            for arm, rows in values.items():
                chosen = [r for r in rows if r["split"] == split and r["condition"] == condition]
                if not chosen:
                    continue
                by_arm[arm] = {m: per_world(chosen, m) for m, _ in metrics}
                row: dict[str, Any] = {"split": split, "condition": condition, "arm": arm, "episodes": len(chosen)}
                if condition != "none":
                    row["applied"] = sum(bool(r["applied"]) for r in chosen)
                for m, _ in metrics:
                    row[m] = estimate(by_arm[arm][m]).to_dict()
                table.append(row)
            for a, b in pairs:
                if a in by_arm and b in by_arm:
                    for m, _ in metrics:
                        diffs.append({"split": split, "condition": condition, "metric": m, "a": a, "b": b,
                                      **paired_difference(by_arm[a][m], by_arm[b][m]).to_dict()})
    return {"table": table, "diffs": diffs, "by_kind": by_kind}


__all__ = ["INJECTED", "N_BOOT", "UNINJECTED", "Estimate", "compare_arms", "episode_values", "estimate",
           "paired_difference", "per_world"]
