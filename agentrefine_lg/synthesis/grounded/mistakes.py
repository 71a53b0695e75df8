"""The grounded Player's mistakes: well-formed or not, each built from the current state, of the DM's three kinds.

- parameter errors: the next command in a wrong form (``take the apple please``, a verb the grammar lacks,
  a shortened or invented name, swapped arguments, ``n`` for ``go north``);
- place errors: jumping ahead to a later step whose object is in another room, or handling something
  that is elsewhere;
- logic errors: an exit that does not exist, a later step done too early (taking before opening,
  unlocking before fetching the key), taking what is already carried, opening what is open or locked.

Used by the Player (which makes them) and by the DM's ``mistake`` (an evaluation's injected mistake), so both
make the same mistakes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentrefine_lg.checks import match_action
from agentrefine_lg.schema import Script
from agentrefine_lg.synthesis.grounded.engine import DIRECTIONS, WorldState
from agentrefine_lg.synthesis.grounded.script import target_entities

ERROR_KINDS = ("parameter_error", "place_error", "logic_error")

# Verbs people type that the game's grammar does not have (each makes a parameter error).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "take": ("grab", "pick up", "get"), "go": ("walk", "move", "head"), "open": ("pry open", "unseal"),
    "close": ("shut",), "unlock": ("unbolt",), "eat": ("consume", "devour"), "drink": ("sip",),
    "put": ("place", "set"), "insert": ("put", "place"), "drop": ("put down", "discard"),
    "examine": ("inspect", "check", "read"), "cook": ("fry", "roast", "heat"), "slice": ("cut",),
    "dice": ("cut", "cube"), "chop": ("cut", "hack"), "prepare": ("make", "cook"),
    "inventory": ("check inventory", "show items"), "look": ("look around", "describe room"),
}
# Names a player might guess that a generated world may not have.
GUESSED_NAMES = ("apple", "key", "sword", "lamp", "book", "box", "bottle", "rope", "map", "torch", "knife", "coin")


@dataclass
class Mistake:
    action: str
    kind: str  # one of ERROR_KINDS
    sub: str  # parameter | place | wander | no_exit | order | logic (selects the thought template)
    entity: str = ""
    direction: str = ""
    priority: int = 1  # 0 = most natural, tried first


def parameter_mistakes(script: Script, command: str, rng: random.Random) -> list[Mistake]:
    """Wrong forms of ``command`` (the plan's next step) that the rule check rejects."""
    m = match_action(script, command)
    values = list(m.values.values())
    verb = command.split()[0]
    every = {v for spec in script.available_actions.values() for vals in spec.parameters.values() for v in vals}
    out = [f"{command} please"]
    if verb == "go" and values:
        d = values[0]
        out += [d, f"go {d[0]}", f"go to the {d}"]
    elif values:
        first = values[0]
        out.append(command.replace(first, "the " + first, 1))
        words = first.split()
        if len(words) > 1:
            out.append(command.replace(first, words[-1], 1))  # a shortened name, as people type
        guesses = [g for g in GUESSED_NAMES if g not in every and g not in command]
        if guesses:
            out.append(command.replace(first, rng.choice(guesses), 1))
        if len(values) == 2 and m.template:
            slots = list(m.values)
            out.append(m.template.format(**{slots[0]: values[1], slots[1]: values[0]}))
        else:
            out.append(f"{command[len(verb):].strip()} {verb}")
    for synonym in SYNONYMS.get(verb, ()):
        out.append(synonym + command[len(verb):])
    seen: set[str] = set()
    result = []
    for action in out:
        if action not in seen and not match_action(script, action).ok:
            seen.add(action)
            result.append(Mistake(action, "parameter_error", "parameter"))
    return result


def place_mistakes(script: Script, state: WorldState) -> list[Mistake]:
    """Actions on things that exist but are in another room: later plan steps first, then anything far."""
    out: list[Mistake] = []
    for command in state.policy[1:]:
        m = match_action(script, command)
        far = [e for e in target_entities(m.values) if state.exists(e) and not state.reachable(e)] if m.ok else []
        if far:
            out.append(Mistake(command, "place_error", "place", entity=far[0], priority=0))
    for template in ("take {item}", "open {door_or_container}", "examine {thing}"):
        spec = script.available_actions.get(template)
        if spec is None:
            continue
        slot = spec.slots[0]
        for value in spec.parameters.get(slot, []):
            if state.exists(value) and not state.reachable(value):
                out.append(Mistake(template.format(**{slot: value}), "place_error", "wander", entity=value))
    return out


def logic_mistakes(script: Script, state: WorldState) -> list[Mistake]:
    """Well-formed actions on things at hand that the engine refuses in this state."""
    out: list[Mistake] = []
    exits = state.exits.get(state.room or "", {})
    for d in DIRECTIONS:
        if d not in exits:
            out.append(Mistake(f"go {d}", "logic_error", "no_exit", direction=d, priority=0))
    for command in state.policy[1:4]:
        m = match_action(script, command)
        if m.ok and command not in state.admissible and all(state.reachable(e) for e in target_entities(m.values)):
            out.append(Mistake(command, "logic_error", "order", entity=(target_entities(m.values) or [""])[0], priority=0))
    if "take {item}" in script.available_actions:
        out += [Mistake(f"take {x}", "logic_error", "logic", entity=x) for x in state.inventory]
    if "open {door_or_container}" in script.available_actions:
        for name in script.available_actions["open {door_or_container}"].parameters["door_or_container"]:
            if state.reachable(name) and (state.has("open", name) or state.has("locked", name)):
                out.append(Mistake(f"open {name}", "logic_error", "logic", entity=name))
    if "eat {food}" in script.available_actions:
        for name in script.available_actions["eat {food}"].parameters["food"]:
            if state.reachable(name) and name not in state.inventory:
                out.append(Mistake(f"eat {name}", "logic_error", "logic", entity=name))
    return out


__all__ = ["ERROR_KINDS", "GUESSED_NAMES", "SYNONYMS", "Mistake", "logic_mistakes", "parameter_mistakes",
           "place_mistakes"]
