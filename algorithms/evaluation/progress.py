"""One progress bar for the long parts of evaluation and red-teaming (answering, judging):
items done, total, rate and ETA on stderr, as training's bar (``algorithms.training.runlog``)."""

from __future__ import annotations

from collections.abc import Callable
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
