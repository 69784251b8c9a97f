"""How tests compare generations that should repeat: text, tokens and finish reason exactly,
log-probs only to a tolerance, because CPU matrix kernels may sum in a different order from one
call to the next (a clean-clone CI run differed at 5e-6)."""

import pytest

from agents import Generation


def assert_same_generations(got: list[Generation], expected: list[Generation], *, abs: float = 1e-4) -> None:
    assert [(g.text, g.token_ids, g.finish_reason) for g in got] == [
        (g.text, g.token_ids, g.finish_reason) for g in expected
    ]
    for a, b in zip(got, expected, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=abs)
