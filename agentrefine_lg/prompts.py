"""Every prompt template of agentrefine-lg, in one place.

Sections are owned by the module that uses them; templates are ``str.format`` strings (literal braces doubled).
"""

from __future__ import annotations

# --- agent task instruction (training conversion AND evaluation: docs/method.md §5 and §6) ---

AGENT_SYSTEM = """You are an agent acting in an interactive environment. Read the environment's feedback after every action and correct yourself when an action fails.

Environment:
{environment}

Goal: {goal}

Completion conditions:
{conditions}

Available actions (use exactly these forms; replace each {{slot}} with one allowed value):
{actions}

Answer format: every reply is one thought and one action, exactly:
Thought: <your reasoning about the last observation and what to do next>
Action: <one action>"""

AGENT_ACTION_LINE = "- {template}{description}\n  allowed values: {values}"

AGENT_TURN = "Thought: {thought}\nAction: {action}"

# --- synthesis teacher ---
# Used by agentrefine_lg.llm_roles (LLM teacher: script writer, one-shot trajectory writer, Player, DM).
# The key spellings are the paper's (Figure 4) so the teacher's raw JSON parses as is (docs/method.md §1).

SYNTH_SCRIPT_SYSTEM = """You design scripts for text-based role-playing games (like a TRPG Dungeon Master's notes). Each script is one small, self-contained interactive environment in which a Player must reach a goal with a fixed set of text actions. Scripts become training data for agents, so every action must be checkable by a regular expression. Reply with one JSON object and nothing else."""

SYNTH_SCRIPT_USER = """Write a script inspired by this persona:
{persona}

The environment should be one this person would plausibly work, study or play in. Use exactly these keys:
- "Environment": an object describing the world: "description" (one paragraph), the locations, items, documents and the player's starting state. Invent concrete names and values.
- "Goal": one sentence the Player must achieve; it needs several steps (at least 3 actions).
- "Completion Conditions": a list of checkable facts that hold when the goal is reached.
- "Available Actions": an object keyed by action template, e.g. "cd {{path}}". Each value has
  "description" (what it does), "verification code" (a Python regular expression that fully matches a valid use of the action, with exactly one capture group per {{slot}}, in the template's order) and "parameters" (for every slot, the list of allowed values as strings).
Give 4 to 8 actions. Keep regexes simple and linear: anchors, literals, \\s+, (\\S+) or (\\w+) or ([^ ]+); never nest quantifiers such as (a+)+ or (\\w+\\s?)*.

An example for the persona "a recent graduate joining the IT department and eager to learn UNIX administration":
{example}
{problems}"""

SYNTH_TRAJECTORY_SYSTEM = """You write play-throughs of text-based role-playing games. Two parties alternate: the DM (who runs the environment of the script and reports what happens) and the Player (an agent that thinks, then acts). The play-through is training data for agents that must notice their mistakes from the environment's feedback and fix them. Reply with one JSON list of turns and nothing else."""

SYNTH_TRAJECTORY_USER = """The script:
{script}

Write the full play-through as a JSON list of turns that alternate between "DM" and "Player", starting with a DM turn that describes the starting situation.
- A Player turn: {{"turn": n, "role": "Player", "Thought": "...", "Action": "..."}}. A valid Action is one of the Available Actions with every {{slot}} replaced by one allowed value, written exactly as the template (so that its "verification code" matches it).
- A DM turn: {{"turn": n, "role": "DM", "Thought": "...", "Observation": "...", "parameter_error": false, "place_error": false, "logic_error": false, "task_completed": false}}.
  Set "parameter_error" when the Player's action does not match an available action or uses a value that is not allowed; "place_error" when the action is valid but impossible where the Player is or with what is at hand; "logic_error" when it is valid but breaks the task's logic or order. The Observation explains the error concretely.
- Required mistakes: at least {min_pairs} times the Player makes a realistic mistake (mix the three kinds), the DM flags it with the right flag, and the Player's NEXT action corrects it, using the feedback. Every action the DM does not flag must be valid.
- The last turn is a DM turn without error flags that reports the goal reached and sets "task_completed": true (only that turn sets it).

An example of the format:
{example}
{prefix}{problems}"""

SYNTH_TRAJECTORY_PREFIX = """
These first {n} turns are already verified. Reply with the COMPLETE list: these turns unchanged, then the continuation.
{turns}
"""

SYNTH_PROBLEMS = """
Your previous attempt was rejected by the checker. Fix these problems:
{problems}
"""

SYNTH_PLAYER_TEACHER = """

You are generating training data about self-correction. Play like a capable but imperfect agent: before completing the goal you must make at least {min_pairs} realistic mistakes (a wrong or misspelled parameter, an action in the wrong place, or a step out of order), each followed by reading the feedback and fixing it in your next action. Mistakes so far: {mistakes}. Never repeat the same mistake."""

SYNTH_DM_SYSTEM = """You are the Dungeon Master of a text-based role-playing game. You run the environment of the script below exactly and report what happens after each Player action. Reply with one JSON object and nothing else:
{{"Thought": "...", "Observation": "...", "parameter_error": false, "place_error": false, "logic_error": false, "task_completed": false}}
Set "parameter_error" when the action does not match an available action or uses a value that is not allowed; "place_error" when it is valid but impossible where the Player is; "logic_error" when it is valid but breaks the task's logic or order. The Observation says what happened (for an error: what went wrong, concretely). Set "task_completed" to true only when every completion condition holds after this action.

The script:
{script}"""

SYNTH_DM_OPEN = """The game starts. Describe the Player's starting situation (where they are, what they see) as the Observation. All flags false."""

SYNTH_DM_TURN = """The play so far:
{history}

The Player's last action: {action!r}
Rule check of that action: {rule}
Answer with the next DM turn."""

SYNTH_FORMAT_FEEDBACK = """Your reply could not be used: {problem}
Reply again with only the corrected {what}."""

SYNTH_PLAYER_FORMAT = "Thought: <reasoning>\\nAction: <one action>"

SYNTH_SCRIPT_EXAMPLE = """{
  "Environment": {
    "description": "A small Linux workstation. The player starts in /home/user. A project folder holds the configuration of a backup service.",
    "locations": ["/home/user", "/home/user/project", "/etc"],
    "documents": {"/home/user/notes.txt": "The backup service reads project/config.cfg.", "/home/user/project/config.cfg": "mode=off\\nretries=3"},
    "player": {"location": "/home/user"}
  },
  "Goal": "Navigate to the project folder and edit config.cfg so that it contains 'mode=on'.",
  "Completion Conditions": ["The player is in /home/user/project.", "config.cfg contains the line 'mode=on'."],
  "Available Actions": {
    "cd {path}": {"description": "Change the current directory.", "verification code": "^\\\\s*cd\\\\s+(\\\\S+)\\\\s*$", "parameters": {"path": ["/home/user", "project", "..", "/etc"]}},
    "cat {file}": {"description": "Print a file.", "verification code": "^\\\\s*cat\\\\s+(\\\\S+)\\\\s*$", "parameters": {"file": ["notes.txt", "config.cfg"]}},
    "set {file} {key} {value}": {"description": "Set key=value in a file of the current directory.", "verification code": "^\\\\s*set\\\\s+(\\\\S+)\\\\s+(\\\\w+)\\\\s+(\\\\w+)\\\\s*$", "parameters": {"file": ["config.cfg"], "key": ["mode", "retries"], "value": ["on", "off", "1", "2", "3"]}}
  }
}"""

SYNTH_TRAJECTORY_EXAMPLE = """[
  {"turn": 1, "role": "DM", "Thought": "Describe the start.", "Observation": "You are in /home/user. You see notes.txt and a folder named project.", "parameter_error": false, "place_error": false, "logic_error": false, "task_completed": false},
  {"turn": 2, "role": "Player", "Thought": "I will edit the file right away.", "Action": "set config.cfg mode on"},
  {"turn": 3, "role": "DM", "Thought": "config.cfg is not in /home/user.", "Observation": "Error: config.cfg: no such file in /home/user.", "parameter_error": false, "place_error": true, "logic_error": false, "task_completed": false},
  {"turn": 4, "role": "Player", "Thought": "The file is in the project folder; go there first.", "Action": "cd project"},
  {"turn": 5, "role": "DM", "Thought": "Valid move.", "Observation": "You are in /home/user/project. You see config.cfg.", "parameter_error": false, "place_error": false, "logic_error": false, "task_completed": false},
  {"turn": 6, "role": "Player", "Thought": "Set the mode.", "Action": "set mode=on in config.cfg"},
  {"turn": 7, "role": "DM", "Thought": "Does not match 'set {file} {key} {value}'.", "Observation": "Error: invalid format. Usage: set {file} {key} {value}.", "parameter_error": true, "place_error": false, "logic_error": false, "task_completed": false},
  {"turn": 8, "role": "Player", "Thought": "The usage is set FILE KEY VALUE.", "Action": "set config.cfg mode on"},
  {"turn": 9, "role": "DM", "Thought": "Valid; both conditions hold.", "Observation": "config.cfg updated: mode=on. Task complete.", "parameter_error": false, "place_error": false, "logic_error": false, "task_completed": true}
]"""

# --- refine agent / chat model ---

# Tool mode of the refine agent (no environment script): the tools are the available actions. Action syntax is
# the one chat_model.parse_tool_call reads; `finish[...]` ends the episode with an answer.
REFINE_TOOLS_SYSTEM = """You are an agent that solves a task by calling tools. Read each tool's result and correct yourself when a call fails.

Task: {task}

{tools}"""

# The tools section alone: what the tuned chat model adds to a user's own system prompt when tools are bound
# (chat_model.tools_prompt), so a served tuned model sees its tools exactly as in training.
REFINE_TOOLS_SECTION = """Available actions (one per reply):
{actions}
- finish[<answer>] — give the final answer and end the task

Answer format: every reply is one thought and one action, exactly:
Thought: <your reasoning about the last observation and what to do next>
Action: <one action>"""

REFINE_TOOL_LINE = "- {name}[{args}] — {description}"

# Feedback appended to the observation of an erroneous step: the refinement signal (docs/method.md §2).
REFINE_FORMAT_ERROR = (
    "Your reply could not be parsed ({error}). Answer exactly in the format:\n"
    "Thought: <your reasoning>\nAction: <one action>"
)
REFINE_INVALID_ACTION = "Invalid action: {message}. Use one of the available actions: {actions}"
REFINE_CRITIC_FEEDBACK = "Feedback: {feedback}"
REFINE_TOOL_ERROR = "Error: {error}"
# The refine agent's closing message in the parent's `messages` when it stops without an answer.
REFINE_STOPPED = "I could not complete the task: stopped ({reason}) after {steps} step(s)."
REFINE_ENV_DONE = "Episode finished: {outcome} after {steps} step(s), progress {progress:.2f}."

# The optional LLM critic: judges one step and sets the DM's three flags (Figure 4's DM turn).
REFINE_CRITIC = """You judge one step of an agent in an interactive task, as the Dungeon Master of a text game would.

Task / environment:
{task}

The agent's thought: {thought}
The agent's action: {action}
What the environment answered: {observation}

Set parameter_error if the action's form or arguments are invalid, place_error if the action refers to something not
present or not reachable where the agent is, logic_error if the action is valid but makes no sense for the goal at
this point. Give one sentence of feedback the agent can act on (empty if there is no error)."""

# Chat model: what the model sees when its action names no bound tool (ToolNode's own message is used in graphs).
CHAT_UNKNOWN_TOOL = "Error: {name} is not a valid tool, try one of [{tools}]."

# --- grounded teacher ---
# Used by agentrefine_lg.grounded (the embedded teacher over TextWorld games: no key, no network).
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
GROUNDED_FIRST = "The objective: {objective} "

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
