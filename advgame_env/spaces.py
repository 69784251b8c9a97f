"""A text space for language games: any Unicode string, empty allowed.

Gymnasium's ``Text`` accepts only its charset (by default letters and digits) and at least one
character, so LLM output -- spaces, punctuation, curly quotes -- would fall outside it.
``sample()`` still draws from the alphanumeric charset, which is all API tests need.

:class:`TextObservation` and :class:`TextTuple` are a str and a tuple that also say their
``dtype``, as the spaces do (``dtype('<U')`` and None): PettingZoo's AEC API test compares an
observation's ``dtype`` with its space's, which presumes NumPy arrays. The AEC env hands them
out; they compare, hash and serialise as the plain str and tuple they are.
"""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Text

# What an agent observes: the attacker a text, the defender one text per attack slot.
# With turns > 1 both observe one text per conversation, A x D.
Observation = str | tuple[str, ...] | tuple[tuple[str, ...], ...]


class Unicode(Text):
    def __init__(self, max_length: int, *, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, seed=seed)

    def contains(self, x: object) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"Unicode({self.max_length})"


class TextObservation(str):
    dtype = np.dtype(str)


class TextTuple(tuple[object, ...]):
    dtype = None


def typed(observation: object) -> object:
    """A text observation (a str, or tuples of them) as the dtype-carrying types above."""
    if isinstance(observation, str):
        return TextObservation(observation)
    if isinstance(observation, tuple):
        return TextTuple(typed(o) for o in observation)
    return observation
