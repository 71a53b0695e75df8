"""The embedded teacher: AgentRefine data from real text games, with no API key and no network.

When no LLM teacher is configured, synthesis still runs on *real* environments: for each persona a
TextWorld game (custom quest, cooking, treasure hunter or coin collector; kind, size and layout drawn
from a seed derived from the persona) is generated and compiled offline into a cache directory, and

- :class:`GroundedScriptWriter` turns the game into a script: its rooms and objects as the environment,
  its objective as the goal, its quest conditions as the completion conditions, and its command grammar
  as the available actions (anchored regexes, the game's own entity names as parameter values);
- :class:`GroundedDM` *is* the game engine: the opening observation, then the engine's answer to each
  action, flagged ``parameter_error`` when the rule check rejects it, ``place_error`` when its object is
  in another room, ``logic_error`` when the engine refuses it; ``task_completed`` when the game is won;
- :class:`GroundedPlayer` follows the engine's own plan and makes seeded, realistic mistakes of all
  three kinds, each corrected in the next turn with a thought that quotes the engine's feedback.

Said plainly: the thoughts are templates filled from the game state, not reasoning, and the worlds are
TextWorld's (houses, kitchens, mazes: rooms, doors, containers, keys, food), far narrower than what a
strong LLM invents from a persona. This teacher exists so that the pipeline, its checks and training run
end to end offline, on data whose every step a real engine confirmed. The paper's path, and the one to
use for real data, is the LLM teacher (:mod:`agentrefine_lg.synthesis.llm_roles`).

Held-out evaluation uses other engines (BabyAI, ScienceWorld, PDDL, ALFWorld-style problems,
TextWorld-Express); only ``textworld`` itself is used here. All engine access lives in
:mod:`agentrefine_lg.synthesis.grounded.engine`, so another engine can replace TextWorld there.
"""

from agentrefine_lg.synthesis.grounded.dm import GroundedDM, GroundedWorlds, TextWorldEnv, Verdict, judge
from agentrefine_lg.synthesis.grounded.engine import (
    DEFAULT_CACHE_DIR,
    GAME_KINDS,
    GameInfo,
    GameSpec,
    generate_game,
    load_game_info,
    spec_for_persona,
)
from agentrefine_lg.synthesis.grounded.player import GroundedPlayer
from agentrefine_lg.synthesis.grounded.script import GROUNDING_KEY, script_from_game, verification_regex
from agentrefine_lg.synthesis.grounded.teacher import (
    GroundedScriptWriter,
    grounded_teacher,
    synthesize_grounded,
)

__all__ = [
    "DEFAULT_CACHE_DIR",
    "GAME_KINDS",
    "GROUNDING_KEY",
    "GameInfo",
    "GameSpec",
    "GroundedDM",
    "GroundedPlayer",
    "GroundedScriptWriter",
    "GroundedWorlds",
    "TextWorldEnv",
    "Verdict",
    "generate_game",
    "grounded_teacher",
    "judge",
    "load_game_info",
    "script_from_game",
    "spec_for_persona",
    "synthesize_grounded",
    "verification_regex",
]
