"""A run's metrics: metrics.jsonl (always), TensorBoard, W&B when asked, the progress bar; and
reading them back, a torn last line (a kill mid-write) repaired."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from algorithms.config import TrainConfig


class RunLog:
    """Metrics to metrics.jsonl, TensorBoard and (optionally) W&B; live figures on a progress bar."""

    @classmethod
    def of_run(cls, cfg: TrainConfig, folder: Path, start_step: int) -> RunLog:
        """The log of a training run in ``folder`` as its ``run`` section asks, from ``start_step`` on."""
        from algorithms.config import to_dict

        run = cfg.run
        return cls(
            folder,
            start_step=start_step,
            total_steps=run.steps,
            tensorboard=run.tensorboard,
            wandb_project=run.wandb_project if run.wandb else None,
            progress=run.progress,
            config=to_dict(cfg),
        )

    def __init__(
        self,
        folder: Path,
        *,
        start_step: int,
        total_steps: int,
        tensorboard: bool,
        wandb_project: str | None,
        progress: bool,
        config: Mapping[str, object],
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
                self.bar.set_description_str("train", refresh=False)  # the step's phases are over
                self.bar.update(1)
            shown = {k.split("/", 1)[-1]: v for k, v in metrics.items() if k in _LIVE}
            if shown:
                self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=True)

    def phase(self, text: str) -> None:
        """What the step under way is doing (a generation, a judge call), on the bar's label: the
        bar itself moves once per step, minutes apart on CPU."""
        if self.bar is not None:
            self.bar.set_description_str(f"train step {self.bar.n + 1}: {text}", refresh=True)

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
    "audit/canary_favour",
    "audit/alarm",
)


# One line of metrics.jsonl: "step" (an int) and each metric logged at that step
MetricRecord = dict[str, float]


class RunLogError(ValueError):
    """metrics.jsonl is damaged somewhere other than a torn last line; names the file and line."""


def _metric_lines(path: Path) -> tuple[list[MetricRecord], bool]:
    """The records of a metrics log and whether its last line was torn (a kill mid-write leaves
    a last line that is not a whole record). Every other bad line is a ``RunLogError``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records: list[MetricRecord] = []
    torn = False
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


def _write_lines(path: Path, records: Sequence[MetricRecord]) -> None:
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


def read_metrics(folder: str | Path) -> list[MetricRecord]:
    """The metrics a run logged, one dict per line (for plots, tests and notebooks); a torn last
    line (a run killed mid-write) is left out."""
    return _metric_lines(Path(folder) / "metrics.jsonl")[0]
