"""One progress bar for the long parts of evaluation and red-teaming (answering, judging):
items done, total, rate and ETA on stderr, as training's bar (``algorithms.training.runlog``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from tqdm import tqdm

# Called once per finished item with (items done, total): the progress of a long phase, item by
# item (tests and notebooks pass their own; the default is the bar below).
OnItem = Callable[[int, int], None]


def progress(total: int, desc: str, *, unit: str = "item", initial: int = 0) -> tqdm[NoReturn]:
    """A tqdm bar (a context manager; ``.update(n)`` after each ``n`` items)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)


@contextlib.contextmanager
def items_done(
    total: int, desc: str, on_item: OnItem | None = None, *, initial: int = 0
) -> Iterator[Callable[[int], None]]:
    """``advance(n)``: n more items of a phase are done. ``on_item(done, total)`` is called once per
    item (a batch of 16 is 16 calls), so a caller sees every item; default: the bar above."""
    with contextlib.ExitStack() as stack:
        if on_item is None:
            bar = stack.enter_context(progress(total, desc, initial=initial))
            on_item = lambda done, total: bar.update(1)  # noqa: E731
        done = initial

        def advance(n: int) -> None:
            nonlocal done
            assert on_item is not None
            for _ in range(n):
                done += 1
                on_item(done, total)

        yield advance
