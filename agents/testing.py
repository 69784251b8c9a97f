"""Test support: a tiny chat model for the test suite and the benchmarks; nothing in the package imports it.

from agents.testing import tiny_chat_model
folder = tiny_chat_model(prompts)  # the tests pass the bundled seeds' prompts
"""

from __future__ import annotations

import hashlib
import random
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agents.models import cache_dir, tiny_model

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
