"""The one factory of generation backends, by kind: what the CLI and the trainer's judge both build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from advgame_types import BackendKind
from agents.hf import HFBackend
from agents.models import load_model
from agents.openai_backend import OpenAIBackend
from agents.replicas import ReplicatedBackend, check_urls, split_urls
from agents.vllm_backend import VLLMBackend

Backend = HFBackend | VLLMBackend | OpenAIBackend | ReplicatedBackend


class _ServerLimits(TypedDict, total=False):
    """The server backends' time limits the caller set (the rest keep their defaults)."""

    deadline: float


class _ReplicaLimits(_ServerLimits, total=False):
    cooldown: float


def build_backend(
    kind: BackendKind,
    model: str,
    url: str | Sequence[str] | None = None,
    *,
    deadline: float | None = None,
    cooldown: float | None = None,
) -> Backend:
    """``model`` behind ``kind``: in-process Hugging Face or vLLM, or the OpenAI-compatible server at ``url``.

    ``url`` may name several replicas of one server (a list, or one string of comma-separated
    URLs): they are served as one :class:`ReplicatedBackend` (least-loaded dispatch, failover,
    ``cooldown`` seconds before a failed replica is tried again); one URL is a plain
    :class:`OpenAIBackend`. ``deadline`` bounds one request to a server, retries included (openai
    only; its default otherwise). A ValueError says what is missing; the caller names the option
    the user gave it by.
    """
    if kind == "openai":
        urls = split_urls(url or [])
        if not urls:
            raise ValueError("backend openai needs the server's URL (e.g. http://127.0.0.1:8000/v1)")
        check_urls(urls)
        options: _ServerLimits = {} if deadline is None else {"deadline": deadline}
        if len(urls) == 1:
            return OpenAIBackend(urls[0], model, **options)
        replicas: _ReplicaLimits = {**options}
        if cooldown is not None:
            replicas["cooldown"] = cooldown
        return ReplicatedBackend(urls, model, **replicas)
    if kind == "vllm":
        return VLLMBackend(model)
    if kind == "hf":
        return HFBackend(*load_model(model))
    raise ValueError(f"backend {kind!r} is not one of 'hf', 'vllm', 'openai'")
