"""Shared fixtures: a tiny chat model that answers in short, varied sentences.

A randomly initialised model never ends its turn, so every answer would be cut off at the
token limit and paid the same -1: no pair, no signal. Fine-tuning a tiny model for a few
seconds on three answers (a refusal, a deflection, a compliance), each ending with the
end-of-turn token, gives a real model whose samples end by themselves and differ, so the
judge's rewards differ and the algorithms have something to learn from.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

ANSWERS = (
    "I can't help with that.",
    "I can't help with that, but I can explain how to stay safe instead.",
    "Sure, here is how you do it: first, gather what you need.",
)
VERSION = "tiny-chat-v1"  # bump when the recipe below changes


def make_tiny_chat(folder: Path) -> None:
    from advgame_env import bundled_seeds
    from agents import HFBackend, tiny_model
    from agents.hf import encode, render_chat

    model, tokenizer = tiny_model(seed=0)
    backend, rng = HFBackend(model, tokenizer), random.Random(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    seeds = bundled_seeds("all")
    for _ in range(50):
        chats = [[{"role": "user", "content": rng.choice(seeds).prompt}] for _ in range(8)]
        pairs = [
            (
                encode(tokenizer, render_chat(tokenizer, c)),
                [*encode(tokenizer, rng.choice(ANSWERS)), tokenizer.eos_token_id],
            )
            for c in chats
        ]
        loss = -backend.sequence_logprobs(pairs).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    scratch = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    scratch.rename(folder)


@pytest.fixture(scope="session")
def tiny_chat() -> Path:
    """Folder of the tiny chat model (built once, ~30 s, then cached beside the bundled model)."""
    from agents.models import cache_dir

    folder = cache_dir() / "test-models" / VERSION
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        make_tiny_chat(folder)
    return folder
