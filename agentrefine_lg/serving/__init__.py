"""Serving, the paper's step 5: the tuned model answering requests, and as a LangChain chat model.

- :mod:`~agentrefine_lg.serving.server`: ``agentrefine serve``, an OpenAI-compatible server (the transformers
  CPU backend with continuous batching, or the vLLM command line for a GPU);
- :mod:`~agentrefine_lg.serving.chat_model`: :func:`~agentrefine_lg.serving.chat_model.chat_model`, a served
  tuned model as a LangChain chat model that speaks our Thought/Action format;
- :mod:`~agentrefine_lg.serving.local_model`: the tuned model in-process (no server), for evaluation and tests.
"""
