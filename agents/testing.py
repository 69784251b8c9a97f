"""Test support: a tiny chat model for the test suite and the benchmarks, and the one scripted
stand-in of a generation backend; nothing in the package imports it.

from agents.testing import tiny_chat_model
folder = tiny_chat_model(prompts)  # the tests pass the bundled seeds' prompts

from agents.testing import ScriptedBackend
backend = ScriptedBackend("I can't help with that.")  # a TEST DOUBLE: scripted texts, no model
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from advgame_types import Chat
from agents.models import cache_dir, tiny_model

if TYPE_CHECKING:
    from agents.hf import Generation

TINY_CHAT_ANSWERS = (
    "I can't help with that.",
    "I can't help with that, but I can explain how to stay safe instead.",
    "Sure, here is how you do it: first, gather what you need.",
)
TINY_CHAT_VERSION = "tiny-chat-v1"  # bump when the recipe below changes


def tiny_chat_model(prompts: Sequence[str], answers: Sequence[str] = TINY_CHAT_ANSWERS) -> Path:
    """Folder of a tiny chat model whose samples end by themselves and differ (tests, benchmarks).

    A randomly initialised model never ends its turn, so every answer would be cut off at the
    token limit and paid the same -1: no pair, no signal. Fine-tuning ``tiny_model`` for a few
    seconds on three answers (a refusal, a deflection, a compliance) to ``prompts``, each ending
    with the end-of-turn token, gives a real model whose rewards differ. ``answers``: other
    answers to learn instead (e.g. an attacker's rewrites in the game's format). Built once
    (~30 s) per list of prompts and answers (the cache folder carries their digest), then cached.
    """
    if not prompts or not answers:
        raise ValueError("tiny_chat_model needs at least one prompt (e.g. the bundled seeds' prompts) and one answer")
    key = "\0".join(prompts) if tuple(answers) == TINY_CHAT_ANSWERS else "\0".join([*prompts, "\1", *answers])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]  # the default's digest as it always was
    folder = cache_dir() / "test-models" / f"{TINY_CHAT_VERSION}-{digest}"
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _train_tiny_chat(folder, list(prompts), list(answers))
    return folder


def _train_tiny_chat(folder: Path, prompts: list[str], answers: list[str], steps: int = 50) -> None:
    import torch

    from agents.hf import HFBackend, encode, render_chat

    model, tokenizer = tiny_model(seed=0)
    backend, rng = HFBackend(model, tokenizer), random.Random(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(steps):
        chats = [[{"role": "user", "content": rng.choice(prompts)}] for _ in range(8)]
        pairs = [
            (
                encode(tokenizer, render_chat(tokenizer, c)),
                [*encode(tokenizer, rng.choice(answers)), tokenizer.eos_token_id],
            )
            for c in chats
        ]
        loss = -backend.sequence_logprobs(pairs).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # a scratch folder of its own: parallel test workers (pytest-xdist) may build the same model at
    # once; the first rename wins and the others' identical copies are dropped
    scratch = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    try:
        scratch.rename(folder)
    except OSError:
        if not folder.exists():
            raise
        shutil.rmtree(scratch)


# ----------------------------------------------------------------------------- the scripted backend


@dataclass(frozen=True)
class Call:
    """One ``generate`` call a ``ScriptedBackend`` received: the chats (copied) and the sampling."""

    chats: list[list[dict[str, str]]]
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    adapter: str | None


Reply = str | Sequence[str] | Callable[[Chat], str]


@dataclass(eq=False)
class ScriptedBackend:
    """A TEST DOUBLE of the generation protocol (``advgame_types.GenerationBackend``): its texts
    come from a script, never from a model, so a test knows every answer (and the verdict a
    judge will give it) in advance.

    ``reply``: one text for every chat; a sequence of texts handed out in turn, one per chat
    (running out is an error: the test sent more than it meant to); or a function of the chat.
    ``token_ids``: ``"words"`` gives one id per whitespace-separated word (lengths a test can
    count), ``"none"`` none. ``logprob``: every token's log-prob (``math.nan`` for a backend
    that returns garbage). ``finish_reason``: of every generation. ``error``: raised by every
    call (after it is recorded): a backend that is down. ``scores``: what ``score`` returns for
    every continuation, or a function of the continuation; None makes scoring an error (a test
    that must not score).
    Every call is kept in ``calls``, every scoring in ``scored``.
    """

    reply: Reply
    token_ids: Literal["none", "words"] = "none"
    logprob: float = 0.0
    finish_reason: str = "stop"
    error: Exception | None = None
    scores: float | Callable[[str], float] | None = None
    calls: list[Call] = field(default_factory=list)
    scored: list[tuple[list[list[dict[str, str]]], list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._queue = list(self.reply) if not isinstance(self.reply, str) and not callable(self.reply) else None

    def then(self, *texts: str) -> None:
        """Hand out ``texts`` once the scripted ones are used up (a script of texts only)."""
        if self._queue is None:
            raise TypeError("then() extends a script of texts, not a fixed text or a reply function")
        self._queue.extend(texts)

    @property
    def sizes(self) -> list[int]:
        """How many chats each call carried."""
        return [len(call.chats) for call in self.calls]

    @property
    def chats(self) -> list[list[dict[str, str]]]:
        """Every chat of every call, in order."""
        return [chat for call in self.calls for chat in call.chats]

    def _text(self, chat: Chat) -> str:
        if isinstance(self.reply, str):
            return self.reply
        if callable(self.reply):
            return self.reply(chat)
        assert self._queue is not None
        if not self._queue:
            raise AssertionError("the scripted backend ran out of texts")
        return self._queue.pop(0)

    def generate(
        self,
        chats: Sequence[Chat],
        *,
        max_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | None = None,
        adapter: str | None = None,
    ) -> list[Generation]:
        from agents.hf import Generation

        copied = [[dict(m) for m in chat] for chat in chats]
        self.calls.append(Call(copied, max_tokens, temperature, top_p, seed, adapter))
        if self.error is not None:
            raise self.error
        out = []
        for chat in chats:
            text = self._text(chat)
            ids = list(range(len(text.split()))) if self.token_ids == "words" else []
            out.append(Generation(text, ids, [self.logprob] * len(ids), self.finish_reason))
        return out

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        if self.scores is None:
            raise AssertionError("this scripted backend is not meant to score")
        self.scored.append(([[dict(m) for m in chat] for chat in chats], list(continuations)))
        scores = self.scores
        return [scores(c) if callable(scores) else scores for c in continuations]
