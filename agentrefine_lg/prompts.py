"""The prompts of the LLM teacher and of the refine agent's feedback and critic.

Sections are owned by the module that uses them; templates are ``str.format`` strings (literal braces doubled).
The trained model's own format (task instruction, ``Thought/Action``, the tools section) is
:mod:`agentrefine_lg.agent_format`; the grounded teacher's narration tables are
:mod:`agentrefine_lg.synthesis.grounded.narration`.
"""

from __future__ import annotations

# --- synthesis teacher ---
# Used by agentrefine_lg.synthesis.llm_roles (LLM teacher: script writer, one-shot trajectory writer, Player, DM).
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

# --- refine agent / chat model: the DM's feedback and the critic ---

# Feedback appended to the observation of an erroneous step: the refinement signal (docs/method.md §2).
REFINE_FORMAT_ERROR = (
    "Your reply could not be parsed ({error}). Answer exactly in the format:\n"
    "Thought: <your reasoning>\nAction: <one action>"
)
REFINE_INVALID_ACTION = "Invalid action: {message}. Use one of the available actions: {actions}"
REFINE_CRITIC_FEEDBACK = "Feedback: {feedback}"
REFINE_TOOL_ERROR = "Error: {error}"
# A call that repeats the previous one, which succeeded: not run again (refine_feedback.repeated_call).
REFINE_REPEATED_CALL = (
    "You already called {name} with exactly these arguments and its result is above. "
    "Use that result, or change the call."
)
# A tool-calling model's empty reply (no tool call, no text).
REFINE_EMPTY_REPLY = "Your reply was empty. Call one of the tools, or answer the task in plain text."
# What a tool-calling model (not a Thought/Action one) sees in tool mode: its tools come as schemas.
REFINE_TOOL_CALLING_SYSTEM = """You are an agent that solves a task by calling tools. Read each tool's result and correct yourself when a call fails.

Task: {task}

When the task is done, reply with the final answer as plain text, without a tool call."""
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
