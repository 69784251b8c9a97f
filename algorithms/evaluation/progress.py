"""One progress bar for the long parts of evaluation and red-teaming (answering, judging):
items done, total, rate and ETA on stderr, as training's bar (``algorithms.training.runlog``)."""

from __future__ import annotations

from typing import Any


def progress(total: int, desc: str, *, unit: str = "item", initial: int = 0) -> Any:
    """A tqdm bar (a context manager; ``.update(n)`` after each ``n`` items)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True)
