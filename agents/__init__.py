"""agents: attacker and defender policies over generation backends, and model loading."""

import agents.name_check  # noqa: F401  (first: stops on another distribution that installs `agents`)
from agents.backends import Backend, BackendKind, build_backend
from agents.hf import Generation, HFBackend, render_chat
from agents.models import BUNDLED, DEFAULT_MODEL, load_model, resolve_model, tiny_model
from agents.openai_backend import BackendError, OpenAIBackend
from agents.replicas import ReplicatedBackend
from agents.vllm_backend import StaleWeightsError, VLLMBackend

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
