"""A judge made of several judges: majority for labels, mean for scores.

Each member judges every item; a member's ``None`` (its judge failure on that item) is an
abstention, as one failed order is in :class:`~advgame_env.judges.LLMJudge`'s both-orders mean.
Labels (faithfulness, the three classification labels) go to the strict majority of the members
that answered; a tie, or no answer at all, is ``None``: a judge failure, never a guessed verdict.
Scores (pairwise and pointwise) are the mean of the members that answered. A member whose whole
call fails raises, so the ensemble's call fails as a whole (:class:`JudgeError`) and the game
retries it as it retries any judge. ``both_orders=True`` asks every member for each pair in both
presentation orders and averages, which cancels the position bias of members that have one.

The ensemble plays the roles every member plays (``roles``, where a member declares its own,
as :class:`~advgame_env.wildguard.WildGuardJudge` does).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from advgame_env.judges import (
    ClassifyItem,
    FaithfulnessItem,
    Judge,
    JudgeError,
    PairItem,
    PointItem,
    in_both_orders,
)
from advgame_env.rewards import Classification, mean_or_none

ALL_ROLES = frozenset({"faithfulness", "compare", "score", "classify"})
_LABELS = [f.name for f in dataclasses.fields(Classification)]

Item = TypeVar("Item")
Verdict = TypeVar("Verdict")
L = TypeVar("L", bound=Hashable)


def majority(votes: Sequence[L | None]) -> L | None:
    """The label more than half of the answering members gave; None on a tie or no answer."""
    given = [v for v in votes if v is not None]
    if not given:
        return None
    label, count = Counter(given).most_common(1)[0]
    return label if count * 2 > len(given) else None


class EnsembleJudge:
    """Several judges as one (see the module docstring)."""

    def __init__(self, members: Sequence[Judge], *, both_orders: bool = False) -> None:
        if not members:
            raise ValueError("an ensemble judge needs at least one member")
        self.members, self.both_orders = list(members), both_orders
        self.roles = frozenset.intersection(*(frozenset(getattr(m, "roles", ALL_ROLES)) for m in self.members))

    def _ask(
        self, call: Callable[[Judge], Callable[[list[Item]], list[Verdict]]], items: Sequence[Item]
    ) -> list[list[Verdict]]:
        """Each member's verdicts on ``items`` (one list per member)."""
        if not items:
            return [[] for _ in self.members]
        out = []
        for n, member in enumerate(self.members):
            verdicts = list(call(member)(list(items)))
            if len(verdicts) != len(items):
                raise JudgeError(f"ensemble member {n} returned {len(verdicts)} verdicts for {len(items)} items")
            out.append(verdicts)
        return out

    def faithfulness(self, items: Sequence[FaithfulnessItem]) -> list[bool | None]:
        votes = self._ask(lambda m: m.faithfulness, items)
        return [majority(column) for column in zip(*votes, strict=True)] if items else []

    def classify(self, items: Sequence[ClassifyItem]) -> list[Classification | None]:
        votes = self._ask(lambda m: m.classify, items)
        out: list[Classification | None] = []
        for column in zip(*votes, strict=True):
            given = [c for c in column if c is not None]
            # each label by its own majority; an open label (WildGuard's n/a) abstains on that label
            labels = [majority([getattr(c, name) for c in given]) for name in _LABELS]
            out.append(Classification(*labels) if given and any(v is not None for v in labels) else None)
        return out

    def score(self, items: Sequence[PointItem]) -> list[float | None]:
        votes = self._ask(lambda m: m.score, items)
        return [mean_or_none(column) for column in zip(*votes, strict=True)] if items else []

    def compare(self, items: Sequence[PairItem]) -> list[tuple[float, float] | None]:
        return in_both_orders(self._compare_once, items) if self.both_orders else self._compare_once(items)

    def _compare_once(self, items: Sequence[PairItem]) -> list[tuple[float, float] | None]:
        votes = self._ask(lambda m: m.compare, items)
        out: list[tuple[float, float] | None] = []
        for column in zip(*votes, strict=True):
            given = [v for v in column if v is not None]
            out.append(
                (sum(v[0] for v in given) / len(given), sum(v[1] for v in given) / len(given)) if given else None
            )
        return out
