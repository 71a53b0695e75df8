"""The embedded grounded teacher's narration: environment text, DM judgements, the scripted Player's thoughts.

Tables of templates only (the grounded DM and Player fill them); kept apart from the LLM teacher's prompts
(:mod:`agentrefine_lg.prompts`) and the trained model's format (:mod:`agentrefine_lg.agent_format`).
"""

from __future__ import annotations

# Used by agentrefine_lg.synthesis.grounded (the embedded teacher over TextWorld games: no key, no network).
# Thoughts are templates filled from the engine's state; they quote the engine's own observations.

GROUNDED_KIND_TEXT = {
    "custom": "A small house in which the player must complete a quest",
    "cooking": "A house in which the player must gather ingredients, prepare a recipe and eat the meal",
    "treasure_hunter": "A house in which the player must find and take one particular object (taking a wrong one loses)",
    "coin_collector": "A maze of rooms in which the player must find and take the coin",
}

GROUNDED_ENV_DESCRIPTION = (
    "{kind_text}. It has {n_rooms} room(s): {rooms}. The player starts in the {room}{carrying}. "
    "Rooms connect through exits (north, south, east, west), some of them through doors; containers may be "
    "closed or locked; objects are only reachable in the room the player is in."
)

GROUNDED_ACTION_HELP = {
    "go": "Move through an exit of the current room.",
    "open": "Open a closed door or container here.",
    "close": "Close an open door or container here.",
    "lock": "Lock a door or container with a key you carry.",
    "unlock": "Unlock a locked door or container with a key you carry.",
    "look": "Describe the current room.",
    "inventory": "List what you carry.",
    "take": "Pick up an object lying here (on the floor).",
    "take_from": "Take an object out of a container or off a supporter here.",
    "drop": "Drop a carried object on the floor.",
    "insert": "Put a carried object into an open container here.",
    "put": "Put a carried object on a supporter here.",
    "examine": "Look closely at something here.",
    "eat": "Eat a carried food item.",
    "drink": "Drink a carried liquid.",
    "prepare": "Combine the recipe's prepared ingredients (carried) into the meal, in the kitchen.",
    "cook": "Cook a carried food item with a heat source here (stove fries, oven roasts, BBQ/toaster grills).",
    "slice": "Slice a carried food item with a carried knife.",
    "dice": "Dice a carried food item with a carried knife.",
    "chop": "Chop a carried food item with a carried knife.",
}

GROUNDED_LOSE_CONDITION = "The game is lost (and can no longer be completed) if any of these happens: {facts}."

# DM: observations for actions the rule check rejects (the engine never sees them), and DM thoughts.
GROUNDED_OBS_NO_TEMPLATE = 'I don\'t understand "{action}". Commands must be written exactly in one of the available forms{hint}.'
GROUNDED_OBS_BAD_VALUE = 'There is no {slot_words} called "{value}" in this game. In "{template}", {{{slot}}} must be one of the exact names this game uses.'
GROUNDED_OBS_LOST_SUFFIX = "(That ended the game in failure, so the game was rewound to just before it.)"

GROUNDED_DM_OPEN = "The game starts: show the objective and the first room."
GROUNDED_DM_OK = 'The engine accepted "{action}".'
GROUNDED_DM_WON = 'The engine accepted "{action}" and reports the quest complete.'
GROUNDED_DM_PARAMETER = 'The rule check rejects "{action}": {reason}'
GROUNDED_DM_PLACE = 'The {entity} is {where}, but the player is in the {room}, so "{action}" cannot reach it.'
GROUNDED_DM_LOGIC = 'The command "{action}" is well-formed and its objects are here, but the engine refuses it in this state.'
GROUNDED_DM_LOST = 'The command "{action}" loses the game; the engine is rewound to before it.'

# Player: thoughts for the plan's next step, keyed by action kind; one variant is drawn per turn.
GROUNDED_STEP = {
    "go": ["I'll go {direction}{toward}.", "Next I head {direction}{toward}.", "The way on leads {direction}{toward}, so I go there."],
    "open": ["The {target} is closed; I'll open it.", "I need what is behind or inside the {target}, so I open it first."],
    "unlock": ["The {target} is locked and I carry the {key}; I'll unlock it.", "I have the {key}, which should fit the locked {target}."],
    "take_from": ["The {item} is {where}; I'll take it.", "I need the {item}, which is {where}, so I take it from there."],
    "take": ["The {item} is here; I'll pick it up.", "I need the {item}, and it is right here, so I take it."],
    "drop": ["I'll drop the {item} here.", "The {item} should stay here; I drop it."],
    "put": ["The {item} belongs on the {target}; I'll put it there.", "I'll place the {item} on the {target}."],
    "insert": ["The {item} goes into the {target}; I'll insert it.", "I'll put the {item} into the {target}."],
    "eat": ["Eating the {item} is what the objective asks; I'll eat it.", "Now I can eat the {item}."],
    "cook": ["The recipe wants the {item} cooked; I'll use the {target}.", "Time to cook the {item} with the {target}."],
    "cut": ["The recipe says to {verb} the {item}; I have the {target} for that.", "I'll {verb} the {item} with the {target}."],
    "prepare": ["All ingredients are ready, so I'll prepare the meal.", "Everything the recipe needs is done; prepare the meal."],
    "examine": ["Let me examine the {target} to learn what I need.", "The {target} may tell me more; I'll examine it."],
    "inventory": ["First let me check what I'm carrying.", "Let me look at my inventory."],
    "look": ["Let me look around again.", "I'll look at the room once more."],
    "other": ['Next step towards the goal: "{action}".'],
}
# The first thought restates the objective as the plan's steps, not the goal's prose: the goal text lists
# the same steps wrapped in a preamble ("Who's got a virtual machine...") that a small student copying it
# word for word runs out of reply on before the first direction (measured: docs/method_study.md, 900 steps).
GROUNDED_FIRST = "The objective, step by step: {steps}. "

# Player: thoughts on the turn that contains a (deliberate, realistic) mistake.
GROUNDED_MISTAKE = {
    "parameter": ["I'll just type it the way I'd say it.", "I know what to do next; I'll send the command.", "This should do the next step."],
    "place": ["The {entity} is what I need; I'll deal with it right away.", "No need to walk around first; I'll go straight for the {entity}."],
    "wander": ["Perhaps the {entity} helps with the goal; I'll try it now.", "The {entity} might be useful; let me deal with it."],
    "no_exit": ["Maybe the way on is {direction}; I'll try going {direction}.", "I'll try the {direction} side of the room."],
    "order": ["I can save a step and do this straight away.", "Let me skip ahead to the part that matters."],
    "logic": ["Let me try this; it might help with the goal.", "I think this is the next thing to do."],
}

# Player: refinement thoughts, citing the DM's observation ({obs}) and explaining the correction.
GROUNDED_REFINE = {
    "no_template": 'The game said "{obs}" My command "{bad}" is not one of the allowed forms; it has to be written as "{form}", so I\'ll send "{fix}".',
    "bad_value": 'The game said "{obs}" "{value}" is not a name this game knows; the {slot} I mean is called "{right}". I\'ll send "{fix}".',
    "place": 'The game said "{obs}" The {entity} is {where}, not here in the {room}, so that has to wait until I am there. {next}',
    "no_exit": 'The game said "{obs}" There is no exit {direction} of the {room}; the exits lead {exits}. {next}',
    "order": 'The game said "{obs}" I skipped a step: "{fix}" has to come before "{bad}". {next}',
    "logic": 'The game said "{obs}" So "{bad}" does not work in the current state. {next}',
}
