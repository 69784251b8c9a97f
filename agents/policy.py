"""Role policies: turn the game's observations into actions with a generation backend.

An observation is the text of a user turn; the policy samples ``n`` continuations for each and
returns them as generations (text + finish reason), which the environment accepts as actions,
so an answer cut off at ``max_tokens`` is recognised as over-long. Slots with an empty
observation (nothing to answer) get an empty action without calling the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agents.hf import Generation


@dataclass
class Policy:
    backend: Any  # anything with the generation protocol's generate()
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    adapter: str | None = None  # the LoRA adapter that plays this role, on a shared-base backend

    def sample(self, observations: Sequence[str], n: int) -> list[list[Generation]]:
        """``n`` generations for each observation, in one batched backend call."""
        asked = [i for i, o in enumerate(observations) if o]
        chats = [[{"role": "user", "content": observations[i]}] for i in asked for _ in range(n)]
        extra = {} if self.adapter is None else {"adapter": self.adapter}
        sampling = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        outputs = list(self.backend.generate(chats, **sampling, **extra)) if chats else []
        result = [[Generation("") for _ in range(n)] for _ in observations]
        for k, i in enumerate(asked):
            result[i] = outputs[k * n : (k + 1) * n]
        return result

    def attack(self, observations: Sequence[str], num_attacks: int) -> list[tuple[Generation, ...]]:
        """Attacker actions for a batch of rounds: ``num_attacks`` rewrites each."""
        return [tuple(row) for row in self.sample(observations, num_attacks)]

    def respond(
        self, observations: Sequence[Sequence[str]], num_responses: int
    ) -> list[tuple[tuple[Generation, ...], ...]]:
        """Defender actions for a batch of rounds: ``num_responses`` answers per attack slot."""
        flat = [prompt for slots in observations for prompt in slots]
        answers = iter(self.sample(flat, num_responses))
        return [tuple(tuple(next(answers)) for _ in slots) for slots in observations]
