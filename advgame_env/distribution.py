"""Which installed distributions provide a top-level import name, to stop at import time when
another one provides one of ours (``openai-agents`` also installs a package ``agents``: with
both installed, Python loads whichever comes first on the path, or a mix of the two folders).

Standard library only, so that every one of our packages can run it before importing anything.
"""

from __future__ import annotations

import functools
from importlib import metadata

DISTRIBUTION = "advgame"


class NameClashError(ImportError):
    """Another installed distribution provides one of our top-level import names."""


OURS = ("advgame_env", "advgame_types", "agents", "algorithms")  # the top-level packages of the advgame distribution


@functools.cache
def providers() -> dict[str, tuple[str, ...]]:
    """{one of our top-level names: every installed distribution that provides it}.

    ``importlib.metadata.packages_distributions()`` answers this for every name but builds a
    path object for every line of every RECORD (about 200 ms with this project's ~220
    distributions on 2 busy cores); reading ``top_level.txt``, or else the first path part of
    each RECORD line, and parsing a distribution's metadata only when it matches, takes ~20 ms."""
    found: dict[str, list[str]] = {name: [] for name in OURS}
    for dist in metadata.distributions():
        declared = dist.read_text("top_level.txt")
        if declared is not None:
            names = set(declared.split())
        else:
            record = dist.read_text("RECORD") or ""
            names = {line.split("/", 1)[0] for line in record.splitlines()}
        for name in names.intersection(OURS):
            found[name].append(dist.metadata["Name"] or "")
    return {name: tuple(dists) for name, dists in found.items()}


def _normalised(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def check_top_level(*names: str) -> None:
    """Raise NameClashError when a distribution other than advgame provides one of ``names``."""
    for name in names:
        others = [d for d in providers().get(name, ()) if _normalised(d) != DISTRIBUTION]
        if others:
            raise NameClashError(
                f"the installed distribution {others[0]!r} also provides the top-level package {name!r} "
                f"(as advgame does), so `import {name}` would load one of them, or a mix of both. "
                f"Uninstall it (`pip uninstall {others[0]}`), or install advgame into a virtual environment "
                f"of its own (`python -m venv .venv && .venv/bin/pip install advgame`)."
            )
