"""Shared fixtures: the paper's sample script and trajectory (copied from shared/samples)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def paper_script() -> dict:
    return json.loads((FIXTURES / "script_unix_admin.json").read_text())


@pytest.fixture
def paper_trajectory() -> list[dict]:
    return json.loads((FIXTURES / "trajectory_unix_admin.json").read_text())


@pytest.fixture
def mutate():
    """Deep-copy helper so each broken variant starts from the pristine sample."""
    return copy.deepcopy
