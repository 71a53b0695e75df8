"""A generated game as an AgentRefine script: environment, goal, completion conditions, actions.

The actions are the game's own grammar (``take {item} from {container_or_supporter}``, ...) with an
anchored verification regex per template (one lazy capture group per slot, no nested quantifiers) and
the game's entity names as the allowed values, so every walkthrough command passes the rule check.
"""

from __future__ import annotations

import re
from typing import Any

from agentrefine_lg.errors import InputError
from agentrefine_lg.schema import ActionSpec, Script
from agentrefine_lg.synthesis.grounded import narration
from agentrefine_lg.synthesis.grounded.engine import ENGINE_NAME, Fact, GameInfo, GameSpec, WorldState

INSTRUMENT_SLOTS = frozenset({"key", "tool"})
"""Action slots that name what an action is done *with*, not what it is done *to*."""


def target_entities(values: dict[str, str]) -> list[str]:
    """The entities an action is done to: its slot values but directions and instruments."""
    return [v for slot, v in values.items() if slot not in INSTRUMENT_SLOTS and slot != "direction"]

GROUNDING_KEY = "Grounding"
"""Extra script key naming the engine and game a grounded script was derived from."""


def verification_regex(template: str) -> str:
    r"""``'take {item} from {source}'`` -> ``'^\s*take\s+(.+?)\s+from\s+(.+?)\s*$'``."""
    tokens: list[str] = []
    for part in re.split(r"(\{\w+\})", template):
        if re.fullmatch(r"\{\w+\}", part):
            tokens.append("(.+?)")
        else:
            tokens.extend(re.escape(word) for word in part.split())
    return r"^\s*" + r"\s+".join(tokens) + r"\s*$"


_STATE_WORDS = {"eaten": "has been eaten", "consumed": "has been eaten"}


def render_fact(fact: Fact) -> str:
    """One engine fact as an English sentence (without the final period)."""
    pred, args = fact
    if pred == "at" and args[0] == "P":
        return f"the player is in the {args[1]}"
    if pred == "in" and len(args) == 2 and args[1] == "I":
        return f"the player carries the {args[0]}"
    if pred == "at" and len(args) == 2:
        return f"the {args[0]} is in the {args[1]}"
    if pred == "in" and len(args) == 2:
        return f"the {args[0]} is in the {args[1]}"
    if pred == "on" and len(args) == 2:
        return f"the {args[0]} is on the {args[1]}"
    if len(args) == 1:
        return f"the {args[0]} {_STATE_WORDS.get(pred, 'is ' + pred.replace('_', ' '))}"
    return f"{pred}({', '.join(args)})"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def completion_conditions(info: GameInfo) -> list[str]:
    """One condition per quest (alternatives joined by 'or'), then the losing conditions, if any."""
    out: list[str] = []
    for alternatives in info.win:
        options = [" and ".join(render_fact(f) for f in alt) for alt in alternatives]
        sentence = _sentence(" or ".join(dict.fromkeys(options)))
        if sentence not in out:
            out.append(sentence)
    if not out and info.walkthrough:
        out.append(f'The game reports the quest as won (its walkthrough ends with "{info.walkthrough[-1]}").')
    if info.fail:
        facts = "; ".join(render_fact(f) for f in info.fail)
        out.append(narration.GROUNDED_LOSE_CONDITION.format(facts=facts))
    return out


def _describe_object(name: str, state: WorldState, categories: dict[str, str]) -> str:
    category = categories.get(name, "object")
    bits = [category]
    for pred in ("locked", "closed", "open"):
        if state.has(pred, name):
            bits.append(pred)
            break
    inside = sorted(e for e, (rel, h) in state.holder.items() if h == name)
    if inside:
        bits.append(("holds: " if category == "supporter" else "contains: ") + ", ".join(inside))
    return "; ".join(bits)


def environment(info: GameInfo) -> dict[str, Any]:
    """The starting world as the paper's free-form ``Environment`` object: rooms, exits, doors, objects."""
    state = info.initial
    rooms: dict[str, Any] = {}
    for room in info.rooms:
        exits = dict(sorted(state.exits.get(room, {}).items()))
        entry: dict[str, Any] = {"exits": exits}
        doors = {d: f"{door} ({next((p for p in ('locked', 'closed', 'open') if state.has(p, door)), 'open')})"
                 for (r, d), door in sorted(state.door_at.items()) if r == room}
        if doors:
            entry["doors"] = doors
        here = sorted(e for e, (rel, h) in state.holder.items() if rel == "at" and h == room)
        objects = {name: _describe_object(name, state, info.categories) for name in here}
        if objects:
            entry["objects"] = objects
        rooms[room] = entry
    carrying = state.inventory
    description = narration.GROUNDED_ENV_DESCRIPTION.format(
        kind_text=narration.GROUNDED_KIND_TEXT.get(info.kind, narration.GROUNDED_KIND_TEXT["custom"]),
        n_rooms=len(info.rooms),
        rooms=", ".join(info.rooms),
        room=state.room,
        carrying=f", carrying: {', '.join(carrying)}" if carrying else ", carrying nothing",
    )
    return {
        "description": description,
        "rooms": rooms,
        "player": {"location": state.room, "inventory": carrying},
    }


def available_actions(info: GameInfo) -> dict[str, ActionSpec]:
    out: dict[str, ActionSpec] = {}
    for form in info.forms:
        out[form.template] = ActionSpec(
            template=form.template,
            description=narration.GROUNDED_ACTION_HELP.get(
                f"{form.verb}_from" if " from " in form.template else form.verb, ""),
            verification_code=verification_regex(form.template),
            parameters={slot: list(values) for slot, values in form.parameters.items()},
        )
    return out


def script_from_game(info: GameInfo, *, persona: str | None = None, spec: GameSpec | None = None) -> Script:
    """The script of a generated game. ``Grounding`` (an extra key) names the game so the DM can load it."""
    grounding: dict[str, Any] = {"engine": ENGINE_NAME, "game": info.name}
    if spec is not None:
        grounding["spec"] = spec.to_dict()
    return Script.model_validate({
        "Persona": persona,
        "Environment": environment(info),
        "Goal": info.objective or "Win the game.",
        "Completion Conditions": completion_conditions(info),
        "Available Actions": {k: v.to_paper() for k, v in available_actions(info).items()},
        GROUNDING_KEY: grounding,
    })


def grounding_of(script: Script) -> dict[str, Any]:
    """The ``Grounding`` entry of a grounded script, or a clear error for any other script."""
    data = (script.model_extra or {}).get(GROUNDING_KEY)
    if not isinstance(data, dict) or data.get("engine") != ENGINE_NAME or not data.get("game"):
        raise InputError(
            f"this script has no '{GROUNDING_KEY}' entry naming a {ENGINE_NAME} game; the grounded DM and "
            "Player only play scripts written by GroundedScriptWriter",
            field=GROUNDING_KEY,
        )
    return data


__all__ = [
    "INSTRUMENT_SLOTS",
    "target_entities",
    "GROUNDING_KEY",
    "available_actions",
    "completion_conditions",
    "environment",
    "grounding_of",
    "render_fact",
    "script_from_game",
    "verification_regex",
]
