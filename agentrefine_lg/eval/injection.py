"""Error injection: does a model recover from a mistake, or repeat it? (issue 16's evaluation, usable on any model)

At reply ``step`` of an episode, :class:`InjectingModel` asks the agent's model as usual, keeps its thought and
replaces its action with a realistic mistake of a named kind, made in the current state:

- ``parameter_error``: a value the action does not allow (the engine's own, or one built from the script: a
  value of another slot, or a name the world lacks, in a template the rules otherwise accept);
- ``place_error``: an object that exists elsewhere; ``logic_error``: a well-formed step out of order. Only
  engines that implement :meth:`agentrefine_lg.env.TextEnv.mistake` make these (the grounded TextWorld worlds).

The mistake runs, the engine's feedback comes back through the refine agent as for any action, and the agent
continues. :func:`injection_outcome` reads the episode's turns: **recovered** (the next action is accepted and is
not the injected one), **repeated** (the next action is the injected one again), the flag the DM gave, and
success after the injection. :func:`summarize_injections` pools episodes per kind.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict

from agentrefine_lg.agent_format import content_text, format_assistant, parse_action
from agentrefine_lg.checks import match_action, normalize_action
from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import Script, Turn

KINDS = ("parameter_error", "place_error", "logic_error")
UNKNOWN_NAMES = ("the silver key", "a blue box", "the north tower", "item 7")
"""Names no task world uses: a value the rules reject however a template is filled."""


@dataclass(frozen=True)
class Injection:
    """Replace the agent's action at model reply ``step`` (1-based) with a mistake of ``kind``."""

    kind: str
    step: int = 2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown mistake kind {self.kind!r}; known: {', '.join(KINDS)}", field="inject")
        if self.step < 1:
            raise InputError(f"the injection step must be >= 1, got {self.step}", field="inject")

    @classmethod
    def parse(cls, text: str) -> Injection:
        """``"parameter_error@2"`` (or a kind alone: step 2)."""
        kind, _, step = text.strip().partition("@")
        try:
            number = int(step) if step.strip() else 2
        except ValueError:
            raise InputError(f"--inject {text!r}: expected KIND@STEP, e.g. parameter_error@2", field="inject") from None
        return cls(kind.strip(), number)

    def __str__(self) -> str:
        return f"{self.kind}@{self.step}"


def _filled(template: str, slots: Sequence[str], values: dict[str, str]) -> str:
    return template.format(**{s: values[s] for s in slots})


def script_parameter_mistake(script: Script, rng: random.Random) -> str | None:
    """A parameter error from the script alone: a template whose regex accepts the action, with one slot given a
    value it does not allow (another slot's value, or a name no world uses); the rules must reject it."""
    every = sorted({v for spec in script.available_actions.values() for vals in spec.parameters.values() for v in vals})
    templates = [t for t, spec in script.available_actions.items() if spec.slots and
                 all(spec.parameters.get(s) for s in spec.slots)]
    rng.shuffle(templates)
    for template in templates:
        spec = script.available_actions[template]
        values = {s: spec.parameters[s][0] for s in spec.slots}
        slot = spec.slots[0]
        wrong = [v for v in every if v not in spec.parameters[slot]] + list(UNKNOWN_NAMES)
        for value in wrong[:12]:
            action = _filled(template, spec.slots, {**values, slot: value})
            if match_action(script, action).kind == "bad_value":
                return action
    return None


def make_mistake(env: Any, kind: str, rng: random.Random) -> str | None:
    """The engine's own mistake of ``kind`` when it can make one, else (parameter errors) the script's."""
    own = env.mistake(kind) if callable(getattr(env, "mistake", None)) else None
    if own:
        return own
    if kind == "parameter_error":
        return script_parameter_mistake(env.script(), rng)
    return None


class InjectingModel(BaseChatModel):
    """The agent's model, except at reply ``injection.step``: its thought, then the injected action."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    inner: Any
    env: Any
    injection: Injection
    seed: int = 0
    calls: int = 0
    injected: str | None = None  # the action put in the agent's mouth, once it was
    unavailable: str | None = None  # why nothing was injected at the step (no such mistake here)

    @property
    def _llm_type(self) -> str:
        return "agentrefine-injecting"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        reply = self.inner.invoke(messages, stop=stop, **kwargs)
        self.calls += 1
        if self.calls == self.injection.step:
            mistake = make_mistake(self.env, self.injection.kind, random.Random(f"{self.seed}|{self.calls}"))
            if mistake is None:
                self.unavailable = f"no {self.injection.kind} can be made in this state"
            else:
                self.injected = mistake
                thought = parse_action(content_text(reply.content)).thought
                reply = AIMessage(format_assistant(thought, mistake))
        return ChatResult(generations=[ChatGeneration(message=reply)])


def injection_outcome(turns: Sequence[Turn | dict[str, Any]], injection: Injection, injected: str | None,
                      success: bool) -> dict[str, Any]:
    """What followed the injected action (see the module docstring)."""
    parsed = [t if isinstance(t, Turn) else Turn.model_validate(t) for t in turns]
    out: dict[str, Any] = {"kind": injection.kind, "step": injection.step, "injected": injected}
    players = [i for i, t in enumerate(parsed) if t.is_player]
    if injected is None or len(players) < injection.step:
        return {**out, "applied": False}
    at = players[injection.step - 1]
    answer = parsed[at + 1] if at + 1 < len(parsed) and parsed[at + 1].is_dm else None
    nxt = players[injection.step] if len(players) > injection.step else None
    after = parsed[nxt + 1] if nxt is not None and nxt + 1 < len(parsed) and parsed[nxt + 1].is_dm else None
    same = nxt is not None and normalize_action(parsed[nxt].action or "") == normalize_action(injected)
    return {**out, "applied": True, "flags": answer.flags if answer is not None else [],
            "next_action": parsed[nxt].action if nxt is not None else None,
            "recovered": bool(nxt is not None and after is not None and not after.flagged and not same),
            "repeated": bool(same), "success_after": bool(success)}


def summarize_injections(outcomes: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per kind: episodes, injections applied, recovery / repeat / success-after rates over applied ones."""
    per: dict[str, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        per.setdefault(outcome["kind"], []).append(outcome)
    table: dict[str, Any] = {}
    for kind, rows in per.items():
        applied = [r for r in rows if r.get("applied")]
        n = len(applied)

        def rate(key: str) -> float | None:
            return sum(bool(r.get(key)) for r in applied) / n if n else None  # noqa: B023 - used at once

        table[kind] = {"episodes": len(rows), "applied": n, "recovery_rate": rate("recovered"),
                       "repeat_rate": rate("repeated"), "success_after_rate": rate("success_after"),
                       "flagged_as_kind": sum(kind in (r.get("flags") or []) for r in applied)}
    return table


def injection_markdown(block: dict[str, Any]) -> str:
    """The summary's injection section: per kind, how often the agent recovered or repeated the mistake."""
    def pct(value: float | None) -> str:
        return "–" if value is None else f"{100 * value:.1f}"

    lines = [f"## Error injection ({block['injection']})", "",
             "At the given model reply the agent's action was replaced by a mistake of the kind; recovered = the "
             "next action was accepted and was not the mistake, repeated = the next action was the mistake again.",
             "", "| kind | episodes | injected | flagged as the kind | recovery % | repeat % | success after % |",
             "|---|---|---|---|---|---|---|"]
    for kind, row in block["kinds"].items():
        lines.append(f"| {kind} | {row['episodes']} | {row['applied']} | {row['flagged_as_kind']} | "
                     f"{pct(row['recovery_rate'])} | {pct(row['repeat_rate'])} | {pct(row['success_after_rate'])} |")
    return "\n".join(lines)


__all__ = ["KINDS", "InjectingModel", "Injection", "injection_markdown", "injection_outcome", "make_mistake",
           "script_parameter_mistake", "summarize_injections"]
