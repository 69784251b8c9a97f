"""Pointwise GRPO (AdvGame's GRPO baseline, A §3.4): advantage = reward − baseline, k3 KL to the
initial model in the loss, and a truncated, detached importance ratio against the sampler.

As the reference, only error-free rollouts are trained: a failed one (malformed, over-long:
reward −1) enters the baseline and its group's size, but is masked out of the loss.
``batch_mean`` is the mean of a role's rewards over every process's batch of the split.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from advgame_env.game import Game, Round
from algorithms.config import AlgorithmConfig, read_when
from algorithms.training.algorithm import ROLES, Algorithm, Metrics, config_as, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.distributed import Dist
from algorithms.training.losses import group_advantages, grpo_token_loss, k3_kl
from algorithms.training.players import Player, Which


@dataclass
class GRPOConfig(AlgorithmConfig):
    name: str = "grpo"
    sampler: Literal["ema", "learner"] = "learner"
    reference: Literal["ema", "initial"] = "initial"
    # weight of the k3 KL to the initial model, in the loss: the paper's 0.1 came with an
    # undetached importance ratio, which doubles the policy-gradient term; with our detached
    # ratio the same objective has 0.05 (see losses.py)
    kl_beta: float = 0.05
    # truncated importance ratio against the sampler's log-probs; unset: on with the learner as
    # sampler only (it corrects an on-policy sampler's lag; the reference forbids it off-policy)
    tis: bool | None = None
    tis_cap: float | None = None  # its cap (read with tis): 2.0
    baseline: Literal["batch_mean", "group_mean"] = "batch_mean"  # the advantage baseline
    ema_decay: float | None = None  # read where the EMA samples or is the reference: 0.95

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tis is None:
            self.tis = self.sampler == "learner"
        self.tis_cap = read_when(self, "tis_cap", self.tis, 2.0, "by grpo with algorithm.tis on")
        ema = "ema" in (self.sampler, self.reference)
        self.ema_decay = read_when(self, "ema_decay", ema, 0.95, "where the EMA samples or is the reference")


@dataclass
class GRPORollout(Rollout):
    """A rollout with its group-relative advantage."""

    advantage: float = 0.0
    group_size: int = 1
    masked: bool = False  # counts in the baseline and the normaliser, but is not trained


@register("grpo")
@dataclass
class GRPO(Algorithm[GRPORollout]):
    config_class = GRPOConfig
    metric_names = ("kl", "advantage")

    sampler: Which = "learner"
    kl_beta: float = 0.1
    tis_cap: float | None = 2.0
    baseline: str = "batch_mean"
    max_context: int = 2048
    reference: Which = "initial"
    ema_decay: float | None = None

    @classmethod
    def from_config(cls, config: AlgorithmConfig, max_context: int) -> GRPO:
        config = config_as(config, GRPOConfig)
        tis_cap = config.tis_cap if config.tis else None
        return cls(
            config.sampler, config.kl_beta, tis_cap, config.baseline, max_context, config.reference, config.ema_decay
        )

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str] | None = None,
        dist: Dist | None = None,
    ) -> list[GRPORollout]:
        played = rollouts(rounds, game, tokenizers, prefills=prefills)
        out = []
        for role in ROLES:  # every process sums both roles, with or without rollouts
            mine = [r for r in played if r.role == role]
            rewards, groups = [r.reward for r in mine], [r.group for r in mine]
            mean = None
            if self.baseline == "batch_mean" and dist is not None:
                total, count = dist.sum([sum(rewards), len(rewards)])
                mean = total / count if count else 0.0
            advantages = group_advantages(rewards, self.baseline, groups, mean=mean)  # type: ignore[arg-type]
            sizes = Counter(groups)
            for r, advantage in zip(mine, advantages, strict=True):
                assert advantage is not None  # rollouts() keeps scored samples only
                out.append(GRPORollout(**vars(r), advantage=advantage, group_size=sizes[r.group], masked=r.failed))
        return out

    def weight(self, example: GRPORollout) -> float:
        return 1.0 / example.group_size  # mean over a group's rollouts; the normaliser counts groups

    def trains(self, example: GRPORollout) -> bool:
        return not example.masked

    def loss(self, player: Player, chunk: Sequence[GRPORollout]) -> tuple[torch.Tensor, Metrics]:
        sequences = [(r.prompt_ids, r.completion_ids) for r in chunk]
        with torch.no_grad():
            ref_logps, _ = policy_logprobs(player, self.reference, sequences, self.max_context)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        sampler = None
        if self.tis_cap is not None and all(r.sampler_logprobs is not None for r in chunk):
            sampler = torch.full_like(logps, math.nan)
            for i, r in enumerate(chunk):
                values = r.sampler_logprobs or []
                sampler[i, : len(values)] = torch.tensor(values, dtype=logps.dtype)
            # Tokens without a sampler log-prob (the appended end-of-turn token) get ratio 1.
            sampler = torch.where(torch.isnan(sampler), logps.detach(), sampler)
        advantages = torch.tensor([r.advantage for r in chunk], dtype=logps.dtype, device=logps.device)
        losses = grpo_token_loss(logps, sampler, ref_logps, advantages, mask, self.kl_beta, self.tis_cap)
        kl = (k3_kl(logps.detach(), ref_logps) * mask).sum(-1)
        return losses, {"kl": float(kl.sum()), "advantage": float(advantages.sum())}
