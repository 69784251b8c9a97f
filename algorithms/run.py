"""What a training run needs besides the algorithm: processes, data order, logs, checkpoints.

* ``Dist``: data parallelism over processes started by ``accelerate launch`` (or torchrun);
  one process is the plain case. Gradients are summed over processes by hand after backward,
  so the global objective is exactly Σ over all processes' examples / global weight.
* ``SeedStream``: a split's seeds in a reshuffled order per epoch; its position is two ints,
  so a resumed run reads the very seeds it would have read.
* ``RunLog``: metrics.jsonl (always), TensorBoard, W&B when asked, the progress bar.
* Checkpoints: written to a temporary folder and renamed, so a kill at any moment leaves the
  last complete checkpoint intact; the newest ``keep`` are kept.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

# ----------------------------------------------------------------------------- processes


class Dist:
    """Rank, world size and sums over processes (no-ops for a single process)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1:
            from accelerate import PartialState

            # cpu=True makes accelerate set up gloo on machines without a GPU (accelerate launch
            # --multi_gpu --num_processes N starts the processes, GPU or not).
            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.world, self.local_rank = state.process_index, state.num_processes, state.local_process_index

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def sum(self, values: Sequence[float]) -> list[float]:
        if self.world == 1:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def sum_grads(self, params: Sequence[torch.Tensor]) -> None:
        if self.world == 1:
            return
        for param in params:
            if param.grad is None:  # this process had no example for it: contribute zeros
                param.grad = torch.zeros_like(param)
            torch.distributed.all_reduce(param.grad)

    def gather(self, items: Sequence[Any]) -> list[Any]:
        """Every process's items, concatenated in rank order (picklable objects)."""
        if self.world == 1:
            return list(items)
        parts: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


# ----------------------------------------------------------------------------- data


@dataclass
class SeedStream:
    """An endless stream of items (one split's seeds, SFT examples), reshuffled every epoch
    with a known seed."""

    seeds: Sequence[Any]
    shuffle_seed: int
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("a seed stream needs at least one seed")
        self._order = self._shuffled(self.epoch)

    def _shuffled(self, epoch: int) -> list[int]:
        order = list(range(len(self.seeds)))
        random.Random(self.shuffle_seed * 1_000_003 + epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[Any]:
        out = []
        for _ in range(n):
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._shuffled(self.epoch)
            out.append(self.seeds[self._order[self.position]])
            self.position += 1
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def restore(self, state: Mapping[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._shuffled(self.epoch)


def derived_seed(*parts: int) -> int:
    """A sampling seed for one (run seed, step, split, role, process, ...) combination: every
    call samples fresh noise, and a resumed run draws exactly what it would have drawn."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part + 1) % (2**31 - 1)
    return value


# ----------------------------------------------------------------------------- logs


class RunLog:
    """Metrics to metrics.jsonl, TensorBoard and (optionally) W&B; live figures on a progress bar."""

    def __init__(
        self,
        folder: Path,
        *,
        start_step: int,
        total_steps: int,
        tensorboard: bool,
        wandb_project: str | None,
        progress: bool,
        config: Mapping[str, Any],
    ) -> None:
        self.path = folder / "metrics.jsonl"
        _truncate_after(self.path, start_step)  # a resumed run rewrites what came after its checkpoint
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a killed run wrote after the checkpoint we resume from
            self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        self.wandb = None
        if wandb_project is not None:
            try:
                import wandb
            except ImportError as error:
                raise RuntimeError("run.wandb is true but wandb is not installed: pip install wandb") from error
            self.wandb = wandb.init(project=wandb_project, config=dict(config), dir=str(folder), resume="allow")
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: Mapping[str, float], *, advance: bool = True) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(key, value, step)
            self.writer.flush()
        if self.wandb is not None:
            self.wandb.log(dict(metrics), step=step)
        if self.bar is not None:
            if advance:
                self.bar.update(1)
            shown = {k.split("/", 1)[-1]: v for k, v in metrics.items() if k in _LIVE}
            if shown:
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()


_LIVE = (
    "train/defender_loss",
    "train/attacker_loss",
    "game/defender_reward",
    "game/attacker_reward",
    "val/refusal_harmful",
    "val/refusal_benign",
)


class RunLogError(ValueError):
    """metrics.jsonl is damaged somewhere other than a torn last line; names the file and line."""


def _metric_lines(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The records of a metrics log and whether its last line was torn (a kill mid-write leaves
    a last line that is not a whole record). Any other bad line is a ``RunLogError``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records, torn = [], False
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("no integer step")
        except (ValueError, RecursionError) as error:
            if number == len(lines):  # the last line, without its newline: torn
                torn = True
                continue
            raise RunLogError(f"{path}, line {number}: not a metrics record ({error}); fix or remove it") from None
        records.append(record)
    return records, torn


def _write_lines(path: Path, records: Sequence[Mapping[str, Any]]) -> None:
    scratch = path.with_name(path.name + ".tmp")
    with scratch.open("w", encoding="utf-8") as out:
        out.writelines(json.dumps(r) + "\n" for r in records)
        out.flush()
        os.fsync(out.fileno())
    os.replace(scratch, path)


def repair_metrics(path: Path) -> str | None:
    """Drop a torn last line of ``path`` (as a kill mid-write leaves it); what was done, or None."""
    if not path.exists():
        return None
    records, torn = _metric_lines(path)
    if not torn:
        return None
    _write_lines(path, records)
    return f"{path}: dropped a torn last line (a kill mid-write)"


def _truncate_after(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint of ``step`` (all of them when it
    starts afresh: its step-0 validation runs again)."""
    if not path.exists():
        return
    records, _ = _metric_lines(path)
    _write_lines(path, [r for r in records if r["step"] <= step] if step else [])


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The metrics a run logged, one dict per line (for plots, tests and notebooks); a torn last
    line (a run killed mid-write) is left out."""
    return _metric_lines(Path(folder) / "metrics.jsonl")[0]


# ----------------------------------------------------------------------------- checkpoints

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
