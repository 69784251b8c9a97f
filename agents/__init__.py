"""agents: attacker and defender policies over generation backends, and model loading."""

from typing import TYPE_CHECKING

import agents.hub  # (offline mode for every hub client unless ADVGAME_HUB=1; stdlib only)
import agents.name_check  # noqa: F401  (stops on another distribution that installs `agents`)

if TYPE_CHECKING:
    from agents.backends import Backend, BackendKind, build_backend
    from agents.hf import Generation, HFBackend, render_chat
    from agents.models import BUNDLED, DEFAULT_MODEL, load_model, resolve_model, tiny_model
    from agents.openai_backend import BackendError, OpenAIBackend
    from agents.replicas import ReplicatedBackend
    from agents.vllm_backend import StaleWeightsError, VLLMBackend

# Loaded on first use (PEP 562): importing torch takes seconds, longer on a busy machine, and a
# command that only checks a model name (and fails on a missing one) should not wait for it.
_WHERE = {
    "Backend": "backends",
    "BackendKind": "backends",
    "build_backend": "backends",
    "Generation": "hf",
    "HFBackend": "hf",
    "render_chat": "hf",
    "BUNDLED": "models",
    "DEFAULT_MODEL": "models",
    "load_model": "models",
    "resolve_model": "models",
    "tiny_model": "models",
    "BackendError": "openai_backend",
    "OpenAIBackend": "openai_backend",
    "ReplicatedBackend": "replicas",
    "StaleWeightsError": "vllm_backend",
    "VLLMBackend": "vllm_backend",
}


def __getattr__(name: str) -> object:
    import importlib

    if name not in _WHERE:
        raise AttributeError(f"module 'agents' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agents.{_WHERE[name]}"), name)


__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "Backend",
    "BackendError",
    "BackendKind",
    "Generation",
    "HFBackend",
    "OpenAIBackend",
    "ReplicatedBackend",
    "StaleWeightsError",
    "VLLMBackend",
    "build_backend",
    "load_model",
    "render_chat",
    "resolve_model",
    "tiny_model",
]
