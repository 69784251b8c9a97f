"""The order of a split's seeds: reshuffled per epoch with a known seed, its position two ints, so
a resumed run reads the very seeds (and draws the very sampling noise) it would have."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypedDict, TypeVar

T = TypeVar("T")


class StreamState(TypedDict):
    """A stream's position, as a checkpoint keeps it."""

    epoch: int
    position: int


@dataclass
class SeedStream(Generic[T]):
    """An endless stream of items (one split's seeds, SFT examples), reshuffled every epoch
    with a known seed."""

    seeds: Sequence[T]
    shuffle_seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a seed stream needs at least one seed")
        self._order = self._shuffled(self.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.seeds)))
        random.Random(self.shuffle_seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[T]:
        out: list[T] = []
        for _ in range(n):
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            out.append(self.seeds[self._order[self.position]])
            self.position += 1
        return out

    def state(self) -> StreamState:
        return StreamState(epoch=self.epoch, position=self.position)

    def restore(self, state: StreamState) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffled(self.epoch)


def mixed_take(main: SeedStream[T], extra: SeedStream[T], share: float, n: int, rng: random.Random) -> list[T]:
    """``n`` items, each from ``extra`` with probability ``share`` and else from ``main``, in the
    order drawn; each stream moves by the items it gave (so a resumed run continues both)."""
    from_extra = [rng.random() < share for _ in range(n)]
    more = iter(extra.take(sum(from_extra)))
    rest = iter(main.take(n - sum(from_extra)))
    return [next(more) if e else next(rest) for e in from_extra]


def derived_seed(*parts: int) -> int:
    """A sampling seed for one (run seed, step, split, role, process, ...) combination: every
    call samples fresh noise, and a resumed run draws exactly what it would have drawn."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**31 - 1)
    return value
