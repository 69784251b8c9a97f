"""A text space for language games: any Unicode string, empty allowed.

Gymnasium's ``Text`` accepts only its charset (by default letters and digits) and at least one
character, so LLM output -- spaces, punctuation, curly quotes -- would fall outside it.
``sample()`` still draws from the alphanumeric charset, which is all API tests need.
"""

from __future__ import annotations

from typing import Any

from gymnasium.spaces import Text


class Unicode(Text):
    def __init__(self, max_length: int, *, seed: int | None = None) -> None:
        super().__init__(max_length, min_length=0, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"Unicode({self.max_length})"
