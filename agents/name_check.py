"""Stops ``import agents`` when another installed distribution provides ``agents`` too
(``openai-agents`` does: with both installed, Python loads one of them, or a mix of the two).

Imported first by ``agents/__init__.py``. It repeats the small scan of the environment
package's ``distribution`` module (which the other two packages use) because agents imports
nothing of ours; change both together.
"""

from __future__ import annotations

from importlib import metadata


def other_providers(name: str = "agents") -> list[str]:
    """The installed distributions other than advgame that provide the top-level ``name``."""
    others = []
    for dist in metadata.distributions():
        declared = dist.read_text("top_level.txt")
        lines = declared.split() if declared is not None else (dist.read_text("RECORD") or "").splitlines()
        if any(line == name or line.startswith(name + "/") for line in lines):
            found = dist.metadata["Name"] or ""
            if found.lower() != "advgame":
                others.append(found)
    return others


def check() -> None:
    others = other_providers()
    if others:
        raise ImportError(
            f"the installed distribution {others[0]!r} also provides the top-level package 'agents' (as advgame "
            f"does), so `import agents` would load one of them, or a mix of both. Uninstall it "
            f"(`pip uninstall {others[0]}`), or install advgame into a virtual environment of its own "
            f"(`python -m venv .venv && .venv/bin/pip install advgame`)."
        )


check()
