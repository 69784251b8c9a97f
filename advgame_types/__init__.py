"""The shared vocabulary of advgame: the game's roles, chats, generations, the generation
protocol and the backend kinds, named once.

It imports nothing of ours and nothing outside the standard library, so every package may use
it: ``advgame_env`` (the game and its judges), ``agents`` (the backends that implement the
protocol) and ``algorithms`` (which wires the two together). The package arrows are one way,
``algorithms -> agents, advgame_env -> advgame_types``; the import-linter contracts in
``pyproject.toml`` check it (``lint-imports``, run by ``make test``).

A chat is a list of ``{"role": ..., "content": ...}`` messages; when the last message has role
``"assistant"`` the backend continues it (an assistant prefill).

A backend may also offer ``choice_logprobs(chats, options) -> list[list[float]]``: the same
values as ``score`` for every option of every chat, computed together. The log-prob judge uses
it when present (the Hugging Face backend reads all of a judge's one-token answers off one
forward per prompt) and falls back to one ``score`` per option otherwise.

A generation may also carry ``stop_token_id``: the end-of-turn token it stopped on (models may
have several), which is not part of ``token_ids``; trainers append it to a stopped sample.
Per-token ``logprobs`` are under the model's own distribution before temperature and top-p, and
a backend samples with nothing but the temperature and top-p asked for (no model defaults such
as a repetition penalty), so at temperature 1 they are those of the distribution sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Literal, Protocol, Required, TypedDict, runtime_checkable

# -- the game's two roles: the trainer, the batches, the env's agent ids, the TextArena player
# ids and the default LoRA adapter names all derive from these

Role = Literal["attacker", "defender"]
ATTACKER: Final = "attacker"
DEFENDER: Final = "defender"
ROLES: Final[tuple[str, str]] = (ATTACKER, DEFENDER)  # str, not Role: callers key dicts by any role name


def agent_id(role: Role) -> str:
    """The PettingZoo agent id of a role (``attacker_0``): one agent per role."""
    return f"{role}_0"


# TextArena numbers its players; the attacker moves first
PLAYER_IDS: Final[dict[Role, int]] = {ATTACKER: 0, DEFENDER: 1}

# -- chats and generations

Chat = Sequence[Mapping[str, str]]


class Generation(Protocol):
    """One sampled continuation."""

    @property
    def text(self) -> str: ...
    @property
    def token_ids(self) -> Sequence[int]: ...
    @property
    def logprobs(self) -> Sequence[float]: ...  # one per generated token
    @property
    def finish_reason(self) -> str: ...  # "stop", "length" or "content_filter" (a server withheld it)


class Sampling(TypedDict, total=False):
    """The sampling keywords of ``GenerationBackend.generate``, for wrappers that pass them on
    (``**sampling: Unpack[Sampling]``)."""

    max_tokens: Required[int]
    temperature: float
    top_p: float
    seed: int | None


@runtime_checkable
class GenerationBackend(Protocol):
    """What the game and its LLM judge need from a model backend (structural: any object with these methods)."""

    def generate(
        self,
        chats: Sequence[Chat],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Sequence[Generation]:
        """One continuation per chat, in order. ``temperature=0`` is greedy decoding."""
        ...

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> Sequence[float]:
        """Summed log-probability of each continuation as the assistant's reply to its chat."""
        ...


# -- the engines behind a backend (agents.build_backend): in-process Hugging Face or vLLM, or an
# OpenAI-compatible server

BackendKind = Literal["hf", "vllm", "openai"]
BACKEND_KINDS: Final[tuple[BackendKind, ...]] = ("hf", "vllm", "openai")

__all__ = [
    "ATTACKER",
    "BACKEND_KINDS",
    "DEFENDER",
    "PLAYER_IDS",
    "ROLES",
    "BackendKind",
    "Chat",
    "Generation",
    "GenerationBackend",
    "Role",
    "Sampling",
    "agent_id",
]
