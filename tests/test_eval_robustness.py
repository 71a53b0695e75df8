"""The perturbation study: reworded action forms map back to the engine's commands, and the report's arithmetic."""

from __future__ import annotations

import pytest

from agentrefine_lg.env import StepResult, TextEnv
from agentrefine_lg.errors import InputError
from agentrefine_lg.eval.base import action_spec, make_script
from agentrefine_lg.eval.robustness import (
    SCHEMES,
    PerturbedEnv,
    format_robustness,
    perturb_template,
    robustness_report,
)


class ToyEnv(TextEnv):
    """A household in miniature: records the canonical commands it receives."""

    name = "toy/0"

    def __init__(self):
        self.received: list[str] = []
        self.plan = ["go to fridge 1", "take apple 1 from fridge 1", "move apple 1 to table 1"]

    def reset(self) -> str:
        self.received.clear()
        return "You are in a kitchen."

    def script(self):
        values = {"recep": ["fridge 1", "table 1"], "obj": ["apple 1"]}
        return make_script("a kitchen", "put the apple on the table", ["apple on table"], [
            action_spec("go to {recep}", "walk", {"recep": values["recep"]}),
            action_spec("take {obj} from {recep}", "pick up", values),
            action_spec("move {obj} to {recep}", "place", values),
            action_spec("look", "look around"),
        ])

    def step(self, action: str) -> StepResult:
        self.received.append(action)
        ok = bool(self.plan) and action == self.plan[0]
        if ok:
            self.plan.pop(0)
        return StepResult("ok" if ok else "Nothing happens.", done=ok and not self.plan, progress=0.5,
                          error=None if ok else "logic_error")

    def valid_actions(self) -> list[str]:
        return ["look", *self.plan[:1]]

    def oracle_action(self):
        return self.plan[0] if self.plan else None


def test_template_rewrites_keep_slots_and_change_form():
    assert perturb_template("go to {recep}", "synonym") == "move to {recep}"
    assert perturb_template("take {obj} from {recep}", "reorder") == "from {recep} take {obj}"
    assert perturb_template("take {obj} from {recep}", "combined") == "from {recep} grab {obj}"
    assert perturb_template("go to {recep}", "article") == "go to the {recep}"
    assert perturb_template("turn left", "synonym") == "rotate left"
    assert perturb_template("stack {a} on {b}", "synonym") == "pile {a} on {b}"  # generic verb table
    # an exact rule covers one slot only: "use {a}" must not rewrite the two-argument "use X on Y"
    assert perturb_template("use {object} on {target}", "synonym") == "employ {object} on {target}"
    with pytest.raises(InputError):
        perturb_template("go to {x}", "shuffle")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_round_trip_oracle_in_perturbed_form(scheme):
    env = PerturbedEnv(ToyEnv(), scheme)
    env.reset()
    templates = list(env.script().available_actions)
    assert len(templates) == 4 and templates != list(ToyEnv().script().available_actions)
    done = False
    while (action := env.oracle_action()) is not None:
        assert env.to_canonical(action) in ToyEnv().plan
        done = env.step(action).done
    assert done
    assert env.env.received == ToyEnv().plan  # the engine only ever saw canonical commands


def test_original_forms_are_rejected_unless_allowed():
    env = PerturbedEnv(ToyEnv(), "synonym")
    env.reset()
    result = env.step("go to fridge 1")
    assert result.error == "parameter_error" and env.env.received == []
    assert env.step("put apple 1 in fridge 1").error == "parameter_error"  # AgentBoard's memorised spelling
    assert env.step("Move to fridge 1.").error is None and env.env.received == ["go to fridge 1"]
    lenient = PerturbedEnv(ToyEnv(), "synonym", accept_original=True)
    lenient.reset()
    assert lenient.step("go to fridge 1").error is None
    assert env.valid_actions() == ["look around", "grab apple 1 from fridge 1"]


def test_report_drops_and_spread():
    base = [{"task": "t", "episode": i, "seed": 0, "success": i < 2, "progress": 0.5} for i in range(4)]
    perturbed = {
        "a": [{"task": "t", "episode": i, "seed": 0, "success": False, "progress": 0.25} for i in range(4)],
        "b": [{"task": "t", "episode": i, "seed": 0, "success": i < 2, "progress": 0.5} for i in range(3)],
    }
    report = robustness_report(base, perturbed)
    a, b = report["t"]["schemes"]["a"], report["t"]["schemes"]["b"]
    assert (a["base_success"], a["success"], a["success_drop"]) == (50.0, 0.0, 50.0)
    assert a["progress_drop"] == pytest.approx(25.0)
    assert b["episodes"] == 3 and b["base_success"] == pytest.approx(200 / 3) and b["success_drop"] == 0.0
    assert report["t"]["mean_success_drop"] == pytest.approx(25.0)
    assert report["t"]["success_std"] == pytest.approx(abs(0.0 - 200 / 3) / 2)
    assert "overall" in report and "| t | a | 4 |" in format_robustness(report)
    with pytest.raises(InputError):
        robustness_report([], perturbed)


def test_perturbed_alfworld_oracle_still_wins(tmp_path):
    from agentrefine_lg.eval import alfworld

    assert alfworld.available() is None, alfworld.available()  # the eval extra is part of the test install
    env = PerturbedEnv(alfworld.make_env(0, seed=1, size="small", cache_dir=tmp_path), "combined")
    with env:
        env.reset()
        assert "from {recep} grab {obj}" in env.script().available_actions
        result = None
        while (action := env.oracle_action()) is not None:
            result = env.step(action)
            assert result.error is None, action
        assert result is not None and result.done
