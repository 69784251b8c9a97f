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


class Advance:
    """``advance(n)``: n more items are done (``on_item`` once per item); ``advance.phase(text)``:
    what the current batch is doing, between items (the bar's postfix, or ``on_phase``), so that a
    batch's minutes of generation are not silent."""

    def __init__(self, total: int, initial: int, on_item: OnItem, on_phase: Callable[[str], None]) -> None:
        self.total, self.done, self.on_item, self.phase = total, initial, on_item, on_phase

    def __call__(self, n: int) -> None:
        for _ in range(n):
            self.done += 1
            self.on_item(self.done, self.total)


@contextlib.contextmanager
def items_done(
    total: int,
    desc: str,
    on_item: OnItem | None = None,
    *,
    initial: int = 0,
    on_phase: Callable[[str], None] | None = None,
) -> Iterator[Advance]:
    """``advance(n)``: n more items of a phase are done. ``on_item(done, total)`` is called once per
    item (a batch of 16 is 16 calls), so a caller sees every item; default: the bar above, which
    also shows ``advance.phase(text)`` as its postfix."""
    with contextlib.ExitStack() as stack:
        if on_item is not None:  # the caller's own progress: phases only where it asks for them
            yield Advance(total, initial, on_item, on_phase or (lambda _text: None))
            return
        bar = stack.enter_context(progress(total, desc, initial=initial))
        yield Advance(total, initial, lambda done, total: bar.update(1), on_phase or bar.set_postfix_str)
