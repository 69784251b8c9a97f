"""Role policies: turn the game's observations into actions with a generation backend.

An observation is the text of a user turn; the policy samples ``n`` continuations for each and
returns them as generations (text + finish reason), which the environment accepts as actions,
so an answer cut off at ``max_tokens`` is recognised as over-long. Slots with an empty
observation (nothing to answer) get an empty action without calling the model.

``prefill`` starts the assistant's turn with fixed text (Self-RedTeam's ``<think>`` opening of
a hidden chain of thought): the model continues it, and the returned text includes it, so the
game parses the whole output; the token ids and log-probs are the generated part only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from agents.hf import Generation


def chat(observation: str, prefill: str = "", system: str = "") -> list[dict[str, str]]:
    """A player's observation as the chat it is sent: a system message if any (Self-RedTeam's
    attacker has one), one user turn, and the prefill."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": observation})
    return [*messages, {"role": "assistant", "content": prefill}] if prefill else messages


@dataclass
class Policy:
    backend: Any  # anything with the generation protocol's generate()
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0
    seed: int | None = None
    adapter: str | None = None  # the LoRA adapter that plays this role, on a shared-base backend
    prefill: str = ""  # fixed opening of the assistant's turn, continued by the model
    system: str = ""  # system message before every observation ("" for none)

    def sample(self, observations: Sequence[str], n: int) -> list[list[Generation]]:
        """``n`` generations for each observation, in one batched backend call."""
        return self.sample_chats([chat(o, self.prefill, self.system) if o else None for o in observations], n)

    def sample_chats(self, chats_in: Sequence[Sequence[dict[str, str]] | None], n: int) -> list[list[Generation]]:
        """``n`` generations for each whole chat (a conversation the player reads with its own
        earlier turns; the caller adds the system message and the prefill), None for no call."""
        asked = [i for i, c in enumerate(chats_in) if c]
        chats = [[dict(m) for m in chats_in[i] or ()] for i in asked for _ in range(n)]
        extra = {} if self.adapter is None else {"adapter": self.adapter}
        sampling = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }
        if self.temperature == 0:  # greedy decoding is deterministic: generate each distinct chat once
            distinct = list(dict.fromkeys(json.dumps(c) for c in chats))
            once = self.backend.generate([json.loads(c) for c in distinct], **sampling, **extra) if chats else []
            by_chat = dict(zip(distinct, once, strict=True))
            outputs = [by_chat[json.dumps(c)] for c in chats]
        else:
            outputs = list(self.backend.generate(chats, **sampling, **extra)) if chats else []
        result = [[Generation("") for _ in range(n)] for _ in chats_in]
        if self.prefill:
            outputs = [replace(g, text=self.prefill + g.text) for g in outputs]
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
