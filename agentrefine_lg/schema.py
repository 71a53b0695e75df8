"""The AgentRefine data model: personas, scripts, trajectories and refinement-tuning samples.

The models read and write the paper's own key spellings (Figure 4: ``Environment``, ``Goal``,
``Completion Conditions``, ``Available Actions`` with ``verification code`` and ``parameters``; turns
with ``turn``, ``role``, ``Thought``, ``Action``, ``Observation`` and the three error flags) so that a
strong LLM's raw JSON loads as is; Python attributes are snake_case. Unknown keys are kept and written
back, so a paper-format document round-trips unchanged.

Structural validity lives here (types, required keys). Semantic validity (regexes compile, actions
match, error->refine pairs) is the job of :mod:`agentrefine_lg.checks`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

ERROR_FLAGS: tuple[str, ...] = ("parameter_error", "place_error", "logic_error")
"""The DM's three error flags, in the paper's order."""

Role = Literal["Player", "DM"]
ChatRole = Literal["system", "user", "assistant"]

_PAPER = ConfigDict(populate_by_name=True, extra="allow", serialize_by_alias=True)


class _PaperModel(BaseModel):
    """Base for paper-format models: alias keys in and out, extra keys preserved."""

    model_config = _PAPER

    def to_paper(self) -> dict[str, Any]:
        """The paper-format dict: alias keys, only the keys that were given or set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_paper(), ensure_ascii=False, **kwargs)


class Persona(BaseModel):
    """A persona that seeds one script (Persona Hub's ``{"persona": ...}`` rows)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    text: str = Field(validation_alias=AliasChoices("persona", "text"), serialization_alias="persona", min_length=1)

    @field_validator("text")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value:
            raise ValueError("persona text is empty")
        return value

    @property
    def id(self) -> str:
        """A stable id: the first 16 hex digits of the SHA-256 of the normalised text."""
        return persona_id(self.text)


def persona_id(text: str) -> str:
    """Stable id of a persona text (case and whitespace insensitive)."""
    norm = " ".join(text.lower().split())
    return hashlib.sha256(norm.encode()).hexdigest()[:16]


class ActionSpec(_PaperModel):
    """One entry of ``Available Actions``: a template such as ``cd {path}`` with its check.

    ``verification_code`` is a regular expression written by an LLM; its capture groups, in order,
    are the template's ``{slots}``. ``parameters`` maps each slot to its allowed values.
    """

    template: SkipJsonSchema[str] = Field(default="", exclude=True, description="The action template, e.g. 'cd {path}' (the dict key).")
    description: str | None = None
    verification_code: str = Field(alias="verification code", description="Regex; one capture group per slot.")
    parameters: dict[str, list[str]] = Field(default_factory=dict, description="Allowed values per slot.")

    @field_validator("parameters", mode="before")
    @classmethod
    def _coerce_values(cls, value: Any) -> Any:
        # LLMs write numbers for numeric values ("value": [1, 2, 3]); keep them as the strings the
        # player would type. A null list means "no values", which checks.py reports as a script fault.
        if isinstance(value, dict):
            return {
                str(k): [str(v) if not isinstance(v, str) else v for v in (vals or [])]
                if isinstance(vals, list) else vals
                for k, vals in value.items()
            }
        return value

    @property
    def slots(self) -> list[str]:
        """The ``{slot}`` names of the template, in order."""
        return template_slots(self.template)


def template_slots(template: str) -> list[str]:
    """``'set {file} {key} {value}'`` -> ``['file', 'key', 'value']``."""
    import string

    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:  # unbalanced braces: no usable slots
        return []


class Script(_PaperModel):
    """An environment script: environment, goal, completion conditions and available actions."""

    persona: str | None = Field(default=None, alias="Persona")
    environment: Any = Field(alias="Environment", description="Locations, items, documents, player state.")
    goal: str = Field(alias="Goal")
    completion_conditions: list[str] = Field(alias="Completion Conditions")
    available_actions: dict[str, ActionSpec] = Field(alias="Available Actions")

    @field_validator("completion_conditions", mode="before")
    @classmethod
    def _one_condition(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fill_templates(self) -> Script:
        for key, spec in self.available_actions.items():
            spec.template = key
        return self

    def to_paper(self) -> dict[str, Any]:
        out = super().to_paper()
        # Each ActionSpec's template is its key; nested dumps already drop it (exclude=True).
        return out


class Turn(_PaperModel):
    """One turn of a trajectory: a Player action or a DM observation with error flags."""

    turn: int | None = None
    role: Role
    thought: str | None = Field(default=None, alias="Thought")
    action: str | None = Field(default=None, alias="Action")
    observation: str | None = Field(default=None, alias="Observation")
    parameter_error: bool | None = None
    place_error: bool | None = None
    logic_error: bool | None = None
    task_completed: bool | None = Field(
        default=None, description="Optional: true on the DM turn that completes the task (decision 3)."
    )

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        if isinstance(value, str):
            canon = {"player": "Player", "dm": "DM"}.get(value.strip().lower())
            if canon is None:
                raise ValueError(f"unknown role {value!r}: expected 'Player' or 'DM'")
            return canon
        return value

    @property
    def is_player(self) -> bool:
        return self.role == "Player"

    @property
    def is_dm(self) -> bool:
        return self.role == "DM"

    @property
    def flagged(self) -> bool:
        """True when this DM turn sets any of the three error flags."""
        return any(getattr(self, flag) for flag in ERROR_FLAGS)

    @property
    def flags(self) -> list[str]:
        return [flag for flag in ERROR_FLAGS if getattr(self, flag)]


class Trajectory(BaseModel):
    """A list of turns. Accepts the paper's bare JSON list, or ``{"turns": [...]}``."""

    model_config = ConfigDict(populate_by_name=True)

    turns: list[Turn] = Field(default_factory=list, validation_alias=AliasChoices("turns", "trajectory", "Trajectory"))

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, value: Any) -> Any:
        return {"turns": value} if isinstance(value, list) else value

    def to_paper(self) -> list[dict[str, Any]]:
        """The paper-format JSON list."""
        return [turn.to_paper() for turn in self.turns]

    def __len__(self) -> int:
        return len(self.turns)

    def __iter__(self):  # type: ignore[override]
        return iter(self.turns)

    def __getitem__(self, index: int) -> Turn:
        return self.turns[index]


class Message(BaseModel):
    """A chat message of a refinement sample. ``train`` is False on erroneous assistant turns."""

    model_config = ConfigDict(extra="ignore")

    role: ChatRole
    content: str
    train: bool | None = Field(default=None, description="Assistant turns only: whether its tokens get loss.")

    @model_validator(mode="after")
    def _default_train(self) -> Message:
        if self.role == "assistant" and self.train is None:
            self.train = True
        if self.role != "assistant":
            self.train = None
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.role == "assistant":
            out["train"] = bool(self.train)
        return out


class TokenUsage(BaseModel):
    """LLM token usage, summed over every call that produced a sample (rejected attempts included)."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    calls: int = 0

    def add(self, other: TokenUsage | dict[str, Any] | None) -> TokenUsage:
        if other is None:
            return self
        if isinstance(other, dict):
            other = TokenUsage.model_validate(other)
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            calls=self.calls + other.calls,
        )


class RefinementSample(BaseModel):
    """One refinement-tuning example: chat messages with per-turn train flags, plus provenance.

    ``script`` and ``trajectory`` are kept when known so the sample can be re-verified
    (``agentrefine check``) and re-converted with another template.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    messages: list[Message]
    persona: str | None = None
    teacher: str | None = Field(default=None, description="The model (or engine) that wrote the data.")
    attempts: dict[str, int] = Field(default_factory=dict, description="Counted retries: script, trajectory, ...")
    usage: TokenUsage = Field(default_factory=TokenUsage)
    source: str = Field(default="agentrefine-lg", description="Where the record came from (reader name).")
    script: Script | None = None
    trajectory: Trajectory | None = None

    @field_validator("messages")
    @classmethod
    def _non_empty(cls, value: list[Message]) -> list[Message]:
        if not value:
            raise ValueError("a sample needs at least one message")
        return value

    @field_validator("trajectory", mode="before")
    @classmethod
    def _trajectory(cls, value: Any) -> Any:
        return {"turns": value} if isinstance(value, list) else value

    @property
    def trainable_turns(self) -> int:
        return sum(1 for m in self.messages if m.role == "assistant" and m.train)

    def to_dict(self) -> dict[str, Any]:
        """The JSONL row: messages as plain dicts, script/trajectory in the paper's format."""
        out = self.model_dump(mode="json", exclude={"messages", "script", "trajectory"})
        out["messages"] = [m.to_dict() for m in self.messages]
        if self.script is not None:
            out["script"] = self.script.to_paper()
        if self.trajectory is not None:
            out["trajectory"] = self.trajectory.to_paper()
        return out


def script_json_schema() -> dict[str, Any]:
    """JSON Schema of a script in the paper's keys, for ``with_structured_output`` / response formats."""
    return Script.model_json_schema(by_alias=True, mode="validation")


def trajectory_json_schema() -> dict[str, Any]:
    """JSON Schema of ``{"turns": [...]}`` in the paper's keys."""
    return Trajectory.model_json_schema(by_alias=True, mode="validation")


__all__ = [
    "ERROR_FLAGS",
    "ActionSpec",
    "Message",
    "Persona",
    "RefinementSample",
    "Script",
    "TokenUsage",
    "Trajectory",
    "Turn",
    "persona_id",
    "script_json_schema",
    "template_slots",
    "trajectory_json_schema",
]
