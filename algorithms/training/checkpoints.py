"""Checkpoints: written to a temporary folder and renamed, so a kill at any moment leaves the last
complete checkpoint intact; the newest ``keep`` are kept; a damaged one is set aside on resume."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}"


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the newest ``keep``."""
    final = checkpoint_dir(run_dir, step)
    scratch = final.with_name(final.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    with (scratch / STATE_FILE).open("wb") as out:
        torch.save(state, out)
        out.flush()
        os.fsync(out.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scratch, final)  # the rename is atomic: a checkpoint is complete or absent
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


_CHECKPOINT = re.compile(r"step_(\d+)")
STATE_KEYS = ("step", "weights", "optimizers", "schedulers", "data", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, empty, truncated or foreign state.pt); names it."""


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first. Leftover ``.tmp`` folders of a killed write, folders
    set aside as ``.corrupt`` and anything else not named ``step_<number>`` are ignored."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step_")))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The state saved in a checkpoint folder, verified to be whole: a ``CheckpointError``
    names the folder and what is wrong with it."""
    file = path / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {STATE_FILE}")
    if file.stat().st_size == 0:
        raise CheckpointError(f"{path}: {STATE_FILE} is empty")
    try:
        with file.open("rb") as src:
            state: Any = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: {STATE_FILE} is not a readable checkpoint ({reason[:200]})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: {STATE_FILE} lacks {', '.join(missing)}")
    match = _CHECKPOINT.fullmatch(path.name)
    if match and state["step"] != int(match.group(1)):
        raise CheckpointError(f"{path}: {STATE_FILE} is of step {state['step']!r}, not {int(match.group(1))}")
    return dict(state)


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint that loads, its state, and why each newer one was skipped; None
    without checkpoints. A ``CheckpointError`` when none is intact."""
    skipped: list[str] = []
    for path in reversed(checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path), skipped
        except CheckpointError as error:
            skipped.append(str(error))
    if skipped:
        raise CheckpointError(f"no intact checkpoint in {run_dir / 'checkpoints'}: " + "; ".join(skipped))
    return None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    random.setstate(_tuples(state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder to ``<name>.corrupt`` (kept for a look, out of the way
    of resuming and of pruning)."""
    target = path.with_name(path.name + ".corrupt")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(path, target)
    return target


def record_resume(run_dir: Path, record: Mapping[str, Any]) -> None:
    """One line per resume in ``resumes.jsonl``: the checkpoint, what was skipped and repaired,
    and the config keys that changed (old and new values)."""
    with (run_dir / "resumes.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(dict(record), default=repr) + "\n")
