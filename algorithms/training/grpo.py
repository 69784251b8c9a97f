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

import torch

from advgame_env.conversation import ConversationGame
from advgame_env.game import Game, Round
from algorithms.algorithm_configs import GRPOConfig
from algorithms.training.algorithm import ROLES, Algorithm, Metrics, policy_logprobs, register
from algorithms.training.batches import Rollout, Tokenizers, rollouts
from algorithms.training.conversations import Trajectory, conversation_rollouts, rewards_to_go, sum_by_trajectory
from algorithms.training.distributed import Dist
from algorithms.training.losses import group_advantages, grpo_token_loss, k3_kl
from algorithms.training.players import Player


@dataclass
class GRPORollout(Rollout):
    """A rollout with its group-relative advantage."""

    advantage: float = 0.0
    group_size: int = 1
    masked: bool = False  # counts in the baseline and the normaliser, but is not trained

    def turns(self) -> list[tuple[list[int], list[int], list[float] | None]]:
        return [(self.prompt_ids, self.completion_ids, self.sampler_logprobs)]

    def turn_advantages(self) -> list[float]:
        return [self.advantage]


@dataclass
class GRPOTrajectory(Trajectory):
    """A player's whole trajectory in a conversation with its group-relative advantage: every
    token of its own turns gets the trajectory's advantage (the game pays whole conversations),
    or, with ``credit: reward_to_go``, turn t's tokens get G_t − baseline (``rewards_to_go``)."""

    advantage: float = 0.0
    group_size: int = 1
    masked: bool = False
    per_turn: list[float] | None = None  # reward_to_go: each turn's advantage

    def turns(self) -> list[tuple[list[int], list[int], list[float] | None]]:
        return [(s.prompt_ids, s.completion_ids, s.sampler_logprobs) for s in self.segments]

    def turn_advantages(self) -> list[float]:
        return self.per_turn if self.per_turn is not None else [self.advantage] * len(self.segments)


GRPOExample = GRPORollout | GRPOTrajectory


@register("grpo")
class GRPO(Algorithm[GRPOExample]):
    """In conversations (``game.turns > 1``) an example is a player's whole trajectory
    (``conversations.conversation_rollouts``): its group is the single-turn game's (the attacker's
    rows of a round, the defender's conversations of a row) and its loss the sum of its turns'."""

    config_class = GRPOConfig
    config: GRPOConfig
    metric_names = ("kl", "advantage")

    def examples(
        self,
        rounds: Sequence[Round],
        game: Game,
        tokenizers: Tokenizers,
        prefills: Mapping[str, str] | None = None,
        dist: Dist | None = None,
    ) -> list[GRPOExample]:
        played: Sequence[Rollout | Trajectory]
        if isinstance(game, ConversationGame):
            played = conversation_rollouts(rounds, game, tokenizers, prefills=prefills)
        else:
            played = rollouts(rounds, game, tokenizers, prefills=prefills)
        out: list[GRPOExample] = []
        for role in ROLES:  # every process sums both roles, with or without rollouts
            mine = [r for r in played if r.role == role]
            rewards, groups = [r.reward for r in mine], [r.group for r in mine]
            mean = None
            if self.config.baseline == "batch_mean" and dist is not None:
                total, count = dist.sum([sum(rewards), len(rewards)])
                mean = total / count if count else 0.0
            advantages = group_advantages(rewards, self.config.baseline, groups, mean=mean)
            sizes = Counter(groups)
            for r, advantage in zip(mine, advantages, strict=True):
                assert advantage is not None  # rollouts() keeps scored samples only
                size = sizes[r.group]
                if not isinstance(r, Trajectory):
                    out.append(GRPORollout(**vars(r), advantage=advantage, group_size=size, masked=r.failed))
                    continue
                per_turn = None
                if self.config.credit == "reward_to_go":  # the same baseline, b = R(τ) − Â(τ)
                    per_turn = [g - (r.reward - advantage) for g in rewards_to_go(r)]
                out.append(
                    GRPOTrajectory(**vars(r), advantage=advantage, group_size=size, masked=r.failed, per_turn=per_turn)
                )
        return out

    def weight(self, example: GRPOExample) -> float:
        return 1.0 / example.group_size  # mean over a group's rollouts; the normaliser counts groups

    def trains(self, example: GRPOExample) -> bool:
        return not example.masked

    def loss(self, player: Player, chunk: Sequence[GRPOExample]) -> tuple[torch.Tensor, Metrics]:
        # every turn of every example as one sequence (a single-turn rollout is one turn)
        per_example = [r.turns() for r in chunk]
        turns = [t for example in per_example for t in example]
        sequences = [(prompt, completion) for prompt, completion, _ in turns]
        with torch.no_grad():
            ref_logps, _ = policy_logprobs(player, self.reference, sequences, self.max_context)
        logps, mask = policy_logprobs(player, "learner", sequences, self.max_context)
        sampler, tis_cap = None, self.config.tis_cap  # None: no truncated importance ratio
        if tis_cap is not None and all(known is not None for *_, known in turns):
            sampler = torch.full_like(logps, math.nan)
            for i, (*_, known) in enumerate(turns):
                values = known or []
                sampler[i, : len(values)] = torch.tensor(values, dtype=logps.dtype)
            # Tokens without a sampler log-prob (the appended end-of-turn token) get ratio 1.
            sampler = torch.where(torch.isnan(sampler), logps.detach(), sampler)
        advantage = [a for r in chunk for a in r.turn_advantages()]
        advantages = torch.tensor(advantage, dtype=logps.dtype, device=logps.device)
        losses = grpo_token_loss(logps, sampler, ref_logps, advantages, mask, self.config.kl_beta, tis_cap)
        kl = (k3_kl(logps.detach(), ref_logps) * mask).sum(-1)
        # summed over tokens (the paper's aggregation): a trajectory's loss is its turns' sum
        losses, kl = sum_by_trajectory(losses, per_example), sum_by_trajectory(kl, per_example)
        advantages = torch.tensor([r.advantage for r in chunk], dtype=logps.dtype)
        return losses, {"kl": float(kl.sum()), "advantage": float(advantages.sum())}
