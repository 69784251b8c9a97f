"""The shipped run configs: the CPU recipes with their data and the paper's recipes, in
``algorithms/configs`` (package data, so an installed wheel has them; ``configs/`` at the root
of a checkout is a link to that folder, so paths in the docs work there as written).

    recipe("cpu_smoke.yaml")             the packaged file, from any working directory
    find_config("configs/cpu_smoke.yaml")  that path if it exists, else the shipped recipe it names
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

CONFIGS = "configs"  # the folder inside the algorithms package, and its name at a checkout's root


def configs_dir() -> Path:
    """The folder of the shipped configs, read through ``importlib.resources``."""
    folder = files("algorithms") / CONFIGS
    # configs name their base and data files relative to themselves, so they need a real folder;
    # a zipped install (zipimport) has none, and importlib.resources.as_file extracts directories
    # only from Python 3.12 on.
    if not isinstance(folder, Path) or not folder.is_dir():
        raise FileNotFoundError(
            f"the shipped configs are not a folder on disk ({folder}); reinstall advgame with pip, which installs it unzipped"
        )
    return folder


def shipped() -> list[str]:
    """Every shipped config, as its path under ``configs/`` ("cpu_smoke.yaml", "paper/qwen25_grpo.yaml")."""
    root = configs_dir()
    # configs/accelerate/ holds accelerate launch configs, not run configs
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml") if p.parent.name != "accelerate")


def recipe(name: str) -> Path:
    """A shipped config by its path under ``configs/`` (".yaml" may be left out)."""
    relative = name.removeprefix(CONFIGS + "/")
    path = configs_dir() / (relative if relative.endswith((".yaml", ".yml")) else relative + ".yaml")
    if not path.is_file():
        raise FileNotFoundError(f"{name!r} is not a shipped config; the shipped ones are: {', '.join(shipped())}")
    return path


def find_config(path: str | Path) -> Path:
    """``path`` when it exists; else, for a relative path such as ``configs/cpu_smoke.yaml`` or
    ``cpu_smoke.yaml`` that names a shipped config, that config (so the documented commands work
    outside a checkout); else ``path`` as given, for the reader to report."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    try:
        return recipe(given.as_posix())
    except FileNotFoundError:
        return given
