"""The generation protocol: what the game and its LLM judge need from a model backend.

Defined once in the shared vocabulary ``advgame_types`` (see its docstring for the protocol's
rules: prefills, ``choice_logprobs``, ``stop_token_id``, the logprobs' distribution), which
``agents`` implements for Hugging Face, vLLM and OpenAI-compatible servers; this module keeps
the env's own spelling ``advgame_env.protocol``.
"""

from __future__ import annotations

from advgame_types import Chat, Generation, GenerationBackend

__all__ = ["Chat", "Generation", "GenerationBackend"]
