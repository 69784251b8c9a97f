"""The one factory of generation backends, by kind: what the CLI and the trainer's judge both build."""

from __future__ import annotations

from typing import Literal

from agents.hf import HFBackend
from agents.models import load_model
from agents.openai_backend import OpenAIBackend
from agents.vllm_backend import VLLMBackend

BackendKind = Literal["hf", "vllm", "openai"]  # algorithms.config.BackendKind mirrors it (agents imports no algorithms)
Backend = HFBackend | VLLMBackend | OpenAIBackend


def build_backend(kind: BackendKind, model: str, url: str | None = None, *, deadline: float | None = None) -> Backend:
    """``model`` behind ``kind``: in-process Hugging Face or vLLM, or the OpenAI-compatible server at ``url``.

    ``deadline`` bounds one request to a server, retries included (openai only; its default otherwise).
    A ValueError says what is missing; the caller names the option the user gave it by.
    """
    if kind == "openai":
        if not url:
            raise ValueError("backend openai needs the server's URL (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(url, model) if deadline is None else OpenAIBackend(url, model, deadline=deadline)
    if kind == "vllm":
        return VLLMBackend(model)
    if kind == "hf":
        return HFBackend(*load_model(model))
    raise ValueError(f"backend {kind!r} is not one of 'hf', 'vllm', 'openai'")
