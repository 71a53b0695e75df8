"""Every prompt template of agentrefine-lg, in one place.

Sections are owned by the module that uses them; templates are ``str.format`` strings (literal braces doubled).
"""

from __future__ import annotations

# --- agent task instruction (training conversion AND evaluation: decisions 5 and 6) ---

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
