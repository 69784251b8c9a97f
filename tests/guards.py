"""A hang guard: a call that would run for minutes fails the test instead of stalling the suite.

Not a speed assertion: the limit sits orders of magnitude above the expected time, so a loaded
runner cannot trip it, while a quadratic path (minutes to hours on the inputs used) does.
Speed figures live in ``benchmarks/``. SIGALRM: main thread, POSIX; ``re`` checks for signals
while it matches, so a runaway regular expression is interrupted too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def hang_guard(seconds: float, what: str) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        pytest.fail(f"{what} still running after {seconds:g} s: it hangs (or grows far faster than linearly)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
