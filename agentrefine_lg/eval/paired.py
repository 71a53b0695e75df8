"""Comparing arms on the same worlds: per-arm bootstrap intervals and paired differences, worlds resampled.

Every arm of a controlled comparison plays the same worlds (and the same injections), so the unit of
independence is the **world**: an arm's value on a world is the mean over its replicates (training seeds), its
interval resamples worlds, and a difference between two arms resamples worlds once for both (paired), which
removes the between-world variance that two independent intervals would carry twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agentrefine_lg.eval.metrics import bootstrap_ci

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


__all__ = ["N_BOOT", "Estimate", "estimate", "paired_difference", "per_world"]
