"""The generic update every algorithm shares: AdamW with a cosine schedule and clipping per
learner (``Optimizer``), and one optimizer step on the weighted mean of an algorithm's losses
over every process's examples (``update``), micro-batched."""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from algorithms.config import TrainConfig
from algorithms.training.algorithm import Algorithm, Example
from algorithms.training.distributed import Dist, Replica, local_value
from algorithms.training.players import Player
from algorithms.training.seed_stream import SeedStream
from algorithms.training.sft import SFTExample

if TYPE_CHECKING:
    from torch.distributed.checkpoint.state_dict import OptimizerStateType

T = TypeVar("T")


class Optimizer:
    """AdamW + cosine schedule (with optional warm-up) + clipping for one player."""

    def __init__(self, player: Player, cfg: TrainConfig, total_steps: int) -> None:
        """``total_steps``: the optimizer steps of the run; the cosine spans ``optim.schedule_steps``
        instead when that is set."""
        o = cfg.optim
        total_steps = o.schedule_steps or total_steps
        self.params = player.trainable()  # sharded players: DTensors, so AdamW's states are sharded too
        self.sharded = player.sharded
        self.max_grad_norm = o.max_grad_norm
        self.optimizer = torch.optim.AdamW(self.params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: cosine_scale(k, total_steps, o.warmup_steps, o.final_lr_scale)
        )
        self.replica: Replica | None = None  # several unsharded processes: torch's DDP (``reduce_over``)

    def reduce_over(self, player: Player, dist: Dist) -> None:
        """Before an update: gradients summed over ``dist``'s processes by the engines. FSDP2
        reduce-scatters a sharded player's itself; an unsharded player's get torch's DDP over
        ``params`` (``distributed.Replica``), made at its first update (a collective: every
        process updates the same learners in the same order). One process: nothing to sum."""
        if self.sharded or dist.world == 1 or self.replica is not None:
            return
        # LoRA: set_adapter marks this learner's adapter (only) trainable, and DDP takes the
        # parameters that require grad when it is made
        with player.active("learner"):
            self.replica = Replica(self.params)

    def backward(self, forward: Callable[[], tuple[torch.Tensor, T]], last: bool) -> T:
        """One micro-batch: ``forward()`` gives (objective, rest); the objective's gradients
        are added to the learner's. The update's ``last`` micro-batch sums them over processes
        (DDP); under FSDP2 every backward reduce-scatters its own."""
        if self.replica is not None:
            return self.replica.backward(forward, last)
        objective, rest = forward()
        objective.backward()
        return rest

    def step(self, dist: Dist) -> dict[str, float]:
        # the gradients are summed over processes already: by DDP in the last micro-batch's
        # backward, or reduce-scattered by FSDP2 in every backward
        # of DTensor gradients: the global norm (a replicated DTensor), each shard clipped by it
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        return {"grad_norm": local_value(norm), "lr": float(lr)}

    def shards(self, player: Player) -> OptimizerStateType:
        """This process's shards of the AdamW states (a sharded player), for a checkpoint."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        fresh = not self.optimizer.state
        # a fresh optimizer's states are made by a zero step over the parameters that require
        # grad; under LoRA only the active adapter does (set_adapter)
        with player.active("learner"):
            state: dict[str, Any] = get_optimizer_state_dict(player.learner_module(), self.optimizer)
        if fresh:
            # That zero step (zero gradients, lr 0) leaves zero moments, as AdamW's own first
            # step starts from, but counts itself: with step 1 already taken, the bias
            # correction would make the first real update about a quarter smaller than an
            # unsharded learner's. Back to step 0, in the optimizer and in what is saved.
            for moments in [*self.optimizer.state.values(), *state["state"].values()]:
                moments["step"].zero_()
        return state

    def skip(self) -> None:
        """No example anywhere: the weights stay, but the schedule counts the step."""
        self.optimizer.step()  # every grad is None: AdamW leaves each parameter alone
        self.scheduler.step()


def cosine_scale(k: int, total: int, warmup: int, final_scale: float) -> float:
    """LR multiplier at optimizer step k: linear warm-up, then cosine from 1 to ``final_scale``."""
    if k < warmup:
        return (k + 1) / warmup
    progress = min(1.0, (k - warmup) / max(1, total - warmup))
    return final_scale + (1.0 - final_scale) * 0.5 * (1.0 + math.cos(math.pi * progress))


def update(
    player: Player,
    optimizer: Optimizer,
    algorithm: Algorithm[Example],
    examples: Sequence[Example],
    micro_batch_size: int,
    dist: Dist,
    precision: contextlib.AbstractContextManager[None],
    auxiliary: Callable[[Player], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One optimizer step on Σ weight·loss / Σ weight, the sums over every process's examples.

    An example the algorithm does not train (``algorithm.trains``: GRPO's failed rollouts) counts
    in Σ weight but is not trained. ``auxiliary(player)``: an extra loss (Self-RedTeam's SFT term) added to every
    micro-batch, weighted by the micro-batch's share of the examples; summed over processes,
    the shares make it the weighted mean of the processes' terms.
    """
    total = dist.sum([sum(algorithm.weight(e) for e in examples)])[0]
    examples = [e for e in examples if algorithm.trains(e)]
    weights = [algorithm.weight(e) for e in examples]
    (count,) = dist.sum([len(examples)])
    if count == 0 and auxiliary is None:
        optimizer.skip()
        return {"examples": 0.0}
    optimizer.reduce_over(player, dist)
    if count == 0:
        assert auxiliary is not None

        # no game example anywhere: the auxiliary term still takes its step, as the mean of
        # the processes' terms (the gradients are summed over processes)
        def alone() -> tuple[torch.Tensor, float]:
            with precision, player.updating():
                term = auxiliary(player)
            return term.div(dist.world), float(term.detach())

        sft = optimizer.backward(alone, last=True)
        return {"examples": 0.0, "sft_loss": sft} | optimizer.step(dist)
    # every process sums the same keys, in the same order, even with no example of its own
    sums = dict.fromkeys(("loss", *algorithm.metric_names), 0.0)
    sft_loss = 0.0  # this process's weighted auxiliary term
    chunks = [
        (examples[start : start + micro_batch_size], weights[start : start + micro_batch_size])
        for start in range(0, len(examples), micro_batch_size)
    ]
    real = len(chunks)
    if dist.world > 1:
        chunks += padding(chunks, examples, dist, equal=player.sharded)

    def micro_batch(
        chunk: list[Example], w: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, Mapping[str, float], float]]:
        with precision, player.updating():
            losses, metrics = algorithm.loss(player, chunk)
            objective = (losses * w.to(losses.device)).sum().div(total)
            term = 0.0
            if auxiliary is not None:
                share = float(w.sum()) / total
                extra = auxiliary(player)
                objective = objective + extra * share
                term = float(extra.detach()) * share
        return objective, (losses, metrics, term)

    for n, (chunk, chunk_weights) in enumerate(chunks):
        w = torch.tensor(chunk_weights)
        losses, metrics, term = optimizer.backward(functools.partial(micro_batch, chunk, w), n == len(chunks) - 1)
        if n >= real:  # a padding micro-batch: weight 0, no figures
            continue
        sft_loss += term
        sums["loss"] += float((losses.detach().cpu() * w).sum())
        for key, value in metrics.items():
            sums[key] += value
    reduced = dict(zip(sums, dist.sum(list(sums.values())), strict=True))
    out = {"loss": reduced.pop("loss") / total, "examples": count}
    out |= {key: value / count for key, value in reduced.items()}  # per-example means
    if auxiliary is not None:
        out["sft_loss"] = sft_loss
    return out | optimizer.step(dist)


def padding(
    chunks: Sequence[tuple[list[Example], list[float]]], examples: Sequence[Example], dist: Dist, equal: bool
) -> list[tuple[list[Example], list[float]]]:
    """Zero-weight micro-batches: with ``equal`` (FSDP2), those that bring this process up to
    the most any process has; otherwise (DDP) one, for a process that has none.

    Every forward and backward through an FSDP2 module is a collective (all-gather, then
    reduce-scatter), so every process must run the same number of them; processes hold
    different numbers of examples. DDP reduces once, in the backward of each process's last
    micro-batch, so every process needs one. A padding micro-batch repeats a real example with
    weight 0: its gradient is exactly zero and it adds nothing to the sums. A process with no
    example borrows the first example of the first process that has one."""
    counts = dist.gather([len(chunks)])
    missing = max(0, (max(counts) if equal else 1) - len(chunks))
    filler = list(examples[:1])
    if min(counts) == 0:  # some process has nothing to repeat: every process takes part in the gather
        everyone = dist.gather(list(examples[:1]))
        filler = filler or everyone[:1]
    return [(filler, [0.0])] * missing


@dataclass(frozen=True)
class Batch:
    """The examples one update trains on: a split's (``split`` its name, ``index`` its place in
    ``run_setup.SPLITS``), or both splits' mixed (``split`` None, ``index`` ``len(SPLITS)``)."""

    split: str | None
    index: int
    examples: list[Example]


@dataclass
class Learner:
    """One set of trained weights: its player, the roles it plays (both, for a shared policy),
    its optimizer and schedule (None when the schedule never trains it) and the auxiliary SFT
    stream of each of its roles that has one."""

    name: str  # "attacker", "defender", or "policy" for one policy of both roles
    player: Player
    roles: tuple[str, ...]
    optimizer: Optimizer | None = None
    sft: dict[str, SeedStream[SFTExample]] = field(default_factory=dict)


def minibatch_mean(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """One update's figures from its minibatches' optimizer steps: counts add up over the
    minibatches; every other figure is the mean of the steps taken."""
    keys = dict.fromkeys(key for r in results for key in r)
    return {
        key: sum(r.get(key, 0.0) for r in results)
        if key == "examples"
        else statistics.fmean(r[key] for r in results if key in r)
        for key in keys
    }
