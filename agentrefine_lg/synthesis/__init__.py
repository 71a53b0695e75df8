"""Synthesis, the paper's steps 1-3: persona -> environment script -> error/refine trajectory -> verification.

- :mod:`~agentrefine_lg.synthesis.graphs`: the pipeline as LangGraph graphs (script, trajectory, whole);
- :mod:`~agentrefine_lg.synthesis.runner`: the batch runner behind ``agentrefine synthesize`` (personas in,
  an append-only ledger of accepted samples and rejected attempts out, resumable);
- :mod:`~agentrefine_lg.synthesis.roles`: the role protocols (script writer, DM, Player, trajectory writer);
- :mod:`~agentrefine_lg.synthesis.llm_roles`: those roles played by any LangChain chat model (the paper's path);
- :mod:`~agentrefine_lg.synthesis.teachers`: teachers by name (``grounded``, ``openai:...``);
- :mod:`~agentrefine_lg.synthesis.personas`: the persona sources;
- :mod:`~agentrefine_lg.synthesis.grounded`: the embedded, engine-backed teacher (TextWorld).

The graph factories and their state types are importable from here, as they were from the module this package
replaced: ``from agentrefine_lg.synthesis import create_synthesis_graph``.
"""

from agentrefine_lg.synthesis.graphs import *  # noqa: F403  (the graphs' public names, as before the move)
from agentrefine_lg.synthesis.graphs import __all__  # noqa: F401
