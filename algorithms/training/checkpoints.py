"""Checkpoints: what a run folder holds and what a checkpoint's ``state.pt`` holds, defined once
here for the trainer (which writes and resumes) and the evaluation (which exports a checkpoint's
policy). Written to a temporary folder and renamed, so a kill at any moment leaves the last
complete checkpoint intact; the newest ``keep`` are kept; a damaged one is set aside on resume.

A run folder::

    config.yaml                          the resolved config (enough to repeat the run)
    metrics.jsonl                        one record per logged step (runlog)
    resumes.jsonl                        one record per resume
    checkpoints/step_0000012/state.pt    a CheckpointState
    checkpoints/step_0000012/dcp/        parallel.sharding=fsdp2: the weights and optimizer states,
                                         sharded (torch.distributed.checkpoint; state.pt holds the rest)
    eval/exports/step_12/defender_ema    a checkpoint's policy as a loadable model folder
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

import torch

from advgame_env.roles import DEFENDER
from algorithms.config import ConfigError, TrainConfig, check_resumed_config, load_config
from algorithms.training.copies import WHICH, Which
from algorithms.training.game_format import GameFormat, write_format
from algorithms.training.runlog import repair_metrics
from algorithms.training.seed_stream import StreamState

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import OptimizerStateType

    from advgame_env import Label, Seed
    from algorithms.training.algorithm import Algorithm, Example
    from algorithms.training.distributed import Dist
    from algorithms.training.opponents import Opponents
    from algorithms.training.players import Player
    from algorithms.training.seed_stream import SeedStream
    from algorithms.training.sft import SFTExample
    from algorithms.training.update import Learner, Optimizer

STATE_FILE = "state.pt"
SHARDS_FOLDER = "dcp"  # a sharded checkpoint's tensors (torch.distributed.checkpoint)
CONFIG_FILE = "config.yaml"
RESUMES_FILE = "resumes.jsonl"
SHARED_LEARNER = "policy"  # the learner's name when one policy plays both roles (self-play)


class RngState(TypedDict):
    python: tuple[object, ...]  # random.getstate() (torch.load gives its tuples back as lists)
    torch: torch.Tensor
    cuda: NotRequired[list[torch.Tensor]]  # one per device, where there are GPUs


class SnapshotRecord(TypedDict, total=False):
    """One snapshot of an opponent pool: its step and its tensors (LoRA) or its file (full weights)."""

    step: int
    tensors: dict[str, torch.Tensor]
    file: str  # under the run folder's opponents/


class OpponentsState(TypedDict):
    """The opponent pools of a run that keeps them (``training.opponents``)."""

    pools: dict[str, list[SnapshotRecord]]  # role -> its snapshots, oldest first
    mixtures: dict[str, dict[int, float]]  # role -> member id -> meta-Nash weight (empty: none computed yet)
    dropped: list[tuple[str, int]]  # (file, the step it left its pool): deleted once no kept checkpoint names it


class _RequiredState(TypedDict):
    step: int
    weights: dict[str, dict[str, torch.Tensor]]  # weight_key(learner, which) -> the copy's tensors
    optimizers: dict[str, dict[str, object]]  # learner -> torch optimizer state_dict
    schedulers: dict[str, dict[str, object]]  # learner -> LR scheduler state_dict
    # label value ("harmful", "benign"), sft_stream_key(role) or EXTRA_BENIGN_KEY -> position
    data: dict[str, StreamState]
    rng: RngState


class CheckpointState(_RequiredState, total=False):
    """What ``state.pt`` holds (a plain dict on disk). The keys of ``STATE_KEYS`` are required; a
    state.pt written before this schema had a type holds the same keys and loads as it is."""

    algorithm: dict[str, object]  # the algorithm's own state (Algorithm.state_dict); older checkpoints lack it
    # the opponent pools (training.opponents.OpponentsState), in runs that keep them
    opponents: OpponentsState
    # parallel.sharding=fsdp2: ``weights`` and ``optimizers`` are empty; the tensors are in the
    # checkpoint's SHARDS_FOLDER, under weight_key(...) and optimizer_key(learner)
    sharded: bool


STATE_KEYS = tuple(_RequiredState.__annotations__)


def weight_key(learner: str, which: Which) -> str:
    """Where one weight copy of a learner sits in ``CheckpointState.weights``: ``defender/ema``."""
    return f"{learner}/{which}"


def optimizer_key(learner: str) -> str:
    """Where a learner's optimizer state sits in a sharded checkpoint's tensors."""
    return f"{learner}/optimizer"


def split_weight_key(key: str) -> tuple[str, Which]:
    """(learner, which) of a ``CheckpointState.weights`` key; a ``CheckpointError`` for any other key."""
    learner, _, which = key.partition("/")
    for known in WHICH:  # a loop, not ``in``: it gives the name back as a Which
        if which == known and learner:
            return learner, known
    raise CheckpointError(f"weights key {key!r} is not LEARNER/COPY with COPY one of {', '.join(WHICH)}")


EXTRA_BENIGN_KEY = "benign_extra"  # the data stream of data.extra_benign_seeds


def sft_stream_key(role: str) -> str:
    """A role's SFT stream in ``CheckpointState.data`` (the defender's kept its first name, "sft")."""
    return "sft" if role == DEFENDER else f"{role}_sft"


def learner_weights(state: CheckpointState, role: str, which: Which) -> tuple[str, dict[str, torch.Tensor]]:
    """The learner that plays ``role`` (itself, or the shared policy of a self-play run) and
    the tensors of its ``which`` copy; a ``CheckpointError`` names the copies the checkpoint has."""
    for learner in (role, SHARED_LEARNER):
        if weight_key(learner, which) in state["weights"]:
            return learner, state["weights"][weight_key(learner, which)]
    have = ", ".join(sorted(state["weights"])) or "none"
    if state.get("sharded"):
        raise CheckpointError(
            f"checkpoint of step {state['step']} is sharded (parallel.sharding=fsdp2): its weights are in its "
            f"{SHARDS_FOLDER}/ folder; use the run's final/ export, or resume the run to export another step"
        )
    raise CheckpointError(f"checkpoint of step {state['step']} holds no {which} weights of the {role} (it has {have})")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:07d}"


def checkpoint_step(path: Path) -> int:
    """The step of a checkpoint folder (``step_0000012`` -> 12)."""
    return int(path.name.removeprefix("step_"))


def export_dir(run_dir: Path, step: int, role: str, which: Which) -> Path:
    """Where a checkpoint's policy is exported as a model folder for evaluation."""
    return run_dir / "eval" / "exports" / f"step_{step}" / f"{role}_{which}"


def save_checkpoint(run_dir: Path, step: int, state: CheckpointState, keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the newest ``keep``."""
    final = checkpoint_dir(run_dir, step)
    scratch = final.with_name(final.name + ".tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    _write_synced(scratch / STATE_FILE, state)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(scratch, final)  # the rename is atomic: a checkpoint is complete or absent
    for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


@dataclass
class Shards:
    """This process's shards of a sharded run: each kept weight copy's tensors (DTensors), by
    ``weight_key``, and each optimizer's state, by ``optimizer_key``."""

    weights: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    optimizers: dict[str, OptimizerStateType] = field(default_factory=dict)

    def state_dict(self) -> dict[str, object]:
        """Both in one state dict for torch.distributed.checkpoint. Its values are the dicts
        above themselves, so ``dcp.load`` fills them in place."""
        return {**self.weights, **self.optimizers}


def save_sharded_checkpoint(
    run_dir: Path, step: int, state: CheckpointState, tensors: Shards, keep: int, dist: Dist
) -> Path:
    """``save_checkpoint`` for sharded runs, a collective: every process writes its shards of
    ``tensors`` with torch.distributed.checkpoint into the temporary folder, then the main
    process adds ``state`` (the rest, ``sharded`` set), renames and prunes, as there."""
    import torch.distributed.checkpoint as dcp

    final = checkpoint_dir(run_dir, step)
    scratch = final.with_name(final.name + ".tmp")
    if dist.main:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
    dist.barrier()
    dcp.save(tensors.state_dict(), checkpoint_id=scratch / SHARDS_FOLDER)
    dist.barrier()  # every shard is on disk before the folder counts as a checkpoint
    if dist.main:
        _write_synced(scratch / STATE_FILE, CheckpointState(**{**state, "sharded": True}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(scratch, final)
        for old in checkpoints(run_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def load_shards(path: Path, tensors: Shards) -> None:
    """Fill ``tensors`` (laid out as this run shards them, at any world size) from a sharded
    checkpoint, in place; a ``CheckpointError`` names a folder that lacks or breaks them."""
    import torch.distributed.checkpoint as dcp

    folder = path / SHARDS_FOLDER
    if not (folder / ".metadata").is_file():
        raise CheckpointError(f"{path} is a sharded checkpoint without its {SHARDS_FOLDER}/.metadata")
    try:
        dcp.load(tensors.state_dict(), checkpoint_id=folder)
    except Exception as error:  # DCP raises CheckpointException and others for missing or torn files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: {SHARDS_FOLDER}/ does not load ({reason[:200]})") from None


def _write_synced(path: Path, obj: object) -> None:
    with path.open("wb") as out:
        torch.save(obj, out)
        out.flush()
        os.fsync(out.fileno())


def write_atomic(path: Path, obj: object) -> None:
    """``torch.save(obj)`` to ``path`` through a temporary file and a rename, as a checkpoint:
    a kill leaves the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    _write_synced(scratch, obj)
    os.replace(scratch, path)


_CHECKPOINT = re.compile(r"step_(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (missing, empty, truncated or foreign state.pt); names it."""


def checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, oldest first. Leftover ``.tmp`` folders of a killed write, folders
    set aside as ``.corrupt`` and anything else not named ``step_<number>`` are ignored."""
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _CHECKPOINT.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=checkpoint_step)


def load_checkpoint(path: Path) -> CheckpointState:
    """The state saved in a checkpoint folder, verified to be whole: a ``CheckpointError``
    names the folder and what is wrong with it."""
    file = path / STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"{path} has no {STATE_FILE}")
    if file.stat().st_size == 0:
        raise CheckpointError(f"{path}: {STATE_FILE} is empty")
    try:
        with file.open("rb") as src:
            state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        raise CheckpointError(f"{path}: {STATE_FILE} is not a readable checkpoint ({_load_problem(error)})") from None
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: {STATE_FILE} lacks {', '.join(missing)}")
    match = _CHECKPOINT.fullmatch(path.name)
    if match and state["step"] != int(match.group(1)):
        raise CheckpointError(f"{path}: {STATE_FILE} is of step {state['step']!r}, not {int(match.group(1))}")
    try:
        for key in state["weights"]:
            split_weight_key(key)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {STATE_FILE}: {error}") from None
    loaded = CheckpointState(
        step=state["step"],
        weights=state["weights"],
        optimizers=state["optimizers"],
        schedulers=state["schedulers"],
        data=state["data"],
        rng=state["rng"],
    )
    if "algorithm" in state:  # the algorithm's own state; checkpoints before that hook have none
        loaded["algorithm"] = state["algorithm"]
    if "opponents" in state:  # only runs with opponent pools keep them
        loaded["opponents"] = state["opponents"]
    if state.get("sharded"):
        if not (path / SHARDS_FOLDER / ".metadata").is_file():
            raise CheckpointError(f"{path} is a sharded checkpoint without its {SHARDS_FOLDER}/.metadata")
        loaded["sharded"] = True
    return loaded


def _load_problem(error: Exception) -> str:
    """What was wrong with a state file, without torch's advice to retry with ``weights_only=False``:
    that would run whatever code a damaged or planted file holds."""
    text = str(error).strip()
    if text.startswith("Weights only load failed"):
        detail = text.partition("WeightsUnpickler error:")[2].strip().split("\n\n")[0].strip()
        return (
            f"not a checkpoint this library wrote: the safe loader refused it{f' ({detail[:120]})' if detail else ''}; "
            "do not load it with weights_only=False, which runs any code in the file; "
            "delete it, or resume from an older checkpoint"
        )
    return text.splitlines()[0][:200] if text else type(error).__name__


def newest_intact_checkpoint(run_dir: Path) -> tuple[Path, CheckpointState, list[str]] | None:
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


def rng_state() -> RngState:
    state = RngState(python=random.getstate(), torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: RngState) -> None:
    random.setstate(tuple(_tuples(v) for v in state["python"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuples(value: object) -> object:
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def set_aside(path: Path) -> Path:
    """Rename a damaged checkpoint folder to ``<name>.corrupt`` (kept for a look, out of the way
    of resuming and of pruning)."""
    target = path.with_name(path.name + ".corrupt")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(path, target)
    return target


class ResumeRecord(TypedDict):
    """One line of ``resumes.jsonl``."""

    step: int
    path: str
    checkpoint: str  # its folder's name
    skipped: list[str]  # why each newer checkpoint was not used
    repaired: str | None  # what was repaired in metrics.jsonl
    changed: dict[str, list[object]]  # config key -> [old, new]


@dataclass
class ResumePoint:
    """What a resumed run continues from: the checkpoint and its state, and what was found on the way."""

    path: Path
    state: CheckpointState | None  # None once restored (so the tensors can be freed)
    skipped: list[str] = field(default_factory=list)
    repaired: str | None = None
    changed: dict[str, list[object]] = field(default_factory=dict)

    def record(self, step: int) -> ResumeRecord:
        return ResumeRecord(
            step=step,
            path=str(self.path),
            checkpoint=self.path.name,
            skipped=self.skipped,
            repaired=self.repaired,
            changed=self.changed,
        )


def record_resume(run_dir: Path, record: ResumeRecord) -> None:
    """One line per resume in ``resumes.jsonl``: the checkpoint, what was skipped and repaired,
    and the config keys that changed (old and new values)."""
    with (run_dir / RESUMES_FILE).open("a", encoding="utf-8") as out:
        out.write(json.dumps(dict(record), default=repr) + "\n")


# ----------------------------------------------------------------------------- a run's state


class RunState:
    """What a training run holds between steps (its learners, data streams, algorithm state and
    opponent pools, at ``step``), as the trainer's base: its checkpoints written and restored
    (``state``/``shards``/``save``, ``_restore``), its policies exported (``export``)."""

    cfg: TrainConfig
    dist: Dist
    run_dir: Path
    step: int
    sharded: bool  # parallel.sharding=fsdp2: every process holds shards of the weights
    learners: dict[str, Learner]
    algorithm: Algorithm[Example]
    streams: dict[Label, SeedStream[Seed]]
    extra_benign: SeedStream[Seed] | None  # data.extra_benign_seeds, mixed into the benign split
    opponents: Opponents | None

    @property
    def players(self) -> dict[str, Player]:
        """Who plays each role (one player for both roles where the policy is shared)."""
        return {role: learner.player for learner in self.learners.values() for role in learner.roles}

    @property
    def optimizers(self) -> dict[str, Optimizer]:
        """Each learner's optimizer, by learner name, for the learners the schedule trains."""
        return {name: learner.optimizer for name, learner in self.learners.items() if learner.optimizer is not None}

    @property
    def sft(self) -> dict[str, SeedStream[SFTExample]]:
        """Each role's auxiliary SFT stream, for the roles that have a file."""
        return {role: stream for learner in self.learners.values() for role, stream in learner.sft.items()}

    def _kept(self) -> tuple[Which, ...]:
        """The weight copies a checkpoint holds (the initial model is rebuilt from its name)."""
        return ("learner", "ema") if "ema" in self.algorithm.copies() else ("learner",)

    def state(self) -> CheckpointState:
        """What a checkpoint holds; sharded, without the tensors (``shards`` has them)."""
        keep = () if self.sharded else self._kept()
        state = CheckpointState(
            step=self.step,
            weights={
                weight_key(name, which): learner.player.weights(which)
                for name, learner in self.learners.items()
                for which in keep
            },
            optimizers={} if self.sharded else {name: o.optimizer.state_dict() for name, o in self.optimizers.items()},
            schedulers={name: o.scheduler.state_dict() for name, o in self.optimizers.items()},
            data={label.value: stream.state() for label, stream in self.streams.items()}
            | {sft_stream_key(role): stream.state() for role, stream in self.sft.items()}
            | ({EXTRA_BENIGN_KEY: self.extra_benign.state()} if self.extra_benign is not None else {}),
            rng=rng_state(),
            algorithm=self.algorithm.state_dict(),
        )
        if self.opponents is not None:
            state["opponents"] = self.opponents.state_dict()
        return state

    def shards(self) -> Shards:
        """This process's shards of every kept weight copy and optimizer state, laid out for
        torch.distributed.checkpoint (which reshards them on load, at any world size)."""
        out = Shards()
        for name, learner in self.learners.items():
            for which in self._kept():
                out.weights[weight_key(name, which)] = learner.player.shards(which)
            if learner.optimizer is not None:
                out.optimizers[optimizer_key(name)] = learner.optimizer.shards(learner.player)
        return out

    def save(self) -> Path | None:
        path = None
        if self.sharded:  # every process writes its shards
            return save_sharded_checkpoint(
                self.run_dir, self.step, self.state(), self.shards(), self.cfg.run.keep_checkpoints, self.dist
            )
        if self.dist.main:
            path = save_checkpoint(self.run_dir, self.step, self.state(), self.cfg.run.keep_checkpoints)
            if self.opponents is not None and self.cfg.run.keep_checkpoints > 0:
                self.opponents.prune(checkpoint_step(checkpoints(self.run_dir)[0]))
        self.dist.barrier()
        return path

    def _resume_point(self, allow_change: Sequence[str]) -> ResumePoint | None:
        """What a resumed run continues from, checked before any model is loaded: the run's own
        config (changed keys refused unless allowed), a torn metrics tail (repaired) and the
        newest intact checkpoint (damaged newer ones are set aside, named in the message)."""
        changes: dict[str, tuple[object, object]] = {}
        if (self.run_dir / "config.yaml").exists():
            try:
                saved = load_config(self.run_dir / "config.yaml")
            except ConfigError as error:
                raise ConfigError(f"cannot resume: the run's own config does not load: {error}") from None
            changes = check_resumed_config(saved, self.cfg, allow_change)
        repaired = repair_metrics(self.run_dir / "metrics.jsonl") if self.dist.main else None
        point = newest_intact_checkpoint(self.run_dir)
        if point is None:
            return None
        path, state, skipped = point
        notes = [f"resuming from {path.name}"] + [f"skipped {reason}" for reason in skipped]
        notes += [repaired] if repaired else []
        notes += [f"changed {key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()]
        if self.dist.main:
            newer = [p for p in checkpoints(self.run_dir) if checkpoint_step(p) > checkpoint_step(path)]
            notes += [f"set aside as {set_aside(p).name}" for p in newer]
            print("advgame train: " + "; ".join(notes), file=sys.stderr, flush=True)
        return ResumePoint(path, state, skipped, repaired, {key: [old, new] for key, (old, new) in changes.items()})

    def _restore(self, path: Path, state: CheckpointState | None = None) -> None:
        state = load_checkpoint(path) if state is None else state
        if bool(state.get("sharded")) != self.sharded:
            raise ConfigError(
                f"{path} was written with parallel.sharding={'fsdp2' if state.get('sharded') else 'none'}; "
                "resume it with the same parallel.sharding"
            )
        if self.sharded:
            self._restore_shards(path)
        for key, tensors in state["weights"].items():
            name, which = split_weight_key(key)
            self.learners[name].player.load_weights(which, tensors)
        for name, optimizer in self.optimizers.items():
            if not self.sharded:
                optimizer.optimizer.load_state_dict(state["optimizers"][name])
            optimizer.scheduler.load_state_dict(state["schedulers"][name])
        for label, stream in self.streams.items():
            stream.restore(state["data"][label.value])
        for role, chats in self.sft.items():
            chats.restore(state["data"][sft_stream_key(role)])
        if self.extra_benign is not None and EXTRA_BENIGN_KEY in state["data"]:  # absent: added on resume
            self.extra_benign.restore(state["data"][EXTRA_BENIGN_KEY])
        restore_rng(state["rng"])
        self.algorithm.load_state_dict(state.get("algorithm", {}))  # checkpoints before the hook have none
        if self.opponents is not None and "opponents" in state:  # a run without pools had none
            self.opponents.load_state_dict(state["opponents"])
        self.step = int(state["step"])

    def _restore_shards(self, path: Path) -> None:
        """Weights and optimizer states from a sharded checkpoint, resharded for this run's world size."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        tensors = self.shards()  # the layout to fill: this run's own shards
        load_shards(path, tensors)
        for name, learner in self.learners.items():
            for which in self._kept():
                learner.player.load_shards(which, tensors.weights[weight_key(name, which)])
            if learner.optimizer is not None:
                module, optimizer = learner.player.learner_module(), learner.optimizer.optimizer
                set_optimizer_state_dict(module, optimizer, tensors.optimizers[optimizer_key(name)])

    def export(self, folder: Path) -> None:
        """Loadable folders of every learner's policy (and EMA): ``folder/defender`` etc.
        (``folder/policy`` for a policy shared by both roles)."""
        fmt = GameFormat.of(self.cfg)  # commands that load the export play it in this format
        for name, learner in self.learners.items():
            exported: list[tuple[Which, Path]] = [("learner", folder / name)]
            if "ema" in self.algorithm.copies():
                exported.append(("ema", folder / f"{name}_ema"))
            for which, path in exported:
                learner.player.export(which, path)
                if self.dist.main:
                    write_format(path, fmt)
