"""The generation protocol: what the game and its LLM judge need from a model backend.

It is structural (``typing.Protocol``): ``agents`` implements it for Hugging Face, vLLM and
OpenAI-compatible servers without importing this package, and any object with these methods
works. A chat is a list of ``{"role": ..., "content": ...}`` messages; when the last message
has role ``"assistant"`` the backend continues it (an assistant prefill).

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
from typing import Protocol, runtime_checkable

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


@runtime_checkable
class GenerationBackend(Protocol):
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
