"""How many CPU threads torch uses: one by default.

torch starts one intra-op thread per core (and as many inter-op threads). On this project's
2-core machines that is the worst choice as soon as anything else runs beside it: the threads
of each matmul wait for one another on a busy core. The issue that added this module measured
5-13x slowdowns (the CPU smoke run 10 min 04 s against 1 min 31 s with ``OMP_NUM_THREADS=1``);
``benchmarks/threads.py`` measures the ratio of one thread to all cores, idle and beside a busy
process. The small models the project runs on CPU gain little from a second thread even on an
idle machine. ``ADVGAME_THREADS=N`` (or ``advgame --threads N``) asks for N; an
``OMP_NUM_THREADS`` set by the user is honoured when ``ADVGAME_THREADS`` is not.
"""

from __future__ import annotations

import contextlib
import os
import sys

VARIABLE = "ADVGAME_THREADS"
DEFAULT = 1


def thread_count() -> int:
    """The threads asked for: ``ADVGAME_THREADS``, else ``OMP_NUM_THREADS``, else one."""
    for name in (VARIABLE, "OMP_NUM_THREADS"):
        given = os.environ.get(name, "").strip()
        if given:
            try:
                count = int(given)
            except ValueError:
                raise ValueError(f"{name}={given!r}: give a whole number of threads, at least 1") from None
            if count < 1:
                raise ValueError(f"{name}={given!r}: give a whole number of threads, at least 1")
            return count
    return DEFAULT


def apply_thread_policy(threads: int | None = None) -> int:
    """Use ``threads`` (default ``thread_count()``) CPU threads: the OpenMP/MKL variables, which
    torch reads when it is imported (and worker processes, a vLLM engine or data-parallel ranks,
    inherit), and torch's own settings where torch is already loaded. Imports nothing: a command
    calls it first and still fails fast on a bad argument. Returns the count."""
    count = threads if threads is not None else thread_count()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
        with contextlib.suppress(RuntimeError):  # allowed once, before any inter-op work has started
            torch.set_num_interop_threads(count)
    return count
